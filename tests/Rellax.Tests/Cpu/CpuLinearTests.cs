using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Tests.Oracle;

namespace Rellax.Tests.Cpu;

/// <summary>
/// CPU <see cref="Primitives.Linear"/> on both instruction sets (the Vector256 fallback takes the packed path at every
/// M) and across the M thresholds of its paths (4/5: eight-row GEMV to register-blocked; 16/17: streamed to packed),
/// with K around the packing block (256) and the blocked path's K chunk (1024), against <see cref="PrimitivesReference"/>.
/// Tolerance as in <see cref="LinearOracleTests"/>.
/// </summary>
[TestFixture]
[NonParallelizable] // toggles the process-wide CpuGemm.UseVector512 switch
public sealed class CpuLinearTests
{
    [Test]
    public void MatchesReferenceOnBothIsas([Values] bool vector512, [Values(DType.F32, DType.F16, DType.BF16)] DType dtype)
    {
        bool saved = CpuGemm.UseVector512;
        CpuGemm.UseVector512 = vector512 && System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
        try
        {
            using var backend = new CpuBackend(2);
            foreach (int m in new[] { 1, 4, 5, 16, 17, 33 })
                foreach (var (k, n) in new[] { (255, 70), (257, 9), (1040, 131) })
                    foreach (bool withBias in new[] { false, true })
                    {
                        float[] x = RandomData.Uniform(m * k, 41 + m), w = LinearOracleTests.RoundTo(dtype, RandomData.Uniform(n * k, 42 + k));
                        float[]? bias = withBias ? RandomData.Uniform(n, 43) : null;
                        var y = backend.Zeros(m, n);
                        backend.Primitives.Linear(backend.Tensor(x, m, k), LinearOracleTests.Upload(backend, dtype, w, n, k),
                            bias is null ? null : backend.Tensor(bias, n), y);
                        var expected = new float[m * n];
                        PrimitivesReference.Linear(x, w, bias ?? [], expected, m, k, n);
                        RandomData.AssertClose(y.ToArray<float>(), expected, 1e-5 * Math.Sqrt(k), 0, $"M = {m}, K = {k}, N = {n}, bias = {withBias}");
                    }
        }
        finally { CpuGemm.UseVector512 = saved; }
    }
}
