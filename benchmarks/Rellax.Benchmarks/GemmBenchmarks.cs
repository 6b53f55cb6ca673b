using BenchmarkDotNet.Attributes;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;

namespace Rellax.Benchmarks;

/// <summary>
/// fp32 linear layer <c>y[M,N] = x[M,K] · w[N,K]ᵀ</c>: TorchSharp <c>x.mm(w.t())</c> (baseline) against
/// <see cref="CpuBackend"/>'s GEMM, both on 2 threads, inputs uniform in [-1, 1].
/// (1, 4096, 4096) is the decode-time GEMV, bound by weight bandwidth; the others are prefill-sized and compute bound.
/// </summary>
public class GemmBenchmarks
{
    /// <summary>Threads both libraries use.</summary>
    public const int Threads = 2;

    /// <summary>(M, K, N) shapes.</summary>
    public IEnumerable<GemmShape> Shapes() =>
    [
        new(1, 4096, 4096), new(128, 4096, 4096), new(512, 4096, 11008), new(1024, 1024, 1024),
    ];

    /// <summary>The shape under test.</summary>
    [ParamsSource(nameof(Shapes))]
    public GemmShape Shape { get; set; } = new(1, 1, 1);

    private CpuBackend _cpu = null!;
    private DeviceBuffer _x = null!, _w = null!, _y = null!;
    private Tensor _xt, _wt, _yt;
    private torch.Tensor _torchX = null!, _torchWT = null!;

    /// <summary>Allocates and fills both libraries' inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var (m, k, n) = (Shape.M, Shape.K, Shape.N);
        var rng = new Random(42);
        float[] x = new float[m * k], w = new float[(long)n * k];
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextSingle() * 2 - 1;
        for (long i = 0; i < w.Length; i++) w[i] = rng.NextSingle() * 2 - 1;

        _cpu = new CpuBackend(Threads);
        _x = _cpu.Upload<float>(x); _w = _cpu.Upload<float>(w); _y = _cpu.Allocate(DType.F32, m, n);
        _xt = _x.AsTensor(m, k); _wt = _w.AsTensor(n, k); _yt = _y.AsTensor(m, n);

        torch.set_num_threads(Threads);
        _torchX = torch.tensor(x, [m, k], dtype: torch.float32);
        _torchWT = torch.tensor(w, [n, k], dtype: torch.float32).t(); // a transposed view; mm passes it to BLAS as transB
    }

    /// <summary>Frees both libraries' buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _torchX.Dispose(); _torchWT.Dispose();
        _x.Dispose(); _w.Dispose(); _y.Dispose(); _cpu.Dispose();
    }

    /// <summary>TorchSharp (libtorch CPU) <c>x.mm(w.t())</c>.</summary>
    [Benchmark(Baseline = true)]
    public void TorchMm()
    {
        using var y = _torchX.mm(_torchWT);
    }

    /// <summary>Rellax CPU backend <c>Primitives.MatMul</c>.</summary>
    [Benchmark]
    public void Rellax() => _cpu.Primitives.MatMul(_xt, _wt, _yt);
}

/// <summary>A GEMM shape: y[M,N] = x[M,K] · w[N,K]ᵀ.</summary>
public sealed record GemmShape(int M, int K, int N)
{
    /// <summary>Floating-point operations of one product (2·M·N·K).</summary>
    public double Flops => 2.0 * M * N * K;

    /// <summary>Minimum bytes moved: read x and w once, write y once (fp32).</summary>
    public double Bytes => 4.0 * ((double)M * K + (double)N * K + (double)M * N);

    /// <inheritdoc/>
    public override string ToString() => $"{M}x{K}x{N}";
}
