using System.CommandLine;
using System.Text;
using System.Text.Json;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Runtime.Training;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax crm</c>: the conventional recommender (DIN, SPEC §5). <c>crm train</c> trains one on a prepared dataset;
/// <c>crm score</c> scores a split with a trained one.
/// </summary>
internal static class CrmCommand
{
    private const string TrainDescription = """
        Train DIN (SPEC §5, ReLU activations) on the train split of a prepared dataset (rellax prepare), with AdamW on the
        mean binary cross-entropy of the click logit. After every epoch the valid split is scored; the epoch with the best
        valid AUC is kept (never the test split), and training stops after --patience epochs without improvement. Writes
        --output DIR atomically: config.json and model.safetensors (what eval --din and the demo load), training.jsonl
        (one line per epoch and every 50 steps: epoch, step, loss, valid AUC, LogLoss, seconds) and training.json (the
        settings and final metrics). Prints valid and test AUC, LogLoss and accuracy at the end (valid only with --no-test:
        use it while tuning, so that no choice is made on the test split).

        Example:
          rellax prepare --dataset movielens-100k --data ml-100k --output ml100k
          rellax crm train --data ml100k --output din-ml100k
          rellax eval --data ml100k --din din-ml100k
        """;

    private const string ScoreDescription = """
        Score every sample of a split of a prepared dataset with a trained DIN (rellax crm train). Writes one JSON line per
        sample, {"id": sample id, "label": 0|1, "p_click": probability}, atomically, and prints AUC, LogLoss and accuracy.
        The history length is the one the model was trained with (its training.json), unless --k is given.
        """;

    public static Command Create()
    {
        var crm = new Command("crm", "The conventional recommender (DIN): train one, or score a split with one; and the like-rate baseline.");
        crm.Add(CreateTrain());
        crm.Add(CreateScore());
        crm.Add(CreateBaseline());
        return crm;
    }

    private static Command CreateTrain()
    {
        var data = new Option<string>("--data") { HelpName = "PREPARED_DIR", Description = "A prepared dataset folder (rellax prepare).", Required = true };
        var output = new Option<string>("--output") { HelpName = "DIN_DIR", Description = "The model folder to write (refused when it exists, unless --overwrite).", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing --output folder." };
        var k = CommonOptions.Int("--k", 1, 1000, "History length: the most recent events per sample.", 30);
        var embed = CommonOptions.Int("--embed-dim", 1, 1024, "Embedding size E.", 32);
        var epochs = CommonOptions.Int("--epochs", 1, 10_000, "Most epochs.", 10);
        var batch = CommonOptions.BatchSize(256, "Samples per step.");
        var lr = CommonOptions.Number("--lr", 0, true, double.PositiveInfinity, "AdamW learning rate.", 1e-3);
        var wd = CommonOptions.Number("--weight-decay", 0, false, 100, "AdamW decoupled weight decay.", 0);
        var patience = CommonOptions.Int("--patience", 0, 10_000, "Stop after this many epochs without a better valid AUC (0: never).", 2);
        var seed = CommonOptions.Seed(42, "Seed of the initialisation and the shuffling.");
        var initStd = CommonOptions.Number("--embed-init-std", 0, true, 100,
            "Standard deviation of the embedding table's normal initialisation (1: PyTorch's default, as the reference).", 1.0);
        var dropout = CommonOptions.Number("--dropout", 0, false, 0.95, "Dropout probability after each tower layer while training (0: none).", 0);
        var dropFields = new Option<string>("--drop-fields")
        {
            HelpName = "NAME,...",
            Description = $"Comma-separated fields to leave out of the model (of {string.Join(", ", DinConfig.KnownFields.Where(f => f != "item"))}; " +
                          "e.g. user: per-user ids memorise on small data). The written config lists only the kept fields.",
        };
        dropFields.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string>() is not { } v) return;
            foreach (string name in v.Split(','))
            {
                string n = name.Trim();
                if (n == "item") r.AddError("--drop-fields: the 'item' field cannot be dropped (the attention queries with it)");
                else if (!DinConfig.KnownFields.Contains(n))
                    r.AddError($"--drop-fields: '{n}' is not a DIN field (fields: {string.Join(", ", DinConfig.KnownFields.Where(f => f != "item"))})");
            }
        });
        var lrDecay = new Option<bool>("--lr-decay") { Description = "Decay the learning rate linearly to 0 over the --epochs (default: constant)." };
        var noTest = new Option<bool>("--no-test") { Description = "Do not score the test split at the end (for tuning runs: no test number is printed or written)." };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("train", TrainDescription) { data, output, overwrite, k, embed, epochs, batch, lr, wd, patience, seed, initStd, dropout, dropFields, lrDecay, noTest, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Train(r.GetValue(data)!, r.GetValue(output)!, r.GetValue(overwrite), r.GetValue(threads), new DinTrainingOptions
        {
            K = r.GetValue(k), EmbedDim = r.GetValue(embed), EmbeddingInitStd = r.GetValue(initStd),
            Dropout = (float)r.GetValue(dropout),
            DropFields = r.GetValue(dropFields) is { } d ? [.. d.Split(',').Select(n => n.Trim()).Distinct()] : [], EvaluateTest = !r.GetValue(noTest),
            Loop = new TrainingOptions
            {
                Epochs = r.GetValue(epochs), BatchSize = r.GetValue(batch), LearningRate = (float)r.GetValue(lr), WeightDecay = (float)r.GetValue(wd), LinearDecay = r.GetValue(lrDecay),
                Patience = r.GetValue(patience), Seed = r.GetValue(seed),
            },
        }, r.GetValue(json), cancel)));
        return cmd;
    }

    private static int Train(string dataDir, string outputDir, bool overwrite, int threads, DinTrainingOptions options, bool json, CancellationToken cancel)
    {
        Func<string, string?> refuse = _ => overwrite ? null : "already exists (pass --overwrite to replace it)";
        OutputFile.CheckFolder(outputDir, "--output", refuse, dataDir);
        var set = PreparedDataset.Load(dataDir);
        // DIN training runs on the CPU backend only; --threads is its thread count.
        using var backend = CommonOptions.CreateBackend("cpu", threads);
        TerminalProgress? progress = null;
        double running = double.NaN;
        TrainingOutput.Outcome<DinTrainingResult> outcome;
        try
        {
            outcome = TrainingOutput.Write(outputDir, refuse, temp => DinTraining.Train(backend, set, options, temp,
                s =>
                {
                    if (s.Step == 1) { progress?.Dispose(); progress = new TerminalProgress($"epoch {s.Epoch}", s.StepsPerEpoch); }
                    running = double.IsNaN(running) || s.Step == 1 ? s.Loss : 0.98 * running + 0.02 * s.Loss;
                    progress!.Status = $"loss {running:F4}";
                    progress.Report(s.Step);
                },
                r =>
                {
                    progress?.Dispose();
                    progress = null;
                    if (!json)
                        Console.Error.WriteLine($"epoch {r.Epoch}: train loss {r.TrainLoss:F4}, valid {Describe(r.Valid)}, {r.Seconds:F1}s{(r.IsBest ? " (best)" : "")}");
                },
                cancellationToken: cancel),
                temp => File.Exists(Path.Combine(temp, DinModel.ConfigFile)) && File.Exists(Path.Combine(temp, DinModel.WeightsFile)));
        }
        finally
        {
            progress?.Dispose();
        }
        if (outcome.Stopped is { } stopped)
            return TrainingOutput.ReportStopped(stopped, outcome.Kept,
                stopped is TrainingDivergedException d ? $"epoch {d.Epoch}, step {d.Step}" : "",
                $"the last good checkpoint is in {outputDir}", "no epoch finished, so nothing was written");
        var done = outcome.Result!;
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                data = dataDir, output = outputDir, k = options.K, embed_dim = options.EmbedDim, best_epoch = done.Loop.BestEpoch,
                epochs_run = done.Loop.Epochs.Count, stopped_early = done.Loop.StoppedEarly, selected_on = done.Loop.SelectedOn,
                train_samples = done.TrainSamples, drop_fields = options.DropFields, valid = MetricsJson(done.Valid), test = MetricsJson(done.Test),
                epoch_seconds = done.Loop.Epochs.Select(e => e.Seconds).ToArray(), seconds = done.Seconds,
            }));
        else
        {
            if (done.Loop.SelectedOn == "valid_logloss")
                Console.WriteLine("valid AUC is undefined (the valid split has one class): the epoch was selected on valid LogLoss");
            Console.WriteLine($"trained DIN on {done.TrainSamples} samples in {done.Seconds:F1}s; kept epoch {done.Loop.BestEpoch} of {done.Loop.Epochs.Count}" +
                              (done.Loop.StoppedEarly ? " (stopped early)" : ""));
            Console.WriteLine($"valid: {Describe(done.Valid)}");
            if (options.EvaluateTest) Console.WriteLine($"test:  {Describe(done.Test)}");
            Console.WriteLine($"wrote {Path.GetFullPath(outputDir)}");
        }
        return 0;
    }

    /// <summary>The metrics as the commands' JSON writes them, as <c>training.json</c> does (AUC null when undefined;
    /// null for no metrics).</summary>
    private static object? MetricsJson(CtrMetrics? m) => m is { } v
        ? new { auc = double.IsFinite(v.Auc) ? v.Auc : (double?)null, logloss = v.LogLoss, accuracy = v.Accuracy, count = v.Count, positives = v.Positives }
        : null;

    private static string Describe(CtrMetrics? m) => m is { } v
        ? $"AUC {(double.IsFinite(v.Auc) ? v.Auc.ToString("F4") : "undefined (one class)")}, LogLoss {v.LogLoss:F4}, accuracy {v.Accuracy:F4} ({v.Count} samples)"
        : "none (empty split)";

    private static string Describe(ValidationResult? m) => m is { } v
        ? $"AUC {(double.IsFinite(v.Auc) ? v.Auc.ToString("F4") : "undefined (one class)")}, LogLoss {v.LogLoss:F4}"
        : "none (empty split)";

    private static Command CreateScore()
    {
        var din = new Option<string>("--din") { HelpName = "DIN_DIR", Description = "A trained DIN folder (rellax crm train).", Required = true };
        var data = new Option<string>("--data") { HelpName = "PREPARED_DIR", Description = "A prepared dataset folder (rellax prepare).", Required = true };
        var split = CommonOptions.Split("test");
        var output = new Option<string>("--output") { HelpName = "FILE.jsonl", Description = "The scores to write, atomically.", Required = true };
        var k = CommonOptions.OptionalInt("--k", 1, 1000, "History length (default: the model's training.json, else 30).");
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("score", ScoreDescription) { din, data, split, output, k, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Score(r.GetValue(din)!, r.GetValue(data)!, CommonOptions.ParseSplit(r.GetValue(split)!),
            r.GetValue(output)!, r.GetValue(k), r.GetValue(threads), r.GetValue(json), cancel)));
        return cmd;
    }

    private static int Score(string dinDir, string dataDir, SampleSplit split, string outputPath, int? k, int threads, bool json, CancellationToken cancel)
    {
        OutputFile.Check(outputPath, "--output", dinDir, dataDir);
        var set = PreparedDataset.Load(dataDir);
        var model = DinModel.Load(dinDir, set.Dataset);
        int history = k ?? TrainedK(dinDir) ?? 30;
        using var backend = CommonOptions.CreateBackend("cpu", threads);
        var (ids, labels, p) = DinTraining.Score(backend, model, set, split, history);
        if (ids.Length == 0) throw new ArgumentException($"the {SampleSet.NameOf(split)} split of '{dataDir}' is empty");
        cancel.ThrowIfCancellationRequested();
        OutputFile.Write(outputPath, stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
            for (int i = 0; i < ids.Length; i++)
                w.Write($"{{\"id\":{ids[i]},\"label\":{(labels[i] ? 1 : 0)},\"p_click\":{((float)p[i]).ToString("R", System.Globalization.CultureInfo.InvariantCulture)}}}\n");
        }, cancel);
        var m = CtrMetrics.Compute(p, labels);
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new { din = dinDir, data = dataDir, split = SampleSet.NameOf(split), k = history, output = outputPath, metrics = MetricsJson(m) }));
        else
        {
            Console.WriteLine($"{SampleSet.NameOf(split)}: {Describe(m)}");
            Console.WriteLine($"wrote {ids.Length} scores to {outputPath}");
        }
        return 0;
    }

    private const string BaselineDescription = """
        Fit the simplest click model worth beating on a prepared dataset and print its valid and test AUC, LogLoss and
        accuracy: a logistic regression on two features, the user's like-rate over the last --k history events and the
        item's like-rate on the train split (leave-one-out for train rows), both smoothed towards the train split's
        positive rate. Fitted on the train split only; nothing is chosen on valid or test (--no-test: valid only).

        Example:
          rellax crm baseline --data ml100k --k 10
        """;

    private static Command CreateBaseline()
    {
        var data = new Option<string>("--data") { HelpName = "PREPARED_DIR", Description = "A prepared dataset folder (rellax prepare).", Required = true };
        var k = CommonOptions.Int("--k", 1, 100_000, "History events behind the user's recent like-rate.", 10);
        var noTest = new Option<bool>("--no-test") { Description = "Do not score the test split (for tuning runs)." };
        var json = CommonOptions.Json();
        var cmd = new Command("baseline", BaselineDescription) { data, k, noTest, json };
        cmd.SetAction(r => CommonOptions.Guard(() =>
        {
            string dataDir = r.GetValue(data)!;
            var set = PreparedDataset.Load(dataDir);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = LikeRateBaseline.Fit(set, r.GetValue(k), !r.GetValue(noTest));
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    data = dataDir, k = r.GetValue(k), train_samples = result.TrainSamples, weights = result.Weights,
                    valid = MetricsJson(result.Valid), test = MetricsJson(result.Test), seconds = clock.Elapsed.TotalSeconds,
                }));
            else
            {
                Console.WriteLine($"like-rate logistic regression (user's last {r.GetValue(k)} events, item's train like-rate) fitted on {result.TrainSamples} train samples");
                Console.WriteLine($"valid: {Describe(result.Valid)}");
                if (!r.GetValue(noTest)) Console.WriteLine($"test:  {Describe(result.Test)}");
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>The history length a model was trained with (its training.json), or null when unknown.</summary>
    private static int? TrainedK(string dinDir)
    {
        string path = Path.Combine(dinDir, DinTraining.SummaryFile);
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return doc.RootElement.TryGetProperty("k", out var v) && v.TryGetInt32(out int value) && value >= 1 ? value : null;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}': not valid JSON ({e.Message})", e);
        }
    }
}
