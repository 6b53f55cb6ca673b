using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Runtime.Training;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax demo</c>: a small ReLLaX ablation on the embedded default, with no arguments and no network: a synthetic
/// behaviour dataset generated from a seed, ReLLa samples, a trained DIN, LLM item vectors, PCA, SUBR, then the arms of
/// the ablation (LoRA on recent-K, LoRA on SUBR-K, ReiT, ReLLaX = SUBR-K + SPA + CFLoRA, SPA only, CFLoRA only), each
/// trained on the same rows with the same budget, selected on the valid split and scored once on the test split.
/// </summary>
internal static class DemoCommand
{
    private const string Description = """
        Train and compare the arms of the ReLLaX ablation on the embedded default: the stories260K model (a 260K-parameter
        story model) and a synthetic behaviour dataset made in code from a seed. Each synthetic user has two favourite
        categories and rates their items high; some items are flops or hits that everyone rates lower or higher. So a
        target's label follows the user's stars for similar items (what SUBR puts in the prompt) and the item's quality
        (what only other users' ratings show: DIN's item embedding, SPA's soft token).

        Stages: dataset; prepare (ReLLa samples); DIN trained (crm train); the base model zero-shot on SUBR-K prompts (with
        item vectors from the LLM, PCA and SUBR); then the arms, each trained on the same train rows for the same number
        of steps, the kept parameters chosen on the valid split, scored once on the test split:
          lora-recent   a new LoRA on recent-K prompts (ReLLa without SUBR)
          lora-subr     a new LoRA on SUBR-K prompts (ReLLa)
          reit          a new LoRA on both forms of each row (ReLLa's ReiT), tested on SUBR-K
          rellax        lora-subr's LoRA frozen; new CFLoRA generators and SPA projector trained (DIN frozen)
          spa-only      lora-subr's LoRA frozen; a new SPA projector trained
          cflora-only   lora-subr's LoRA frozen; new CFLoRA generators trained
        Prints one table (arm, what was trained, rows, seconds, test AUC, LogLoss, accuracy), SUBR's category agreement
        against recent-K, and which arm won. With --output: the prepared data, the DIN, CRM features, every arm's adapter,
        training log and test scores (rellax eval loads them), and curves.png (valid AUC during training, every arm).
        About 90 seconds on 2 idle cores (up to 3 minutes on a busy machine); --fast: about 25 seconds.

        Examples:
          rellax demo
          rellax demo --fast --json
          rellax demo --output demo-out
          rellax eval --data demo-out/prepared --adapter demo-out/arms/rellax --din demo-out/din --k 3 --template none
        """;

    /// <summary>The generators' and projector's learning rate as a share of <c>--lr</c>.</summary>
    private const double AdapterLrShare = 0.4;

    /// <summary>Every LLM arm, in table order.</summary>
    private static readonly AdapterArm[] AllArms =
        [AdapterArm.LoraRecent, AdapterArm.LoraSubr, AdapterArm.ReiT, AdapterArm.ReLLaX, AdapterArm.SpaOnly, AdapterArm.CfloraOnly];

    /// <summary>The arms of <c>--fast</c>.</summary>
    private static readonly AdapterArm[] FastArms = [AdapterArm.LoraRecent, AdapterArm.LoraSubr, AdapterArm.ReLLaX];

    /// <summary>The settings of one run.</summary>
    private sealed record Settings
    {
        public required string ModelDir { get; init; }
        public int Users { get; init; }
        public int K { get; init; }
        public int Seed { get; init; }
        public int Steps { get; init; }
        public int TrainRows { get; init; }
        public int Limit { get; init; }
        public int BatchSize { get; init; }
        public double LearningRate { get; init; }
        public required AdapterArm[] Arms { get; init; }
        public string? Output { get; init; }
        public int Threads { get; init; }
        public bool Json { get; init; }
        public required ModelLoadOptions Weights { get; init; }
    }

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var users = CommonOptions.Int("--users", 2, 100_000, "Synthetic users (--fast: 32 unless given).", 48);
        var k = CommonOptions.Int("--k", 1, 30, "History items per prompt (recent-K and SUBR-K); stories260K's 512-token context fits about 6.", 3);
        var seed = CommonOptions.Seed(7, "Seed of the dataset, the DIN, the adapters and the row draws.");
        var steps = CommonOptions.Int("--steps", 1, 100_000, "Optimizer steps per LLM arm, the same budget for every arm (--fast: 16 unless given).", 48);
        var trainRows = CommonOptions.Int("--train-rows", 0, int.MaxValue, "Train rows every LLM arm draws (0: steps × batch size, at most the train split).", 0);
        var limit = CommonOptions.Int("--limit", 0, int.MaxValue, "Score at most N test samples per arm (0: all; --fast: 64 unless given).", 0);
        var batch = CommonOptions.BatchSize(16, "Prompts per optimizer step.");
        var lr = CommonOptions.Number("--lr", 0, true, 1, "AdamW learning rate of the LoRA arms (constant: the budget is short); generators and projector train at 0.4 × it.", 5e-3);
        var arms = new Option<string?>("--arms")
        {
            HelpName = "ARM,...",
            Description = $"LLM arms to run, comma-separated: {string.Join(", ", AllArms.Select(AdapterArms.Name))} (default: all; --fast: {string.Join(",", FastArms.Select(AdapterArms.Name))}). DIN and zero-shot always run.",
        };
        arms.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string>() is { } v && ParseArms(v).Error is { } error) r.AddError($"--arms: {error}");
        });
        var fast = new Option<bool>("--fast") { Description = "A smaller run (32 users, 16 steps, 64 test samples, three arms): about a minute. Explicit options are honoured." };
        var output = new Option<string?>("--output") { HelpName = "DIR", Description = "Keep everything the demo makes here (refused when it exists and is not an earlier demo output); default: a temporary folder, removed at the end." };
        var backend = CommonOptions.Choice("--backend", "Where kernels run: training runs on the CPU only for now, so auto means cpu.", "auto", "auto", "cpu");
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var weights = CommonOptions.Weights();
        var cmd = new Command("demo", Description) { model, users, k, seed, steps, trainRows, limit, batch, lr, arms, fast, output, weights.Format, weights.Threshold, backend, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel =>
        {
            bool isFast = r.GetValue(fast);
            // --fast changes defaults only: a value the user typed is always honoured.
            int Pick(Option<int> o, int fastValue) => isFast && r.GetResult(o) is null or { Implicit: true } ? fastValue : r.GetValue(o);
            var s = new Settings
            {
                ModelDir = r.GetValue(model) ?? CommonOptions.DefaultModelDirectory(), Users = Pick(users, 32), K = r.GetValue(k), Seed = r.GetValue(seed),
                Steps = Pick(steps, 16), TrainRows = r.GetValue(trainRows), Limit = Pick(limit, 64), BatchSize = r.GetValue(batch), LearningRate = r.GetValue(lr),
                Arms = r.GetValue(arms) is { } a ? ParseArms(a).Arms! : isFast ? FastArms : AllArms,
                Output = r.GetValue(output), Threads = r.GetValue(threads), Json = r.GetValue(json), Weights = weights.Parse(r),
            };
            return Run(s, cancel);
        }));
        return cmd;
    }

    /// <summary>Parses <c>--arms</c>: a comma list of arm names, in any order (run in table order, ReLLaX's parts after lora-subr).</summary>
    private static (AdapterArm[]? Arms, string? Error) ParseArms(string value)
    {
        var chosen = new HashSet<AdapterArm>();
        foreach (string raw in value.Split(','))
        {
            string name = raw.Trim();
            var match = AllArms.Where(a => AdapterArms.Name(a) == name).ToArray();
            if (match.Length == 0) return (null, $"'{name}' is not an arm; expected a comma list of {string.Join(", ", AllArms.Select(AdapterArms.Name))}");
            chosen.Add(match[0]);
        }
        return ([.. AllArms.Where(chosen.Contains)], null);
    }

    /// <summary>What an existing <c>--output</c> folder must be for the demo to replace it: empty, or an earlier demo output.</summary>
    private static string? RefuseReason(string folder) =>
        Directory.EnumerateFileSystemEntries(folder).Any() && !File.Exists(Path.Combine(folder, "prepared", "dataset.json"))
            ? "exists, is not empty and is not an earlier demo output (no prepared/dataset.json)"
            : null;

    private static int Run(Settings s, CancellationToken cancel)
    {
        if (s.Output is not null)
        {
            // Everything is made in a temporary folder beside --output that takes its place at the end: an interrupted or
            // failed demo leaves no half-made folder, and an earlier one stays as it was.
            OutputFile.CheckFolder(s.Output, "--output", RefuseReason, s.ModelDir);
            int code = 0;
            OutputFile.WriteFolder(s.Output, RefuseReason, work => code = RunIn(work, s, cancel), cancel);
            return code;
        }
        string temp = Directory.CreateTempSubdirectory("rellax-demo-").FullName;
        try
        {
            return RunIn(temp, s, cancel);
        }
        finally
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>One row of the table.</summary>
    private sealed record Row(string Arm, string Trained, int TrainRows, double Seconds, CtrMetrics Test, double? ValidAuc, IReadOnlyList<(double Share, double Auc)> Curve);

    private static int RunIn(string work, Settings s, CancellationToken cancel)
    {
        var log = s.Json ? Console.Error : Console.Out;
        var total = Stopwatch.StartNew();
        log.WriteLine("rellax demo: the ReLLaX ablation on a synthetic dataset with the embedded stories260K model.");
        log.WriteLine();

        // 1. The dataset and the samples.
        var clock = Stopwatch.StartNew();
        var dataset = SyntheticDataset.Create(new SyntheticDatasetOptions { Users = s.Users, Seed = s.Seed });
        int categories = dataset.Items.Select(i => i.Genres[0]).Distinct().Count();
        log.WriteLine($"[1/5] dataset   {s.Users} users, {dataset.Items.Count} items in {categories} categories, {dataset.Ratings.Length} ratings (seed {s.Seed}): {clock.Elapsed.TotalMilliseconds:F0} ms");
        clock.Restart();
        var set = ReLLaSamples.Build(dataset);
        string prepared = Path.Combine(work, "prepared");
        PreparedDataset.Save(set, prepared, cancel);
        int trainCount = set.CountOf(SampleSplit.Train);
        log.WriteLine($"[2/5] prepare   {set.Samples.Count} ReLLa samples (history >= {set.Options.MinHistory}): train {trainCount}, " +
                      $"valid {set.CountOf(SampleSplit.Valid)}, test {set.CountOf(SampleSplit.Test)}: {clock.Elapsed.TotalMilliseconds:F0} ms");
        if (trainCount == 0 || set.CountOf(SampleSplit.Test) == 0)
            throw new ArgumentException($"--users {s.Users} gives {trainCount} train and {set.CountOf(SampleSplit.Test)} test samples: give more users");

        // 2. The CRM: DIN trained on the train split, selected on valid; its features feed ReLLaX's arms.
        cancel.ThrowIfCancellationRequested();
        clock.Restart();
        string dinDir = Path.Combine(work, "din");
        Directory.CreateDirectory(dinDir);
        // One CPU backend with --threads runs everything: DIN here, then the LLM arms.
        using var backend = CommonOptions.CreateBackend("cpu", s.Threads);
        var dinOptions = new DinTrainingOptions
        {
            EmbedDim = 16, Dropout = 0.3f,
            Loop = new TrainingOptions { Epochs = 30, BatchSize = 64, LearningRate = 1e-3f, Patience = 4, Seed = s.Seed },
        };
        var dinRun = DinTraining.Train(backend, set, dinOptions, dinDir, cancellationToken: cancel);
        var din = DinModel.Load(dinDir, dataset);
        var crm = din.Featurize(backend, set, set.Samples);
        var dinCurve = dinRun.Loop.Epochs.Where(e => e.Valid is not null)
            .Select(e => ((double)e.Epoch / dinRun.Loop.Epochs.Count, e.Valid!.Value.Auc)).ToList();
        var dinTest = dinRun.Test ?? throw new InvalidOperationException("the DIN run scored no test split");
        var rows = new List<Row>
        {
            new("din", "DIN (CRM alone)", trainCount, dinRun.Seconds, Limited(backend, dinTest, set, din, s.Limit, dinOptions.K), dinRun.Valid?.Auc, dinCurve),
        };
        log.WriteLine($"[3/5] CRM       DIN trained on {trainCount} rows, {dinRun.Loop.Epochs.Count} epochs (kept {dinRun.Loop.BestEpoch}): valid AUC {PipelineReport.Metric(dinRun.Valid?.Auc ?? double.NaN)}, " +
                      $"{dinRun.Seconds:F1} s; features (E = {din.EmbedDim}, h_u = {din.StateDim}) for {set.Samples.Count} samples");

        // 3. The base model zero-shot on SUBR-K prompts: item vectors, PCA and SUBR run (and are cached) here.
        using var llm = CommonOptions.LoadModel(s.ModelDir, backend, s.Weights);
        var evaluation = new EvaluationOptions
        {
            K = s.K, Retrieval = HistoryRetrieval.Subr, Split = SampleSplit.Test, Limit = s.Limit, PcaComponents = Math.Min(32, llm.Config.HiddenSize),
            CacheDirectory = Path.Combine(work, "cache"),
            Scoring = new ScoringOptions { Template = PromptTemplate.None, Attention = AttentionPrecision.Fp32, BatchSize = s.BatchSize },
        };
        clock.Restart();
        var zeroShot = CtrEvaluation.Run(llm, null, set, null, evaluation, null, PipelineReport.Warn, cancel);
        var quality = zeroShot.Quality;
        rows.Add(new Row("zero-shot", "nothing (the base model)", 0, clock.Elapsed.TotalSeconds, zeroShot.Metrics, null, []));
        var stage = zeroShot.Stages.ToDictionary(t => t.Stage);
        log.WriteLine($"[4/5] SUBR      {dataset.Items.Count} items embedded by the LLM ({stage["embed"].Seconds * 1000:F0} ms), PCA to {evaluation.PcaComponents} " +
                      $"({PipelineReport.Percent(zeroShot.PcaExplainedVariance ?? double.NaN)} of the variance), top-{s.K}; history items sharing the target's category: " +
                      $"SUBR-{s.K} {PipelineReport.Percent(quality.Listed)}, recent-{s.K} {PipelineReport.Percent(quality.RecentK)}, whole history {PipelineReport.Percent(quality.FullHistory)}");
        log.WriteLine($"          the base model zero-shot on {zeroShot.Samples.Count} test prompts: AUC {PipelineReport.Metric(zeroShot.Metrics.Auc)}");

        // 4. The LLM arms: the same rows and budget each.
        int rowsPerArm = s.TrainRows > 0 ? Math.Min(s.TrainRows, trainCount) : Math.Min(s.Steps * s.BatchSize, trainCount);
        var armOptions = new AdapterArmOptions
        {
            K = s.K, TrainRows = rowsPerArm, TestLimit = s.Limit, Steps = s.Steps, BatchSize = s.BatchSize,
            // At the LoRA's 5e-3 the generators' logits run away (test LogLoss about 3 on the default data); 2e-3 is also
            // the rate of the ML-100K runs.
            LoraLearningRate = (float)s.LearningRate, AdapterLearningRate = (float)(AdapterLrShare * s.LearningRate),
            ValidateEvery = Math.Max(1, s.Steps / 3), Seed = s.Seed, Evaluation = evaluation, LinearDecay = false,
        };
        log.WriteLine($"[5/5] arms      {s.Arms.Length} LLM arms, each {rowsPerArm} train rows, {s.Steps} steps of {s.BatchSize} prompts (AdamW, lr {s.LearningRate.ToString(CultureInfo.InvariantCulture)}; " +
                      $"generators and projector {(AdapterLrShare * s.LearningRate).ToString(CultureInfo.InvariantCulture)}), " +
                      $"validated every {armOptions.ValidateEvery} steps on {set.CountOf(SampleSplit.Valid)} rows");
        RellaxAdapter? subrLora = null;
        var armsDir = Path.Combine(work, "arms");
        foreach (var arm in s.Arms)
        {
            cancel.ThrowIfCancellationRequested();
            string name = AdapterArms.Name(arm);
            if (AdapterArms.NeedsLora(arm) && subrLora is null)
            {
                // ReLLaX's arms extend the SUBR-K LoRA: train it first when lora-subr was not asked for.
                log.WriteLine("          (training lora-subr first: the ReLLaX arms extend its LoRA)");
                subrLora = RunArm(AdapterArm.LoraSubr, null).Adapter;
            }
            var result = RunArm(arm, AdapterArms.NeedsLora(arm) ? subrLora : null);
            if (arm == AdapterArm.LoraSubr) subrLora = result.Adapter;
            var best = result.Training.BestValid;
            rows.Add(new Row(name, result.Trained, result.TrainRows, result.Seconds, result.Test.Metrics, best?.Auc,
                [.. result.Curve.Select(p => ((double)p.Step / Math.Max(1, result.Training.Loop.Steps), p.Auc))]));
            log.WriteLine($"          {name,-12} {result.Training.Loop.Steps} steps, {result.TrainExamples} prompts, {result.Training.TokensPerSecond:F0} tokens/s, " +
                          $"best valid AUC {PipelineReport.Metric(best?.Auc ?? double.NaN)} (step {result.Training.Loop.BestStep}): test AUC {PipelineReport.Metric(result.Test.Metrics.Auc)}, {result.Seconds:F1} s");
            if (s.Output is not null) PipelineReport.WriteScores(Path.Combine(armsDir, name, "scores.jsonl"), result.Test, cancel);
        }

        AdapterArmResult RunArm(AdapterArm arm, RellaxAdapter? lora)
        {
            string dir = Path.Combine(armsDir, AdapterArms.Name(arm));
            Directory.CreateDirectory(dir);
            using var progress = s.Json ? null : new TerminalProgress(AdapterArms.Name(arm), s.Steps);
            return AdapterArms.Run(llm, set, crm, arm, lora, armOptions, dir,
                (step, loss) => { if (progress is not null) { progress.Status = $"loss {loss:F4}"; progress.Report(step); } },
                PipelineReport.Warn, cancellationToken: cancel);
        }

        log.WriteLine();
        WriteTable(log, rows, quality, s.K);
        string? plot = null;
        if (s.Output is not null)
        {
            crm.Save(Path.Combine(work, "crm.safetensors"));
            plot = Path.Combine(work, "curves.png");
            DemoPlot.SaveCurves(plot, [.. rows.Where(r => r.Curve.Count > 0).Select(r => (r.Arm, r.Curve))]);
            log.WriteLine($"kept in {s.Output}: prepared/, din/, crm.safetensors, arms/<arm>/ (adapter, training.jsonl, scores.jsonl), curves.png, cache/");
        }
        log.WriteLine($"total {total.Elapsed.TotalSeconds:F1} s");

        if (s.Json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                model = s.ModelDir, backend = backend.Name, seed = s.Seed, users = s.Users, items = dataset.Items.Count, ratings = dataset.Ratings.Length,
                samples = new { train = trainCount, valid = set.CountOf(SampleSplit.Valid), test = set.CountOf(SampleSplit.Test) },
                k = s.K, steps = s.Steps, batch_size = s.BatchSize, train_rows = rowsPerArm, test_scored = zeroShot.Samples.Count,
                retrieval = new { subr = PipelineReport.Json(quality.Listed), recent = PipelineReport.Json(quality.RecentK), whole_history = PipelineReport.Json(quality.FullHistory) },
                arms = rows.Select(r => new
                {
                    arm = r.Arm, trained = r.Trained, train_rows = r.TrainRows, seconds = PipelineReport.Json(r.Seconds),
                    auc = PipelineReport.Json(r.Test.Auc), logloss = PipelineReport.Json(r.Test.LogLoss), accuracy = PipelineReport.Json(r.Test.Accuracy),
                    count = r.Test.Count, valid_auc = r.ValidAuc is { } v ? PipelineReport.Json(v) : null,
                }),
                winner = Winner(rows)?.Arm,
                output = s.Output, total_seconds = PipelineReport.Json(total.Elapsed.TotalSeconds),
            }));
        return 0;
    }

    /// <summary>DIN's test metrics over the same test samples the LLM arms score (the first <paramref name="limit"/>).</summary>
    private static CtrMetrics Limited(ComputeBackend backend, CtrMetrics all, SampleSet set, DinModel din, int limit, int k)
    {
        if (limit <= 0 || limit >= set.CountOf(SampleSplit.Test)) return all;
        var (_, labels, p) = DinTraining.Score(backend, din, set, SampleSplit.Test, k);
        return CtrMetrics.Compute([.. p.Take(limit)], [.. labels.Take(limit)]);
    }

    /// <summary>The row with the best test AUC among the trained ones (reported, never used to select anything).</summary>
    private static Row? Winner(List<Row> rows) => rows.Where(r => r.TrainRows > 0 && double.IsFinite(r.Test.Auc)).MaxBy(r => r.Test.Auc);

    private static void WriteTable(TextWriter w, List<Row> rows, RetrievalQuality quality, int k)
    {
        w.WriteLine($"{"arm",-12} {"trained",-26} {"rows",5} {"seconds",8} {"test AUC",9} {"LogLoss",8} {"accuracy",9}");
        foreach (var r in rows)
            w.WriteLine($"{r.Arm,-12} {r.Trained,-26} {r.TrainRows,5} {r.Seconds,8:F1} {PipelineReport.Metric(r.Test.Auc),9} {PipelineReport.Metric(r.Test.LogLoss),8} {PipelineReport.Metric(r.Test.Accuracy),9}");
        w.WriteLine($"history items sharing the target's category: SUBR-{k} {PipelineReport.Percent(quality.Listed)}, recent-{k} {PipelineReport.Percent(quality.RecentK)}");
        if (Winner(rows) is not { } best) return;
        var others = rows.Where(r => r != best && double.IsFinite(r.Test.Auc)).OrderByDescending(r => r.Test.Auc).ToList();
        string margin = others.Count == 0 ? "" : $", {best.Test.Auc - others[0].Test.Auc:+0.0000;-0.0000} over {others[0].Arm} (next best)";
        var zero = rows.FirstOrDefault(r => r.Arm == "zero-shot");
        string overZero = zero is null || zero == others.FirstOrDefault() ? "" : $", {best.Test.Auc - zero.Test.Auc:+0.0000;-0.0000} over zero-shot";
        w.WriteLine($"best test AUC: {best.Arm} {PipelineReport.Metric(best.Test.Auc)}{margin}{overZero} ({best.Test.Count} test samples; AUC's standard error here is about " +
                    $"{StandardError(best.Test):F3}, so smaller gaps are noise)");
    }

    /// <summary>Hanley and McNeil's standard error of an AUC with this many positives and negatives.</summary>
    private static double StandardError(CtrMetrics m)
    {
        double a = m.Auc, p = m.Positives, n = m.Count - m.Positives;
        if (p == 0 || n == 0 || !double.IsFinite(a)) return double.NaN;
        double q1 = a / (2 - a), q2 = 2 * a * a / (1 + a);
        return Math.Sqrt((a * (1 - a) + (p - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (p * n));
    }
}
