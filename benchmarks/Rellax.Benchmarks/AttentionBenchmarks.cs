using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Reports;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;

namespace Rellax.Benchmarks;

/// <summary>
/// Causal prefill attention (SPEC §7, issue 5): B = 1, Hq = 32, Hkv ∈ {32, 8}, D = 128, T ∈ {512, 1024, 2048, 4096},
/// head-major, N(0, 1) inputs, all on 2 threads. TorchSharp <c>scaled_dot_product_attention(is_casual: true)</c> fp32
/// (baseline; for GQA torch gets K/V with the heads repeated, built once outside the timed region) against our fp32
/// and int8 <see cref="FlashAttention.Prefill"/> and int8 <see cref="FlashAttention.Decode"/> (Tq = 1 against a cache
/// of T positions).
/// <para>
/// <b>Environment.</b> <c>RELLAX_ATTN_T</c> and <c>RELLAX_ATTN_HKV</c> (comma-separated) restrict the grid, e.g.
/// <c>RELLAX_ATTN_T=1024 RELLAX_ATTN_HKV=8 dotnet run -c Release --project benchmarks/Rellax.Benchmarks -- --filter
/// '*Attention*'</c>. <c>dotnet run ... -- --attention-accuracy</c> prints the int8 accuracy against exact fp64
/// attention on these inputs instead (T from <c>RELLAX_ATTN_T</c>, default 1024). <c>RELLAX_ATTN_DOTS</c> = scalar,
/// avxvnni or avx512bw (or avx512, avx2) picks the int8 dot strategy through the backend's
/// <c>CpuBackendOptions.InstructionSet</c> (default: AVX-VNNI where present).
/// </para>
/// </summary>
[WarmupCount(2)]
[IterationCount(7)]
public class AttentionBenchmarks
{
    /// <summary>Query heads.</summary>
    public const int QueryHeads = 32;

    /// <summary>Head dimension.</summary>
    public const int D = 128;

    private static int[] Env(string name, int[] fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v.Split(',').Select(int.Parse).ToArray() : fallback;

    /// <summary>The grid (see the class remarks for the environment variables that restrict it).</summary>
    public IEnumerable<AttentionBenchShape> Shapes() =>
        from hkv in Env("RELLAX_ATTN_HKV", [32, 8])
        from t in Env("RELLAX_ATTN_T", [512, 1024, 2048, 4096])
        select new AttentionBenchShape(hkv, t);

    /// <summary>The case under test.</summary>
    [ParamsSource(nameof(Shapes))]
    public AttentionBenchShape Shape { get; set; } = new(32, 64);

    private CpuBackend _cpu = null!;
    private readonly List<IDisposable> _owned = [];
    private Tensor _q, _k, _v, _o, _q1, _o1;
    private Int8KvCache _cache = null!;
    private torch.Tensor _tq = null!, _tk = null!, _tv = null!;
    private static readonly AttentionOptions Fp32Options = new() { Precision = AttentionPrecision.Fp32 };
    private static readonly AttentionOptions Int8Options = new();

    /// <summary>Random q, k, v for a shape (N(0, 1), fixed seeds), head-major.</summary>
    internal static (float[] Q, float[] K, float[] V) Inputs(int hkv, int t)
    {
        var rng = new Random(1234);
        float[] Normal(long n)
        {
            var a = new float[n];
            for (long i = 0; i < n; i++)
                a[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
            return a;
        }
        return (Normal((long)QueryHeads * t * D), Normal((long)hkv * t * D), Normal((long)hkv * t * D));
    }

    /// <summary>Allocates both libraries' inputs and fills the decode cache.</summary>
    [GlobalSetup]
    public void Setup()
    {
        int hkv = Shape.KvHeads, t = Shape.T;
        var (q, k, v) = Inputs(hkv, t);
        var options = new CpuBackendOptions { Threads = GemmBenchmarks.Threads };
        if (Environment.GetEnvironmentVariable("RELLAX_ATTN_DOTS") is { Length: > 0 } dots)
            options = options with
            {
                // A CpuInstructionSet name, or the dot strategy's (Avx512BW is the Avx512 set).
                InstructionSet = dots.Equals("Avx512BW", StringComparison.OrdinalIgnoreCase) ? CpuInstructionSet.Avx512
                    : Enum.Parse<CpuInstructionSet>(dots, ignoreCase: true),
            };
        _cpu = new CpuBackend(options);
        Tensor Up(float[] data, params int[] shape) { var b = _cpu.Upload<float>(data); _owned.Add(b); return b.AsTensor(shape); }
        Tensor Zeros(params int[] shape) { var b = _cpu.Allocate(DType.F32, shape.Aggregate(1L, (a, x) => a * x)); _owned.Add(b); return b.AsTensor(shape); }
        _q = Up(q, 1, QueryHeads, t, D); _k = Up(k, 1, hkv, t, D); _v = Up(v, 1, hkv, t, D);
        _o = Zeros(1, QueryHeads, t, D);
        _q1 = Up(q.AsSpan(0, QueryHeads * D).ToArray(), 1, QueryHeads, 1, D);
        _o1 = Zeros(1, QueryHeads, 1, D);
        _cache = _cpu.Attention.CreateKvCache(1, hkv, D, t);
        _owned.Add(_cache);
        _cpu.Attention.Append(_cache, _k, _v);

        torch.set_num_threads(GemmBenchmarks.Threads);
        _tq = torch.tensor(q, [1, QueryHeads, t, D]);
        int group = QueryHeads / hkv;
        using (var k0 = torch.tensor(k, [1, hkv, t, D])) _tk = group == 1 ? k0.clone() : k0.repeat_interleave(group, dim: 1);
        using (var v0 = torch.tensor(v, [1, hkv, t, D])) _tv = group == 1 ? v0.clone() : v0.repeat_interleave(group, dim: 1);
    }

    /// <summary>Frees both libraries' buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _tq.Dispose(); _tk.Dispose(); _tv.Dispose();
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
        _cpu.Dispose();
    }

    /// <summary>TorchSharp fp32 SDPA, causal.</summary>
    [Benchmark(Baseline = true)]
    public void TorchSdpa()
    {
        using var o = torch.nn.functional.scaled_dot_product_attention(_tq, _tk, _tv, is_casual: true);
    }

    /// <summary>Our fp32 flash-style prefill.</summary>
    [Benchmark]
    public void Fp32() => _cpu.Attention.Prefill(_q, _k, _v, default, _o, Fp32Options);

    /// <summary>Our int8 (smoothed K, per-token scales) prefill, quantization included.</summary>
    [Benchmark]
    public void Int8() => _cpu.Attention.Prefill(_q, _k, _v, default, _o, Int8Options);

    /// <summary>Our int8 decode: one query token against the cache of T positions.</summary>
    [Benchmark]
    public void Int8Decode() => _cpu.Attention.Decode(_q1, _cache, _o1);

    /// <summary>After a run: median times, speed-ups and GFLOP/s (4·Hq·D·T²/2 useful FLOPs for causal prefill).</summary>
    internal static void PrintReport(IReadOnlyList<Summary> summaries)
    {
        var rows = new List<(AttentionBenchShape Shape, string Method, double Ns)>();
        foreach (var s in summaries)
            foreach (var r in s.Reports)
                if (r.BenchmarkCase.Descriptor.Type == typeof(AttentionBenchmarks) && r.ResultStatistics is { } st)
                    rows.Add(((AttentionBenchShape)r.BenchmarkCase.Parameters["Shape"], r.BenchmarkCase.Descriptor.WorkloadMethod.Name, st.Median));
        if (rows.Count == 0) return;
        Console.WriteLine("\n| Hkv | T | torch SDPA (ms) | fp32 (ms) | int8 (ms) | int8 decode (µs) | torch / int8 | fp32 / int8 | torch / fp32 | fp32 GFLOP/s | int8 GFLOP/s-equiv |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var g in rows.GroupBy(r => r.Shape).OrderByDescending(g => g.Key.KvHeads).ThenBy(g => g.Key.T))
        {
            double Get(string m) => g.FirstOrDefault(r => r.Method == m).Ns;
            double torchNs = Get(nameof(TorchSdpa)), fp = Get(nameof(Fp32)), i8 = Get(nameof(Int8)), dec = Get(nameof(Int8Decode));
            string Ratio(double a, double b) => a > 0 && b > 0 ? $"{a / b:F2}x" : "-";
            string Ms(double ns) => ns > 0 ? $"{ns / 1e6:F2}" : "-";
            string Gf(double ns) => ns > 0 ? $"{g.Key.Flops / ns:F0}" : "-";
            Console.WriteLine($"| {g.Key.KvHeads} | {g.Key.T} | {Ms(torchNs)} | {Ms(fp)} | {Ms(i8)} | {(dec > 0 ? $"{dec / 1e3:F1}" : "-")} | " +
                $"{Ratio(torchNs, i8)} | {Ratio(fp, i8)} | {Ratio(torchNs, fp)} | {Gf(fp)} | {Gf(i8)} |");
        }
    }

    /// <summary>Prints the int8 and fp32 accuracy against exact fp64 attention on the benchmark's inputs.</summary>
    internal static void PrintAccuracy()
    {
        foreach (int t in Env("RELLAX_ATTN_T", [1024]))
            foreach (int hkv in Env("RELLAX_ATTN_HKV", [8]))
            {
                var (q, k, v) = Inputs(hkv, t);
                var shape = new AttentionShape(1, QueryHeads, hkv, t, D, AttentionLayout.HeadMajor);
                var exact = AttentionReference.Exact(q, k, v, shape, [t], 1f / MathF.Sqrt(D), causal: true);
                using var cpu = new CpuBackend(GemmBenchmarks.Threads);
                foreach (var precision in new[] { AttentionPrecision.Int8, AttentionPrecision.Fp32 })
                {
                    using var qb = cpu.Upload<float>(q); using var kb = cpu.Upload<float>(k); using var vb = cpu.Upload<float>(v);
                    using var ob = cpu.Allocate(DType.F32, q.Length);
                    int[] qs = [1, QueryHeads, t, D], ks = [1, hkv, t, D];
                    cpu.Attention.Prefill(qb.AsTensor(qs), kb.AsTensor(ks), vb.AsTensor(ks), default, ob.AsTensor(qs), new AttentionOptions { Precision = precision });
                    var o = ob.AsTensor(qs).ToArray<float>();
                    double dot = 0, na = 0, ne = 0, l1 = 0, l1e = 0;
                    for (int i = 0; i < o.Length; i++)
                    {
                        double a = o[i], e = exact[i];
                        dot += a * e; na += a * a; ne += e * e; l1 += Math.Abs(a - e); l1e += Math.Abs(e);
                    }
                    Console.WriteLine($"T = {t}, Hkv = {hkv}, {precision}: cosine {dot / Math.Sqrt(na * ne):F7}, relative L1 {l1 / l1e:E3}");
                }
            }
    }
}

/// <summary>An attention benchmark case: KV heads and tokens (B = 1, Hq = 32, D = 128, causal).</summary>
public sealed record AttentionBenchShape(int KvHeads, int T)
{
    /// <summary>Useful FLOPs of causal prefill: Q·Kᵀ and P·V over the T(T+1)/2 visible pairs, 2 FLOPs per MAC.</summary>
    public double Flops => 2.0 * 2 * AttentionBenchmarks.QueryHeads * AttentionBenchmarks.D * (T * (T + 1.0) / 2);

    /// <inheritdoc/>
    public override string ToString() => $"Hkv{KvHeads}-T{T}";
}

/// <summary>
/// <c>--attention-quick</c>: a Stopwatch loop (best of N) over the benchmark's cases and methods, for tuning runs on a
/// noisy machine where only ratios measured back to back mean much. Same environment variables as the benchmark,
/// plus <c>RELLAX_ATTN_REPS</c> (default 5). Besides the best wall time it prints the best process CPU time per call
/// (both threads together), which a loaded machine disturbs much less than the wall clock.
/// </summary>
internal static class AttentionQuick
{
    public static void Run()
    {
        int reps = Environment.GetEnvironmentVariable("RELLAX_ATTN_REPS") is { Length: > 0 } r ? int.Parse(r) : 5;
        var bench = new AttentionBenchmarks();
        Console.WriteLine("| Hkv | T | torch (ms) | fp32 (ms) | int8 (ms) | decode (µs) | torch / int8 | fp32 / int8 | fp32 CPU (ms) | int8 CPU (ms) | fp32 / int8 CPU |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var process = System.Diagnostics.Process.GetCurrentProcess();
        foreach (var shape in bench.Shapes())
        {
            bench.Shape = shape;
            bench.Setup();
            double cpuBest = 0;
            double Best(Action a, int n)
            {
                a();
                double best = double.MaxValue;
                cpuBest = double.MaxValue;
                for (int i = 0; i < n; i++)
                {
                    process.Refresh();
                    var c0 = process.TotalProcessorTime;
                    long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                    a();
                    best = Math.Min(best, System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                    process.Refresh();
                    cpuBest = Math.Min(cpuBest, (process.TotalProcessorTime - c0).TotalMilliseconds);
                }
                return best;
            }
            bool skipTorch = Environment.GetEnvironmentVariable("RELLAX_ATTN_NO_TORCH") == "1";
            double torchMs = skipTorch ? double.NaN : Best(bench.TorchSdpa, Math.Max(1, reps / 2));
            double fp = Best(bench.Fp32, reps), fpCpu = cpuBest;
            double i8 = Best(bench.Int8, reps), i8Cpu = cpuBest;
            double dec = Best(bench.Int8Decode, reps * 20);
            Console.WriteLine($"| {shape.KvHeads} | {shape.T} | {torchMs:F2} | {fp:F2} | {i8:F2} | {dec * 1e3:F1} | {torchMs / i8:F2}x | {fp / i8:F2}x | {fpCpu:F1} | {i8Cpu:F1} | {fpCpu / i8Cpu:F2}x |");
            bench.Cleanup();
        }
    }
}
