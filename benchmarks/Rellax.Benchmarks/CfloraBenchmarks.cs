using BenchmarkDotNet.Attributes;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;

namespace Rellax.Benchmarks;

/// <summary>
/// One CFLoRA-adapted linear layer, d_in = d_out = 4096, fp32 weights, S samples with their own G:
/// TorchSharp unfused (baseline: base mm, x·Aᵀ, per-row G by index_select + bmm, ·Bᵀ, add) against our fused
/// <see cref="CfloraLinear.Forward(Tensor, CfloraModule, CfloraBatch)"/> and our plain base GEMM at the same shape
/// (the fused/base ratio is the adapter's overhead). All on 2 threads, inputs uniform in [-1, 1].
/// </summary>
public class CfloraBenchmarks
{
    /// <summary>d_in = d_out.</summary>
    public const int D = 4096;

    /// <summary>
    /// The (r, T, S) grid: S = 1 for T = 1 (decoding), S = 16 samples otherwise. The environment variable
    /// <c>RELLAX_CFLORA_T</c> (comma-separated T values) restricts it for quick re-runs.
    /// </summary>
    public IEnumerable<CfloraShape> Shapes()
    {
        int[] ts = Environment.GetEnvironmentVariable("RELLAX_CFLORA_T") is { Length: > 0 } env
            ? env.Split(',').Select(int.Parse).ToArray()
            : [1, 16, 256, 1024];
        return from r in new[] { 8, 64 } from t in ts select new CfloraShape(r, t, t == 1 ? 1 : 16);
    }

    /// <summary>The case under test.</summary>
    [ParamsSource(nameof(Shapes))]
    public CfloraShape Shape { get; set; } = new(1, 1, 1);

    private CpuBackend _cpu = null!;
    private readonly List<DeviceBuffer> _buffers = [];
    private Tensor _x, _w0, _y;
    private CfloraModule _module;
    private CfloraBatch _batch = null!;
    private torch.Tensor _tx = null!, _tW0T = null!, _tAT = null!, _tBT = null!, _tG = null!, _tRows = null!;
    private float _scale;

    /// <summary>Allocates and fills both libraries' inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var (r, t, s) = (Shape.R, Shape.T, Shape.S);
        var rng = new Random(42);
        float[] Fill(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = rng.NextSingle() * 2 - 1; return a; }
        float[] x = Fill((long)t * D), w0 = Fill((long)D * D), a = Fill((long)r * D), b = Fill((long)D * r), g = Fill((long)s * r * r);
        int[] rows = new int[t];
        for (int i = 0; i < t; i++) rows[i] = (int)((long)i * s / t); // contiguous, equal runs
        _scale = 16f / r;

        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        Tensor Up(float[] data, params int[] shape) { var buf = _cpu.Upload<float>(data); _buffers.Add(buf); return buf.AsTensor(shape); }
        _x = Up(x, t, D); _w0 = Up(w0, D, D);
        var yBuf = _cpu.Allocate(DType.F32, t, D); _buffers.Add(yBuf); _y = yBuf.AsTensor(t, D);
        _module = new CfloraModule(_w0, null, Up(a, r, D), Up(b, D, r), Up(g, s, r, r), _scale, _y);
        _batch = CfloraBatch.FromRowIndex(rows, s);

        torch.set_num_threads(GemmBenchmarks.Threads);
        _tx = torch.tensor(x, [t, D]);
        _tW0T = torch.tensor(w0, [D, D]).t();
        _tAT = torch.tensor(a, [r, D]).t();
        _tBT = torch.tensor(b, [D, r]).t();
        _tG = torch.tensor(g, [s, r, r]);
        _tRows = torch.tensor(rows.Select(v => (long)v).ToArray(), [t]);
    }

    /// <summary>Frees both libraries' buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var tt in new[] { _tx, _tW0T, _tAT, _tBT, _tG, _tRows }) tt.Dispose();
        _batch.Dispose();
        foreach (var b in _buffers) b.Dispose();
        _cpu.Dispose();
    }

    /// <summary>TorchSharp, unfused: y = x·W0ᵀ + s · (bmm(x·Aᵀ, G[rows]))·Bᵀ.</summary>
    [Benchmark(Baseline = true)]
    public void TorchUnfused()
    {
        using var scope = torch.NewDisposeScope();
        var y = _tx.mm(_tW0T);
        var xa = _tx.mm(_tAT);                                   // [T, r]
        var gRows = _tG.index_select(0, _tRows);                 // [T, r, r]
        var t2 = torch.bmm(xa.unsqueeze(1), gRows).squeeze(1);   // [T, r]: t'_j = Σ_i t_i G[i][j]
        y.add_(t2.mm(_tBT), alpha: _scale);
    }

    /// <summary>Rellax fused CFLoRA forward.</summary>
    [Benchmark]
    public void Fused() => _cpu.Cflora.Forward(_x, _module, _batch);

    /// <summary>Rellax base GEMM alone, y = x·W0ᵀ.</summary>
    [Benchmark]
    public void BaseGemm() => _cpu.Primitives.MatMul(_x, _w0, _y);
}

/// <summary>A CFLoRA benchmark case: rank r, T token rows, S samples (d_in = d_out = <see cref="CfloraBenchmarks.D"/>).</summary>
public sealed record CfloraShape(int R, int T, int S)
{
    /// <summary>FLOPs of the base product plus the adapter.</summary>
    public double Flops => 2.0 * T * CfloraBenchmarks.D * CfloraBenchmarks.D + 2.0 * T * R * 2 * CfloraBenchmarks.D + 2.0 * T * R * R;

    /// <summary>Minimum bytes: read W0, A, B, G and x once, write y once (fp32).</summary>
    public double Bytes => 4.0 * ((double)CfloraBenchmarks.D * CfloraBenchmarks.D + 2.0 * R * CfloraBenchmarks.D + (double)S * R * R + 2.0 * T * CfloraBenchmarks.D);

    /// <inheritdoc/>
    public override string ToString() => $"r{R}-T{T}-S{S}";
}
