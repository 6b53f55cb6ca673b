using System.Diagnostics;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Benchmarks;

/// <summary>
/// <c>--prefill-anchor auto|f16|int8 N [PROMPTS.json]</c>: our side of the llama.cpp comparison (issue 19, item 4). Loads the
/// scoring benchmark model (<see cref="ScoringBenchmarks.EnsureModel"/>) with that weight format on
/// <see cref="GemmBenchmarks.Threads"/> threads, scores the first two prompts untimed (warm-up: pages the F32 mapping in, jits),
/// then times <see cref="CtrScorer"/> on N ~512-token prompts in batches of <see cref="ScoringBenchmarks.BatchSize"/> (template
/// none, no adapter, fp32 attention) and prints tokens/s and p_yes per prompt. With PROMPTS.json it first writes the exact ids
/// each prompt evaluates (BOS, prompt, the answers' common prefix) and the yes/no ids, for <c>benchmarks/llamacpp/prefill.mjs</c>.
/// <c>RELLAX_INT8_THRESHOLD</c> sets the int8 outlier threshold (default 6).
/// </summary>
internal static class PrefillAnchor
{
    public static void Run(string weights, int count, string? idsPath)
    {
        var format = weights switch
        {
            "auto" => WeightFormat.Auto, "f16" => WeightFormat.F16, "bf16" => WeightFormat.BF16, "int8" => WeightFormat.Int8,
            _ => throw new ArgumentException($"--prefill-anchor: weights '{weights}' is not auto, f16, bf16 or int8"),
        };
        ScoringBenchmarks.EnsureModel(ScoringBenchmarks.ModelDir);
        using var backend = new CpuBackend(GemmBenchmarks.Threads);
        float threshold = Environment.GetEnvironmentVariable("RELLAX_INT8_THRESHOLD") is { Length: > 0 } t
            ? float.Parse(t, System.Globalization.CultureInfo.InvariantCulture) : Primitives.DefaultOutlierThreshold;
        using var model = LlamaModel.Load(ScoringBenchmarks.ModelDir, backend, new ModelLoadOptions { Weights = format, OutlierThreshold = threshold });
        var requests = ScoringBenchmarks.Prompts(model.Tokenizer, count);
        var ids = requests.Select(r => TorchScoringForward.PromptIds(model.Tokenizer, r.Prompt)).ToArray();
        if (idsPath is not null)
        {
            var (_, yes, no) = TorchScoringForward.AnswerTokens(model.Tokenizer, requests[0].Prompt);
            File.WriteAllText(idsPath, JsonSerializer.Serialize(new { yes, no, prompts = ids }));
        }
        var options = new ScoringOptions
        {
            Template = PromptTemplate.None, Attention = AttentionPrecision.Fp32,
            BatchSize = ScoringBenchmarks.BatchSize, MaxBatchTokens = ScoringBenchmarks.BatchSize * 640,
        };
        using var scorer = new CtrScorer(model, null, options);
        scorer.Score(requests.Take(2).ToList());
        var process = Process.GetCurrentProcess();
        var cpu0 = process.TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        var scores = scorer.Score(requests);
        double seconds = clock.Elapsed.TotalSeconds;
        process.Refresh();
        double cpuSeconds = (process.TotalProcessorTime - cpu0).TotalSeconds;
        long tokens = ids.Sum(x => (long)x.Length);
        Console.WriteLine($"ours {weights}: {count} prompts, {tokens} tokens in {seconds:F2} s = {tokens / seconds:F1} tokens/s; " +
            $"CPU time {cpuSeconds:F2} s = {tokens / cpuSeconds:F1} tokens per CPU-second " +
            $"(threads {GemmBenchmarks.Threads}, batch {ScoringBenchmarks.BatchSize}; weights {model.WeightBytes / 1e6:F0} MB, " +
            $"converted in {model.WeightConversionTime.TotalSeconds:F1} s)");
        Console.WriteLine($"p_yes: {string.Join(" ", scores.Select(s => s.PYes.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)))}");
    }
}
