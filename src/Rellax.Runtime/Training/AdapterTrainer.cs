using System.Diagnostics;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

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
/// </summary>
/// <remarks>
/// <para><b>One step.</b> The step's examples are sorted by length and cut into micro-batches
/// (<see cref="ScoringOptions.BatchSize"/> prompts, <see cref="ScoringOptions.MaxBatchTokens"/> padded tokens), each
/// left-padded like <see cref="CtrScorer"/>'s batches and run through the same layer code
/// (<c>BatchForward</c>) keeping its activations, then backward; the gradients of the micro-batches are summed, each
/// scaled so that the result is the gradient of the step's mean loss (exact accumulation).</para>
/// <para><b>Losses.</b> <see cref="CtrLoss.Bce"/>: with z = logit_Yes − logit_No at the last prompt position,
/// p_yes = σ(z) and the loss −[y log σ(z) + (1 − y) log σ(−z)] (evaluated stably), averaged over the step's examples.
/// <see cref="CtrLoss.Lm"/>: the answer's tokens (those the yes/no answers share, then the rest of
/// <see cref="AdapterTrainingOptions.LmYes"/>/<see cref="AdapterTrainingOptions.LmNo"/>) follow the prompt, and the loss is
/// the cross-entropy over the vocabulary of each answer token given the tokens before it, averaged over all answer tokens
/// of the step (Hugging Face's mean over the labels that are not −100).</para>
/// <para><b>Cost.</b> The forward as scoring (2·params FLOPs per token, attention 4·T·Hq·D per token and layer); the
/// backward about as much again for the frozen layers' input gradients (no weight gradients), 2.5x the forward for
/// attention, and a few % for the adapter's gradients. <see cref="AdapterTrainingOptions.Recompute"/> adds one more
/// forward of each layer. Memory: see <see cref="PeakActivationBytes"/>.</para>
/// CPU backend only (the backward ops have no GPU implementation yet). Base weights f32, f16, bf16 or int8 (QLoRA-style: the
/// forward runs the int8 layers as scoring does, LLM.int8() W8A8; the backward reads the frozen int8 weights dequantized, so
/// the gradient is the straight-through one, that of the fp32 model with the dequantized weights evaluated at the int8
/// forward's activations; with <see cref="ModelLoadOptions.OutlierThreshold"/> below every |x|, e.g. 1e-30, the forward is
/// that fp32 model itself, run as the fp32 GEMM over the dequantized weights, and the gradient exact).
/// Not thread-safe; dispose to free the backend memory.
/// </remarks>
public sealed class AdapterTrainer : ITrainable, IDisposable
{
    private readonly LlamaModel _model;
    private readonly RellaxAdapter _adapter;
    private readonly AdapterTrainingOptions _options;
    private readonly CtrPromptEncoder _encoder;
    private readonly BatchForward _forward;
    private readonly Example[] _train;
    private readonly IReadOnlyList<CtrExample>? _valid;
    private readonly Binding[] _bindings;
    private readonly List<Parameter> _parameters = [];
    private bool _disposed;

    /// <summary>A prepared training example: its prompt, label, and for the LM loss the answer tokens that follow the
    /// prompt (the answers' common prefix, already at the end of the prompt ids, is scored too).</summary>
    private sealed record Example(PreparedPrompt Prompt, int Label, int[] Answer);

    /// <summary>A trained tensor: its host parameter, its device copy and its device gradient.</summary>
    private sealed record Binding(Parameter Parameter, Tensor Value, Func<Tensor?> Gradient);

    /// <summary>Creates a trainer; the adapter's tensors are copied into <see cref="Parameters"/> (the adapter is not changed).</summary>
    /// <param name="model">The frozen base model; it must outlive the trainer.</param>
    /// <param name="adapter">The adapter to start from, loaded for this model.</param>
    /// <param name="train">The training examples (at least one of each label).</param>
    /// <param name="valid">Validation examples for <see cref="Validate"/>, or null.</param>
    /// <param name="options">Parts, loss, template, batching; null for the defaults.</param>
    /// <exception cref="ArgumentException">The adapter does not fit the model, a part to train is missing from it, the
    /// training set is empty or single-class, or an example is invalid (a <see cref="RecordException"/> naming the
    /// example by its split (<see cref="RecordException.RecordKind"/> <c>train</c> or <c>valid</c>) and <see cref="RecordException.Record"/> index).</exception>
    /// <exception cref="NotSupportedException">The backend is not the CPU, or attention is not fp32.</exception>
    public AdapterTrainer(LlamaModel model, RellaxAdapter adapter, IReadOnlyList<CtrExample> train, IReadOnlyList<CtrExample>? valid,
        AdapterTrainingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(train);
        options ??= new AdapterTrainingOptions();
        var scoring = options.Scoring ?? throw new ArgumentException("Scoring options are required", nameof(options));
        if (model.Backend is not CpuBackend)
            throw new NotSupportedException($"adapter training runs on the CPU backend only (the backward ops have no {model.Backend.Name} implementation yet)");
        if (scoring.Attention != AttentionPrecision.Fp32)
            throw new NotSupportedException("adapter training uses fp32 attention (its backward is fp32); int8 attention is for scoring only");
        if (scoring.BatchSize < 1 || scoring.MaxBatchTokens < 1)
            throw new ArgumentOutOfRangeException(nameof(options), "Scoring.BatchSize and Scoring.MaxBatchTokens must be at least 1");
        var parts = options.Trainable ?? DefaultTrainable(adapter);
        CheckParts(adapter, parts);
        if (options.Loss == CtrLoss.Lm && (string.IsNullOrEmpty(options.LmYes) || string.IsNullOrEmpty(options.LmNo)))
            throw new ArgumentException("the LM loss needs non-empty LmYes and LmNo answers", nameof(options));
        if (train.Count == 0) throw new ArgumentException("there are no training examples", nameof(train));

        _model = model;
        _adapter = adapter;
        _options = options with { Trainable = parts };
        _valid = valid;
        _encoder = new CtrPromptEncoder(model, adapter, scoring.Template, scoring.YesAnswer, scoring.NoAnswer);
        _train = Prepare(train, "train");
        if (valid is not null) Prepare(valid, "valid");
        int positives = _train.Count(e => e.Label == 1);
        if (positives == 0 || positives == _train.Length)
            throw new ArgumentException($"the training examples are all {(positives == 0 ? 0 : 1)} ({_train.Length} of them): a click model needs both labels", nameof(train));

        _forward = new BatchForward(model, adapter, AttentionPrecision.Fp32);
        try
        {
            var device = _forward.Adapter!;
            device.EnableGradients(parts);
            _bindings = Bind(device, parts);
            foreach (var b in _bindings) _parameters.Add(b.Parameter);
        }
        catch
        {
            _forward.Dispose();
            throw;
        }
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
    public AdapterParts Trainable => _options.Trainable!.Value;

    /// <summary>The trained tensors, named as in the adapter file (PEFT names), in checkpoint order.</summary>
    public IReadOnlyList<Parameter> Parameters => _parameters;

    /// <summary>Number of training examples.</summary>
    public int TrainingCount => _train.Length;

    /// <summary>Real (unpadded) prompt tokens run forward and backward so far.</summary>
    public long TokensProcessed { get; private set; }

    /// <summary>Most bytes of saved activations and backward scratch held at once so far (device memory of the trainer's
    /// forward/backward buffers; the model's weights and the adapter are not counted).</summary>
    public long PeakActivationBytes { get; private set; }

    /// <summary>Seconds spent in forward passes and in backward passes so far (for reports).</summary>
    public (double Forward, double Backward) Seconds => (_forwardTime.Elapsed.TotalSeconds, _backwardTime.Elapsed.TotalSeconds);

    private readonly Stopwatch _forwardTime = new(), _backwardTime = new();

    /// <inheritdoc/>
    public double ComputeGradients(ReadOnlySpan<int> batch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batch.IsEmpty) throw new ArgumentException("the batch is empty", nameof(batch));
        foreach (int i in batch)
            if ((uint)i >= (uint)_train.Length) throw new ArgumentOutOfRangeException(nameof(batch), i, $"example index outside [0, {_train.Length})");
        SyncToDevice();
        foreach (var p in _parameters) Array.Clear(p.Grad);

        var members = batch.ToArray().Select(i => _train[i]).ToArray();
        bool lm = _options.Loss == CtrLoss.Lm;
        double denominator = lm ? members.Sum(e => e.Answer.Length + e.Prompt.Common) : members.Length;
        var ordered = members.OrderByDescending(Length).ToArray();
        double lossSum = 0;
        var scoring = _options.Scoring;
        for (int start = 0; start < ordered.Length;)
        {
            int t = Length(ordered[start]);
            int count = Math.Min(ordered.Length - start, Math.Max(1, Math.Min(scoring.BatchSize, scoring.MaxBatchTokens / t)));
            var micro = ordered.AsSpan(start, count).ToArray();
            lossSum += MicroBatch(micro, t, 1.0 / denominator);
            start += count;
        }
        return lossSum / denominator;
    }

    private int Length(Example e) => e.Prompt.Ids.Length + (_options.Loss == CtrLoss.Lm ? e.Answer.Length : 0);

    /// <summary>Forward, loss head and backward of one micro-batch; adds scale · ∂(summed loss) to the host gradients and
    /// returns the summed loss.</summary>
    private double MicroBatch(Example[] members, int tokens, double scale)
    {
        bool lm = _options.Loss == CtrLoss.Lm;
        var batch = _encoder.Batch([.. members.Select(m => m.Prompt)], tokens, lm ? [.. members.Select(m => m.Answer)] : null);
        _forwardTime.Start();
        var final = _forward.TrainForward(batch, _options.Recompute);
        _forwardTime.Stop();
        _backwardTime.Start();
        var dFinal = _forward.FinalGradient();
        double loss = lm ? LmHead(members, batch, final, dFinal, scale) : BceHead(members, batch, final, dFinal, scale);
        _forward.Backward();
        foreach (var b in _bindings)
        {
            if (b.Gradient() is not { } g) continue;
            var values = g.ToArray<float>();
            var grad = b.Parameter.Grad;
            for (int i = 0; i < grad.Length; i++) grad[i] += values[i];
        }
        _backwardTime.Stop();
        TokensProcessed += batch.Lengths.Sum();
        PeakActivationBytes = Math.Max(PeakActivationBytes, _forward.TrainingBytes);
        return loss;
    }

    /// <summary>
    /// BCE on p_yes at each sequence's last row: writes ∂(scale · Σ loss)/∂final into <paramref name="dFinal"/>'s last
    /// rows and returns Σ loss. dz = scale · (σ(z) − y) flows to the final-normed hidden state as dz · (W_yes − W_no).
    /// </summary>
    private double BceHead(Example[] members, in ForwardBatch batch, Tensor final, Tensor dFinal, double scale)
    {
        int b = members.Length, t = batch.Tokens;
        var lastRows = new int[b];
        for (int j = 0; j < b; j++) lastRows[j] = j * t + t - 1;
        var ids = new List<int>();
        foreach (var m in members)
        {
            if (!ids.Contains(m.Prompt.YesId)) ids.Add(m.Prompt.YesId);
            if (!ids.Contains(m.Prompt.NoId)) ids.Add(m.Prompt.NoId);
        }
        var head = Head(final, lastRows, ids.ToArray(), out float[] logits, out float[] answerRows);
        int n = ids.Count, h = _model.Config.HiddenSize;
        var dNormed = new float[b * h];
        double loss = 0;
        for (int j = 0; j < b; j++)
        {
            var p = members[j].Prompt;
            int yi = ids.IndexOf(p.YesId), ni = ids.IndexOf(p.NoId);
            double z = (double)logits[j * n + yi] - logits[j * n + ni];
            int y = members[j].Label;
            loss += y == 1 ? Softplus(-z) : Softplus(z);
            double dz = scale * (1.0 / (1.0 + Math.Exp(-z)) - y);
            for (int i = 0; i < h; i++)
                dNormed[j * h + i] = (float)(dz * ((double)answerRows[yi * h + i] - answerRows[ni * h + i]));
        }
        head.Backward(dNormed, dFinal);
        return loss;
    }

    /// <summary>
    /// Causal-LM loss on the answer tokens: row r predicts the token at r + 1. Writes ∂(scale · Σ CE)/∂final and
    /// returns Σ CE over the answer tokens. dlogits = scale · (softmax − onehot), then dNormed = dlogits · W_lm.
    /// </summary>
    private double LmHead(Example[] members, in ForwardBatch batch, Tensor final, Tensor dFinal, double scale)
    {
        int t = batch.Tokens, v = _model.Config.VocabSize;
        var rows = new List<int>();
        var targets = new List<int>();
        for (int j = 0; j < members.Length; j++)
        {
            var e = members[j];
            int length = e.Prompt.Ids.Length + e.Answer.Length, pad = t - length;
            int first = e.Prompt.Ids.Length - e.Prompt.Common;          // position of the first answer token
            for (int pos = first; pos < length; pos++)
            {
                rows.Add(j * t + pad + pos - 1);
                targets.Add(batch.Ids[j * t + pad + pos]);
            }
        }
        var head = Head(final, [.. rows], null, out float[] logits, out _);
        int n = rows.Count;
        var dLogits = new float[(long)n * v];
        double loss = 0;
        for (int i = 0; i < n; i++)
        {
            var row = logits.AsSpan(i * v, v);
            double max = double.NegativeInfinity;
            foreach (float x in row) max = Math.Max(max, x);
            double sum = 0;
            foreach (float x in row) sum += Math.Exp(x - max);
            double logZ = max + Math.Log(sum);
            loss += logZ - row[targets[i]];
            for (int k = 0; k < v; k++) dLogits[(long)i * v + k] = (float)(scale * Math.Exp(row[k] - logZ));
            dLogits[(long)i * v + targets[i]] -= (float)scale;
        }
        head.BackwardThroughLmHead(dLogits, dFinal);
        return loss;
    }

    private static double Softplus(double x) => x > 0 ? x + double.LogP1(Math.Exp(-x)) : double.LogP1(Math.Exp(x));

    /// <summary>
    /// The final norm and lm_head on some rows of the final residual: gathers them, norms them, and computes the logits
    /// of <paramref name="ids"/> (or of the whole vocabulary when null). The returned object runs the way back.
    /// </summary>
    private HeadPass Head(Tensor final, int[] rows, int[]? ids, out float[] logits, out float[] answerRows)
    {
        var c = _model.Config;
        var w = _model.Weights;
        var ops = _model.Backend.Primitives;
        int n = rows.Length, h = c.HiddenSize;
        var pass = new HeadPass(this, rows);
        ops.Embedding(pass.Rows.AsTensor(n), final, pass.Last.AsTensor(n, h));
        ops.RmsNorm(pass.Last.AsTensor(n, h), w.FinalNorm.AsTensor(h), (float)c.RmsNormEps, pass.Normed.AsTensor(n, h));
        if (ids is null)
        {
            using var all = _model.Backend.Allocate(DType.F32, (long)n * c.VocabSize);
            w.LmHead.Apply(ops, pass.Normed.AsTensor(n, h), null, all.AsTensor(n, c.VocabSize));
            logits = all.AsTensor(n * c.VocabSize).ToArray<float>();
            answerRows = [];
            return pass;
        }
        using var idBuffer = _model.Backend.Upload<int>(ids);
        using var weights = _model.Backend.Allocate(DType.F32, (long)ids.Length * h);
        using var result = _model.Backend.Allocate(DType.F32, (long)n * ids.Length);
        w.LmHead.Gather(ops, idBuffer.AsTensor(ids.Length), weights.AsTensor(ids.Length, h));
        ops.Linear(pass.Normed.AsTensor(n, h), weights.AsTensor(ids.Length, h), null, result.AsTensor(n, ids.Length));
        logits = result.AsTensor(n * ids.Length).ToArray<float>();
        answerRows = weights.AsTensor(ids.Length * h).ToArray<float>();
        return pass;
    }

    /// <summary>The rows, pre-norm and normed hidden states of one loss head; frees them after the backward.</summary>
    private sealed class HeadPass(AdapterTrainer owner, int[] rows)
    {
        private readonly ComputeBackend _backend = owner._model.Backend;
        public DeviceBuffer Rows { get; } = owner._model.Backend.Upload<int>(rows);
        public DeviceBuffer Last { get; } = owner._model.Backend.Allocate(DType.F32, Math.Max(1L, (long)rows.Length * owner._model.Config.HiddenSize));
        public DeviceBuffer Normed { get; } = owner._model.Backend.Allocate(DType.F32, Math.Max(1L, (long)rows.Length * owner._model.Config.HiddenSize));

        /// <summary>From ∂L/∂normed (host [n, H]) to the rows of ∂L/∂final (the rest of dFinal stays zero).</summary>
        public void Backward(float[] dNormed, Tensor dFinal)
        {
            int n = rows.Length, h = owner._model.Config.HiddenSize;
            Normed.CopyFrom<float>(dNormed);
            Finish(dFinal, n, h);
        }

        /// <summary>From ∂L/∂logits (host [n, V]) through lm_head (dNormed = dlogits · W_lm, frozen) to ∂L/∂final.</summary>
        public void BackwardThroughLmHead(float[] dLogits, Tensor dFinal)
        {
            var c = owner._model.Config;
            int n = rows.Length, h = c.HiddenSize;
            using var d = _backend.Upload<float>(dLogits);
            _backend.Backward.LinearInput([owner._model.Weights.LmHead.Frozen(d.AsTensor(n, c.VocabSize))], Normed.AsTensor(n, h));
            Finish(dFinal, n, h);
        }

        private void Finish(Tensor dFinal, int n, int h)
        {
            var c = owner._model.Config;
            try
            {
                if (n == 0) return;
                // dNormed (in Normed) → ∂L/∂last through the final RMSNorm, written in place, then scattered into dFinal.
                _backend.Backward.RmsNorm(Last.AsTensor(n, h), owner._model.Weights.FinalNorm.AsTensor(h), (float)c.RmsNormEps,
                    Normed.AsTensor(n, h), Normed.AsTensor(n, h));
                _backend.Primitives.ScatterRows(Normed.AsTensor(n, h), Rows.AsTensor(n), dFinal);
            }
            finally
            {
                Rows.Dispose();
                Last.Dispose();
                Normed.Dispose();
            }
        }
    }

    /// <summary>Scores the validation examples with the current parameters (p_yes, as <see cref="CtrScorer"/>).</summary>
    public ValidationResult? Validate(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_valid is null || _valid.Count == 0) return null;
        var p = Score([.. _valid.Select(e => e.Request)], cancellationToken);
        var m = CtrMetrics.Compute(p, [.. _valid.Select(e => e.Label == 1)]);
        return new ValidationResult(m.Auc, m.LogLoss, m.Accuracy);
    }

    /// <summary>Scores <paramref name="examples"/> with the current parameters: p_yes per example, in order. This is
    /// exactly <see cref="CtrScorer.Score"/> with <see cref="ToAdapter"/> and the trainer's scoring options.</summary>
    public double[] Score(IReadOnlyList<CtrRequest> examples, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(examples);
        using var scorer = new CtrScorer(_model, ToAdapter(), _options.Scoring);
        return [.. scorer.Score(examples, cancellationToken: cancellationToken).Select(s => s.PYes)];
    }

    /// <summary>The adapter with the current parameter values (frozen parts as given), ready to save or score with.</summary>
    public RellaxAdapter ToAdapter(string name = "(trained)")
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var values = _parameters.ToDictionary(p => p.Name, p => p.Value);
        float[] V(float[] original, string key) => values.TryGetValue(key, out var v) ? v : original;
        var targets = _adapter.Targets.Select(t =>
        {
            string N(AdapterTensorRole role) => AdapterTensorNames.Canonical(role, t.Layer, t.Module);
            var g = t.Generator;
            return t with
            {
                A = V(t.A, N(AdapterTensorRole.LoraA)),
                B = V(t.B, N(AdapterTensorRole.LoraB)),
                Generator = g is null ? null : new CfloraGeneratorWeights(V(g.LnWeight, N(AdapterTensorRole.GateLnWeight)),
                    V(g.LnBias, N(AdapterTensorRole.GateLnBias)), V(g.W1, N(AdapterTensorRole.GateW1)), V(g.B1, N(AdapterTensorRole.GateB1)),
                    V(g.W2, N(AdapterTensorRole.GateW2)), V(g.B2, N(AdapterTensorRole.GateB2))),
            };
        }).ToArray();
        var p = _adapter.Projector;
        string P(AdapterTensorRole role) => AdapterTensorNames.Canonical(role);
        var projector = p is null ? null : new SpaProjectorWeights(V(p.W1, P(AdapterTensorRole.ProjW1)), V(p.B1, P(AdapterTensorRole.ProjB1)),
            V(p.W2, P(AdapterTensorRole.ProjW2)), V(p.B2, P(AdapterTensorRole.ProjB2)));
        return RellaxAdapter.Create(_adapter.Config, targets, projector, _model.Config, name);
    }

    /// <summary>Frees the backend memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _forward.Dispose();
    }

    private void SyncToDevice()
    {
        foreach (var b in _bindings) b.Value.Buffer.CopyFrom<float>(b.Parameter.Value, b.Value.Offset);
    }

    private static void CheckParts(RellaxAdapter adapter, AdapterParts parts)
    {
        if (parts == AdapterParts.None || (parts & ~(AdapterParts.Lora | AdapterParts.Gate | AdapterParts.Projector)) != 0)
            throw new ArgumentException($"nothing valid to train: {parts}; choose from lora, gate, projector", nameof(parts));
        if (parts.HasFlag(AdapterParts.Lora) && adapter.Targets.Count == 0)
            throw new ArgumentException($"adapter '{adapter.Directory}' has no LoRA targets to train", nameof(parts));
        if (parts.HasFlag(AdapterParts.Gate) && !adapter.HasGenerators)
            throw new ArgumentException($"adapter '{adapter.Directory}' has no CFLoRA generators (lora_gate) to train; create it with generators (--cflora) or train lora/projector", nameof(parts));
        if (parts.HasFlag(AdapterParts.Projector) && adapter.Projector is null)
            throw new ArgumentException($"adapter '{adapter.Directory}' has no SPA projector (ctr_input_embedding_prj) to train; create it with one (--spa) or train lora/gate", nameof(parts));
    }

    private Example[] Prepare(IReadOnlyList<CtrExample> examples, string split)
    {
        var result = new Example[examples.Count];
        for (int i = 0; i < result.Length; i++)
        {
            try
            {
                var e = examples[i] ?? throw new ArgumentException("the example is null");
                if (e.Label is not (0 or 1)) throw new ArgumentException($"label is {e.Label}; labels must be 0 or 1");
                var prompt = _encoder.Prepare(e.Request ?? throw new ArgumentException("the request is null"));
                int[] answer = [];
                if (_options.Loss == CtrLoss.Lm)
                {
                    answer = _encoder.Continuation(prompt, e.Label == 1 ? _options.LmYes : _options.LmNo);
                    if (prompt.Ids.Length + answer.Length > _encoder.MaxTokens)
                        throw new PromptTooLongException(prompt.Ids.Length + answer.Length, exact: true, _encoder.MaxTokens, _encoder.ContextName());
                }
                result[i] = new Example(prompt, e.Label, answer);
            }
            catch (ArgumentException ex)
            {
                throw new RecordException(split, i, null, ex.Message, ex);
            }
        }
        return result;
    }

    /// <summary>The trained tensors in checkpoint order (per target: A, B, the generator; then the projector).</summary>
    private static Binding[] Bind(DeviceAdapter device, AdapterParts parts)
    {
        var list = new List<Binding>();
        // Every trained tensor takes weight decay, as one PyTorch AdamW parameter group does.
        void Add(string name, Tensor value, Func<Tensor?> grad) =>
            list.Add(new Binding(new Parameter(name, value.Shape.ToArray(), value.ToArray<float>()), value, grad));
        foreach (var t in device.Targets)
        {
            string N(AdapterTensorRole role) => AdapterTensorNames.Canonical(role, t.Layer, t.Module);
            if (parts.HasFlag(AdapterParts.Lora))
            {
                Add(N(AdapterTensorRole.LoraA), t.A, () => t.DA);
                Add(N(AdapterTensorRole.LoraB), t.B, () => t.DB);
            }
            if (parts.HasFlag(AdapterParts.Gate) && t.Generator is { } g)
            {
                Add(N(AdapterTensorRole.GateLnWeight), g.LnWeight, () => t.GeneratorGrad!.LnWeight);
                Add(N(AdapterTensorRole.GateLnBias), g.LnBias, () => t.GeneratorGrad!.LnBias);
                Add(N(AdapterTensorRole.GateW1), g.W1, () => t.GeneratorGrad!.W1);
                Add(N(AdapterTensorRole.GateB1), g.B1, () => t.GeneratorGrad!.B1);
                Add(N(AdapterTensorRole.GateW2), g.W2, () => t.GeneratorGrad!.W2);
                Add(N(AdapterTensorRole.GateB2), g.B2, () => t.GeneratorGrad!.B2);
            }
        }
        if (parts.HasFlag(AdapterParts.Projector) && device.Projector is { } p)
        {
            string P(AdapterTensorRole role) => AdapterTensorNames.Canonical(role);
            Add(P(AdapterTensorRole.ProjW1), p.W1, () => device.ProjectorGrad!.W1);
            Add(P(AdapterTensorRole.ProjB1), p.B1, () => device.ProjectorGrad!.B1);
            Add(P(AdapterTensorRole.ProjW2), p.W2, () => device.ProjectorGrad!.W2);
            Add(P(AdapterTensorRole.ProjB2), p.B2, () => device.ProjectorGrad!.B2);
        }
        return [.. list];
    }
}
