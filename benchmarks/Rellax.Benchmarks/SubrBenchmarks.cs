using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Reports;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;

namespace Rellax.Benchmarks;

/// <summary>
/// SUBR top-K retrieval (SPEC §2): an item table of N = 100,000 rows × d = 512 (cosine, rows normalised; f32 = 205 MB,
/// i8 = 51 MB + scales: beyond any cache), B samples each with a history of L ids drawn uniformly from [0, N) and one
/// target, keep K in chronological order. TorchSharp the way a user would write it (baseline) against
/// <see cref="SubrTopK"/> on <see cref="CpuBackend"/>; both on 2 threads.
/// <para>
/// <b>Torch variants.</b> <see cref="TorchPerSample"/> (baseline: the faster one, 4x to 19x faster than the batched
/// variant in benchmarks/results/subr-cpu.md): per sample index_select, mv, topk, sort. <see cref="TorchBatched"/>: chunks of samples whose gathered rows fit in 64 MiB,
/// <c>index_select</c> the chunk's rows as [c, L, d], <c>bmm</c> with the targets [c, d, 1], <c>topk</c> along L, then
/// <c>sort</c> the kept indices (chronological order). Every history here has the same L, so no padding is needed,
/// which favours torch. For i8 tables both dequantise
/// the gathered rows (<c>to(float32) * scales</c>) before the product.
/// </para>
/// <para>
/// <b>Environment.</b> The full grid is B ∈ {64, 1024} × L ∈ {100, 2000, 20000} × K ∈ {30, 60} × table ∈ {f32, i8};
/// <c>RELLAX_SUBR_B</c>, <c>RELLAX_SUBR_L</c>, <c>RELLAX_SUBR_K</c>, <c>RELLAX_SUBR_TABLE</c> (comma-separated values;
/// tables f32, f16, i8) restrict or extend it. <c>RELLAX_SUBR_PREFETCH</c> sets the backend option <c>CpuBackendOptions.SubrPrefetchBytes</c> for
/// tuning runs, <c>RELLAX_SUBR_PREFETCH_HINT</c> (0 to 3: t0, t1, t2, nta) <c>SubrPrefetchHint</c>, <c>RELLAX_SUBR_PREFETCH_ROW_BYTES</c> <c>SubrPrefetchMaxBytesPerRow</c>; <c>RELLAX_HUGE_PAGES=0</c> allocates the table without the huge-page advice (<c>CpuBackendOptions.HugePages</c> off). These apply to the backend the table is built on, so they are read once per table. The big cases are slow (B = 1024, L = 20000 gathers 20M rows: 42 GB of f32 per call), hence the short
/// job: 1 warm-up, 3 iterations of one invocation each.
/// </para>
/// </summary>
[WarmupCount(1)]
[IterationCount(3)]
[InvocationCount(1, unrollFactor: 1)]
public class SubrBenchmarks
{
    /// <summary>Table rows N.</summary>
    public const int N = 100_000;

    /// <summary>Embedding width d.</summary>
    public const int D = 512;

    private static int[] Env(string name, int[] fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v.Split(',').Select(int.Parse).ToArray() : fallback;

    /// <summary>The grid (see the class remarks for the environment variables that restrict it).</summary>
    public IEnumerable<SubrShape> Shapes()
    {
        string[] tables = Environment.GetEnvironmentVariable("RELLAX_SUBR_TABLE") is { Length: > 0 } t ? t.Split(',') : ["f32", "i8"];
        return from table in tables
               from b in Env("RELLAX_SUBR_B", [64, 1024])
               from l in Env("RELLAX_SUBR_L", [100, 2000, 20000])
               from k in Env("RELLAX_SUBR_K", [30, 60])
               select new SubrShape(table, b, l, k);
    }

    /// <summary>The case under test.</summary>
    [ParamsSource(nameof(Shapes))]
    public SubrShape Shape { get; set; } = new("f32", 1, 1, 1);

    // One table per storage type, shared by the cases of a run (building it takes seconds).
    private static readonly Dictionary<string, (CpuBackend Cpu, SubrTable Table, torch.Tensor Torch, torch.Tensor? Scales)> Tables = [];

    private CpuBackend _cpu = null!;
    private SubrTable _table = null!;
    private SubrQueries _queries = null!;
    private DeviceBuffer _positions = null!, _scores = null!;
    private torch.Tensor _tTable = null!, _tHistory = null!, _tTargets = null!;
    private torch.Tensor? _tScales;

    /// <summary>Builds (or reuses) the table, and draws the histories and targets.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var options = new CpuBackendOptions { Threads = GemmBenchmarks.Threads };
        if (Environment.GetEnvironmentVariable("RELLAX_HUGE_PAGES") == "0") options = options with { HugePages = false };
        if (Environment.GetEnvironmentVariable("RELLAX_SUBR_PREFETCH") is { Length: > 0 } pf) options = options with { SubrPrefetchBytes = int.Parse(pf) };
        if (Environment.GetEnvironmentVariable("RELLAX_SUBR_PREFETCH_HINT") is { Length: > 0 } ph) options = options with { SubrPrefetchHint = int.Parse(ph) };
        if (Environment.GetEnvironmentVariable("RELLAX_SUBR_PREFETCH_ROW_BYTES") is { Length: > 0 } pr) options = options with { SubrPrefetchMaxBytesPerRow = int.Parse(pr) };
        torch.set_num_threads(GemmBenchmarks.Threads);
        if (!Tables.TryGetValue(Shape.Table, out var t))
        {
            var rng = new Random(42);
            var v = new float[(long)N * D];
            for (long i = 0; i < v.Length; i++) v[i] = rng.NextSingle() * 2 - 1;
            var cpu = new CpuBackend(options);
            var storage = Shape.Table switch { "f32" => DType.F32, "f16" => DType.F16, "i8" => DType.I8, _ => throw new ArgumentException($"table {Shape.Table}") };
            var table = SubrTable.Create(cpu, v, N, D, storage);
            torch.Tensor tt;
            torch.Tensor? ts = null;
            switch (storage)
            {
                case DType.F32: tt = torch.tensor(table.Embeddings.ToArray<float>(), [N, D]); break;
                case DType.F16: tt = torch.tensor(table.Embeddings.ToArray<Half>(), [N, D]); break;
                default:
                    tt = torch.tensor(table.Embeddings.ToArray<sbyte>(), [N, D]);
                    ts = torch.tensor(table.Scales!.Value.ToArray<float>(), [N]);
                    break;
            }
            Tables[Shape.Table] = t = (cpu, table, tt, ts);
        }
        (_cpu, _table, _tTable, _tScales) = t;

        var r = new Random(7);
        var history = new int[(long)Shape.B * Shape.L];
        for (long i = 0; i < history.Length; i++) history[i] = r.Next(N);
        var offsets = Enumerable.Range(0, Shape.B + 1).Select(b => b * Shape.L).ToArray();
        var targets = Enumerable.Range(0, Shape.B).Select(_ => r.Next(N)).ToArray();
        _queries = SubrQueries.Create(history, offsets, targets);
        _positions = _cpu.Allocate(DType.I32, (long)Shape.B * Shape.K);
        _scores = _cpu.Allocate(DType.F32, (long)Shape.B * Shape.K);
        _tHistory = torch.tensor(history.Select(x => (long)x).ToArray(), [history.Length]);
        _tTargets = torch.tensor(targets.Select(x => (long)x).ToArray(), [targets.Length]);
    }

    /// <summary>Frees the per-case buffers (the tables stay for the next case).</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _queries.Dispose();
        _positions.Dispose();
        _scores.Dispose();
        _tHistory.Dispose();
        _tTargets.Dispose();
    }

    /// <summary>Gathered rows as f32 [.., d]: index_select, dequantised for i8 (to(float32) * scales).</summary>
    private torch.Tensor Gather(torch.Tensor ids)
    {
        var rows = _tTable.index_select(0, ids);
        if (_tScales is null) return rows.dtype == torch.float32 ? rows : rows.to(torch.float32);
        return rows.to(torch.float32) * _tScales.index_select(0, ids).unsqueeze(-1);
    }

    /// <summary>TorchSharp batched: per chunk of samples (≤ 64 MiB of gathered rows) index_select → bmm → topk → sort.</summary>
    [Benchmark]
    public long TorchBatched()
    {
        int b = Shape.B, l = Shape.L, k = Math.Min(Shape.K, l);
        int chunk = (int)Math.Clamp((64L << 20) / ((long)l * D * 4), 1, b);
        long check = 0;
        using var scope = torch.NewDisposeScope();
        var targets = Gather(_tTargets); // [B, d]
        for (int b0 = 0; b0 < b; b0 += chunk)
        {
            using var inner = torch.NewDisposeScope();
            int c = Math.Min(chunk, b - b0);
            var rows = Gather(_tHistory.narrow(0, (long)b0 * l, (long)c * l)).view(c, l, D);
            var s = rows.bmm(targets.narrow(0, b0, c).unsqueeze(-1)).squeeze(-1); // [c, L]
            var (_, idx) = s.topk(k, dim: 1);
            var chrono = idx.sort(dim: 1).Values;
            check += chrono[0, 0].item<long>();
        }
        return check;
    }

    /// <summary>TorchSharp per sample: index_select → mv → topk → sort (the faster variant: the baseline).</summary>
    [Benchmark(Baseline = true)]
    public long TorchPerSample()
    {
        int b = Shape.B, l = Shape.L, k = Math.Min(Shape.K, l);
        long check = 0;
        using var scope = torch.NewDisposeScope();
        var targets = Gather(_tTargets);
        for (int i = 0; i < b; i++)
        {
            using var inner = torch.NewDisposeScope();
            var s = Gather(_tHistory.narrow(0, (long)i * l, l)).mv(targets[i]);
            var (_, idx) = s.topk(k);
            check += idx.sort().Values[0].item<long>();
        }
        return check;
    }

    /// <summary>Rellax <see cref="SubrTopK.Run"/> (chronological order) into preallocated outputs.</summary>
    [Benchmark]
    public void Rellax() =>
        _cpu.Subr.Run(_table, _queries, Shape.K, SubrOrder.Chronological, _positions.AsTensor(Shape.B, Shape.K), _scores.AsTensor(Shape.B, Shape.K));

    /// <summary>
    /// Prints the SUBR table after a run: medians, speed-up over the faster torch variant, and the effective
    /// bandwidth (B·L·(d·bytes + scale bytes) / time) next to the read bandwidth measured in the same run.
    /// </summary>
    internal static void PrintReport(IReadOnlyList<Summary> summaries)
    {
        var bandwidth = new Dictionary<int, double>();
        var rows = new List<(SubrShape Shape, string Method, double Ns)>();
        foreach (var s in summaries)
            foreach (var r in s.Reports)
            {
                if (r.ResultStatistics is not { } st) continue;
                if (r.BenchmarkCase.Descriptor.Type == typeof(GemmReadBandwidthBenchmarks))
                {
                    int mib = (int)r.BenchmarkCase.Parameters["MiB"];
                    bandwidth[mib] = ((long)mib << 20) / st.Median;
                }
                else if (r.BenchmarkCase.Descriptor.Type == typeof(SubrBenchmarks))
                    rows.Add(((SubrShape)r.BenchmarkCase.Parameters["Shape"], r.BenchmarkCase.Descriptor.WorkloadMethod.Name, st.Median));
            }
        if (rows.Count == 0) return;
        double? dram = bandwidth.TryGetValue(256, out double bw) ? bw : null;
        Console.WriteLine($"\nSUBR (read bandwidth in this run: {(dram is { } d0 ? $"{d0:F1} GB/s over 256 MiB" : "not measured")})");
        Console.WriteLine("| table | B | L | K | torch batched (ms) | torch per sample (ms) | rellax (ms) | best torch / rellax | rellax GB/s | % of read BW |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var g in rows.GroupBy(r => r.Shape))
        {
            double Ns(string m) => g.FirstOrDefault(r => r.Method == m).Ns;
            double batched = Ns(nameof(TorchBatched)), perSample = Ns(nameof(TorchPerSample)), ours = Ns(nameof(Rellax));
            double torchBest = new[] { batched, perSample }.Where(x => x > 0).DefaultIfEmpty(0).Min();
            var k = g.Key;
            double gbs = ours > 0 ? k.Bytes / ours : 0;
            string Ms(double ns) => ns > 0 ? $"{ns / 1e6:F2}" : "-";
            Console.WriteLine($"| {k.Table} | {k.B} | {k.L} | {k.K} | {Ms(batched)} | {Ms(perSample)} | {Ms(ours)} | " +
                $"{(torchBest > 0 && ours > 0 ? $"{torchBest / ours:F1}x" : "-")} | {gbs:F1} | {(dram is { } d && gbs > 0 ? $"{100 * gbs / d:F0}%" : "-")} |");
        }
    }
}

/// <summary>A SUBR benchmark case: table storage (f32, f16, i8), B samples of L events each, K kept.</summary>
public sealed record SubrShape(string Table, int B, int L, int K)
{
    /// <summary>Bytes of table rows one call must read: B·L rows of d elements (+ a 4-byte scale per i8 row).</summary>
    public double Bytes => (double)B * L * (SubrBenchmarks.D * (Table switch { "f32" => 4, "f16" => 2, _ => 1 }) + (Table == "i8" ? 4 : 0));

    /// <inheritdoc/>
    public override string ToString() => $"{Table}-B{B}-L{L}-K{K}";
}
