namespace Rellax.Runtime.Training;

/// <summary>Which parts of a ReLLaX adapter a <see cref="AdapterTrainer"/> trains; everything else is frozen.</summary>
[Flags]
public enum AdapterParts
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>LoRA A and B of every target (<c>lora_A</c>, <c>lora_B</c>): ReLLa's instruction tuning.</summary>
    Lora = 1,
    /// <summary>The CFLoRA generators (<c>lora_gate.*</c>).</summary>
    Gate = 2,
    /// <summary>The SPA projector (<c>ctr_input_embedding_prj.*</c>).</summary>
    Projector = 4,
}

/// <summary>The training loss of a <see cref="AdapterTrainer"/>.</summary>
public enum CtrLoss
{
    /// <summary>
    /// Binary cross-entropy on <c>p_yes = softmax([logit_No, logit_Yes])[1]</c> at the last prompt position, the exact
    /// quantity <see cref="CtrScorer"/> reports (same template and answer-token rule), averaged over the batch.
    /// </summary>
    Bce,
    /// <summary>
    /// The ReLLa/ReLLaX reference's causal-LM loss: the templated prompt is followed by the answer
    /// (<see cref="AdapterTrainingOptions.LmYes"/> or <see cref="AdapterTrainingOptions.LmNo"/>), and the loss is the
    /// mean cross-entropy over the whole vocabulary of the answer tokens (prompt tokens are ignored, as labels -100 are).
    /// </summary>
    Lm,
}

/// <summary>One labelled training or validation prompt.</summary>
/// <param name="Request">The prompt and the vectors its adapter needs, as for <see cref="CtrScorer.Score"/>.</param>
/// <param name="Label">1 (click / like) or 0.</param>
public sealed record CtrExample(CtrRequest Request, int Label);

/// <summary>How a <see cref="AdapterTrainer"/> builds batches and computes its loss.</summary>
public sealed record AdapterTrainingOptions
{
    /// <summary>The parts trained; null picks <see cref="AdapterTrainer.DefaultTrainable"/> (the reference's choice).</summary>
    public AdapterParts? Trainable { get; init; }

    /// <summary>The loss (default <see cref="CtrLoss.Bce"/>).</summary>
    public CtrLoss Loss { get; init; } = CtrLoss.Bce;

    /// <summary>
    /// Template, answers and micro-batching: each optimizer step's examples run through the model in micro-batches of at
    /// most <see cref="ScoringOptions.BatchSize"/> prompts and <see cref="ScoringOptions.MaxBatchTokens"/> padded tokens,
    /// whose gradients are summed (so a step of N examples is exact gradient accumulation). Attention must be fp32.
    /// </summary>
    public ScoringOptions Scoring { get; init; } = new();

    /// <summary>
    /// Activation checkpointing: keep only each layer's input during the forward pass and recompute the layer just
    /// before its backward (about one more forward of compute; activation memory of one layer instead of all).
    /// </summary>
    public bool Recompute { get; init; }

    /// <summary>The positive answer of the LM loss as it follows the templated prompt (default <c>" Yes."</c>).</summary>
    public string LmYes { get; init; } = " Yes.";

    /// <summary>The negative answer of the LM loss (default <c>" No."</c>).</summary>
    public string LmNo { get; init; } = " No.";
}

/// <summary>
/// Trains a ReLLaX adapter (LoRA A/B, CFLoRA generators, SPA projector) on a frozen Llama-family model with Rellax's own
/// forward and backward kernels; plug it into a <see cref="TrainingLoop"/>. The base model's weights are never changed:
/// the backward computes input gradients through every frozen op and parameter gradients for the trained parts only.
/// CPU backend only (the backward ops have no GPU implementation yet).
/// </summary>
public sealed class AdapterTrainer : ITrainable, IDisposable
{
    /// <summary>Creates a trainer; the adapter's tensors are copied into <see cref="Parameters"/> (the adapter is not changed).</summary>
    /// <param name="model">The frozen base model; it must outlive the trainer.</param>
    /// <param name="adapter">The adapter to start from, loaded for this model.</param>
    /// <param name="train">The training examples (at least one of each label).</param>
    /// <param name="valid">Validation examples for <see cref="Validate"/>, or null.</param>
    /// <param name="options">Parts, loss, template, batching; null for the defaults.</param>
    /// <exception cref="ArgumentException">The adapter does not fit the model, a part to train is missing from it, the
    /// training set is empty or single-class, or an example is invalid (a <see cref="RecordException"/> naming the
    /// example by its split (<see cref="RecordException.RecordKind"/> <c>train</c> or <c>valid</c>) and <see cref="RecordException.Record"/> index).</exception>
    /// <exception cref="NotSupportedException">The backend is not the CPU, the base weights are int8, or attention is not fp32.</exception>
    public AdapterTrainer(LlamaModel model, RellaxAdapter adapter, IReadOnlyList<CtrExample> train, IReadOnlyList<CtrExample>? valid,
        AdapterTrainingOptions? options = null)
    {
        throw new NotImplementedException();
    }

    /// <summary>The reference's default: <see cref="AdapterParts.Lora"/> for a plain LoRA; the generators and the projector
    /// (those present) for an adapter with either.</summary>
    public static AdapterParts DefaultTrainable(RellaxAdapter adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var parts = AdapterParts.None;
        if (adapter.HasGenerators) parts |= AdapterParts.Gate;
        if (adapter.Projector is not null) parts |= AdapterParts.Projector;
        return parts == AdapterParts.None ? AdapterParts.Lora : parts;
    }

    /// <summary>The parts being trained.</summary>
    public AdapterParts Trainable => throw new NotImplementedException();

    /// <summary>The trained tensors, named as in the adapter file (PEFT names), in checkpoint order.</summary>
    public IReadOnlyList<Parameter> Parameters => throw new NotImplementedException();

    /// <summary>Number of training examples.</summary>
    public int TrainingCount => throw new NotImplementedException();

    /// <summary>Real (unpadded) prompt tokens run forward and backward so far.</summary>
    public long TokensProcessed => throw new NotImplementedException();

    /// <summary>Most bytes of saved activations and backward scratch held at once so far.</summary>
    public long PeakActivationBytes => throw new NotImplementedException();

    /// <inheritdoc/>
    public double ComputeGradients(ReadOnlySpan<int> batch) => throw new NotImplementedException();

    /// <summary>Scores the validation examples with the current parameters (p_yes, as <see cref="CtrScorer"/>).</summary>
    public ValidationResult? Validate(CancellationToken cancellationToken) => throw new NotImplementedException();

    /// <summary>Scores <paramref name="examples"/> with the current parameters: p_yes per example, in order.</summary>
    public double[] Score(IReadOnlyList<CtrRequest> examples, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    /// <summary>The adapter with the current parameter values (frozen parts as given), ready to save or score with.</summary>
    public RellaxAdapter ToAdapter(string name = "(trained)") => throw new NotImplementedException();

    /// <summary>Frees the backend memory.</summary>
    public void Dispose() { }
}
