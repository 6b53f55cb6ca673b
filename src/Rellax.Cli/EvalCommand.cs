using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax eval</c>: scores a split of a prepared dataset (<c>rellax prepare</c>) with the model (and an adapter) and
/// prints AUC, LogLoss, accuracy and the throughput of each stage (embed, pca, retrieve, prompts, tokenize, forward).
/// </summary>
internal static class EvalCommand
{
    private const string Description = """
        Score a split of a prepared dataset (made by `rellax prepare`) and print AUC, LogLoss, accuracy, and the time and
        throughput of every stage: embed (LLM item vectors, SUBR only), pca, retrieve, prompts, tokenize, forward.

        History per prompt: --retrieval subr (default; SPEC §2: the K history items most similar to the target by the
        LLM's own item vectors, or --item-vectors FILE, PCA-reduced) or recent (the K most recent). Item vectors and SUBR results are cached in
        DATA/cache (or --cache DIR), so a second run skips them. An adapter with CFLoRA generators or an SPA projector
        needs the CRM's outputs: --crm FILE (user states by sample id and item embeddings by item id, safetensors) or
        --din DIR (a DIN checkpoint run here). An adapter folder written by rellax train or rellax demo records how its
        training prompts were built (training.json: K, retrieval, template); eval uses those unless --k, --retrieval or
        --template is given, and says so on stderr.

        Examples:
          rellax prepare --dataset movielens-100k --data ml-100k --output ml100k
          rellax eval --model vicuna-7b --data ml100k --k 30 --limit 1000
          rellax eval --data ml100k --retrieval recent --k 10 --json
          rellax eval --model vicuna-7b --data ml100k --adapter rellax-adapter --din din-ml100k --scores scores.jsonl
        """;

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var data = new Option<string>("--data") { HelpName = "DIR", Description = "A prepared dataset folder (rellax prepare).", Required = true };
        var adapter = new Option<string?>("--adapter") { HelpName = "DIR", Description = "Adapter folder (adapter_config.json + adapter_model.safetensors)." };
        var crm = new Option<string?>("--crm") { HelpName = "FILE", Description = "CRM features (safetensors: item_ids, item_embeddings, sample_ids, user_states)." };
        var din = new Option<string?>("--din") { HelpName = "DIR", Description = "A DIN checkpoint (config.json + model.safetensors) to compute the CRM features." };
        var k = CommonOptions.Int("--k", 1, SubrTopK.MaxK, "History items per prompt.", 30);
        var retrieval = CommonOptions.Choice("--retrieval", "subr or recent.", "subr", "subr", "recent");
        var order = CommonOptions.Choice("--order", "SUBR's order in the prompt: chronological or score.", "chronological", "chronological", "score");
        var pca = CommonOptions.Pca(512, "PCA components of the item vectors (0: none).");
        var similarity = CommonOptions.Choice("--similarity", "cosine or dot.", "cosine", "cosine", "dot");
        var split = CommonOptions.Split("test");
        var limit = CommonOptions.Int("--limit", 0, int.MaxValue, "Score at most the first N samples of the split (0: all).", 0);
        var itemVectors = CommonOptions.ItemVectors(required: false, "SUBR uses them instead of the LLM's.");
        var cache = new Option<string?>("--cache") { HelpName = "DIR", Description = "Cache folder (default DATA/cache)." };
        var noCache = new Option<bool>("--no-cache") { Description = "Neither read nor write the cache." };
        var scores = new Option<string?>("--scores") { HelpName = "FILE", Description = "Also write {id, label, p_yes} per sample as JSONL, atomically." };
        var template = CommonOptions.Template("Chat template around each prompt: vicuna or none.");
        var attention = CommonOptions.Attention();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var batch = CommonOptions.BatchSize(8, "Prompts per forward pass.");
        var json = CommonOptions.Json();
        var weights = CommonOptions.Weights();
        var cmd = new Command("eval", Description)
        {
            model, data, adapter, crm, din, k, retrieval, order, pca, similarity, itemVectors, split, limit, cache, noCache, scores, template, attention, weights.Format, weights.Threshold, backend, threads, batch, json,
        };
        cmd.SetAction(r => CommonOptions.Guard(cancel =>
        {
            string dataDir = r.GetValue(data)!;
            // An adapter trained by rellax train or demo records its prompts' K, retrieval and template: use them unless given.
            var trained = r.GetValue(adapter) is { } adapterDir && Directory.Exists(adapterDir) ? TrainedPromptSettings.Read(adapterDir) : null;
            bool Given(Option o) => r.GetResult(o) is { Implicit: false };
            var applied = new List<string>();
            int kValue = r.GetValue(k);
            if (!Given(k) && trained?.K is int trainedK) { kValue = trainedK; applied.Add($"--k {trainedK}"); }
            var retrievalValue = r.GetValue(retrieval) == "recent" ? HistoryRetrieval.Recent : HistoryRetrieval.Subr;
            if (!Given(retrieval) && trained?.EvaluationRetrieval is { } trainedRetrieval)
            {
                retrievalValue = trainedRetrieval;
                applied.Add($"--retrieval {(trainedRetrieval == HistoryRetrieval.Recent ? "recent" : "subr")}");
            }
            var templateValue = PromptTemplate.Parse(r.GetValue(template)!);
            if (!Given(template) && trained?.Template is { } trainedTemplate) { templateValue = PromptTemplate.Parse(trainedTemplate); applied.Add($"--template {trainedTemplate}"); }
            // Said once the evaluation has run, so that an error stays one line.
            string? note = applied.Count == 0 ? null
                : $"rellax: {string.Join(" ", applied)} from {Path.Combine(r.GetValue(adapter)!, TrainedPromptSettings.FileName)} (the adapter's training prompts; give an option to override)";
            var options = new EvaluationOptions
            {
                K = kValue, Retrieval = retrievalValue,
                Order = r.GetValue(order) == "score" ? SubrOrder.Score : SubrOrder.Chronological,
                PcaComponents = CommonOptions.PcaOrNull(r.GetValue(pca)),
                Similarity = r.GetValue(similarity) == "dot" ? SubrSimilarity.Dot : SubrSimilarity.Cosine,
                Split = CommonOptions.ParseSplit(r.GetValue(split)!),
                Limit = r.GetValue(limit),
                CacheDirectory = r.GetValue(noCache) ? null : r.GetValue(cache) ?? Path.Combine(dataDir, "cache"),
                Scoring = new ScoringOptions
                {
                    Template = templateValue, Attention = CommonOptions.ParseAttention(r.GetValue(attention)!), BatchSize = r.GetValue(batch),
                },
            };
            return Run(r.GetValue(model) ?? CommonOptions.DefaultModelDirectory(), dataDir, r.GetValue(adapter), r.GetValue(crm), r.GetValue(din),
                r.GetValue(itemVectors), options, r.GetResult(pca) is { Implicit: false }, r.GetValue(scores), r.GetValue(backend)!, r.GetValue(threads), r.GetValue(json), weights.Parse(r), note, cancel);
        }));
        return cmd;
    }

    private static int Run(string modelDir, string dataDir, string? adapterDir, string? crmPath, string? dinDir, string? itemVectorsPath, EvaluationOptions options,
        bool pcaGiven, string? scoresPath, string backendName, int threads, bool json, ModelLoadOptions weights, string? note, CancellationToken cancel)
    {
        if (crmPath is not null && dinDir is not null) throw new ArgumentException("give either --crm or --din, not both");
        if (scoresPath is not null) OutputFile.Check(scoresPath, "--scores", dataDir, modelDir, adapterDir, crmPath, dinDir, itemVectorsPath);
        var total = Stopwatch.StartNew();
        var clock = Stopwatch.StartNew();
        var set = PreparedDataset.Load(dataDir);
        if (itemVectorsPath is not null) options = options with { ItemVectors = ItemVectors.Load(itemVectorsPath, set.Dataset.Items.Count) };
        double loadDataMs = clock.Elapsed.TotalMilliseconds;

        using var backend = CommonOptions.CreateBackend(backendName, threads);
        clock.Restart();
        using var model = CommonOptions.LoadModel(modelDir, backend, weights);
        var adapter = adapterDir is null ? null : RellaxAdapter.Load(adapterDir, model.Config);
        double loadModelMs = clock.Elapsed.TotalMilliseconds;
        if (pcaGiven && options.Retrieval == HistoryRetrieval.Subr)
            CommonOptions.CheckPca(options.PcaComponents, set.Dataset.Items.Count, options.ItemVectors?.Dim ?? model.Config.HiddenSize,
                options.ItemVectors is null ? "hidden size" : "dimension");

        CrmFeatures? crm = null;
        clock.Restart();
        if (crmPath is not null) crm = CrmFeatures.Load(crmPath);
        else if (dinDir is not null)
        {
            var din = DinModel.Load(dinDir);
            var samples = set.InSplit(options.Split).Take(options.Limit > 0 ? options.Limit : int.MaxValue).ToList();
            crm = din.Featurize(backend, set, samples);
        }
        double crmMs = clock.Elapsed.TotalMilliseconds;

        EvaluationResult result;
        using (var progress = new StageProgress())
            result = CtrEvaluation.Run(model, adapter, set, crm, options, progress, PipelineReport.Warn, cancel);

        if (scoresPath is not null) PipelineReport.WriteScores(scoresPath, result, cancel);
        if (note is not null) Console.Error.WriteLine(note);

        var m = result.Metrics;
        string retrieval = options.Retrieval == HistoryRetrieval.Subr ? "subr" : "recent";
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                data = dataDir, dataset = set.Dataset.Name, split = SampleSet.NameOf(options.Split), model = modelDir, adapter = adapterDir, backend = backend.Name,
                attention = CommonOptions.Name(options.Scoring.Attention), retrieval, k = options.K,
                metrics = PipelineReport.MetricsJson(m),
                category_agreement = new { listed = PipelineReport.Json(result.Quality.Listed), recent = PipelineReport.Json(result.Quality.RecentK), whole_history = PipelineReport.Json(result.Quality.FullHistory) },
                pca_explained_variance = result.PcaExplainedVariance is double e ? PipelineReport.Json(e) : null,
                load_ms = new { data = Math.Round(loadDataMs, 3), model = Math.Round(loadModelMs, 3), crm = Math.Round(crmMs, 3) },
                stages = PipelineReport.StagesJson(result.Stages),
                scores = scoresPath, total_seconds = PipelineReport.Json(total.Elapsed.TotalSeconds),
            }));
            return 0;
        }
        Console.WriteLine($"{set.Dataset.Name} {SampleSet.NameOf(options.Split)}: {m.Count} samples ({m.Positives} positive), {retrieval}-{options.K}, " +
                          $"{(adapterDir is null ? "no adapter" : "adapter " + adapterDir)}, {backend.Name} ({CommonOptions.Name(options.Scoring.Attention)} attention)");
        Console.WriteLine($"{PipelineReport.MetricsLine(m)}");
        Console.WriteLine($"history items sharing the target's category: listed {PipelineReport.Percent(result.Quality.Listed)}, recent-{options.K} {PipelineReport.Percent(result.Quality.RecentK)}, whole history {PipelineReport.Percent(result.Quality.FullHistory)}");
        PipelineReport.WriteStages(Console.Out, result.Stages);
        Console.WriteLine($"(loading: data {loadDataMs:F0} ms, model {loadModelMs:F0} ms, crm {crmMs:F0} ms)");
        Console.WriteLine($"total {total.Elapsed.TotalSeconds:F1} s");
        return 0;
    }

}
