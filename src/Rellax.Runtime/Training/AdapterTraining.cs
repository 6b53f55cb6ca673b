using System.Diagnostics;
using System.Text.Json;

namespace Rellax.Runtime.Training;

/// <summary>The outcome of <see cref="AdapterTraining.Train"/>.</summary>
/// <param name="Loop">The loop's record (epochs, steps, best step, early stop).</param>
/// <param name="BestValid">The validation metrics of the kept parameters (null without a validation set).</param>
/// <param name="Tokens">Real prompt tokens run forward and backward by the training steps (validation excluded).</param>
/// <param name="StepSeconds">Wall time of the training steps (validation excluded).</param>
/// <param name="Seconds">Wall time of the whole run.</param>
/// <param name="PeakActivationBytes">Most bytes of saved activations and backward scratch held at once.</param>
public sealed record AdapterTrainingResult(TrainingResult Loop, ValidationResult? BestValid, long Tokens, double StepSeconds, double Seconds, long PeakActivationBytes)
{
    /// <summary>Training tokens per second of step time (0 when no time passed).</summary>
    public double TokensPerSecond => StepSeconds > 0 ? Tokens / StepSeconds : 0;
}

/// <summary>
/// Runs an <see cref="AdapterTrainer"/> in the shared <see cref="TrainingLoop"/> and writes into a folder what
/// <c>rellax train</c> leaves: the adapter (<see cref="RellaxAdapter.Save"/>, PEFT names, loadable by <c>rellax score</c>
/// and <c>eval</c> as it is) rewritten at every new best validation, and the log <see cref="LogFile"/>.
/// </summary>
public static class AdapterTraining
{
    /// <summary>The training log's file name (JSON Lines): one line per optimizer step
    /// (<c>{"step", "epoch", "loss", "lr", "tokens_per_second"}</c>) and one per validation
    /// (<c>{"step", "epoch", "valid_auc", "valid_logloss", "valid_accuracy", "best"}</c>; AUC null when undefined).</summary>
    public const string LogFile = "training.jsonl";

    /// <summary>
    /// Trains and writes into <paramref name="directory"/> (which must exist; the caller makes it a temporary folder and
    /// renames it when this returns). The adapter is written after every validation that is the best so far, so when
    /// training stops early (a NaN loss, cancellation) the folder holds the last good checkpoint, or no adapter when no
    /// validation had happened yet.
    /// </summary>
    /// <param name="trainer">The trainer (its parameters end at the best validation's values).</param>
    /// <param name="options">The loop's settings.</param>
    /// <param name="directory">The output folder.</param>
    /// <param name="adapterName">What the saved adapter calls itself in messages until it is loaded again.</param>
    /// <param name="onStep">Called after every step with the step's training tokens per second (progress).</param>
    /// <param name="onValidation">Called after every validation.</param>
    /// <param name="progress">Receives <c>("train", steps done, total steps)</c> after every step (<see cref="TrainingLoop.Run"/>).</param>
    /// <param name="cancellationToken">Checked between steps.</param>
    /// <exception cref="TrainingDivergedException">The loss became NaN or ∞.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public static AdapterTrainingResult Train(AdapterTrainer trainer, TrainingOptions options, string directory, string adapterName = "(trained)",
        Action<StepRecord, double>? onStep = null, Action<ValidationRecord>? onValidation = null,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(trainer);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var total = Stopwatch.StartNew();
        using var log = new StreamWriter(Path.Combine(directory, LogFile), append: false, new System.Text.UTF8Encoding(false));
        var loop = new TrainingLoop(trainer, options);
        var stepClock = Stopwatch.StartNew();
        long tokensBefore = trainer.TokensProcessed, trainTokens = 0;
        double stepSeconds = 0;
        ValidationResult? bestValid = null;
        loop.StepCompleted += s =>
        {
            double seconds = stepClock.Elapsed.TotalSeconds;
            stepSeconds += seconds;
            long tokens = trainer.TokensProcessed;
            double perSecond = seconds > 0 ? (tokens - tokensBefore) / seconds : 0;
            trainTokens += tokens - tokensBefore;
            tokensBefore = tokens;
            log.WriteLine(JsonSerializer.Serialize(new { step = s.GlobalStep, epoch = s.Epoch, loss = s.Loss, lr = s.LearningRate, tokens_per_second = Math.Round(perSecond, 1) }));
            log.Flush();
            onStep?.Invoke(s, perSecond);
            stepClock.Restart();
        };
        loop.BestChanged += v =>
        {
            bestValid = v.Valid;
            trainer.ToAdapter(adapterName).Save(directory);
        };
        loop.Validated += v =>
        {
            log.WriteLine(JsonSerializer.Serialize(new
            {
                step = v.GlobalStep, epoch = v.Epoch,
                valid_auc = v.Valid is { } m && double.IsFinite(m.Auc) ? m.Auc : (double?)null,
                valid_logloss = v.Valid?.LogLoss, valid_accuracy = v.Valid?.Accuracy, best = v.IsBest,
            }));
            log.Flush();
            onValidation?.Invoke(v);
            tokensBefore = trainer.TokensProcessed;   // whatever validation counted is not training
            stepClock.Restart();
        };
        var result = loop.Run(progress, cancellationToken);
        return new AdapterTrainingResult(result, bestValid, trainTokens, stepSeconds, total.Elapsed.TotalSeconds, trainer.PeakActivationBytes);
    }
}
