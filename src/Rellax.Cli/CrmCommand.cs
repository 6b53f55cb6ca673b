using System.CommandLine;
using System.Text;
using System.Text.Json;
using Rellax.Rec;
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
        var crm = new Command("crm", "The conventional recommender (DIN): train one, or score a split with one.");
        crm.Add(CreateTrain());
        crm.Add(CreateScore());
        return crm;
    }

    private static Option<int> Positive(string name, int defaultValue, string description, int max = int.MaxValue)
    {
        var option = new Option<int>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        option.Validators.Add(r =>
        {
            int v = r.GetValueOrDefault<int>();
            if (v < 1 || v > max) r.AddError(max == int.MaxValue ? $"{name} must be >= 1, got {v}" : $"{name} must be in [1, {max}], got {v}");
        });
        return option;
    }

    private static Command CreateTrain()
    {
        var data = new Option<string>("--data") { HelpName = "PREPARED_DIR", Description = "A prepared dataset folder (rellax prepare).", Required = true };
        var output = new Option<string>("--output") { HelpName = "DIN_DIR", Description = "The model folder to write (refused when it exists, unless --overwrite).", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing --output folder." };
        var k = Positive("--k", 30, "History length: the most recent events per sample.", 1000);
        var embed = Positive("--embed-dim", 32, "Embedding size E.", 1024);
        var epochs = Positive("--epochs", 10, "Most epochs.");
        var batch = Positive("--batch-size", 256, "Samples per step.");
        var lr = new Option<float>("--lr") { Description = "AdamW learning rate.", DefaultValueFactory = _ => 1e-3f };
        lr.Validators.Add(r => { float v = r.GetValueOrDefault<float>(); if (!(v > 0) || !float.IsFinite(v)) r.AddError($"--lr must be a finite number > 0, got {v}"); });
        var wd = new Option<float>("--weight-decay") { Description = "AdamW decoupled weight decay.", DefaultValueFactory = _ => 0f };
        wd.Validators.Add(r => { float v = r.GetValueOrDefault<float>(); if (!(v >= 0) || !float.IsFinite(v)) r.AddError($"--weight-decay must be a finite number >= 0, got {v}"); });
        var patience = new Option<int>("--patience") { Description = "Stop after this many epochs without a better valid AUC (0: never).", DefaultValueFactory = _ => 2 };
        patience.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 0) r.AddError($"--patience must be >= 0, got {r.GetValueOrDefault<int>()}"); });
        var seed = new Option<int>("--seed") { Description = "Seed of the initialisation and the shuffling.", DefaultValueFactory = _ => 42 };
        var initStd = new Option<double>("--embed-init-std") { Description = "Standard deviation of the embedding table's normal initialisation (1: PyTorch's default, as the reference).", DefaultValueFactory = _ => 1.0 };
        initStd.Validators.Add(r => { double v = r.GetValueOrDefault<double>(); if (!(v > 0) || !double.IsFinite(v)) r.AddError($"--embed-init-std must be a finite number > 0, got {v}"); });
        var dropout = new Option<float>("--dropout") { Description = "Dropout probability after each tower layer while training (0: none).", DefaultValueFactory = _ => 0f };
        dropout.Validators.Add(r => { float v = r.GetValueOrDefault<float>(); if (!(v >= 0 && v < 1)) r.AddError($"--dropout must be in [0, 1), got {v}"); });
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
        threads.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 0) r.AddError($"--threads must be >= 0, got {r.GetValueOrDefault<int>()}"); });
        var json = CommonOptions.Json();
        var cmd = new Command("train", TrainDescription) { data, output, overwrite, k, embed, epochs, batch, lr, wd, patience, seed, initStd, dropout, dropFields, lrDecay, noTest, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(() => Train(r.GetValue(data)!, r.GetValue(output)!, r.GetValue(overwrite), new DinTrainingOptions
        {
            K = r.GetValue(k), EmbedDim = r.GetValue(embed), Threads = r.GetValue(threads), EmbeddingInitStd = r.GetValue(initStd), Dropout = r.GetValue(dropout),
            DropFields = r.GetValue(dropFields) is { } d ? [.. d.Split(',').Select(n => n.Trim()).Distinct()] : [], EvaluateTest = !r.GetValue(noTest),
            Loop = new TrainingOptions
            {
                Epochs = r.GetValue(epochs), BatchSize = r.GetValue(batch), LearningRate = r.GetValue(lr), WeightDecay = r.GetValue(wd), LinearDecay = r.GetValue(lrDecay),
                Patience = r.GetValue(patience), Seed = r.GetValue(seed),
            },
        }, r.GetValue(json))));
        return cmd;
    }

    private static int Train(string dataDir, string outputDir, bool overwrite, DinTrainingOptions options, bool json)
    {
        using var folder = OutputFolder.Begin(outputDir, overwrite, "--output");
        var set = PreparedDataset.Load(dataDir);
        using var cancel = CommonOptions.CancelOnCtrlC();
        TerminalProgress? progress = null;
        double running = double.NaN;
        try
        {
            var result = DinTraining.Train(set, options, folder.TempPath,
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
                cancel.Token);
            folder.Commit();
            if (json)
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    data = dataDir, output = outputDir, k = options.K, embed_dim = options.EmbedDim, best_epoch = result.Loop.BestEpoch,
                    epochs_run = result.Loop.Epochs.Count, stopped_early = result.Loop.StoppedEarly, selected_on = result.Loop.SelectedOn,
                    train_samples = result.TrainSamples, drop_fields = options.DropFields, valid = DinTraining.Metrics(result.Valid), test = DinTraining.Metrics(result.Test),
                    epoch_seconds = result.Loop.Epochs.Select(e => e.Seconds).ToArray(), seconds = result.Seconds,
                }));
            else
            {
                if (result.Loop.SelectedOn == "valid_logloss")
                    Console.WriteLine("valid AUC is undefined (the valid split has one class): the epoch was selected on valid LogLoss");
                Console.WriteLine($"trained DIN on {result.TrainSamples} samples in {result.Seconds:F1}s; kept epoch {result.Loop.BestEpoch} of {result.Loop.Epochs.Count}" +
                                  (result.Loop.StoppedEarly ? " (stopped early)" : ""));
                Console.WriteLine($"valid: {Describe(result.Valid)}");
                if (options.EvaluateTest) Console.WriteLine($"test:  {Describe(result.Test)}");
                Console.WriteLine($"wrote {Path.GetFullPath(outputDir)}");
            }
            return 0;
        }
        catch (Exception e) when (e is TrainingDivergedException or OperationCanceledException)
        {
            progress?.Dispose();
            // Keep the best checkpoint if one was written completely; otherwise nothing is left behind.
            bool kept = folder.CommitIfComplete(Rellax.Rec.DinModel.ConfigFile, Rellax.Rec.DinModel.WeightsFile);
            string what = kept ? $"the last good checkpoint is in {outputDir}" : "no epoch finished, so nothing was written";
            if (e is TrainingDivergedException d)
            {
                Console.Error.WriteLine($"rellax: the training loss became NaN or infinite at epoch {d.Epoch}, step {d.Step}; stopped ({what})");
                return 1;
            }
            Console.Error.WriteLine($"rellax: cancelled ({what})");
            return 130;
        }
        finally
        {
            progress?.Dispose();
        }
    }

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
        var split = new Option<string>("--split") { Description = "train, valid or test.", DefaultValueFactory = _ => "test" };
        split.AcceptOnlyFromAmong("train", "valid", "test");
        var output = new Option<string>("--output") { HelpName = "FILE.jsonl", Description = "The scores to write, atomically.", Required = true };
        var k = new Option<int?>("--k") { Description = "History length (default: the model's training.json, else 30)." };
        k.Validators.Add(r => { if (r.GetValueOrDefault<int?>() is int v && (v < 1 || v > 1000)) r.AddError($"--k must be in [1, 1000], got {v}"); });
        var json = CommonOptions.Json();
        var cmd = new Command("score", ScoreDescription) { din, data, split, output, k, json };
        cmd.SetAction(r => CommonOptions.Guard(() =>
        {
            var splitValue = r.GetValue(split) switch { "train" => SampleSplit.Train, "valid" => SampleSplit.Valid, _ => SampleSplit.Test };
            return Score(r.GetValue(din)!, r.GetValue(data)!, splitValue, r.GetValue(output)!, r.GetValue(k), r.GetValue(json));
        }));
        return cmd;
    }

    private static int Score(string dinDir, string dataDir, SampleSplit split, string outputPath, int? k, bool json)
    {
        CommonOptions.CheckOutputPath(outputPath);
        var set = PreparedDataset.Load(dataDir);
        var model = DinModel.Load(dinDir, set.Dataset);
        int history = k ?? TrainedK(dinDir) ?? 30;
        var (ids, labels, p) = DinTraining.Score(model, set, split, history);
        if (ids.Length == 0) throw new ArgumentException($"the {SampleSet.NameOf(split)} split of '{dataDir}' is empty");
        CommonOptions.WriteAtomically(outputPath, stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
            for (int i = 0; i < ids.Length; i++)
                w.Write($"{{\"id\":{ids[i]},\"label\":{(labels[i] ? 1 : 0)},\"p_click\":{((float)p[i]).ToString("R", System.Globalization.CultureInfo.InvariantCulture)}}}\n");
        });
        var m = CtrMetrics.Compute(p, labels);
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new { din = dinDir, data = dataDir, split = SampleSet.NameOf(split), k = history, output = outputPath, metrics = DinTraining.Metrics(m) }));
        else
        {
            Console.WriteLine($"{SampleSet.NameOf(split)}: {Describe(m)}");
            Console.WriteLine($"wrote {ids.Length} scores to {outputPath}");
        }
        return 0;
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

/// <summary>
/// An output folder written atomically: everything goes into a temporary sibling folder (<c>DIR.tmp-PID-GUID</c>), which
/// <see cref="Commit"/> renames to the target (replacing an existing one only with --overwrite). Disposing without a commit
/// deletes the temporary folder, so a failure leaves nothing half-written. (To be switched to the shared output helper.)
/// </summary>
internal sealed class OutputFolder : IDisposable
{
    private readonly string _target;
    private readonly bool _overwrite;
    private bool _done;

    private OutputFolder(string target, bool overwrite, string temp)
    {
        _target = target;
        _overwrite = overwrite;
        TempPath = temp;
    }

    /// <summary>The temporary folder to write into.</summary>
    public string TempPath { get; }

    /// <summary>Checks the target and creates the temporary folder.</summary>
    /// <exception cref="IOException">The target exists (without <paramref name="overwrite"/>) or is a file.</exception>
    /// <exception cref="DirectoryNotFoundException">The target's parent folder does not exist.</exception>
    public static OutputFolder Begin(string path, bool overwrite, string option)
    {
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        if (File.Exists(full)) throw new IOException($"{option} '{path}' is a file, not a folder");
        if (Directory.Exists(full) && !overwrite) throw new IOException($"{option} '{path}' already exists (pass --overwrite to replace it)");
        string? parent = Path.GetDirectoryName(full);
        if (parent is not null && !Directory.Exists(parent)) throw new DirectoryNotFoundException($"{option} '{path}': folder '{parent}' does not exist");
        string temp = $"{full}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        Directory.CreateDirectory(temp);
        return new OutputFolder(full, overwrite, temp);
    }

    /// <summary>Renames the temporary folder to the target (an existing target is replaced when overwriting was allowed).</summary>
    public void Commit()
    {
        if (Directory.Exists(_target))
        {
            if (!_overwrite) throw new IOException($"'{_target}' appeared while writing; the result is left in '{TempPath}'");
            string old = $"{_target}.old-{Environment.ProcessId}-{Guid.NewGuid():N}";
            Directory.Move(_target, old);
            Directory.Move(TempPath, _target);
            Directory.Delete(old, recursive: true);
        }
        else Directory.Move(TempPath, _target);
        _done = true;
    }

    /// <summary>Commits when every one of <paramref name="files"/> exists in the temporary folder (each written
    /// atomically), else discards it.</summary>
    /// <returns>Whether the folder was committed.</returns>
    public bool CommitIfComplete(params string[] files)
    {
        if (!files.All(f => File.Exists(Path.Combine(TempPath, f)))) return false;
        Commit();
        return true;
    }

    /// <summary>Deletes the temporary folder unless it was committed.</summary>
    public void Dispose()
    {
        if (_done) return;
        _done = true;
        try { if (Directory.Exists(TempPath)) Directory.Delete(TempPath, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
