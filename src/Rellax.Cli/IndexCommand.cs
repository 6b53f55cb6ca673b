using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary><c>rellax index</c>: builds a SUBR index (optionally PCA-reduced, f32/f16/i8) from item vectors in a safetensors file.</summary>
internal static class IndexCommand
{
    public static Command Create()
    {
        var vectors = CommonOptions.ItemVectors(required: true);
        var output = new Option<string>("--output") { HelpName = "FILE.safetensors", Description = "The index file to write (safetensors), atomically.", Required = true };
        var pca = CommonOptions.OptionalPca("Reduce to this many principal components first (SPEC: 512).");
        var seed = CommonOptions.PcaSeed();
        var storage = CommonOptions.Choice("--storage", "Table storage: f32, f16 or i8 (one scale per row).", "f32", "f32", "f16", "i8");
        var similarity = CommonOptions.Choice("--similarity", "cosine (normalise rows) or dot (raw vectors).", "cosine", "cosine", "dot");
        var noCenter = new Option<bool>("--no-center")
        {
            Description = "Without --pca, a cosine index subtracts the mean vector first (as PCA does), so that f16/i8 tables keep " +
                          "their top-K agreement with f32 on LLM vectors whose cosines crowd near 1; this keeps the raw vectors.",
        };
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("index", """
        Build a SUBR retrieval index from item vectors: optionally PCA-reduced, cosine (rows normalised) or dot, stored as
        f32, f16 or i8 with a scale per row.

        Examples:
          rellax embed --items ml1m/items.jsonl --output ml1m-vectors.safetensors
          rellax index --item-vectors ml1m-vectors.safetensors --pca 512 --output ml1m-index.safetensors
          rellax index --item-vectors vectors.safetensors --storage i8 --similarity dot --output index.safetensors --json
        """) { vectors, output, pca, seed, storage, similarity, noCenter, backend, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Run(r.GetValue(vectors)!, r.GetValue(output)!, r.GetValue(pca), r.GetValue(seed),
            r.GetValue(storage) switch { "f16" => DType.F16, "i8" => DType.I8, _ => DType.F32 },
            r.GetValue(similarity) == "dot" ? SubrSimilarity.Dot : SubrSimilarity.Cosine, !r.GetValue(noCenter),
            r.GetValue(backend)!, r.GetValue(threads), r.GetValue(json), cancel)));
        return cmd;
    }

    private static int Run(string vectorsPath, string outputPath, int? pca, int seed, DType storage, SubrSimilarity similarity, bool center,
        string backendName, int threads, bool json, CancellationToken cancel)
    {
        OutputFile.Check(outputPath, "--output", vectorsPath);
        var (data, n, d, ids) = ItemVectors.ReadFile(vectorsPath);
        CommonOptions.CheckPca(pca, n, d, "dimension");
        using var compute = CommonOptions.CreateBackend(backendName, threads);
        var clock = Stopwatch.StartNew();
        SubrIndex index;
        try
        {
            index = SubrIndex.Build(compute, data, n, d, ids,
                new SubrIndexOptions { PcaComponents = pca, PcaSeed = seed, Storage = storage, Similarity = similarity, Center = center });
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{vectorsPath}': {e.Message}", e);
        }
        using (index)
        {
            double buildMs = clock.Elapsed.TotalMilliseconds;
            cancel.ThrowIfCancellationRequested();
            index.Save(outputPath, cancel);
            double kept = index.ExplainedVarianceRatio?.Sum() ?? 1;
            if (json)
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    vectors = vectorsPath, output = outputPath, items = n, input_dim = d, dim = index.Dim,
                    storage = storage.ToString().ToLowerInvariant(), similarity = similarity == SubrSimilarity.Dot ? "dot" : "cosine",
                    explained_variance = index.ExplainedVarianceRatio is null ? (double?)null : Math.Round(kept, 6), centered = index.Mean is not null,
                    backend = compute.Name, build_ms = Math.Round(buildMs, 3),
                }));
            else
                Console.Error.WriteLine($"[{compute.Name}] {index} from {n} × {d} vectors in {buildMs:F0} ms" +
                    (index.ExplainedVarianceRatio is null ? "" : $", PCA keeps {kept:P2} of the variance") + $" → {outputPath}");
        }
        return 0;
    }
}
