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
        Write prompts of a prepared dataset (`rellax prepare`) for training or for scoring.

        --format training (default): the ReLLa reference code's training format, one {"input": prompt, "output": "Yes."
        or "No."} per line (JSON Lines, ASCII, byte-identical to Python's json.dumps), so that people who train in Python
        can use this preparation. --format score: one {"id": sample id, "prompt": ..., "label": 0 or 1} per line, the
        input of `rellax score`; with --crm FILE each line also carries what an adapter needs: "instance" (the user state)
        and, with --spa, "hist_embeddings" and "target_embedding" (the CRM item embeddings of the [hist] and [target]
        items). Without --crm, an adapter with CFLoRA generators or an SPA projector cannot score these lines.

        --prompts recent: recent-K histories; subr: SUBR-K histories (the K history items most similar to the target:
        from --retrieved FILE, the output of `rellax retrieve --data`, or computed here from --item-vectors FILE or the
        LLM's item vectors, PCA-reduced); reit (training only): the ReLLa mixed set, each drawn row twice (its recent-K
        prompt, then its SUBR-K prompt). --rows N draws N rows with Python's random.sample and --seed (the reference:
        70000 rows, seed 42); without it every sample of the split is written in order (not for reit). The chat template
        is not applied (the trainer, or rellax score, applies it), and --spa adds the SPA markers.

        Examples:
          rellax export --data ml1m --prompts recent --k 30 --output train-recent.jsonl
          rellax export --data ml1m --model vicuna-13b --prompts reit --rows 70000 --k 30 --output train-reit.jsonl
          rellax export --data ml100k --prompts subr --retrieved retrieved.jsonl --split test --k 5 --format score --output requests.jsonl
        """;

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var data = new Option<string>("--data") { HelpName = "DIR", Description = "A prepared dataset folder (rellax prepare).", Required = true };
        var output = new Option<string>("--output") { HelpName = "FILE.jsonl", Description = "The file to write, atomically.", Required = true };
        var format = CommonOptions.Choice("--format", "training ({input, output}) or score ({id, prompt, label}, what rellax score reads).", "training", "training", "score");
        var prompts = CommonOptions.Choice("--prompts", "recent, subr or reit.", "recent", "recent", "subr", "reit");
        var split = CommonOptions.Split("train");
        var k = CommonOptions.Int("--k", 1, SubrTopK.MaxK, "History items per prompt.", 30);
        var limit = CommonOptions.Int("--limit", 0, int.MaxValue, "Only the first N samples of the split (0: all), before any --rows draw.", 0);
        var rows = CommonOptions.OptionalInt("--rows", 1, 100_000_000, "Draw N rows with Python's random.sample (required for reit).");
        var seed = CommonOptions.Seed(42, "Seed of the row draw (the reference: 42).");
        var spa = new Option<bool>("--spa") { Description = "Put SPA's [hist] and [target] markers in the prompts." };
        var order = CommonOptions.Choice("--order", "SUBR's order in the prompt: chronological or score.", "chronological", "chronological", "score");
        var pca = CommonOptions.Pca(512, "PCA components of the item vectors (0: none).");
        var itemVectors = CommonOptions.ItemVectors(required: false, "SUBR uses them instead of the LLM's.");
        var retrieved = new Option<string?>("--retrieved") { HelpName = "FILE.jsonl", Description = "SUBR results from rellax retrieve --data (one {\"id\", \"positions\"} per sample): --prompts subr or reit then needs no model or item vectors." };
        var crm = new Option<string?>("--crm") { HelpName = "FILE", Description = "With --format score: CRM features (safetensors, as rellax eval --crm) whose vectors go into each line." };
        var cache = new Option<string?>("--cache") { HelpName = "DIR", Description = "Cache folder for item vectors and SUBR results (default DATA/cache)." };
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("export", Description) { model, data, output, format, prompts, split, k, limit, rows, seed, spa, order, pca, itemVectors, retrieved, crm, cache, backend, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel =>
        {
            string dataDir = r.GetValue(data)!;
            var options = new EvaluationOptions
            {
                K = r.GetValue(k), Order = r.GetValue(order) == "score" ? SubrOrder.Score : SubrOrder.Chronological,
                PcaComponents = CommonOptions.PcaOrNull(r.GetValue(pca)), CacheDirectory = r.GetValue(cache) ?? Path.Combine(dataDir, "cache"),
            };
            bool pcaGiven = r.GetResult(pca) is { Implicit: false };
            var paths = new Inputs(r.GetValue(model), r.GetValue(itemVectors), r.GetValue(retrieved), r.GetValue(crm), dataDir);
            return Run(paths, r.GetValue(output)!, r.GetValue(format) == "score", r.GetValue(prompts)!, CommonOptions.ParseSplit(r.GetValue(split)!),
                r.GetValue(limit), r.GetValue(rows), r.GetValue(seed), r.GetValue(spa), options, pcaGiven, r.GetValue(backend)!, r.GetValue(threads), r.GetValue(json), cancel);
        }));
        return cmd;
    }

    private sealed record Inputs(string? ModelDir, string? ItemVectorsPath, string? RetrievedPath, string? CrmPath, string DataDir);

    private static int Run(Inputs inputs, string outputPath, bool scoreFormat, string kind, SampleSplit split, int limit, int? rows, int seed, bool spa,
        EvaluationOptions options, bool pcaGiven, string backendName, int threads, bool json, CancellationToken cancel)
    {
        string dataDir = inputs.DataDir;
        OutputFile.Check(outputPath, "--output", dataDir, inputs.ModelDir, inputs.ItemVectorsPath, inputs.RetrievedPath, inputs.CrmPath);
        if (kind == "reit" && rows is null) throw new ArgumentException("--prompts reit needs --rows N (the reference draws 70000)");
        if (kind == "reit" && scoreFormat) throw new ArgumentException("--format score takes --prompts recent or subr (reit writes every row twice)");
        if (inputs.CrmPath is not null && !scoreFormat) throw new ArgumentException("--crm goes with --format score (training lines carry no vectors)");
        if (inputs.RetrievedPath is not null && kind == "recent") throw new ArgumentException("--retrieved goes with --prompts subr or reit");
        var clock = Stopwatch.StartNew();
        var set = PreparedDataset.Load(dataDir);
        if (inputs.ItemVectorsPath is not null) options = options with { ItemVectors = ItemVectors.Load(inputs.ItemVectorsPath, set.Dataset.Items.Count) };
        var crm = inputs.CrmPath is null ? null : CrmFeatures.Load(inputs.CrmPath);
        var all = set.InSplit(split).Take(limit > 0 ? limit : int.MaxValue).ToList();
        if (rows is int n && n > all.Count)
            throw new ArgumentException($"--rows {n} is more than the {all.Count} samples of the {SampleSet.NameOf(split)} split");
        // The rows to write, in file order (the same draw TrainingFile.WriteMixed makes for reit).
        List<ReLLaSample> chosen = rows is int count ? [.. TrainingFile.SampleRows(all.Count, count, seed).Select(i => all[i])] : all;

        Dictionary<int, int[]>? subr = null;
        var stages = new List<StageTiming>();
        if (kind is "subr" or "reit")
        {
            if (inputs.RetrievedPath is not null)
            {
                subr = RetrievedFile.Read(inputs.RetrievedPath, set, kind == "reit" ? all : chosen, options.K);
            }
            else
            {
                using var backend = CommonOptions.CreateBackend(backendName, threads);
                // Given item vectors need no model.
                using var llm = options.ItemVectors is null ? LlamaModel.Load(inputs.ModelDir ?? CommonOptions.DefaultModelDirectory(), backend) : null;
                if (pcaGiven)
                    CommonOptions.CheckPca(options.PcaComponents, set.Dataset.Items.Count, options.ItemVectors?.Dim ?? llm!.Config.HiddenSize,
                        options.ItemVectors is null ? "hidden size" : "dimension");
                int[][] positions;
                using (var progress = new StageProgress())
                {
                    var retrieved = CtrEvaluation.RetrieveSubr(backend, llm, set, chosen, options, progress, PipelineReport.Warn, cancel);
                    positions = retrieved.Positions;
                    stages.AddRange(retrieved.Stages);
                }
                subr = new Dictionary<int, int[]>(chosen.Count);
                for (int i = 0; i < chosen.Count; i++) subr[chosen[i].Index] = positions[i];
            }
        }
        if (scoreFormat && spa && crm is null)
            PipelineReport.Warn("the prompts carry [hist] and [target] markers but no vectors: rellax score with an SPA adapter needs " +
                                "\"hist_embeddings\" and \"target_embedding\"; give --crm FILE to write them");
        cancel.ThrowIfCancellationRequested();

        var builder = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = spa });
        int[] PositionsOf(ReLLaSample s) => kind == "recent" ? ReLLaPromptBuilder.RecentPositions(s.HistoryLength, options.K) : subr![s.Index];
        int lines = 0;
        OutputFile.Write(outputPath, stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
            if (scoreFormat)
                foreach (var s in chosen)
                {
                    WriteScoreLine(w, s, builder.Build(s, PositionsOf(s)), crm, spa);
                    lines++;
                }
            else if (kind == "reit")
                lines = 2 * TrainingFile.WriteMixed(w, builder, all, rows!.Value, seed,
                    s => ReLLaPromptBuilder.RecentPositions(s.HistoryLength, options.K), s => subr![s.Index]).Length;
            else
                lines = TrainingFile.WriteAll(w, chosen.Select(s => builder.Build(s, PositionsOf(s))));
        }, cancel);
        double seconds = clock.Elapsed.TotalSeconds;
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                data = dataDir, output = outputPath, format = scoreFormat ? "score" : "training", prompts = kind, split = SampleSet.NameOf(split), k = options.K,
                rows = chosen.Count, lines, seed, spa, stages = PipelineReport.StagesJson(stages), seconds = PipelineReport.Json(seconds),
            }));
        else
            Console.Error.WriteLine($"wrote {lines} lines ({kind}-{options.K}, {chosen.Count} rows of {SampleSet.NameOf(split)}) to {outputPath} in {seconds:F1} s");
        return 0;
    }

    /// <summary>One <c>rellax score</c> request: <c>{"id", "prompt", "label"}</c>, plus the CRM's vectors when given.</summary>
    private static void WriteScoreLine(TextWriter w, in ReLLaSample sample, ReLLaPrompt prompt, CrmFeatures? crm, bool spa)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            json.WriteNumber("id", sample.Index);
            json.WriteString("prompt", prompt.Text);
            json.WriteNumber("label", prompt.Label ? 1 : 0);
            if (crm is not null)
            {
                try
                {
                    if (crm.StateDim > 0) WriteVector(json, "instance", crm.UserState(sample.Index));
                    if (spa && crm.EmbedDim > 0)
                    {
                        json.WriteStartArray("hist_embeddings");
                        foreach (int item in prompt.HistoryItems) WriteVector(json, null, crm.ItemEmbedding(item));
                        json.WriteEndArray();
                        WriteVector(json, "target_embedding", crm.ItemEmbedding(prompt.TargetItem));
                    }
                }
                catch (KeyNotFoundException e)
                {
                    throw new InvalidDataException($"sample {sample.Index}: the CRM features do not cover it: {e.Message}", e);
                }
            }
            json.WriteEndObject();
        }
        w.Write(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
        w.Write('\n');

        static void WriteVector(Utf8JsonWriter json, string? name, ReadOnlySpan<float> values)
        {
            if (name is null) json.WriteStartArray();
            else json.WriteStartArray(name);
            foreach (float v in values) json.WriteNumberValue(v);
            json.WriteEndArray();
        }
    }
}

/// <summary>Reads the output of <c>rellax retrieve --data</c> for <c>rellax export --retrieved</c>: one
/// <c>{"id": sample id, "positions": [history positions], ...}</c> per line.</summary>
internal static class RetrievedFile
{
    /// <summary>The positions of every sample in <paramref name="needed"/>, checked against the sample's history.</summary>
    /// <exception cref="RecordException">A malformed line (named <c>FILE:LINE</c>), a sample the dataset does not have, a
    /// position outside the sample's history, more than <paramref name="k"/> positions, or a needed sample with no line.</exception>
    public static Dictionary<int, int[]> Read(string path, SampleSet set, IReadOnlyList<ReLLaSample> needed, int k)
    {
        var wanted = new Dictionary<int, int>(needed.Count);
        foreach (var s in needed) wanted[s.Index] = s.HistoryLength;
        var found = new Dictionary<int, int[]>(needed.Count);
        // The library's bounded JSONL reader, as for every JSONL input; errors are RecordExceptions naming FILE:LINE.
        using var reader = JsonLinesReader.Open(path, "--retrieved file");
        foreach (var (line, root) in reader.ReadObjects())
        {
            RecordException Fail(string reason) => new(path, line, reason);
            if (!root.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.Number || !id.TryGetInt32(out int sample))
                throw Fail("expected {\"id\": sample id, \"positions\": [...]} as rellax retrieve --data writes");
            if (!wanted.TryGetValue(sample, out int historyLength))
            {
                if (sample < 0 || sample >= set.Samples.Count)
                    throw Fail($"sample {sample} is not in the prepared dataset ({set.Samples.Count} samples)");
                continue; // another split's sample, or one not drawn
            }
            if (!root.TryGetProperty("positions", out var positions) || positions.ValueKind != JsonValueKind.Array)
                throw Fail($"sample {sample}: \"positions\" must be an array of history positions");
            var list = new int[positions.GetArrayLength()];
            if (list.Length > k) throw Fail($"sample {sample}: {list.Length} positions, more than --k {k}");
            int i = 0;
            foreach (var p in positions.EnumerateArray())
            {
                if (p.ValueKind != JsonValueKind.Number || !p.TryGetInt32(out int v) || v < 0 || v >= historyLength)
                    throw Fail($"sample {sample}: position {p.GetRawText()} is outside its history of {historyLength} events");
                list[i++] = v;
            }
            found[sample] = list;
        }
        foreach (var s in needed)
            if (!found.ContainsKey(s.Index))
                throw new InvalidDataException($"{path}: no line for sample {s.Index} of the {SampleSet.NameOf(s.Split)} split; run rellax retrieve --data on the same split");
        return found;
    }
}
