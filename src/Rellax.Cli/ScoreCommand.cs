using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax score</c>: CTR scores p(yes) for a JSONL file of prompts with a base model and an optional ReLLaX adapter
/// (<see cref="CtrScorer"/>). A regular input file is read twice: every line is parsed and validated before any is scored,
/// then scored chunk by chunk, so memory is bounded by a chunk, not by the file; the output is written atomically.
/// </summary>
internal static class ScoreCommand
{
    private const string Description = """
        Score CTR prompts: p(yes) from the yes/no answer logits at the last prompt position.

        Input (JSONL), one object per line; blank lines are skipped (a file of none gives an empty output); other fields
        are ignored:
          {"id": any JSON value, "prompt": "text, may hold [hist] and [target] markers",
           "instance": [d_h floats: h_u, needed with a CFLoRA adapter],
           "hist_embeddings": [[E floats] per [hist] marker, in order], "target_embedding": [E floats]}
        Output (JSONL), one line per input line, same order, the id echoed as written:
          {"id": ..., "p_yes": float, "logit_yes": float, "logit_no": float}
        Every line is checked (JSON, field types, vector lengths, markers vs embeddings, prompt length vs
        max_position_embeddings) before any scoring; errors name FILE:LINE. The file is then read again and scored in
        chunks of 64 × --batch-size prompts, so memory does not grow with the file. An input that can be read only once
        (a FIFO, /dev/stdin from a pipe) is checked and scored chunk by chunk: its errors surface with the chunk.
        --output is written to a temporary file and renamed at the end: a failed run leaves no output and does not
        touch an existing file.

        Examples:
          rellax score --input requests.jsonl
          rellax score --model vicuna-7b --adapter rellax-ml1m --input test.jsonl --output scores.jsonl --batch-size 16
          rellax score --model llama-3-8b --template none --yes " yes" --no " no" --attention int8 --input test.jsonl --json
        """;

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var adapter = new Option<string?>("--adapter") { HelpName = "DIR", Description = "ReLLaX/PEFT adapter directory (adapter_config.json, adapter_model.safetensors): LoRA, CFLoRA and/or SPA." };
        var template = CommonOptions.Template("Chat template around each prompt: vicuna (SPEC §1) or none (the prompt as is, after BOS).");
        var attention = CommonOptions.Attention();
        var backend = CommonOptions.Backend();
        var threads = CommonOptions.Threads();
        var batch = CommonOptions.BatchSize(new ScoringOptions().BatchSize, "Most prompts per forward pass (prompts are sorted by length and left-padded).");
        var maxTokens = CommonOptions.Int("--max-batch-tokens", 1, 1 << 24,
            "Most padded tokens (batch × longest prompt) per forward pass: bounds activation memory. A longer prompt runs alone.",
            new ScoringOptions().MaxBatchTokens);
        var yes = new Option<string>("--yes") { HelpName = "TEXT", Description = "The positive answer as it follows the prompt.", DefaultValueFactory = _ => " Yes" };
        var no = new Option<string>("--no") { HelpName = "TEXT", Description = "The negative answer as it follows the prompt.", DefaultValueFactory = _ => " No" };
        var input = new Option<string>("--input") { HelpName = "FILE.jsonl", Description = "JSONL requests (see above).", Required = true };
        var output = new Option<string?>("--output") { HelpName = "FILE.jsonl", Description = "JSONL scores (default: standard output). Written atomically." };
        var json = CommonOptions.Json();
        var weights = CommonOptions.Weights();
        json.Description = "Print a JSON summary (count, backend, attention, timings, tokens/s): on stdout with --output, else on stderr.";
        var cmd = new Command("score", Description) { model, adapter, template, attention, weights.Format, weights.Threshold, backend, threads, batch, maxTokens, yes, no, input, output, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel =>
        {
            var (chosen, note) = TemplateFor(r, template, r.GetValue(adapter));
            return Run(new Settings(
                r.GetValue(model) ?? CommonOptions.DefaultModelDirectory(), r.GetValue(adapter), chosen,
                CommonOptions.ParseAttention(r.GetValue(attention)!), r.GetValue(backend)!, r.GetValue(threads), r.GetValue(batch), r.GetValue(maxTokens),
                r.GetValue(yes)!, r.GetValue(no)!, r.GetValue(input)!, r.GetValue(output), r.GetValue(json), weights.Parse(r), note), cancel);
        }));
        return cmd;
    }

    /// <summary>--template as given; else the template the adapter was trained with (its training.json), with the note
    /// that says so (printed once scoring has succeeded, so that an error stays one line); else the default.</summary>
    private static (PromptTemplate Template, string? Note) TemplateFor(ParseResult r, Option<string> template, string? adapterDir)
    {
        if (r.GetResult(template) is not { Implicit: false } && adapterDir is not null && Directory.Exists(adapterDir)
            && TrainedPromptSettings.Read(adapterDir)?.Template is { } trained)
            return (PromptTemplate.Parse(trained),
                $"rellax: --template {trained} from {Path.Combine(adapterDir, TrainedPromptSettings.FileName)} (the adapter's training prompts; give --template to override)");
        return (PromptTemplate.Parse(r.GetValue(template)!), null);
    }

    private sealed record Settings(string ModelDir, string? AdapterDir, PromptTemplate Template, AttentionPrecision Attention,
        string BackendName, int Threads, int BatchSize, int MaxBatchTokens, string Yes, string No, string InputPath, string? OutputPath, bool Json, ModelLoadOptions Weights, string? Note);

    /// <summary>Most requests held in memory at once (one chunk of pass 2); 0: <see cref="ScoringOptions.BatchSize"/> · 64.
    /// Tests set it small to exercise several chunks on a short file.</summary>
    internal static int ChunkRequests { get; set; }

    /// <summary>The most requests the last run held in memory at once (the largest chunk it scored); tests read it.</summary>
    internal static int MostRequestsHeld { get; private set; }

    private static int Run(Settings s, CancellationToken cancel)
    {
        // Memory is bounded by one chunk of requests, never by the file. A regular input is read twice: pass 1 parses and
        // validates every line (keeping only counts), so a bad line late in a big file fails in seconds, before any scoring
        // or output; pass 2 reads it again chunk by chunk, scores each chunk and writes its lines at once. An input that
        // cannot be read twice (a FIFO, a pipe behind /dev/stdin) is read once, chunk by chunk (validated, then scored):
        // its errors surface per chunk, after the earlier chunks' lines were written (to a FIFO or stdout; --output to a
        // regular file is still replaced only at the end).
        var clock = Stopwatch.StartNew();
        MostRequestsHeld = 0;
        using var input = JsonLinesReader.Open(s.InputPath, "input file");
        bool twoPasses = input.IsRegularFile;
        if (s.OutputPath is not null) OutputFile.Check(s.OutputPath, "--output", s.InputPath, s.ModelDir, s.AdapterDir);
        double openMs = clock.Elapsed.TotalMilliseconds;

        using var backend = CommonOptions.CreateBackend(s.BackendName, s.Threads);
        clock.Restart();
        using var model = CommonOptions.LoadModel(s.ModelDir, backend, s.Weights);
        var adapter = s.AdapterDir is null ? null : RellaxAdapter.Load(s.AdapterDir, model.Config);
        var options = new ScoringOptions { Template = s.Template, Attention = s.Attention, BatchSize = s.BatchSize, MaxBatchTokens = s.MaxBatchTokens, YesAnswer = s.Yes, NoAnswer = s.No };
        using var scorer = new CtrScorer(model, adapter, options);
        double loadMs = clock.Elapsed.TotalMilliseconds;

        int Check(ScoreRequestsFile.Entry entry) => ScoreRequestsFile.Check(scorer, s.InputPath, entry);

        // Pass 1 (a regular file): parse and validate every line, keeping counts only.
        long count = 0, tokens = 0;
        var checkClock = new Stopwatch();
        if (twoPasses)
        {
            checkClock.Start();
            foreach (var entry in ScoreRequestsFile.Read(input))
            {
                tokens += Check(entry);
                count++;
            }
            checkClock.Stop();
        }

        // Pass 2: chunk by chunk, score and write.
        clock.Restart();
        int chunkSize = ChunkRequests > 0 ? ChunkRequests : (int)Math.Min(int.MaxValue, 64L * s.BatchSize);
        long scored = 0;
        var progress = twoPasses && count > 0 ? new TerminalProgress("scoring", (int)Math.Min(count, int.MaxValue)) : null;
        void ScoreAll(Stream output)
        {
            using var again = twoPasses ? JsonLinesReader.Open(s.InputPath, "input file") : null;
            var chunk = new List<ScoreRequestsFile.Entry>(Math.Min(chunkSize, 4096));
            foreach (var entry in ScoreRequestsFile.Read(again ?? input))
            {
                chunk.Add(entry);
                if (chunk.Count == chunkSize) ScoreChunk(chunk, output);
            }
            if (chunk.Count > 0) ScoreChunk(chunk, output);
            if (twoPasses && scored != count)
                throw new IOException($"input file '{s.InputPath}' changed while it was being scored ({count} requests when checked, {scored} when scored)");
        }
        void ScoreChunk(List<ScoreRequestsFile.Entry> chunk, Stream output)
        {
            cancel.ThrowIfCancellationRequested();
            MostRequestsHeld = Math.Max(MostRequestsHeld, chunk.Count);
            if (!twoPasses)
            {
                checkClock.Start();
                foreach (var entry in chunk) tokens += Check(entry);
                checkClock.Stop();
                count += chunk.Count;
            }
            CtrScore[] scores;
            long before = scored;
            try
            {
                scores = scorer.Score(chunk.ConvertAll(e => e.Request), progress is null ? null : new Offset(progress, before), cancel);
            }
            catch (RecordException e) when (e.Record is int i && i < chunk.Count)
            {
                // Validate passed, so this should not happen; if it does, still name the line.
                throw e.At(s.InputPath, chunk[i].Line, $"id {chunk[i].RawId}");
            }
            if (scores.Length != chunk.Count)
                throw new InvalidOperationException($"the scorer returned {scores.Length} scores for {chunk.Count} requests");
            WriteScores(output, chunk, scores, s.InputPath);
            scored += chunk.Count;
            chunk.Clear();
        }

        using (progress)
        {
            if (s.OutputPath is null)
            {
                using var stdout = Console.OpenStandardOutput();
                ScoreAll(stdout);
            }
            else OutputFile.Write(s.OutputPath, ScoreAll, cancel);
        }
        double validateMs = openMs + checkClock.Elapsed.TotalMilliseconds;
        // Pass 2 re-reads and writes as it scores: its time, less any validation done in it, is the scoring time.
        double scoreMs = clock.Elapsed.TotalMilliseconds - (twoPasses ? 0 : checkClock.Elapsed.TotalMilliseconds);

        double tokensPerSecond = scoreMs > 0 ? tokens / (scoreMs / 1000) : 0;
        if (s.Json)
        {
            string summary = JsonSerializer.Serialize(new
            {
                input = s.InputPath, output = s.OutputPath, count, tokens, model = model.Directory, adapter = adapter?.Directory,
                adapter_parts = adapter is null ? null : Parts(adapter), template = s.Template.Name, backend = backend.Name,
                attention = CommonOptions.Name(s.Attention), batch_size = s.BatchSize, max_batch_tokens = s.MaxBatchTokens, load_ms = Math.Round(loadMs, 3),
                check_ms = Math.Round(validateMs, 3), score_ms = Math.Round(scoreMs, 3), tokens_per_second = Math.Round(tokensPerSecond, 1),
                requests_per_second = Math.Round(scoreMs > 0 ? count / (scoreMs / 1000) : 0, 2),
            });
            if (s.OutputPath is not null) Console.WriteLine(summary);
            else Console.Error.WriteLine(summary);
        }
        else
        {
            string adapterText = adapter is null ? "no adapter" : $"adapter {Parts(adapter)}";
            Console.Error.WriteLine($"[{backend.Name}, {CommonOptions.Name(s.Attention)} attention, {adapterText}] {count} prompts, {tokens} tokens: " +
                $"load {loadMs:F0} ms, check {validateMs:F0} ms, score {scoreMs:F0} ms ({tokensPerSecond:F0} tokens/s)" +
                (s.OutputPath is null ? "" : $" → {s.OutputPath}"));
        }
        if (s.Note is not null) Console.Error.WriteLine(s.Note);
        return 0;
    }

    /// <summary>The adapter's parts, e.g. <c>cflora+spa</c>.</summary>
    private static string Parts(RellaxAdapter adapter)
    {
        var parts = new List<string>();
        if (adapter.Targets.Count > 0) parts.Add(adapter.HasGenerators ? "cflora" : "lora");
        if (adapter.Projector is not null) parts.Add("spa");
        return parts.Count == 0 ? "empty" : string.Join("+", parts);
    }

    /// <summary>A chunk's progress (requests done in the chunk) as progress over the whole file.</summary>
    private sealed class Offset(IProgress<int> total, long before) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value) => total.Report((int)Math.Min(before + value.Done, int.MaxValue));
    }

    /// <summary>Writes one JSON line per score: <c>{"id":RAW,"p_yes":...,"logit_yes":...,"logit_no":...}</c>, UTF-8, <c>\n</c>.</summary>
    /// <exception cref="InvalidOperationException">A score is not finite (the message names the input line).</exception>
    internal static void WriteScores(Stream stream, IReadOnlyList<ScoreRequestsFile.Entry> entries, IReadOnlyList<CtrScore> scores, string inputPath)
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { SkipValidation = false });
        for (int i = 0; i < entries.Count; i++)
        {
            var score = scores[i];
            if (!double.IsFinite(score.PYes) || !float.IsFinite(score.LogitYes) || !float.IsFinite(score.LogitNo))
                throw new InvalidOperationException($"{inputPath}:{entries[i].Line}: id {entries[i].RawId}: the model produced a non-finite score " +
                    $"(p_yes = {score.PYes}, logit_yes = {score.LogitYes}, logit_no = {score.LogitNo})");
            json.WriteStartObject();
            json.WritePropertyName("id");
            json.WriteRawValue(entries[i].RawId, skipInputValidation: true);
            json.WriteNumber("p_yes", score.PYes);
            json.WriteNumber("logit_yes", score.LogitYes);
            json.WriteNumber("logit_no", score.LogitNo);
            json.WriteEndObject();
            json.Flush();
            json.Reset();
            stream.WriteByte((byte)'\n');
        }
    }
}
