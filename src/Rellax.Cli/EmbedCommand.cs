using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax embed</c>: LLM item embeddings for SUBR (SPEC §2, <see cref="ItemEmbedder"/>), optionally PCA-reduced, saved as
/// safetensors that <c>rellax index</c> and <see cref="SubrIndex.Load"/> read.
/// </summary>
internal static class EmbedCommand
{
    /// <summary>The <c>format</c> metadata value of the output file.</summary>
    public const string FormatName = "rellax-item-embeddings";

    /// <summary>The <c>pooling</c> metadata value: how an item's hidden states become one vector.</summary>
    public const string Pooling = "mean of final-norm hidden states, BOS included";

    private const string Description = """
        Embed items with the LLM for SUBR: each item text, wrapped in the template, runs through one forward pass; its
        vector is the mean of the final-norm hidden states over every position, BOS included.

        Input (JSONL), one object per line; blank lines are skipped: {"id": int64, "text": "..."}; ids are unique.
        Output (safetensors, written atomically): embeddings F32 [N, H] (or [N, PCA] with --pca) and item_ids I64 [N],
        rows in input order; metadata: model, template, pooling, similarity = dot (raw, unnormalised vectors).
        Build a retrieval index from it with `rellax index --vectors FILE` (cosine by default).

        Examples:
          rellax embed --items items.jsonl --output items.safetensors
          rellax embed --model vicuna-7b --items ml1m-items.jsonl --pca 512 --batch-size 64 --output ml1m.safetensors --json
          rellax index --vectors ml1m.safetensors --output ml1m-index.safetensors --storage f16
        """;

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var items = new Option<string>("--items") { HelpName = "FILE.jsonl", Description = "JSONL items, one {\"id\": int64, \"text\": \"...\"} per line.", Required = true };
        var output = new Option<string>("--output") { HelpName = "FILE.safetensors", Description = "The safetensors file to write, atomically.", Required = true };
        var template = CommonOptions.Template("Chat template around each item text: vicuna (SPEC §2: one user turn) or none.");
        var pca = CommonOptions.OptionalPca("Reduce to this many principal components (SPEC: 512).");
        var seed = CommonOptions.PcaSeed();
        var attention = CommonOptions.Attention();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var batch = CommonOptions.BatchSize(32, "Most items per forward pass.");
        var json = CommonOptions.Json();
        var weights = CommonOptions.Weights();
        var cmd = new Command("embed", Description) { model, items, output, template, pca, seed, attention, weights.Format, weights.Threshold, backend, threads, batch, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Run(
            r.GetValue(model) ?? CommonOptions.DefaultModelDirectory(), r.GetValue(items)!, r.GetValue(output)!,
            PromptTemplate.Parse(r.GetValue(template)!), r.GetValue(pca), r.GetValue(seed), CommonOptions.ParseAttention(r.GetValue(attention)!),
            r.GetValue(backend)!, r.GetValue(threads), r.GetValue(batch), r.GetValue(json), weights.Parse(r), cancel)));
        return cmd;
    }

    private static int Run(string modelDir, string itemsPath, string outputPath, PromptTemplate template, int? pca, int seed,
        AttentionPrecision attention, string backendName, int threads, int batchSize, bool json, ModelLoadOptions weights, CancellationToken cancel)
    {
        List<EmbedItemsFile.Item> items;
        using (var reader = JsonLinesReader.Open(itemsPath, "items file"))
        {
            OutputFile.Check(outputPath, "--output", itemsPath, modelDir);
            items = EmbedItemsFile.Read(reader);
        }
        if (items.Count == 0) throw new InvalidDataException($"{itemsPath}: no items (every line is blank)");

        using var backend = CommonOptions.CreateBackend(backendName, threads);
        var clock = Stopwatch.StartNew();
        using var model = CommonOptions.LoadModel(modelDir, backend, weights);
        int hidden = model.Config.HiddenSize;
        CommonOptions.CheckPca(pca, items.Count, hidden, "hidden size");
        double loadMs = clock.Elapsed.TotalMilliseconds;

        clock.Restart();
        float[] embeddings;
        long tokens; // as the embedder formed them (BOS, then the templated text), for the summary's tokens/s
        using (var embedder = new ItemEmbedder(model, template, attention, batchSize))
        using (var progress = new TerminalProgress("embedding", items.Count))
        {
            if (embedder.Dimension != hidden)
                throw new InvalidOperationException($"the embedder's dimension {embedder.Dimension} is not the model's hidden size {hidden}");
            try
            {
                embeddings = embedder.Embed(items.Select(i => i.Text).ToList(), progress, cancel);
                tokens = embedder.LastTokenCount;
            }
            catch (RecordException e) when (e.Record is int i && i < items.Count)
            {
                // The embedder names the item by its index in the list; the user knows its line and id.
                throw e.At(itemsPath, items[i].Line, $"item {items[i].Id}");
            }
        }
        double embedMs = clock.Elapsed.TotalMilliseconds;
        if (embeddings.Length != (long)items.Count * hidden)
            throw new InvalidOperationException($"the embedder returned {embeddings.Length} floats for {items.Count} items × {hidden}");

        int dim = hidden;
        double[]? explained = null;
        double pcaMs = 0;
        if (pca is int components)
        {
            cancel.ThrowIfCancellationRequested();
            clock.Restart();
            var fit = Pca.Fit(backend, embeddings, items.Count, hidden, new PcaOptions { Components = components, Seed = seed });
            var reduced = new float[(long)items.Count * components];
            fit.Transform(embeddings, items.Count, reduced);
            embeddings = reduced;
            dim = components;
            explained = fit.ExplainedVarianceRatio.ToArray();
            pcaMs = clock.Elapsed.TotalMilliseconds;
        }

        var writer = new SafeTensorsWriter();
        writer.Add<float>("embeddings", SafeTensorDType.F32, [items.Count, dim], embeddings);
        writer.Add<long>("item_ids", SafeTensorDType.I64, [items.Count], items.Select(i => i.Id).ToArray());
        writer.Metadata["format"] = FormatName;
        writer.Metadata["model"] = model.Directory;
        writer.Metadata["template"] = template.Name;
        writer.Metadata["pooling"] = Pooling;
        writer.Metadata["attention"] = CommonOptions.Name(attention);
        writer.Metadata["hidden_size"] = hidden.ToString(System.Globalization.CultureInfo.InvariantCulture);
        // Raw vectors, not an index: SubrIndex.Load builds a cosine index from them in memory (rellax index saves that work).
        writer.Metadata["similarity"] = "dot";
        if (explained is not null) writer.Metadata["pca_explained_variance_ratio"] = JsonSerializer.Serialize(explained);
        writer.Save(outputPath, cancel);

        double tokensPerSecond = embedMs > 0 ? tokens / (embedMs / 1000) : 0;
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                items = items.Count, dim, hidden_size = hidden, pca, explained_variance = explained is null ? (double?)null : Math.Round(explained.Sum(), 6),
                tokens, model = model.Directory, template = template.Name, backend = backend.Name, attention = CommonOptions.Name(attention),
                batch_size = batchSize, load_ms = Math.Round(loadMs, 3), embed_ms = Math.Round(embedMs, 3), pca_ms = Math.Round(pcaMs, 3),
                tokens_per_second = Math.Round(tokensPerSecond, 1), output = outputPath,
            }));
        else
            Console.Error.WriteLine($"[{backend.Name}, {CommonOptions.Name(attention)} attention] {items.Count} items, {tokens} tokens: load {loadMs:F0} ms, " +
                $"embed {embedMs:F0} ms ({tokensPerSecond:F0} tokens/s)" +
                (explained is null ? "" : $", PCA to {dim} keeps {explained.Sum() * 100:F2}% of the variance") + $" → {outputPath} [{items.Count}, {dim}]");
        return 0;
    }
}

/// <summary>The JSONL input of <c>rellax embed</c>: <c>{"id": int64, "text": "..."}</c> per line, ids unique.</summary>
internal static class EmbedItemsFile
{
    /// <summary>One item.</summary>
    /// <param name="Id">The item id.</param>
    /// <param name="Text">The item text (before the template).</param>
    /// <param name="Line">1-based line number.</param>
    public readonly record struct Item(long Id, string Text, long Line);

    /// <summary>Reads every non-blank line (blank lines are skipped but counted; 16 MiB per line at most).</summary>
    /// <exception cref="RecordException">A malformed line or a repeated id: <c>FILE:LINE: what</c> (a repeated id names both lines).</exception>
    public static List<Item> Read(JsonLinesReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var items = new List<Item>();
        var lineOf = new Dictionary<long, long>();
        foreach (var (line, root) in reader.ReadObjects())
        {
            RecordException Fail(string reason) => new(reader.FileName, line, reason);
            if (!root.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.Number || !id.TryGetInt64(out long value))
                throw Fail("\"id\" must be an integer (int64)" + (id.ValueKind == JsonValueKind.Undefined ? " (missing)" : $", got {id.GetRawText()}"));
            if (!root.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                throw Fail($"item {value}: \"text\" must be a string" + (text.ValueKind == JsonValueKind.Undefined ? " (missing)" : $", got {text.ValueKind}"));
            if (!lineOf.TryAdd(value, line))
                throw Fail($"item id {value} is already used on line {lineOf[value]}");
            items.Add(new Item(value, text.GetString()!, line));
        }
        return items;
    }
}
