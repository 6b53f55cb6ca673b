using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary><c>rellax retrieve</c>: SUBR over a JSONL file of samples with a saved embedding index.</summary>
internal static class RetrieveCommand
{
    public static Command Create()
    {
        var embeddings = new Option<string>("--embeddings") { Description = "SUBR index written by rellax index (safetensors: embeddings [N, d], optional scales, item_ids, mean). Raw item vectors (rellax embed output) are indexed in memory (cosine, centred, f32) with a warning.", Required = true };
        var samples = new Option<string>("--samples") { Description = "JSONL input, one {\"id\", \"history\": [item ids], \"target\": item id} per line.", Required = true };
        var k = new Option<int>("--k") { Description = $"History items to keep per sample (1 to {SubrTopK.MaxK}).", Required = true };
        k.Validators.Add(r => { int v = r.GetValueOrDefault<int>(); if (v < 1 || v > SubrTopK.MaxK) r.AddError($"--k must be in [1, {SubrTopK.MaxK}], got {v}"); });
        var order = new Option<string>("--order") { Description = "Order of the retrieved items: chronological (default) or score.", DefaultValueFactory = _ => "chronological" };
        order.AcceptOnlyFromAmong("chronological", "score");
        var output = new Option<string?>("--output") { Description = "JSONL output file (default: standard output). Written atomically." };
        var batch = new Option<int>("--batch-size") { Description = "Samples per kernel call.", DefaultValueFactory = _ => 1024 };
        batch.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 1) r.AddError("--batch-size must be >= 1"); });
        var scores = new Option<bool>("--scores") { Description = "Also write each retrieved item's similarity score." };
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("retrieve", """
        SUBR: keep each sample's K history items most similar to its target (ties: the more recent wins), in time order
        or best first.

        Examples:
          rellax retrieve --embeddings ml1m-index.safetensors --samples samples.jsonl --k 30 --output retrieved.jsonl
          rellax retrieve --embeddings index.safetensors --samples samples.jsonl --k 5 --order score --scores
        """)
        {
            embeddings, samples, k, order, output, batch, scores, backend, threads, json,
        };
        cmd.SetAction(r => CommonOptions.Guard(() => Run(r.GetValue(embeddings)!, r.GetValue(samples)!, r.GetValue(k),
            r.GetValue(order) == "score" ? SubrOrder.Score : SubrOrder.Chronological, r.GetValue(output), r.GetValue(batch),
            r.GetValue(scores), r.GetValue(backend)!, r.GetValue(threads), r.GetValue(json))));
        return cmd;
    }

    private static int Run(string embeddingsPath, string samplesPath, int k, SubrOrder order, string? outputPath, int batchSize,
        bool withScores, string backendName, int threads, bool json)
    {
        // Opened before anything else: a missing file or a folder is reported before the index is loaded.
        var samples = SubrSamplesFile.Read(samplesPath);
        using var backend = CommonOptions.CreateBackend(backendName, threads);
        var clock = Stopwatch.StartNew();
        using var index = SubrIndex.Load(embeddingsPath, backend);
        double loadMs = clock.Elapsed.TotalMilliseconds;
        if (index.BuiltOnLoad)
            Console.Error.WriteLine($"rellax: warning: '{embeddingsPath}' holds item vectors, not an index built by `rellax index`: built a cosine index " +
                $"(centred, f32) in memory; `rellax index --vectors {embeddingsPath} --output INDEX` saves that work");

        // Write to a temporary file beside the output and rename it at the end: a failure leaves no partial output.
        string? temp = outputPath is null ? null : Path.GetFullPath(outputPath) + $".tmp-{Environment.ProcessId}";
        int count = 0;
        long events = 0;
        try
        {
            using (var writer = temp is null ? null : new StreamWriter(temp, false, new UTF8Encoding(false)))
            {
                var sink = writer ?? Console.Out;
                var pending = new List<SubrSamplesFile.Entry>(batchSize);
                clock.Restart();
                foreach (var entry in samples)
                {
                    pending.Add(entry);
                    if (pending.Count == batchSize) Flush();
                }
                Flush();

                void Flush()
                {
                    if (pending.Count == 0) return;
                    SubrResult result;
                    try
                    {
                        result = index.Retrieve(pending.Select(e => e.Sample).ToList(), k, order);
                    }
                    catch (RecordException e) when (e.Record is int i && i < pending.Count)
                    {
                        // Name the line as well as the sample.
                        throw e.At(samplesPath, pending[i].Line, $"sample '{pending[i].Sample.Id}'");
                    }
                    for (int i = 0; i < pending.Count; i++)
                    {
                        SubrSamplesFile.Write(sink, pending[i], result, i, index.ItemIdOf, withScores);
                        events += pending[i].Sample.History.Length;
                    }
                    count += pending.Count;
                    pending.Clear();
                }
            }
            if (temp is not null) File.Move(temp, outputPath!, overwrite: true);
        }
        finally
        {
            if (temp is not null && File.Exists(temp)) File.Delete(temp);
        }
        double ms = clock.Elapsed.TotalMilliseconds;
        if (json && outputPath is not null)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                embeddings = embeddingsPath, samples = count, history_events = events, k, order = order == SubrOrder.Score ? "score" : "chronological",
                backend = backend.Name, index = index.ToString(), load_ms = Math.Round(loadMs, 3), retrieve_ms = Math.Round(ms, 3), output = outputPath,
            }));
        else
            Console.Error.WriteLine($"[{backend.Name}] {count} samples, {events} history events, k = {k}: load {loadMs:F1} ms, retrieval {ms:F1} ms ({index})");
        return 0;
    }
}
