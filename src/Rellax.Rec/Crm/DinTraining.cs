using Rellax.Kernels;
using Rellax.Runtime;
using System.Text.Json;
using Rellax.Runtime.Training;

namespace Rellax.Rec;

/// <summary>Settings of <see cref="DinTraining.Train"/> (the <c>rellax crm train</c> options).</summary>
public sealed record DinTrainingOptions
{
    /// <summary>History events per sample (the most recent), at least 1.</summary>
    public int K { get; init; } = 30;
    /// <summary>E, the embedding size.</summary>
    public int EmbedDim { get; init; } = 32;
    /// <summary>The loop's settings (epochs, batch size, learning rate, weight decay, patience, seed).</summary>
    public TrainingOptions Loop { get; init; } = new() { Epochs = 10, BatchSize = 256, LearningRate = 1e-3f, Patience = 2 };
    /// <summary>Standard deviation σ of the embedding table's N(0, σ²) initialisation (1: PyTorch's <c>nn.Embedding</c>
    /// default, which the reference keeps).</summary>
    public double EmbeddingInitStd { get; init; } = 1;
    /// <summary>Dropout probability after each tower layer while training, in [0, 1) (0: none; the reference's MLP blocks
    /// have a <c>hidden_dropout_rate</c>). Evaluation and saved models never drop.</summary>
    public float Dropout { get; init; }
    /// <summary>Fields of <see cref="DinConfig.For"/>'s layout to leave out (e.g. <c>location</c>, <c>user</c>); the
    /// written config lists only the kept ones. Empty: every field.</summary>
    public IReadOnlyList<string> DropFields { get; init; } = [];
    /// <summary>Whether to score the test split at the end (false while tuning, so no test number is ever seen; the
    /// result's <see cref="DinTrainingResult.Test"/> is then null and <c>training.json</c> has no test metrics).</summary>
    public bool EvaluateTest { get; init; } = true;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (K < 1) throw new ArgumentOutOfRangeException(nameof(K), K, "the history length must be at least 1");
        if (EmbedDim < 1) throw new ArgumentOutOfRangeException(nameof(EmbedDim), EmbedDim, "the embedding size must be at least 1");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "dropout must be in [0, 1)");
        if (!(EmbeddingInitStd > 0) || !double.IsFinite(EmbeddingInitStd))
            throw new ArgumentOutOfRangeException(nameof(EmbeddingInitStd), EmbeddingInitStd, "the embedding init std must be finite and > 0");
        ArgumentNullException.ThrowIfNull(DropFields);
        Loop.Validate();
    }
}

/// <summary>The outcome of <see cref="DinTraining.Train"/>.</summary>
/// <param name="Loop">The loop's record (epochs, best epoch, early stop).</param>
/// <param name="Valid">Metrics of the kept model on the valid split (null when it is empty).</param>
/// <param name="Test">Metrics of the kept model on the test split (null when it is empty or
/// <see cref="DinTrainingOptions.EvaluateTest"/> is false); reported, never used to select.</param>
/// <param name="TrainSamples">Training samples.</param>
/// <param name="Seconds">Wall time of the whole run.</param>
public sealed record DinTrainingResult(TrainingResult Loop, CtrMetrics? Valid, CtrMetrics? Test, int TrainSamples, double Seconds);

/// <summary>
/// DIN training on a prepared dataset (<c>rellax crm train</c>): encodes the train, valid and test splits with
/// <see cref="DinConfig.For"/>'s layout, trains with <see cref="DinTrainer"/> in the shared <see cref="TrainingLoop"/>
/// (early stopping on valid AUC), and writes the checkpoint (<c>config.json</c>, <c>model.safetensors</c>: the files
/// <see cref="DinModel.Load(string)"/> reads) and the log <c>training.jsonl</c> into a folder.
/// </summary>
public static class DinTraining
{
    /// <summary>The training log's file name (JSON Lines).</summary>
    public const string LogFile = "training.jsonl";

    /// <summary>The run's summary file name (options and final metrics; <c>crm score</c> reads its <c>k</c>).</summary>
    public const string SummaryFile = "training.json";

    /// <summary>Steps between two step lines of the log.</summary>
    public const int LogEvery = 50;

    /// <summary>
    /// Trains DIN on <paramref name="set"/>'s train split and writes into <paramref name="directory"/> (which must exist;
    /// the caller makes it a temporary folder and renames it when this returns). The checkpoint is rewritten after every
    /// epoch that improves the valid score, so when training stops early (a NaN loss, cancellation) the folder holds the
    /// last good checkpoint, or no checkpoint when no epoch finished.
    /// </summary>
    /// <param name="backend">A <see cref="Kernels.Cpu.CpuBackend"/>: DIN training runs on the CPU only (its threads bound the
    /// work). The caller's, not disposed.</param>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="options">The settings.</param>
    /// <param name="directory">The output folder.</param>
    /// <param name="onStep">Called after every step (progress).</param>
    /// <param name="onEpoch">Called after every epoch's validation.</param>
    /// <param name="progress">Receives <c>("train", steps done, total steps)</c> after every step (<see cref="TrainingLoop.Run"/>).</param>
    /// <param name="cancellationToken">Checked between steps.</param>
    /// <exception cref="ArgumentException"><paramref name="backend"/> is not the CPU backend; an empty train split, or one
    /// whose labels are all one class.</exception>
    /// <exception cref="TrainingDivergedException">The loss became NaN or ∞.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public static DinTrainingResult Train(ComputeBackend backend, SampleSet set, DinTrainingOptions options, string directory,
        Action<StepRecord>? onStep = null, Action<EpochRecord>? onEpoch = null,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        DinTrainer.RequireCpu(backend, nameof(backend));
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        cancellationToken.ThrowIfCancellationRequested();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var config = DinConfig.For(set.Dataset, options.EmbedDim, options.DropFields);
        var encoding = DinEncoding.Create(config, set.Dataset);
        var train = Encode(encoding, set, SampleSplit.Train, options.K);
        var valid = Encode(encoding, set, SampleSplit.Valid, options.K);
        var test = options.EvaluateTest ? Encode(encoding, set, SampleSplit.Test, options.K) : null;
        if (train.Count == 0) throw new ArgumentException("the train split is empty: there is nothing to train on");
        int positives = train.Positives;
        if (positives == 0 || positives == train.Count)
            throw new ArgumentException($"the train split's {train.Count} samples are all {(positives == 0 ? "negative" : "positive")}: a click model needs both classes");

        using var trainer = new DinTrainer(backend, config, train, valid.Count > 0 ? valid : null, Math.Min(options.Loop.BatchSize, train.Count), options.Loop.Seed, options.EmbeddingInitStd, options.Dropout);
        string logPath = Path.Combine(directory, LogFile);
        using var log = new StreamWriter(logPath, append: false, new System.Text.UTF8Encoding(false));
        var loop = new TrainingLoop(trainer, options.Loop);
        double stepSeconds = 0;
        var stepClock = System.Diagnostics.Stopwatch.StartNew();
        loop.StepCompleted += s =>
        {
            if (s.GlobalStep % LogEvery == 0)
            {
                log.WriteLine(JsonSerializer.Serialize(new { epoch = s.Epoch, step = s.GlobalStep, loss = s.Loss, lr = s.LearningRate }));
                log.Flush();
            }
            onStep?.Invoke(s);
        };
        loop.BestChanged += _ => trainer.Model.Save(directory);
        loop.EpochCompleted += r =>
        {
            stepSeconds += r.Seconds;
            log.WriteLine(JsonSerializer.Serialize(new
            {
                epoch = r.Epoch, step = r.GlobalStep, loss = r.TrainLoss,
                valid_auc = r.Valid is { } v && double.IsFinite(v.Auc) ? v.Auc : (double?)null,
                valid_logloss = r.Valid?.LogLoss, valid_accuracy = r.Valid?.Accuracy,
                seconds = r.Seconds, best = r.IsBest,
            }));
            log.Flush();
            onEpoch?.Invoke(r);
        };
        var result = loop.Run(progress, cancellationToken);
        CtrMetrics? validMetrics = valid.Count > 0 ? trainer.Evaluate(valid) : null;
        CtrMetrics? testMetrics = test is { Count: > 0 } ? trainer.Evaluate(test) : null;
        double seconds = clock.Elapsed.TotalSeconds;
        File.WriteAllText(Path.Combine(directory, SummaryFile), JsonSerializer.Serialize(new
        {
            k = options.K, embed_dim = options.EmbedDim, epochs = options.Loop.Epochs, batch_size = options.Loop.BatchSize,
            embedding_init_std = options.EmbeddingInitStd, dropout = options.Dropout, drop_fields = options.DropFields,
            fields = config.Fields.Select(f => f.Name).ToArray(), test_evaluated = options.EvaluateTest, lr = options.Loop.LearningRate, lr_decay = options.Loop.LinearDecay, weight_decay = options.Loop.WeightDecay, patience = options.Loop.Patience, seed = options.Loop.Seed,
            best_epoch = result.BestEpoch, stopped_early = result.StoppedEarly, selected_on = result.SelectedOn,
            train_samples = train.Count, valid = Metrics(validMetrics), test = Metrics(testMetrics), seconds,
        }, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        return new DinTrainingResult(result, validMetrics, testMetrics, train.Count, seconds);
    }

    /// <summary>The metrics as a JSON-friendly object (AUC null when undefined).</summary>
    internal static object? Metrics(CtrMetrics? m) => m is { } v
        ? new { auc = double.IsFinite(v.Auc) ? v.Auc : (double?)null, logloss = v.LogLoss, accuracy = v.Accuracy, count = v.Count, positives = v.Positives }
        : null;

    internal static DinEncodedSamples Encode(DinEncoding encoding, SampleSet set, SampleSplit split, int k) =>
        DinEncodedSamples.Encode(encoding, set, [.. set.InSplit(split)], k);

    /// <summary>
    /// Scores the samples of <paramref name="split"/> with a trained model: one click probability per sample, in split
    /// order, with the sample ids and labels.
    /// </summary>
    /// <param name="backend">Runs the model's matrix products (any backend; see <see cref="DinModel.Forward"/>). The
    /// caller's, not disposed.</param>
    /// <param name="model">The model (its layout must fit the dataset: <see cref="DinModel.Load(string, RatingDataset)"/>).</param>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="split">Which split.</param>
    /// <param name="k">History events per sample (the K the model was trained with).</param>
    /// <param name="progress">Receives <c>("score", samples scored, samples in the split)</c> after each batch of
    /// 1024 samples.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    public static (int[] SampleIds, bool[] Labels, double[] Probabilities) Score(ComputeBackend backend, DinModel model, SampleSet set, SampleSplit split, int k,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(set);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        cancellationToken.ThrowIfCancellationRequested();
        var samples = Encode(DinEncoding.Create(model.Config, set.Dataset), set, split, k);
        var logits = new float[samples.Count];
        var states = new float[(long)ScoreBatch * model.StateDim];
        var fieldRows = samples.FieldRows;
        var starts = samples.Starts;
        int fields = model.Config.Fields.Count;
        var batchStarts = new int[ScoreBatch + 1];
        for (int first = 0; first < samples.Count; first += ScoreBatch)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int b = Math.Min(ScoreBatch, samples.Count - first);
            int from = starts[first], to = starts[first + b];
            for (int j = 0; j <= b; j++) batchStarts[j] = starts[first + j] - from;
            model.Forward(backend, fieldRows.AsSpan(first * fields, b * fields), batchStarts.AsSpan(0, b + 1),
                samples.ItemRows.AsSpan(from, to - from), samples.RatingRows.AsSpan(from, to - from),
                states.AsSpan(0, b * model.StateDim), logits.AsSpan(first, b));
            progress?.Report(new WorkProgress("score", first + b, samples.Count));
        }
        var p = new double[samples.Count];
        for (int i = 0; i < p.Length; i++) p[i] = Sigmoid(logits[i]);
        return (samples.SampleIds, [.. samples.Labels.Select(l => l > 0)], p);
    }

    /// <summary>Samples per forward batch of <see cref="Score"/>.</summary>
    internal const int ScoreBatch = 1024;

    /// <summary>σ(z) in double.</summary>
    internal static double Sigmoid(float z) => 1 / (1 + Math.Exp(-(double)z));
}
