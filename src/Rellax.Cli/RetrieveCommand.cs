using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary><c>rellax retrieve</c>: SUBR over a JSONL file of samples, or over a prepared dataset's split, with a saved index.</summary>
internal static class RetrieveCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index", "--embeddings") { HelpName = "FILE.safetensors", Description = "SUBR index written by rellax index (safetensors: embeddings [N, d], optional scales, item_ids, mean). Raw item vectors (rellax embed output) are indexed in memory (cosine, centred, f32) with a warning.", Required = true };
        var samples = new Option<string?>("--samples") { HelpName = "FILE.jsonl", Description = "JSONL input, one {\"id\", \"history\": [item ids], \"target\": item id} per line. Give this or --data." };
        var data = new Option<string?>("--data") { HelpName = "DIR", Description = "A prepared dataset folder (rellax prepare): retrieve for the samples of --split, histories from its timelines. Give this or --samples." };
        var split = CommonOptions.Split("test");
        var limit = CommonOptions.Int("--limit", 0, int.MaxValue, "With --data: at most the first N samples of the split (0: all).", 0);
        var k = CommonOptions.Int("--k", 1, SubrTopK.MaxK, "History items to keep per sample.", null);
        var order = CommonOptions.Choice("--order", "Order of the retrieved items: chronological or score.", "chronological", "chronological", "score");
        var output = new Option<string?>("--output") { HelpName = "FILE.jsonl", Description = "JSONL output file (default: standard output). Written atomically." };
        var batch = CommonOptions.BatchSize(1024, "Samples per kernel call.");
        var withScores = new Option<bool>("--with-scores", "--scores") { Description = "Also write each retrieved item's similarity score." };
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var cmd = new Command("retrieve", """
        SUBR: keep each sample's K history items most similar to its target (ties: the more recent wins), in time order
        or best first. Output, one line per sample: {"id", "retrieved": [item ids], "positions": [history positions]}
        (plus "scores" with --with-scores). With --data the id is the prepared sample's id, and the file is what
        `rellax export --retrieved` reads.

        Examples:
          rellax retrieve --index ml1m-index.safetensors --samples samples.jsonl --k 30 --output retrieved.jsonl
          rellax retrieve --index index.safetensors --samples samples.jsonl --k 5 --order score --with-scores
          rellax retrieve --index ml100k-index.safetensors --data ml100k --split test --k 5 --output retrieved.jsonl
        """)
        {
            index, samples, data, split, limit, k, order, output, batch, withScores, backend, threads, json,
        };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Run(r.GetValue(index)!, r.GetValue(samples), r.GetValue(data),
            CommonOptions.ParseSplit(r.GetValue(split)!), r.GetValue(limit), r.GetValue(k),
            r.GetValue(order) == "score" ? SubrOrder.Score : SubrOrder.Chronological, r.GetValue(output), r.GetValue(batch),
            r.GetValue(withScores), r.GetValue(backend)!, r.GetValue(threads), r.GetValue(json), cancel)));
        return cmd;
    }

    private static int Run(string indexPath, string? samplesPath, string? dataDir, SampleSplit split, int limit, int k, SubrOrder order,
        string? outputPath, int batchSize, bool withScores, string backendName, int threads, bool json, CancellationToken cancel)
    {
        if ((samplesPath is null) == (dataDir is null)) throw new ArgumentException("give either --samples FILE or --data DIR (a prepared dataset)");
        if (samplesPath is not null) CliPaths.RequireFile(samplesPath, "samples file");
        if (outputPath is not null) OutputFile.Check(outputPath, "--output", indexPath, samplesPath, dataDir);
        using var backend = CommonOptions.CreateBackend(backendName, threads);
        var clock = Stopwatch.StartNew();
        using var index = SubrIndex.Load(indexPath, backend);
        SampleSet? set = dataDir is null ? null : PreparedDataset.Load(dataDir);
        double loadMs = clock.Elapsed.TotalMilliseconds;
        if (index.BuiltOnLoad)
            Console.Error.WriteLine($"rellax: warning: '{indexPath}' holds item vectors, not an index built by `rellax index`: built a cosine index " +
                $"(centred, f32) in memory; `rellax index --item-vectors {indexPath} --output INDEX` saves that work");

        int count = 0;
        long events = 0;
        string source = samplesPath ?? dataDir!;
        clock.Restart();
        void WriteAll(TextWriter sink)
        {
            var pending = new List<SubrSamplesFile.Entry>(Math.Min(batchSize, 4096));
            foreach (var entry in samplesPath is null ? FromPrepared(set!, split, limit) : SubrSamplesFile.Read(samplesPath))
            {
                pending.Add(entry);
                if (pending.Count == batchSize) Flush();
            }
            Flush();

            void Flush()
            {
                if (pending.Count == 0) return;
                cancel.ThrowIfCancellationRequested();
                SubrResult result;
                try
                {
                    result = index.Retrieve(pending.Select(e => e.Sample).ToList(), k, order);
                }
                catch (RecordException e) when (e.Record is int i && i < pending.Count && pending[i].Line > 0)
                {
                    // Name the line as well as the sample (the kernel names the sample by its place in the batch).
                    throw e.At(source, pending[i].Line, $"sample '{pending[i].Sample.Id}'");
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

        if (outputPath is null) WriteAll(Console.Out);
        else OutputFile.Write(outputPath, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
            WriteAll(writer);
        }, cancel);
        double ms = clock.Elapsed.TotalMilliseconds;
        if (json && outputPath is not null)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                embeddings = indexPath, samples = count, history_events = events, k, order = order == SubrOrder.Score ? "score" : "chronological",
                backend = backend.Name, index = index.ToString(), load_ms = Math.Round(loadMs, 3), retrieve_ms = Math.Round(ms, 3), output = outputPath,
            }));
        else
            Console.Error.WriteLine($"[{backend.Name}] {count} samples, {events} history events, k = {k}: load {loadMs:F1} ms, retrieval {ms:F1} ms ({index})");
        return 0;
    }

    /// <summary>The samples of a prepared split as SUBR samples: id = the sample's id, history = its timeline's item ids
    /// (the rows that items.jsonl, and so rellax embed and rellax index, use as item ids), target = its item.</summary>
    private static IEnumerable<SubrSamplesFile.Entry> FromPrepared(SampleSet set, SampleSplit split, int limit)
    {
        int n = 0;
        foreach (var s in set.InSplit(split))
        {
            if (limit > 0 && n++ >= limit) yield break;
            var history = set.History(s);
            var items = new long[history.Length];
            for (int j = 0; j < items.Length; j++) items[j] = history[j].Item;
            string id = s.Index.ToString(System.Globalization.CultureInfo.InvariantCulture);
            yield return new SubrSamplesFile.Entry(new SubrSample(id, items, s.Item), id, 0);
        }
    }
}
