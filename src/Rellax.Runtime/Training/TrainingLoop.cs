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
    /// <summary>Passes over the training examples (at least 1).</summary>
    public int Epochs { get; init; } = 10;
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
    /// <summary>Stop after this many epochs without a better validation score (0 = never stop early).</summary>
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

/// <summary>One finished epoch, as reported to <see cref="TrainingLoop.EpochCompleted"/>.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="GlobalStep">Steps done so far.</param>
/// <param name="TrainLoss">Mean of the epoch's batch losses, weighted by batch size.</param>
/// <param name="Valid">Validation metrics, or null without a validation split.</param>
/// <param name="Seconds">Wall time of the epoch's training steps (validation excluded).</param>
/// <param name="IsBest">Whether this epoch is the best so far (its parameters were kept).</param>
public readonly record struct EpochRecord(int Epoch, int GlobalStep, double TrainLoss, ValidationResult? Valid, double Seconds, bool IsBest);

/// <summary>The outcome of <see cref="TrainingLoop.Run"/>.</summary>
/// <param name="Epochs">Every finished epoch.</param>
/// <param name="BestEpoch">The epoch whose parameters the model holds at the end (1-based).</param>
/// <param name="StoppedEarly">Whether patience ran out before the last epoch.</param>
/// <param name="SelectedOn">What chose the best epoch: <c>valid_auc</c>, <c>valid_logloss</c> (AUC undefined: a single
/// class) or <c>last_epoch</c> (no validation split).</param>
public sealed record TrainingResult(IReadOnlyList<EpochRecord> Epochs, int BestEpoch, bool StoppedEarly, string SelectedOn);

/// <summary>The loss became NaN or ∞: training stopped; the model holds the last good (best) parameters.</summary>
public sealed class TrainingDivergedException(int epoch, int step, double loss)
    : Exception($"the training loss became {loss} at epoch {epoch}, step {step}; training stopped (the last good checkpoint is kept)")
{
    /// <summary>1-based epoch.</summary>
    public int Epoch { get; } = epoch;
    /// <summary>1-based step within the epoch.</summary>
    public int Step { get; } = step;
}

/// <summary>
/// The training loop shared by every trainer: seeded shuffling each epoch, batches of <see cref="TrainingOptions.BatchSize"/>,
/// optional clipping, a warm-up/linear-decay schedule, the optimizer; validation after each epoch; early stopping on
/// valid AUC with patience, keeping the best parameters (never selected on a test split: the loop never sees one).
/// </summary>
/// <remarks>
/// At the end (normal, early stop, divergence or cancellation) the model's parameters are restored to the best epoch's
/// (the last epoch's when there is no validation split). <see cref="BestChanged"/> is raised after each new best, so a
/// caller can write the checkpoint at once: a run that is stopped keeps the best complete checkpoint.
/// Cancellation is checked between steps and throws <see cref="OperationCanceledException"/>.
/// </remarks>
public sealed class TrainingLoop(ITrainable model, TrainingOptions options)
{
    private readonly ITrainable _model = model ?? throw new ArgumentNullException(nameof(model));
    private readonly TrainingOptions _options = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>Raised after every optimizer step.</summary>
    public event Action<StepRecord>? StepCompleted;

    /// <summary>Raised after every epoch's validation.</summary>
    public event Action<EpochRecord>? EpochCompleted;

    /// <summary>Raised when an epoch becomes the best so far; the model's parameters are that epoch's during the call.</summary>
    public event Action<EpochRecord>? BestChanged;

    /// <summary>Trains; see the class remarks.</summary>
    /// <exception cref="TrainingDivergedException">The loss became NaN or ∞ (the model holds the best parameters).</exception>
    /// <exception cref="OperationCanceledException">Cancelled between two steps (the model holds the best parameters).</exception>
    public TrainingResult Run(CancellationToken cancellationToken = default)
    {
        _options.Validate();
        int n = _model.TrainingCount;
        if (n < 1) throw new InvalidOperationException("there are no training examples");
        var parameters = _model.Parameters;
        var optimizer = Optimizer.Create(_options.Optimizer, _options.WeightDecay);
        int stepsPerEpoch = (n + _options.BatchSize - 1) / _options.BatchSize;
        int totalSteps = checked(stepsPerEpoch * _options.Epochs);
        var schedule = _options.LinearDecay || _options.WarmupSteps > 0
            ? new LinearSchedule(totalSteps, Math.Min(_options.WarmupSteps, totalSteps)) : null;
        bool decay = _options.LinearDecay;
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        var random = new Random(_options.Seed);
        var epochs = new List<EpochRecord>();
        float[][]? best = null;
        int bestEpoch = 0, sinceBest = 0, globalStep = 0;
        double bestScore = double.NegativeInfinity;
        string selectedOn = "last_epoch";
        bool stoppedEarly = false;
        try
        {
            for (int epoch = 1; epoch <= _options.Epochs; epoch++)
            {
                random.Shuffle(order);
                var clock = Stopwatch.StartNew();
                double lossSum = 0;
                for (int s = 0; s < stepsPerEpoch; s++)
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
                    globalStep++;
                    lossSum += loss * count;
                    StepCompleted?.Invoke(new StepRecord(epoch, s + 1, globalStep, stepsPerEpoch, loss, lr));
                }
                double seconds = clock.Elapsed.TotalSeconds;
                var valid = _model.Validate(cancellationToken);
                double score;
                if (valid is null) { score = epoch; selectedOn = "last_epoch"; }
                else if (double.IsNaN(valid.Value.Auc)) { score = -valid.Value.LogLoss; selectedOn = "valid_logloss"; }
                else { score = valid.Value.Auc; selectedOn = "valid_auc"; }
                bool isBest = score > bestScore || best is null;
                var record = new EpochRecord(epoch, globalStep, lossSum / n, valid, seconds, isBest);
                epochs.Add(record);
                if (isBest)
                {
                    bestScore = score;
                    bestEpoch = epoch;
                    sinceBest = 0;
                    best = Snapshot(parameters, best);
                    BestChanged?.Invoke(record);
                }
                else sinceBest++;
                EpochCompleted?.Invoke(record);
                if (_options.Patience > 0 && sinceBest >= _options.Patience && epoch < _options.Epochs)
                {
                    stoppedEarly = true;
                    break;
                }
            }
        }
        finally
        {
            if (best is not null) Restore(parameters, best);
        }
        return new TrainingResult(epochs, bestEpoch, stoppedEarly, selectedOn);
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
