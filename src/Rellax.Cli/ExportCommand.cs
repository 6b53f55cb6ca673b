using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax export</c>: training files in the reference code's format (<c>{"input": prompt, "output": "Yes."|"No."}</c>
/// per line) from a prepared dataset: recent-K prompts, SUBR-K prompts, or the ReiT mixed set (each drawn row twice).
/// </summary>
internal static class ExportCommand
{
    private const string Description = """
        Write training files in the ReLLa reference code's format, one {"input": prompt, "output": "Yes." or "No."} per
        line (JSON Lines, ASCII, byte-identical to Python's json.dumps), from a prepared dataset (`rellax prepare`), so
        that people who train in Python can use this preparation.

        --prompts recent: recent-K histories; subr: SUBR-K histories (the K history items most similar to the target by
        the LLM's item vectors, PCA-reduced; needs --model); reit: the ReLLa mixed set, each drawn row twice (its recent-K
        prompt, then its SUBR-K prompt). --rows N draws N rows with Python's random.sample and --seed (the reference:
        70000 rows, seed 42); without it every sample of the split is written in order (not for reit). The chat template
        is not applied (the trainer applies it), and --spa adds the SPA markers.

        Examples:
          rellax export --data ml1m --prompts recent --k 30 --output train-recent.jsonl
          rellax export --data ml1m --model vicuna-13b --prompts reit --rows 70000 --k 30 --output train-reit.jsonl
          rellax export --data ml1m --model vicuna-13b --prompts subr --split test --k 30 --spa --output test-subr.jsonl
        """;

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var data = new Option<string>("--data") { HelpName = "DIR", Description = "A prepared dataset folder (rellax prepare).", Required = true };
        var output = new Option<string>("--output") { HelpName = "FILE.jsonl", Description = "The training file to write, atomically.", Required = true };
        var prompts = new Option<string>("--prompts") { Description = "recent, subr or reit.", DefaultValueFactory = _ => "recent" };
        prompts.AcceptOnlyFromAmong("recent", "subr", "reit");
        var split = new Option<string>("--split") { Description = "train, valid or test.", DefaultValueFactory = _ => "train" };
        split.AcceptOnlyFromAmong("train", "valid", "test");
        var k = new Option<int>("--k") { Description = "History items per prompt.", DefaultValueFactory = _ => 30 };
        k.Validators.Add(r => { if (r.GetValueOrDefault<int>() is < 1 or > SubrTopK.MaxK) r.AddError($"--k must be in [1, {SubrTopK.MaxK}]"); });
        var rows = new Option<int?>("--rows") { HelpName = "N", Description = "Draw N rows with Python's random.sample (required for reit)." };
        rows.Validators.Add(r => { if (r.GetValueOrDefault<int?>() is < 1) r.AddError("--rows must be >= 1"); });
        var seed = new Option<int>("--seed") { Description = "Seed of the row draw (the reference: 42).", DefaultValueFactory = _ => 42 };
        var spa = new Option<bool>("--spa") { Description = "Put SPA's [hist] and [target] markers in the prompts." };
        var order = new Option<string>("--order") { Description = "SUBR's order in the prompt: chronological or score.", DefaultValueFactory = _ => "chronological" };
        order.AcceptOnlyFromAmong("chronological", "score");
        var pca = new Option<int>("--pca") { Description = "PCA components of the item vectors (0: none).", DefaultValueFactory = _ => 512 };
        pca.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 0) r.AddError("--pca must be >= 0"); });
        var itemVectors = new Option<string?>("--item-vectors") { HelpName = "FILE", Description = "SUBR item vectors to use instead of the LLM's: safetensors 'vectors' or 'embeddings' [items, D] with 'item_ids' (the items.jsonl ids), e.g. from rellax embed." };
        var cache = new Option<string?>("--cache") { HelpName = "DIR", Description = "Cache folder for item vectors and SUBR results (default DATA/cache)." };
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("export", Description) { model, data, output, prompts, split, k, rows, seed, spa, order, pca, itemVectors, cache, backend, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(() =>
        {
            string dataDir = r.GetValue(data)!;
            var options = new EvaluationOptions
            {
                K = r.GetValue(k), Order = r.GetValue(order) == "score" ? SubrOrder.Score : SubrOrder.Chronological,
                PcaComponents = r.GetValue(pca) is int p && p > 0 ? p : null, CacheDirectory = r.GetValue(cache) ?? Path.Combine(dataDir, "cache"),
            };
            var splitValue = r.GetValue(split) switch { "valid" => SampleSplit.Valid, "test" => SampleSplit.Test, _ => SampleSplit.Train };
            return Run(r.GetValue(model), r.GetValue(itemVectors), dataDir, r.GetValue(output)!, r.GetValue(prompts)!, splitValue, r.GetValue(rows), r.GetValue(seed), r.GetValue(spa),
                options, r.GetValue(backend)!, r.GetValue(threads), r.GetValue(json));
        }));
        return cmd;
    }

    private static int Run(string? modelDir, string? itemVectorsPath, string dataDir, string outputPath, string kind, SampleSplit split, int? rows, int seed, bool spa,
        EvaluationOptions options, string backendName, int threads, bool json)
    {
        CommonOptions.CheckOutputPath(outputPath);
        if (kind == "reit" && rows is null) throw new ArgumentException("--prompts reit needs --rows N (the reference draws 70000)");
        var clock = Stopwatch.StartNew();
        var set = PreparedDataset.Load(dataDir);
        if (itemVectorsPath is not null) options = options with { ItemVectors = ItemVectors.Load(itemVectorsPath, set.Dataset.Items.Count) };
        var all = set.InSplit(split).ToList();
        if (rows is int n && n > all.Count)
            throw new ArgumentException($"--rows {n} is more than the {all.Count} samples of the {SampleSet.NameOf(split)} split");
        // The rows to write, in file order (the same draw TrainingFile.WriteMixed makes for reit).
        List<ReLLaSample> chosen = rows is int count ? [.. TrainingFile.SampleRows(all.Count, count, seed).Select(i => all[i])] : all;

        Dictionary<int, int[]>? subr = null;
        var stages = new List<StageTiming>();
        if (kind is "subr" or "reit")
        {
            using var cancel = CommonOptions.CancelOnCtrlC();
            using var backend = CommonOptions.CreateBackend(backendName, threads);
            // Given item vectors need no model.
            using var llm = options.ItemVectors is null ? LlamaModel.Load(modelDir ?? CommonOptions.DefaultModelDirectory(), backend) : null;
            int[][] positions;
            using (var progress = new StageProgress())
                positions = CtrEvaluation.Subr(backend, llm, set, chosen, options, new PipelineCache(options.CacheDirectory!, PipelineReport.Warn),
                    stages, progress, cancel.Token, out _);
            subr = new Dictionary<int, int[]>(chosen.Count);
            for (int i = 0; i < chosen.Count; i++) subr[chosen[i].Index] = positions[i];
        }

        var builder = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = spa });
        int lines = 0;
        CommonOptions.WriteAtomically(outputPath, stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
            if (kind == "reit")
                lines = 2 * TrainingFile.WriteMixed(w, builder, all, rows!.Value, seed,
                    s => ReLLaPromptBuilder.RecentPositions(s.HistoryLength, options.K), s => subr![s.Index]).Length;
            else
                lines = TrainingFile.WriteAll(w, chosen.Select(s => builder.Build(s,
                    kind == "subr" ? subr![s.Index] : ReLLaPromptBuilder.RecentPositions(s.HistoryLength, options.K))));
        });
        double seconds = clock.Elapsed.TotalSeconds;
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                data = dataDir, output = outputPath, prompts = kind, split = SampleSet.NameOf(split), k = options.K, rows = chosen.Count, lines, seed, spa,
                stages = PipelineReport.StagesJson(stages), seconds = PipelineReport.Json(seconds),
            }));
        else
            Console.Error.WriteLine($"wrote {lines} lines ({kind}-{options.K}, {chosen.Count} rows of {SampleSet.NameOf(split)}) to {outputPath} in {seconds:F1} s");
        return 0;
    }
}
