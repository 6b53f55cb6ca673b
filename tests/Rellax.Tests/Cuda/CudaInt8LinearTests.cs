using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>
/// <c>kernels/int8_linear.cu</c> through <see cref="CudaBackend"/>'s int8 front (<see cref="CudaInt8LinearKernels"/>): the
/// launcher's entry points are the kernel file's (runs everywhere), and on a device the layer matches
/// <see cref="PrimitivesReference.LinearInt8"/> and the gather is exact, on the CPU fixture's odd shapes with outlier columns
/// and several activation group sizes. GPU parts are ignored without a CUDA device (the kernels' logic is checked by
/// <c>kernels/tests/sim/int8_linear_sim.cpp</c>, their compilation by <see cref="NvrtcCompileTests"/>).
/// </summary>
[TestFixture]
public sealed class CudaInt8LinearTests : CudaDeviceFixture
{
    [Test]
    public void TheLauncherMatchesTheKernelSource()
    {
        var source = CudaKernelSources.Read("int8_linear.cu");
        Assert.That(CudaKernelSources.FindEntryPoints(source), Is.EquivalentTo(new[]
        {
            CudaInt8Linear.QuantizeWeights, CudaInt8Linear.OutlierFlags, CudaInt8Linear.Compact, CudaInt8Linear.QuantizeRows,
            CudaInt8Linear.Linear, CudaInt8Linear.Embedding,
        }));
        Assert.That(source, Does.Contain($"#define RELLAX_INT8_TILE {CudaInt8Linear.Tile}"));
        Assert.That(source, Does.Contain($"__launch_bounds__({CudaInt8Linear.GemmThreads})"));
        Assert.That(source, Does.Contain("int m, int n, int k, int group)"), "rellax_int8_linear's trailing arguments, as launched");
        Assert.That(source, Does.Contain("rellax_int8_quantize_rows(const float* x, int m, int k, int group, const int* flags, int* x8, float* sx)"));
    }

    [Test]
    public void TheBackendUsesTheHandWrittenKernels() =>
        Assert.That(Backend.Int8LinearKernels, Is.InstanceOf<CudaInt8LinearKernels>());

    [Test]
    public void LinearMatchesTheReferenceAndGatherIsExact([Values(4, 36, Primitives.DefaultInt8GroupSize)] int groupSize)
    {
        var backend = Backend;
        using var cpu = new CpuBackend(2);
        foreach (var (m, k, n) in Cpu.CpuInt8LinearTests.OddShapes)
        {
            float[] x = Cpu.CpuInt8LinearTests.InputWithOutliers(m, k, 11 + m), w = RandomData.Uniform(n * k, 12 + k), bias = RandomData.Uniform(n, 13);
            using var q = backend.Primitives.QuantizeInt8(backend.Tensor(w, n, k), groupSize);
            var y = backend.Zeros(m, n);
            backend.Primitives.LinearInt8(backend.Tensor(x, m, k), q, backend.Tensor(bias, n), y);
            var expected = new float[m * n];
            PrimitivesReference.LinearInt8(x, q.ReadValues(), q.ReadScales(), bias, expected, m, k, n, Primitives.DefaultOutlierThreshold, groupSize);
            RandomData.AssertClose(y.ToArray<float>(), expected, 1e-5 * Math.Sqrt(k), 1e-5, $"G = {groupSize}, M = {m}, K = {k}, N = {n}");

            int[] ids = RandomData.Ints(9, n, 62);
            var rows = backend.Zeros(ids.Length, k);
            backend.Primitives.EmbeddingInt8(backend.Tensor(ids, ids.Length), q, rows);
            var gathered = new float[ids.Length * k];
            PrimitivesReference.EmbeddingInt8(ids, q.ReadValues(), q.ReadScales(), gathered, k);
            Assert.That(rows.ToArray<float>(), Is.EqualTo(gathered), $"gather [{n}, {k}]");
        }
    }
}
