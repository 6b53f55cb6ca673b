using System.Diagnostics;

namespace Rellax.Runtime.Training;

/// <summary>
/// A model the <see cref="TrainingLoop"/> can train: its parameters, a forward + backward over a batch of training
/// examples, and an evaluation on the validation split. The DIN trainer and the adapter trainer implement it.
/// </summary>
public interface ITrainable
{
    /// <summary>The trained parameters (fixed for the model's lifetime, in checkpoint order).</summary>
    IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>Number of training examples (the loop draws batches of their indices).</summary>
    int TrainingCount { get; }

    /// <summary>
    /// Forward and backward over the training examples <paramref name="batch"/>: overwrites every parameter's
    /// <see cref="Parameter.Grad"/> with the gradient of the batch's mean loss, and returns that mean loss.
    /// </summary>
    double ComputeGradients(ReadOnlySpan<int> batch);

    /// <summary>Scores the validation split with the current parameters.</summary>
    /// <returns>The validation metrics, or null when there is no validation split.</returns>
    ValidationResult? Validate(CancellationToken cancellationToken);
}

/// <summary>Metrics of one validation pass.</summary>
/// <param name="Auc">ROC AUC; NaN when undefined (a single class).</param>
/// <param name="LogLoss">Mean binary log loss.</param>
/// <param name="Accuracy">Share of correct predictions at 0.5.</param>
public readonly record struct ValidationResult(double Auc, double LogLoss, double Accuracy);

/// <summary>Settings of a <see cref="TrainingLoop"/>.</summary>
public sealed record TrainingOptions
{
    /// <summary>Passes over the training examples (at least 1); <see cref="MaxSteps"/> may end the run sooner.</summary>
    public int Epochs { get; init; } = 10;
    /// <summary>A cap on optimizer steps (0 = none): the run ends after this many steps, with a validation, even in the
    /// middle of an epoch (that epoch is then partial). The learning-rate schedule spans the capped run.</summary>
    public int MaxSteps { get; init; }
    /// <summary>Also validate every this many optimizer steps (0 = only after each epoch). Every validation may become
    /// the best checkpoint, and <see cref="Patience"/> then counts validations.</summary>
    public int ValidateEvery { get; init; }
    /// <summary>Examples per step (at least 1); the last batch of an epoch may be smaller.</summary>
    public int BatchSize { get; init; } = 256;
    /// <summary>Base learning rate (finite, &gt; 0).</summary>
    public float LearningRate { get; init; } = 1e-3f;
    /// <summary>Decoupled weight decay λ (AdamW) or L2 (SGD), &gt;= 0.</summary>
    public float WeightDecay { get; init; }
    /// <summary><c>adamw</c> or <c>sgd</c>.</summary>
    public string Optimizer { get; init; } = "adamw";
    /// <summary>Clip gradients to this global norm; 0 = off.</summary>
    public double ClipNorm { get; init; }
    /// <summary>Warm-up steps of the linear schedule (0 = none).</summary>
    public int WarmupSteps { get; init; }
    /// <summary>Decay the learning rate linearly to 0 over all steps (off: constant after warm-up).</summary>
    public bool LinearDecay { get; init; }
    /// <summary>Stop after this many validations without a better score (0 = never stop early); without
    /// <see cref="ValidateEvery"/> a validation is an epoch.</summary>
    public int Patience { get; init; } = 2;
    /// <summary>Seed of the shuffling.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "epochs must be at least 1");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "batch size must be at least 1");
        if (!(LearningRate > 0) || !float.IsFinite(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "the learning rate must be finite and > 0");
        if (!(WeightDecay >= 0) || !float.IsFinite(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "weight decay must be finite and >= 0");
        if (!(ClipNorm >= 0) || !double.IsFinite(ClipNorm)) throw new ArgumentOutOfRangeException(nameof(ClipNorm), ClipNorm, "the clipping norm must be finite and >= 0");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, "warm-up steps must be >= 0");
        if (Patience < 0) throw new ArgumentOutOfRangeException(nameof(Patience), Patience, "patience must be >= 0");
        if (MaxSteps < 0) throw new ArgumentOutOfRangeException(nameof(MaxSteps), MaxSteps, "the step cap must be >= 0");
        if (ValidateEvery < 0) throw new ArgumentOutOfRangeException(nameof(ValidateEvery), ValidateEvery, "the validation interval must be >= 0");
        _ = Training.Optimizer.Create(Optimizer, WeightDecay);
    }
}

/// <summary>One optimizer step, as reported to <see cref="TrainingLoop.StepCompleted"/>.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="Step">1-based step within the epoch.</param>
/// <param name="GlobalStep">1-based step over the run.</param>
/// <param name="StepsPerEpoch">Steps in an epoch.</param>
/// <param name="Loss">The batch's mean loss.</param>
/// <param name="LearningRate">The learning rate used.</param>
public readonly record struct StepRecord(int Epoch, int Step, int GlobalStep, int StepsPerEpoch, double Loss, float LearningRate);

/// <summary>One finished epoch (the last one partial when <see cref="TrainingOptions.MaxSteps"/> ended it), as reported
/// to <see cref="TrainingLoop.EpochCompleted"/>.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="GlobalStep">Steps done so far.</param>
/// <param name="TrainLoss">Mean of the epoch's batch losses, weighted by batch size.</param>
/// <param name="Valid">Validation metrics at the epoch's end, or null without a validation split.</param>
/// <param name="Seconds">Wall time of the epoch's training steps (validations excluded).</param>
/// <param name="IsBest">Whether the epoch's end is the best so far (its parameters were kept).</param>
public readonly record struct EpochRecord(int Epoch, int GlobalStep, double TrainLoss, ValidationResult? Valid, double Seconds, bool IsBest);

/// <summary>One validation, as reported to <see cref="TrainingLoop.Validated"/> and <see cref="TrainingLoop.BestChanged"/>:
/// after each epoch, every <see cref="TrainingOptions.ValidateEvery"/> steps, and at the step cap.</summary>
/// <param name="Epoch">1-based epoch it happened in.</param>
/// <param name="GlobalStep">Steps done so far (the parameters validated are those after this step).</param>
/// <param name="Valid">Validation metrics, or null without a validation split.</param>
/// <param name="IsBest">Whether this is the best validation so far (its parameters were kept).</param>
/// <param name="EpochEnd">Whether it is an epoch's (or the capped run's) final validation.</param>
public readonly record struct ValidationRecord(int Epoch, int GlobalStep, ValidationResult? Valid, bool IsBest, bool EpochEnd);

/// <summary>The outcome of <see cref="TrainingLoop.Run"/>.</summary>
/// <param name="Epochs">Every finished epoch (the last one partial when the step cap ended it).</param>
/// <param name="BestEpoch">The epoch of the validation whose parameters the model holds at the end (1-based).</param>
/// <param name="StoppedEarly">Whether patience ran out before the last step.</param>
/// <param name="SelectedOn">What chose the best validation: <c>valid_auc</c>, <c>valid_logloss</c> (AUC undefined: a
/// single class) or <c>last_epoch</c> (no validation split: the last parameters).</param>
public sealed record TrainingResult(IReadOnlyList<EpochRecord> Epochs, int BestEpoch, bool StoppedEarly, string SelectedOn)
{
    /// <summary>The global step of the kept parameters.</summary>
    public int BestStep { get; init; }

    /// <summary>Optimizer steps run.</summary>
    public int Steps { get; init; }

    /// <summary>Whether <see cref="TrainingOptions.MaxSteps"/> ended the run.</summary>
    public bool ReachedMaxSteps { get; init; }
}

/// <summary>The loss became NaN or ∞, or an update made a trained tensor non-finite: training stopped; the model holds the
/// last good (best) parameters.</summary>
public sealed class TrainingDivergedException : Exception
{
    /// <summary>The loss of a step was <paramref name="loss"/> (NaN or ∞).</summary>
    public TrainingDivergedException(int epoch, int step, double loss)
        : base($"the training loss became {loss} at epoch {epoch}, step {step}; training stopped (the last good checkpoint is kept)")
    {
        Epoch = epoch;
        Step = step;
    }

    /// <summary>The update of a step made the trained tensor <paramref name="parameter"/> NaN or ∞ (its loss was finite).</summary>
    public TrainingDivergedException(int epoch, int step, string parameter)
        : base($"the update of epoch {epoch}, step {step} made {parameter} NaN or infinite; training stopped (the last good checkpoint is kept)")
    {
        Epoch = epoch;
        Step = step;
        Parameter = parameter;
    }

    /// <summary>1-based epoch.</summary>
    public int Epoch { get; }
    /// <summary>1-based step within the epoch.</summary>
    public int Step { get; }
    /// <summary>The trained tensor that became non-finite, or null when the loss did.</summary>
    public string? Parameter { get; }
}

/// <summary>
/// The training loop shared by every trainer: seeded shuffling each epoch, batches of <see cref="TrainingOptions.BatchSize"/>,
/// optional clipping, a warm-up/linear-decay schedule, the optimizer; validation after each epoch (and every
/// <see cref="TrainingOptions.ValidateEvery"/> steps); an optional step cap; early stopping on valid AUC with patience,
/// keeping the best parameters (never selected on a test split: the loop never sees one).
/// </summary>
/// <remarks>
/// At the end (normal, early stop, step cap, divergence or cancellation) the model's parameters are restored to the best
/// validation's (the last one's when there is no validation split). <see cref="BestChanged"/> is raised after each new
/// best, so a caller can write the checkpoint at once: a run that is stopped keeps the best complete checkpoint.
/// Cancellation is checked between steps and throws <see cref="OperationCanceledException"/>.
/// </remarks>
public sealed class TrainingLoop(ITrainable model, TrainingOptions options)
{
    private readonly ITrainable _model = model ?? throw new ArgumentNullException(nameof(model));
    private readonly TrainingOptions _options = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>Raised after every optimizer step.</summary>
    public event Action<StepRecord>? StepCompleted;

    /// <summary>Raised after every epoch, after its final validation.</summary>
    public event Action<EpochRecord>? EpochCompleted;

    /// <summary>Raised after every validation (epoch ends included), after <see cref="BestChanged"/>.</summary>
    public event Action<ValidationRecord>? Validated;

    /// <summary>Raised when a validation becomes the best so far; the model's parameters are the validated ones during the call.</summary>
    public event Action<ValidationRecord>? BestChanged;

    /// <summary>Trains; see the class remarks.</summary>
    /// <exception cref="TrainingDivergedException">The loss became NaN or ∞, or an update made a parameter so (the model
    /// holds the best parameters).</exception>
    /// <exception cref="OperationCanceledException">Cancelled between two steps (the model holds the best parameters).</exception>
    /// <param name="progress">Receives <c>("train", steps done, total steps)</c> after every step, the total being
    /// min(steps per epoch × epochs, <see cref="TrainingOptions.MaxSteps"/>); early stopping (patience) ends the reports short of it.</param>
    /// <param name="cancellationToken">Checked before every step and validation.</param>
    public TrainingResult Run(IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        _options.Validate();
        cancellationToken.ThrowIfCancellationRequested();
        int n = _model.TrainingCount;
        if (n < 1) throw new InvalidOperationException("there are no training examples");
        var parameters = _model.Parameters;
        var optimizer = Optimizer.Create(_options.Optimizer, _options.WeightDecay);
        int stepsPerEpoch = (n + _options.BatchSize - 1) / _options.BatchSize;
        int totalSteps = checked(stepsPerEpoch * _options.Epochs);
        if (_options.MaxSteps > 0) totalSteps = Math.Min(totalSteps, _options.MaxSteps);
        var schedule = _options.LinearDecay || _options.WarmupSteps > 0
            ? new LinearSchedule(totalSteps, Math.Min(_options.WarmupSteps, totalSteps)) : null;
        bool decay = _options.LinearDecay;
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        var random = new Random(_options.Seed);
        var epochs = new List<EpochRecord>();
        float[][]? best = null;
        int bestEpoch = 0, bestStep = 0, sinceBest = 0, globalStep = 0;
        double bestScore = double.NegativeInfinity;
        string selectedOn = "last_epoch";
        bool stop = false;

        // Validates the current parameters; keeps them when they are the best so far. Returns the record and whether
        // patience ran out.
        (ValidationRecord Record, bool OutOfPatience) Check(int epoch, bool epochEnd)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var valid = _model.Validate(cancellationToken);
            double score;
            if (valid is null) { score = globalStep; selectedOn = "last_epoch"; }
            else if (double.IsNaN(valid.Value.Auc)) { score = -valid.Value.LogLoss; selectedOn = "valid_logloss"; }
            else { score = valid.Value.Auc; selectedOn = "valid_auc"; }
            bool isBest = score > bestScore || best is null;
            var record = new ValidationRecord(epoch, globalStep, valid, isBest, epochEnd);
            if (isBest)
            {
                bestScore = score;
                bestEpoch = epoch;
                bestStep = globalStep;
                sinceBest = 0;
                best = Snapshot(parameters, best);
                BestChanged?.Invoke(record);
            }
            else sinceBest++;
            Validated?.Invoke(record);
            return (record, _options.Patience > 0 && sinceBest >= _options.Patience);
        }

        try
        {
            for (int epoch = 1; epoch <= _options.Epochs && !stop; epoch++)
            {
                random.Shuffle(order);
                var clock = Stopwatch.StartNew();
                double lossSum = 0;
                int seen = 0;
                ValidationRecord? stoppedAt = null;
                for (int s = 0; s < stepsPerEpoch && globalStep < totalSteps; s++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int first = s * _options.BatchSize, count = Math.Min(_options.BatchSize, n - first);
                    double loss = _model.ComputeGradients(order.AsSpan(first, count));
                    if (!double.IsFinite(loss)) throw new TrainingDivergedException(epoch, s + 1, loss);
                    if (_options.ClipNorm > 0) GradientClipping.ClipByGlobalNorm(parameters, _options.ClipNorm);
                    float factor = schedule is null ? 1f
                        : decay ? schedule.Factor(globalStep)
                        : globalStep < _options.WarmupSteps ? schedule.Factor(globalStep) : 1f;
                    float lr = _options.LearningRate * factor;
                    optimizer.Step(parameters, lr);
                    // An overflowing update (a huge learning rate) can leave a finite loss behind it: never validate,
                    // keep or save non-finite parameters. MaxMagnitude is NaN or ∞ exactly when some value is.
                    foreach (var p in parameters)
                        if (!float.IsFinite(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude<float>(p.Value)))
                            throw new TrainingDivergedException(epoch, s + 1, p.Name);
                    globalStep++;
                    lossSum += loss * count;
                    seen += count;
                    StepCompleted?.Invoke(new StepRecord(epoch, s + 1, globalStep, stepsPerEpoch, loss, lr));
                    progress?.Report(new WorkProgress("train", globalStep, totalSteps));
                    bool endsEpoch = s == stepsPerEpoch - 1 || globalStep == totalSteps;
                    if (!endsEpoch && _options.ValidateEvery > 0 && globalStep % _options.ValidateEvery == 0)
                    {
                        clock.Stop();
                        var (mid, outOfPatience) = Check(epoch, epochEnd: false);
                        clock.Start();
                        if (outOfPatience)
                        {
                            stop = true;
                            stoppedAt = mid;
                            break;
                        }
                    }
                }
                double seconds = clock.Elapsed.TotalSeconds;
                // Patience that ran out mid-epoch ends the epoch at that validation; otherwise the epoch's end is validated.
                var (end, endOutOfPatience) = stoppedAt is { } at ? (at, true) : Check(epoch, epochEnd: true);
                var record = new EpochRecord(epoch, globalStep, lossSum / Math.Max(seen, 1), end.Valid, seconds, end.IsBest);
                epochs.Add(record);
                EpochCompleted?.Invoke(record);
                if (globalStep >= totalSteps) break;
                if (endOutOfPatience && epoch < _options.Epochs) stop = true;
            }
        }
        finally
        {
            if (best is not null) Restore(parameters, best);
        }
        return new TrainingResult(epochs, bestEpoch, stop, selectedOn)
        {
            BestStep = bestStep, Steps = globalStep, ReachedMaxSteps = _options.MaxSteps > 0 && globalStep >= _options.MaxSteps,
        };
    }

    private static float[][] Snapshot(IReadOnlyList<Parameter> parameters, float[][]? into)
    {
        into ??= [.. parameters.Select(p => new float[p.Length])];
        for (int i = 0; i < parameters.Count; i++) parameters[i].Value.CopyTo(into[i], 0);
        return into;
    }

    private static void Restore(IReadOnlyList<Parameter> parameters, float[][] from)
    {
        for (int i = 0; i < parameters.Count; i++) from[i].CopyTo(parameters[i].Value, 0);
    }
}
