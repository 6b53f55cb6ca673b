using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Benchmarks;

/// <summary>
/// <c>--int8-diagnose N</c> (issue 19, accuracy): where the int8 model's p_yes error on the scoring benchmark model comes from.
/// Scores N ~512-token prompts (no adapter, template none) with the F32 model, then with int8 applied to one group of
/// matrices at a time (the rest as stored) and with other activation group sizes, printing max and mean |p_yes − fp32| for
/// each (<c>RELLAX_INT8_DIAGNOSE_PLANS=0,3</c> runs only those plans, by index). A
/// threshold of 1e-30 makes every input column an outlier column, i.e. int8 weights with fp32 activations (W8A32): the weight
/// quantization alone; the difference to threshold 6 is the activation quantization.
/// </summary>
internal static class Int8Diagnosis
{
    public static void Run(int count)
    {
        ScoringBenchmarks.EnsureModel(ScoringBenchmarks.ModelDir);
        using var cpu = new CpuBackend(GemmBenchmarks.Threads);
        var options = new ScoringOptions
        {
            Template = PromptTemplate.None, Attention = AttentionPrecision.Fp32,
            BatchSize = ScoringBenchmarks.BatchSize, MaxBatchTokens = ScoringBenchmarks.BatchSize * 640,
        };
        double[] Score(ModelLoadOptions? load)
        {
            using var model = LlamaModel.Load(ScoringBenchmarks.ModelDir, cpu, load);
            var requests = ScoringBenchmarks.Prompts(model.Tokenizer, count);
            using var scorer = new CtrScorer(model, null, options);
            return [.. scorer.Score(requests).Select(s => s.PYes)];
        }
        var fp32 = Score(null);
        Console.WriteLine($"fp32 p_yes: {string.Join(" ", fp32.Select(v => v.ToString("F4")))}");
        static bool Attn(string n) => n.Contains("self_attn", StringComparison.Ordinal);
        static bool GateUp(string n) => n.Contains("gate_proj", StringComparison.Ordinal) || n.Contains("up_proj", StringComparison.Ordinal);
        static bool Down(string n) => n.Contains("down_proj", StringComparison.Ordinal);
        static bool Ends(string n) => n.StartsWith("model.embed", StringComparison.Ordinal) || n.StartsWith("lm_head", StringComparison.Ordinal);
        const int G = Primitives.DefaultInt8GroupSize;
        var plans = new (string Name, Func<string, float?> Plan, int Group)[]
        {
            ($"all matrices, threshold 6, activation groups of {G} (the default)", _ => 6f, G),
            ("all, threshold 6, groups of 64", _ => 6f, 64),
            ("all, threshold 6, groups of 32", _ => 6f, 32),
            ($"gate/up only, threshold 6, groups of {G}", n => GateUp(n) ? 6f : null, G),
            ($"down only, threshold 6, groups of {G}", n => Down(n) ? 6f : null, G),
            ($"q/k/v/o only, threshold 6, groups of {G}", n => Attn(n) ? 6f : null, G),
            ("embedding and lm_head only", n => Ends(n) ? 6f : null, G),
            ("all, threshold 1e-30 (W8A32: weights only)", _ => 1e-30f, G),
        };
        var only = Environment.GetEnvironmentVariable("RELLAX_INT8_DIAGNOSE_PLANS");
        for (int i = 0; i < plans.Length; i++)
        {
            if (only is not null && !only.Split(',').Contains(i.ToString(System.Globalization.CultureInfo.InvariantCulture))) continue;
            var (name, plan, group) = plans[i];
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var p = Score(new ModelLoadOptions { Weights = WeightFormat.Int8, Int8Plan = plan, Int8GroupSize = group });
            var d = p.Zip(fp32, (a, b) => Math.Abs(a - b)).ToArray();
            Console.WriteLine($"{name}: max |Δp_yes| {d.Max():E2}, mean {d.Average():E2} ({clock.Elapsed.TotalSeconds:F0} s)");
        }
    }
}
