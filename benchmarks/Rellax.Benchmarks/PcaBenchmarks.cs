using BenchmarkDotNet.Attributes;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using TorchSharp;

namespace Rellax.Benchmarks;

/// <summary>
/// PCA fit by randomized SVD, N = 20,000 × D = 1024 → k = 128 (l = k + p = 138 sketch columns, q = 4 power iterations),
/// both on 2 threads. Baseline: <c>torch.pca_lowrank(A, q = 138, niter = 4)</c> written out with TorchSharp ops (TorchSharp
/// has no <c>pca_lowrank</c>): centre, <c>randn</c>, <c>mm</c> and Householder <c>linalg.qr</c> after every product, then
/// <c>linalg.svd</c> of B = Qᵀ A, exactly as <c>torch/_lowrank.py</c> does for a dense matrix. Ours:
/// <see cref="Pca.Fit(Rellax.Kernels.ComputeBackend, ReadOnlySpan{float}, int, int, PcaOptions?)"/> on <see cref="CpuBackend"/>.
/// Both do 2q + 2 = 10 products of 2·N·D·l = 5.8 GFLOP each (58 GFLOP in all); the data is a decaying spectrum plus noise.
/// One fit takes seconds, so this class runs 1 warm-up and 7 measured iterations (the in-process toolchain refuses a
/// benchmark case that runs for more than a few minutes).
/// </summary>
[WarmupCount(1)]
[IterationCount(7)]
public class PcaBenchmarks
{
    /// <summary>Threads both libraries use.</summary>
    public const int Threads = 2;

    private const int N = 20_000, D = 1024, K = 128, P = 10, Q = 4;

    private CpuBackend _cpu = null!;
    private float[] _x = null!;
    private torch.Tensor _torchX = null!;

    /// <summary>FLOPs of the 2q + 2 big products (the roofline's numerator).</summary>
    public static double Flops => 2.0 * N * D * (K + P) * (2 * Q + 2);

    /// <summary>Builds the data: x = z · diag(s) · R with s_j = 0.97^j + 0.05 and R a random Gaussian mixing matrix / √D.</summary>
    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(Threads);
        torch.manual_seed(1);
        using (torch.NewDisposeScope())
        {
            var s = torch.tensor(Enumerable.Range(0, D).Select(j => (float)(Math.Pow(0.97, j) + 0.05)).ToArray());
            var z = torch.randn(N, D) * s;
            var x = z.mm(torch.randn(D, D) / Math.Sqrt(D)) + 3;
            _x = x.contiguous().data<float>().ToArray();
        }
        _torchX = torch.tensor(_x, [N, D]);
        _cpu = new CpuBackend(Threads);
    }

    /// <summary>Frees both libraries' data.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _torchX.Dispose();
        _cpu.Dispose();
    }

    /// <summary>torch.pca_lowrank's algorithm (centre, range finder with QR after every product, SVD of B).</summary>
    [Benchmark(Baseline = true)]
    public float TorchPcaLowrank()
    {
        using var scope = torch.NewDisposeScope();
        int l = K + P;
        var a = _torchX - _torchX.mean([0L], keepdim: true);
        var r = torch.randn(D, l);
        var (q, _) = torch.linalg.qr(a.mm(r));
        for (int i = 0; i < Q; i++)
        {
            (q, _) = torch.linalg.qr(a.t().mm(q));
            (q, _) = torch.linalg.qr(a.mm(q));
        }
        var b = q.t().mm(a);
        var (_, sv, vh) = torch.linalg.svd(b, fullMatrices: false);
        return vh[..K].sum().item<float>() + sv[0].item<float>();
    }

    /// <summary>Rellax <see cref="Pca.Fit(Rellax.Kernels.ComputeBackend, ReadOnlySpan{float}, int, int, PcaOptions?)"/>.</summary>
    [Benchmark]
    public float Rellax()
    {
        var pca = Pca.Fit(_cpu, _x, N, D, new PcaOptions { Components = K, Oversampling = P, PowerIterations = Q });
        return pca.ComponentVectors[0] + (float)pca.ExplainedVariance[0];
    }
}
