using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Kernels.Ilgpu;
using Rellax.Tests.Oracle;

namespace Rellax.Tests.Ilgpu;

/// <summary>
/// The ILGPU int8 linear layer (<see cref="IlgpuInt8Linear"/>) on ILGPU's CPU emulator, where the int8 dot runs the exact
/// plain-int32 fallback (PTX dp4a needs a CUDA device): quantized weights equal the CPU backend's and the reference; the
/// layer equals <see cref="PrimitivesReference.LinearInt8"/> within float rounding and the CPU kernel bit for bit (same exact i32
/// sums, same float formula) on odd shapes with outlier columns; the embedding gather; NaN rows.
/// </summary>
[TestFixture]
public sealed class IlgpuInt8LinearTests
{
    private IlgpuBackend _emulator = null!;
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Create()
    {
        _emulator = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        _cpu = new CpuBackend(2);
    }

    [OneTimeTearDown]
    public void Dispose()
    {
        _emulator.Dispose();
        _cpu.Dispose();
    }

    // The CPU fixture's shapes (M 1..100, K 1..1031) and inputs (columns 2 and K/3 scaled to ±8: outliers at threshold 6).
    private static (int M, int K, int N)[] OddShapes => Cpu.CpuInt8LinearTests.OddShapes;

    private static float[] InputWithOutliers(int m, int k, int seed) => Cpu.CpuInt8LinearTests.InputWithOutliers(m, k, seed);

    private static float[] Run(ComputeBackend backend, float[] x, float[] w, float[]? bias, int m, int k, int n, float threshold = Primitives.DefaultOutlierThreshold,
        int groupSize = Primitives.DefaultInt8GroupSize)
    {
        using var q = backend.Primitives.QuantizeInt8(backend.Tensor(w, n, k), groupSize);
        var y = backend.Zeros(m, n);
        backend.Primitives.LinearInt8(backend.Tensor(x, m, k), q, bias is null ? null : backend.Tensor(bias, n), y, threshold);
        return y.ToArray<float>();
    }

    [Test]
    public void QuantizedWeightsEqualTheCpusAndTheReference([Values(DType.F32, DType.F16, DType.BF16)] DType dtype)
    {
        foreach (var (n, k) in new[] { (1, 1), (17, 37), (33, 259) })
        {
            var w = LinearOracleTests.RoundTo(dtype, RandomData.Uniform(n * k, 7 + k));
            for (int c = 0; c < k; c++) w[c] = 0f; // row 0 all zero: scale 0
            using var g = _emulator.Primitives.QuantizeInt8(LinearOracleTests.Upload(_emulator, dtype, w, n, k));
            using var c8 = _cpu.Primitives.QuantizeInt8(LinearOracleTests.Upload(_cpu, dtype, w, n, k));
            Assert.That(g.ReadValues(), Is.EqualTo(c8.ReadValues()), $"values, {dtype} [{n}, {k}]");
            Assert.That(g.ReadScales(), Is.EqualTo(c8.ReadScales()), $"scales, {dtype} [{n}, {k}]");
            var expected = new sbyte[k];
            var values = g.ReadValues();
            var sums = new int[n];
            g.RowSums.CopyTo<int>(sums);
            for (int j = 0; j < n; j++)
            {
                PrimitivesReference.QuantizeRowInt8(w.AsSpan(j * k, k), expected);
                Assert.That(values.AsSpan(j * k, k).ToArray(), Is.EqualTo(expected), $"row {j}, {dtype} [{n}, {k}]");
                Assert.That(sums[j], Is.EqualTo(expected.Sum(v => (int)v)), $"row sum {j}");
            }
        }
    }

    [Test]
    public void MatchesReferenceAndTheCpuKernelOnOddShapes([Values(4, 36, Primitives.DefaultInt8GroupSize)] int groupSize)
    {
        foreach (var (m, k, n) in OddShapes)
            foreach (bool withBias in new[] { false, true })
            {
                float[] x = InputWithOutliers(m, k, 11 + m), w = RandomData.Uniform(n * k, 12 + k);
                float[]? bias = withBias ? RandomData.Uniform(n, 13) : null;
                var actual = Run(_emulator, x, w, bias, m, k, n, groupSize: groupSize);
                using var q = _cpu.Primitives.QuantizeInt8(_cpu.Tensor(w, n, k));
                var expected = new float[m * n];
                PrimitivesReference.LinearInt8(x, q.ReadValues(), q.ReadScales(), bias ?? [], expected, m, k, n, Primitives.DefaultOutlierThreshold, groupSize);
                string what = $"G = {groupSize}, M = {m}, K = {k}, N = {n}, bias = {withBias}";
                RandomData.AssertClose(actual, expected, 1e-5 * Math.Sqrt(k), 1e-5, what);
                var cpu = Run(_cpu, x, w, bias, m, k, n, groupSize: groupSize);
                for (int i = 0; i < cpu.Length; i++)
                    if (BitConverter.SingleToInt32Bits(actual[i]) != BitConverter.SingleToInt32Bits(cpu[i]))
                        Assert.Fail($"{what}: ILGPU {actual[i]:R} at {i}, CPU {cpu[i]:R}");
            }
    }

    [Test]
    public void ThresholdDecidesTheOutlierColumns()
    {
        // With a threshold above every |x| there are no outliers, with a tiny one every column is: both match the reference.
        const int m = 9, k = 70, n = 11;
        float[] x = InputWithOutliers(m, k, 31), w = RandomData.Uniform(n * k, 32);
        using var q = _cpu.Primitives.QuantizeInt8(_cpu.Tensor(w, n, k));
        foreach (float threshold in new[] { 100f, 0.01f })
        {
            var expected = new float[m * n];
            PrimitivesReference.LinearInt8(x, q.ReadValues(), q.ReadScales(), [], expected, m, k, n, threshold);
            RandomData.AssertClose(Run(_emulator, x, w, null, m, k, n, threshold), expected, 1e-4, 1e-5, $"threshold {threshold}");
        }
    }

    [Test]
    public void EmbeddingGatherMatchesReference()
    {
        foreach (var (v, h) in new[] { (1, 1), (40, 37), (33, 260) })
        {
            var table = RandomData.Uniform(v * h, 61 + h);
            using var q = _emulator.Primitives.QuantizeInt8(_emulator.Tensor(table, v, h));
            int[] ids = RandomData.Ints(9, v, 62);
            var y = _emulator.Zeros(ids.Length, h);
            _emulator.Primitives.EmbeddingInt8(_emulator.Tensor(ids, ids.Length), q, y);
            var expected = new float[ids.Length * h];
            PrimitivesReference.EmbeddingInt8(ids, q.ReadValues(), q.ReadScales(), expected, h);
            Assert.That(y.ToArray<float>(), Is.EqualTo(expected), $"[{v}, {h}]");
        }
    }

    [Test]
    public void NaNInAnInt8ColumnPoisonsOnlyItsRow()
    {
        const int m = 3, k = 40, n = 20;
        var x = RandomData.Uniform(m * k, 51);
        x[1 * k + 7] = float.NaN;
        var y = Run(_emulator, x, RandomData.Uniform(n * k, 52), null, m, k, n);
        Assert.That(y.Skip(n).Take(n).All(float.IsNaN), Is.True, "row 1");
        Assert.That(y.Take(n).Concat(y.Skip(2 * n)).All(float.IsFinite), Is.True, "rows 0 and 2");
    }
}
