using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary><c>rellax generate</c>: greedy text generation with a KV cache.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var prompt = new Option<string>("--prompt") { HelpName = "TEXT", Description = "Text to continue (default: empty, i.e. BOS only).", DefaultValueFactory = _ => "" };
        var maxNew = CommonOptions.Int("--max-new-tokens", 0, 1 << 20, "Most tokens to generate (the model's context bounds it too).", 256);
        var backend = CommonOptions.Backend();
        var attention = CommonOptions.Attention();
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var weights = CommonOptions.Weights();
        var cmd = new Command("generate", """
        Generate text greedily from a prompt (BOS alone when no prompt is given), with a KV cache.

        Examples:
          rellax generate
          rellax generate --prompt "Once upon a time" --max-new-tokens 60
          rellax generate --model llama-2-7b --attention int8 --json
        """) { model, prompt, maxNew, backend, attention, weights.Format, weights.Threshold, threads, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Run(
            r.GetValue(model) ?? CommonOptions.DefaultModelDirectory(), r.GetValue(prompt) ?? "", r.GetValue(maxNew),
            r.GetValue(backend)!, CommonOptions.ParseAttention(r.GetValue(attention)!), r.GetValue(threads), r.GetValue(json), weights.Parse(r), cancel)));
        return cmd;
    }

    private static int Run(string modelDir, string prompt, int maxNewTokens, string backendName, AttentionPrecision attention, int threads, bool json, ModelLoadOptions weights, CancellationToken cancel)
    {
        using var backend = CommonOptions.CreateBackend(backendName, threads);
        var loadClock = Stopwatch.StartNew();
        using var model = CommonOptions.LoadModel(modelDir, backend, weights);
        double loadMs = loadClock.Elapsed.TotalMilliseconds;
        var tok = model.Tokenizer;
        // Tokenization stops once the prompt is certain not to fit the context, so a huge --prompt costs little.
        if (!tok.TryEncodeWithMarkers(prompt, [], model.Config.MaxPositionEmbeddings, out int[] ids, out long atLeast, addSpecialTokens: true))
            throw new PromptTooLongException(atLeast, exact: false, model.Config.MaxPositionEmbeddings, $"max_position_embeddings = {model.Config.MaxPositionEmbeddings}");
        var promptIds = ids.ToList();
        if (promptIds.Count == 0)
            promptIds.Add(tok.BosId ?? throw new InvalidOperationException("empty prompt and the tokenizer has no BOS token"));
        int budget = Math.Min(maxNewTokens, model.Config.MaxPositionEmbeddings - promptIds.Count);
        if (budget < 0)
            throw new PromptTooLongException(promptIds.Count, exact: true, model.Config.MaxPositionEmbeddings, $"max_position_embeddings = {model.Config.MaxPositionEmbeddings}");

        using var session = model.CreateSession(attention: attention);
        var stops = model.Config.EosTokenIds.ToHashSet();
        var generated = new List<int>();
        var clock = Stopwatch.StartNew();
        double firstTokenMs = 0;
        string printed = "";
        using var tokens = GreedyGenerator.Generate(session, promptIds, budget, stops).GetEnumerator();
        while (tokens.MoveNext())
        {
            int id = tokens.Current;
            if (generated.Count == 0) firstTokenMs = clock.Elapsed.TotalMilliseconds;
            generated.Add(id);
            if (generated.Count == 1) TestHooks.Hold("generate", cancel);
            cancel.ThrowIfCancellationRequested();
            if (json) continue;
            // Decode the whole continuation each time so multi-byte characters split over tokens print whole.
            string text = tok.Decode(generated);
            if (text.Length > printed.Length && text.StartsWith(printed, StringComparison.Ordinal) && !text.EndsWith('\uFFFD'))
            {
                Console.Write(text[printed.Length..]);
                printed = text;
            }
        }
        double totalMs = clock.Elapsed.TotalMilliseconds;
        string finalText = tok.Decode(generated);
        string stopReason = generated.Count > 0 && stops.Contains(generated[^1]) ? "eos"
            : generated.Count >= maxNewTokens ? "max_new_tokens" : "context_full";
        double decodeTokensPerSecond = generated.Count > 1 ? (generated.Count - 1) / ((totalMs - firstTokenMs) / 1000) : 0;

        if (json)
        {
            var result = new
            {
                model = model.Directory,
                backend = backend.Name,
                attention = CommonOptions.Name(attention),
                prompt,
                prompt_ids = promptIds,
                generated_ids = generated,
                text = finalText,
                stop_reason = stopReason,
                load_ms = Math.Round(loadMs, 3),
                prefill_ms = Math.Round(firstTokenMs, 3),
                decode_tokens_per_second = Math.Round(decodeTokensPerSecond, 1),
            };
            Console.WriteLine(JsonSerializer.Serialize(result));
        }
        else
        {
            if (finalText.Length > printed.Length && finalText.StartsWith(printed, StringComparison.Ordinal)) Console.Write(finalText[printed.Length..]);
            Console.WriteLine();
            Console.Error.WriteLine($"[{backend.Name}, {CommonOptions.Name(attention)} attention] {generated.Count} tokens, stop: {stopReason}, prefill {firstTokenMs:F1} ms, decode {decodeTokensPerSecond:F0} tok/s");
        }
        return 0;
    }
}
