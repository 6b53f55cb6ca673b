using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax demo</c>: the whole ReLLaX pipeline on the embedded default, with no arguments and no network: a synthetic
/// behaviour dataset generated from a seed, ReLLa samples, LLM item vectors, PCA, SUBR against recent-K, a seeded random
/// DIN for the CRM side, a seeded random CFLoRA + SPA adapter, prompts with SPA markers, batched scoring, metrics and
/// timings.
/// </summary>
internal static class DemoCommand
{
    private const string Description = """
        Run the whole ReLLaX pipeline on the embedded default: the stories260K model and a synthetic behaviour dataset made
        in code from a seed (users with tastes over item categories). Stages: dataset, prepare (ReLLa samples), embed items
        with the LLM, PCA, SUBR retrieval against recent-K, CRM (a random DIN), prompts with SPA markers, scoring with a
        random CFLoRA + SPA adapter, metrics. Needs no network and no arguments.

        stories260K is a 260K-parameter story model, not trained for recommendation, and the adapter and DIN are random:
        the metrics show that the pipeline runs end to end, not a useful recommender. The retrieval numbers are real:
        they show how often SUBR's history shares the target's category, against recent-K.

        Examples:
          rellax demo
          rellax demo --json
          rellax demo --users 200 --k 3 --output demo-out
          rellax eval --data demo-out/prepared --adapter demo-out/adapter --crm demo-out/crm.safetensors --k 3
        """;

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var users = CommonOptions.Int("--users", 2, 100_000, "Synthetic users (--fast: 16 unless given).", 48);
        var k = CommonOptions.Int("--k", 1, 30, "History items per prompt (recent-K and SUBR-K); stories260K's 512-token context fits about 6.", 5);
        var seed = CommonOptions.Seed(7, "Seed of the dataset, the DIN and the adapter.");
        var limit = CommonOptions.Int("--limit", 0, int.MaxValue, "Score at most N test samples (0: all; --fast: 24 unless given).", 0);
        var fast = new Option<bool>("--fast") { Description = "Smaller defaults (16 users, 24 scored samples): a few seconds. An explicit --users or --limit is honoured." };
        var output = new Option<string?>("--output") { HelpName = "DIR", Description = "Keep everything the demo makes here (prepared data, adapter, DIN, CRM features, scores); default: a temporary folder, removed at the end." };
        var attention = CommonOptions.Attention();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var batch = CommonOptions.BatchSize(8, "Prompts per forward pass.");
        var json = CommonOptions.Json();
        var weights = CommonOptions.Weights();
        var cmd = new Command("demo", Description) { model, users, k, seed, limit, fast, output, attention, weights.Format, weights.Threshold, backend, threads, batch, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel =>
        {
            bool isFast = r.GetValue(fast);
            // --fast changes defaults only: a value the user typed is always honoured.
            int userCount = isFast && r.GetResult(users) is null or { Implicit: true } ? 16 : r.GetValue(users);
            int limitCount = isFast && r.GetResult(limit) is null or { Implicit: true } ? 24 : r.GetValue(limit);
            return Run(r.GetValue(model) ?? CommonOptions.DefaultModelDirectory(), userCount,
                r.GetValue(k), r.GetValue(seed), limitCount, r.GetValue(output), CommonOptions.ParseAttention(r.GetValue(attention)!),
                r.GetValue(backend)!, r.GetValue(threads), r.GetValue(batch), r.GetValue(json), weights.Parse(r), cancel);
        }));
        return cmd;
    }

    /// <summary>What an existing <c>--output</c> folder must be for the demo to replace it: empty, or an earlier demo output.</summary>
    private static string? RefuseReason(string folder) =>
        Directory.EnumerateFileSystemEntries(folder).Any() && !File.Exists(Path.Combine(folder, "prepared", "dataset.json"))
            ? "exists, is not empty and is not an earlier demo output (no prepared/dataset.json)"
            : null;

    private static int Run(string modelDir, int users, int k, int seed, int limit, string? outputDir, AttentionPrecision attention,
        string backendName, int threads, int batchSize, bool json, ModelLoadOptions weights, CancellationToken cancel)
    {
        if (outputDir is not null)
        {
            // Everything is made in a temporary folder beside --output that takes its place at the end: an interrupted or
            // failed demo leaves no half-made folder, and an earlier one stays as it was.
            OutputFile.CheckFolder(outputDir, "--output", RefuseReason, modelDir);
            int code = 0;
            OutputFile.WriteFolder(outputDir, RefuseReason, work => code = RunIn(work, outputDir, modelDir, users, k, seed, limit, attention, backendName, threads, batchSize, json, weights, cancel), cancel);
            return code;
        }
        string temp = Directory.CreateTempSubdirectory("rellax-demo-").FullName;
        try
        {
            return RunIn(temp, null, modelDir, users, k, seed, limit, attention, backendName, threads, batchSize, json, weights, cancel);
        }
        finally
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
        }
    }

    private static int RunIn(string work, string? outputDir, string modelDir, int users, int k, int seed, int limit, AttentionPrecision attention,
        string backendName, int threads, int batchSize, bool json, ModelLoadOptions weights, CancellationToken cancel)
    {
        var log = json ? Console.Error : Console.Out;
        var total = Stopwatch.StartNew();
        log.WriteLine("rellax demo: the ReLLaX pipeline end to end on a synthetic dataset with the embedded stories260K model.");
        log.WriteLine("Note: stories260K is a tiny story model, not trained for recommendation, and the adapter and DIN are random:");
        log.WriteLine("the metrics show the pipeline runs, not a useful recommender. The retrieval numbers below are real.");
        log.WriteLine();

        var clock = Stopwatch.StartNew();
        var dataset = SyntheticDataset.Create(new SyntheticDatasetOptions { Users = users, Seed = seed });
        double datasetMs = clock.Elapsed.TotalMilliseconds;
        int categories = dataset.Items.Select(i => i.Genres[0]).Distinct().Count();
        log.WriteLine($"[1/6] dataset   {users} users, {dataset.Items.Count} items in {categories} categories, {dataset.Ratings.Length} ratings (seed {seed}): {datasetMs:F0} ms");

        clock.Restart();
        var set = ReLLaSamples.Build(dataset);
        string prepared = Path.Combine(work, "prepared");
        PreparedDataset.Save(set, prepared, cancel);
        double prepareMs = clock.Elapsed.TotalMilliseconds;
        log.WriteLine($"[2/6] prepare   {set.Samples.Count} ReLLa samples (history >= {set.Options.MinHistory}): train {set.CountOf(SampleSplit.Train)}, " +
                      $"valid {set.CountOf(SampleSplit.Valid)}, test {set.CountOf(SampleSplit.Test)}: {prepareMs:F0} ms");

        cancel.ThrowIfCancellationRequested();
        using var backend = CommonOptions.CreateBackend(backendName, threads);
        using var llm = CommonOptions.LoadModel(modelDir, backend, weights);

        clock.Restart();
        var din = DinModel.CreateRandom(DinConfig.For(dataset, embedDim: 16), seed);
        var test = set.InSplit(SampleSplit.Test).Take(limit > 0 ? limit : int.MaxValue).ToList();
        var crm = din.Featurize(set, test);
        double crmMs = clock.Elapsed.TotalMilliseconds;
        var adapter = RandomAdapter.Create(llm.Config, rank: 4, din.StateDim, din.EmbedDim, seed);
        log.WriteLine($"[3/6] CRM       random DIN (E = {din.EmbedDim}, h_u = {din.StateDim}) over {test.Count} test samples: {crmMs:F0} ms; " +
                      $"adapter: random CFLoRA r = 4 on q_proj/v_proj + SPA projector");

        var options = new EvaluationOptions
        {
            Limit = limit, K = k, Retrieval = HistoryRetrieval.Subr, PcaComponents = 32,
            CacheDirectory = Path.Combine(work, "cache"),
            Scoring = new ScoringOptions { Attention = attention, BatchSize = batchSize },
        };
        EvaluationResult result;
        using (var progress = new StageProgress())
            result = CtrEvaluation.Run(llm, adapter, set, crm, options, progress, PipelineReport.Warn, cancel);
        var stage = result.Stages.ToDictionary(s => s.Stage);
        log.WriteLine($"[4/6] SUBR      {dataset.Items.Count} item sentences embedded by the LLM ({stage["embed"].Tokens} tokens, {stage["embed"].Seconds * 1000:F0} ms), " +
                      $"PCA {llm.Config.HiddenSize} -> {Math.Min(32, llm.Config.HiddenSize)} ({PipelineReport.Percent(result.PcaExplainedVariance ?? double.NaN)} of the variance), " +
                      $"top-{k} for {result.Samples.Count} samples ({stage["retrieve"].Seconds * 1000:F0} ms)");
        log.WriteLine($"          history items sharing the target's category: SUBR-{k} {PipelineReport.Percent(result.Quality.Listed)}, " +
                      $"recent-{k} {PipelineReport.Percent(result.Quality.RecentK)}, whole history {PipelineReport.Percent(result.Quality.FullHistory)}");
        var example = result.Prompts[0];
        log.WriteLine($"[5/6] prompts   {result.Prompts.Count} prompts with SPA markers, {stage["tokenize"].Tokens} tokens; the first one:");
        foreach (var line in example.Text.Split('\n')) log.WriteLine("          | " + line);
        log.WriteLine($"[6/6] scoring   {result.Prompts.Count} prompts, {stage["forward"].TokensPerSecond:F0} tokens/s on {backend.Name} ({CommonOptions.Name(attention)} attention)");
        log.WriteLine();
        var m = result.Metrics;
        log.WriteLine($"{PipelineReport.MetricsLine(m)}   ({m.Count} test samples, {m.Positives} positive)");
        PipelineReport.WriteStages(log, result.Stages);

        if (outputDir is not null)
        {
            adapter.Save(Path.Combine(work, "adapter"));
            din.Save(Path.Combine(work, "din"));
            crm.Save(Path.Combine(work, "crm.safetensors"));
            PipelineReport.WriteScores(Path.Combine(work, "scores.jsonl"), result, cancel);
            log.WriteLine($"kept in {outputDir}: prepared/, adapter/, din/, crm.safetensors, scores.jsonl, cache/");
        }
        log.WriteLine($"total {total.Elapsed.TotalSeconds:F1} s");

        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                model = modelDir, backend = backend.Name, attention = CommonOptions.Name(attention), seed, users, items = dataset.Items.Count,
                ratings = dataset.Ratings.Length, samples = new { train = set.CountOf(SampleSplit.Train), valid = set.CountOf(SampleSplit.Valid), test = set.CountOf(SampleSplit.Test) },
                scored = result.Samples.Count, k,
                retrieval = new { subr = PipelineReport.Json(result.Quality.Listed), recent = PipelineReport.Json(result.Quality.RecentK), whole_history = PipelineReport.Json(result.Quality.FullHistory) },
                metrics = PipelineReport.MetricsJson(m),
                stages = PipelineReport.StagesJson(result.Stages),
                output = outputDir, total_seconds = PipelineReport.Json(total.Elapsed.TotalSeconds),
                note = "stories260K is not trained for recommendation and the adapter and DIN are random: the metrics show the pipeline runs, not a useful recommender",
            }));
        return 0;
    }
}
