using NUnit.Framework;
using Rellax.Kernels;

namespace Rellax.Tests.Oracle;

/// <summary>
/// <see cref="Primitives.Linear"/> (f32, f16 and bf16 weights, with and without bias), <see cref="Primitives.ScatterRows"/>
/// and <see cref="Primitives.Embedding"/> on half-precision tables, on every backend of <see cref="TestBackends"/>,
/// against <see cref="PrimitivesReference"/> (double accumulation) and TorchSharp (fp32).
/// <para>
/// Half-precision weights are drawn in f32, rounded to the dtype (f16: round to nearest; bf16: <see cref="BFloat16"/>'s
/// conversion), and the rounded values, widened exactly, are what the reference and torch see: the kernels must widen
/// exactly, so the dtype adds no error of its own and the GEMM tolerance of <see cref="PrimitivesOracleTests"/> applies
/// (atol = 1e-5·√K for inputs in [-1, 1]). M covers the CPU's GEMV (≤ 4), register-blocked (5 to 16) and packed (&gt; 16)
/// paths; K and N are not multiples of 8 (vector and tile tails).
/// </para>
/// </summary>
[TestFixtureSource(typeof(TestBackends), nameof(TestBackends.All))]
public sealed class LinearOracleTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;
    private Primitives P => _backend.Primitives;

    [OneTimeSetUp] public void CreateBackend() => _backend = factory.Create();
    [OneTimeTearDown] public void DisposeBackend() => _backend.Dispose();

    private static IEnumerable<TestCaseData> LinearCases()
    {
        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
            foreach (bool bias in new[] { false, true })
                foreach (int m in new[] { 1, 3, 16, 17, 100 })
                    foreach (var (k, n) in new[] { (37, 29), (1031, 77) })
                        yield return new TestCaseData(dtype, bias, m, k, n);
    }

    /// <summary>Rounds f32 values to <paramref name="dtype"/> and back (exact widening).</summary>
    internal static float[] RoundTo(DType dtype, float[] values) => dtype switch
    {
        DType.F32 => values,
        DType.F16 => values.Select(v => (float)(Half)v).ToArray(),
        DType.BF16 => values.Select(v => (float)(BFloat16)v).ToArray(),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>A tensor of <paramref name="dtype"/> holding <paramref name="values"/> (already representable in it).</summary>
    internal static Tensor Upload(ComputeBackend backend, DType dtype, float[] values, params int[] shape) => dtype switch
    {
        DType.F32 => backend.Tensor(values, shape),
        DType.F16 => backend.Tensor(values.Select(v => (Half)v).ToArray(), shape),
        DType.BF16 => backend.Tensor(values.Select(v => (BFloat16)v).ToArray(), shape),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    [TestCaseSource(nameof(LinearCases))]
    public void Linear(DType dtype, bool withBias, int m, int k, int n)
    {
        // The emulator runs each 256-thread group's barriers on OS threads: K = 1031 and M = 100 take minutes there, so it
        // gets K = 97 and M = 33 (still not multiples of the 16-wide tile, and more than one tile of rows); real devices
        // and the CPU run the full shapes.
        if (factory.Emulated) { k = Math.Min(k, 97); m = Math.Min(m, 33); }
        float[] x = RandomData.Uniform(m * k, 31);
        float[] w = RoundTo(dtype, RandomData.Uniform(n * k, 32));
        float[]? bias = withBias ? RandomData.Uniform(n, 33, -2, 2) : null;
        var y = _backend.Zeros(m, n);
        P.Linear(_backend.Tensor(x, m, k), Upload(_backend, dtype, w, n, k), bias is null ? null : _backend.Tensor(bias, n), y);

        var expected = new float[m * n];
        PrimitivesReference.Linear(x, w, bias ?? [], expected, m, k, n);
        var actual = y.ToArray<float>();
        RandomData.AssertClose(actual, expected, 1e-5 * Math.Sqrt(k), 0, "vs PrimitivesReference");
        RandomData.AssertClose(actual, TorchOps.Linear(x, w, bias, m, k, n), 1e-5 * Math.Sqrt(k), 0, "vs TorchSharp");
    }

    [Test]
    public void LinearWithEmptyInnerDimensionIsTheBias([Values] bool withBias)
    {
        float[] bias = RandomData.Uniform(5, 34);
        var y = _backend.Tensor(Enumerable.Repeat(7f, 3 * 5).ToArray(), 3, 5); // stale values must be overwritten
        P.Linear(_backend.Zeros(3, 0), _backend.Allocate(DType.F16, 0).AsTensor(5, 0), withBias ? _backend.Tensor(bias, 5) : null, y);
        var expected = Enumerable.Range(0, 3).SelectMany(_ => withBias ? bias : new float[5]).ToArray();
        Assert.That(y.ToArray<float>(), Is.EqualTo(expected));
    }

    [Test]
    public void LinearMatchesMatMulBitwiseForF32WithoutBias()
    {
        // The f32 path without bias must be the same product as MatMul wherever both take the same kernel; with
        // AVX-512 that is M > 16 (packed path) and M <= 4 (eight-row GEMV); so we compare at M = 3 and 40.
        foreach (int m in new[] { 3, 40 })
        {
            float[] x = RandomData.Uniform(m * 300, 35), w = RandomData.Uniform(70 * 300, 36);
            var a = _backend.Zeros(m, 70);
            var b = _backend.Zeros(m, 70);
            P.Linear(_backend.Tensor(x, m, 300), _backend.Tensor(w, 70, 300), null, a);
            P.MatMul(_backend.Tensor(x, m, 300), _backend.Tensor(w, 70, 300), b);
            float[] expected = new float[m * 70];
            PrimitivesReference.MatMul(x, w, expected, m, 300, 70);
            RandomData.AssertClose(a.ToArray<float>(), expected, 1e-5 * Math.Sqrt(300), 0, $"Linear M = {m}");
            RandomData.AssertClose(b.ToArray<float>(), expected, 1e-5 * Math.Sqrt(300), 0, $"MatMul M = {m}");
        }
    }

    [TestCase(DType.F16, 1, 1, 1)]
    [TestCase(DType.F16, 17, 3, 4097)]
    [TestCase(DType.BF16, 4097, 17, 3)]
    [TestCase(DType.BF16, 300, 45, 33)]
    [TestCase(DType.F32, 300, 45, 33)]
    public void EmbeddingHalfTable(DType dtype, int vocab, int h, int t)
    {
        float[] table = RoundTo(dtype, RandomData.Uniform(vocab * h, 37, -4, 4));
        int[] ids = RandomData.Ints(t, vocab, 38);
        var y = _backend.Zeros(t, h);
        P.Embedding(_backend.Tensor(ids, t), Upload(_backend, dtype, table, vocab, h), y);
        var expected = new float[t * h];
        PrimitivesReference.Embedding(ids, table, expected, h);
        var actual = y.ToArray<float>();
        RandomData.AssertClose(actual, expected, 0, 0, "vs PrimitivesReference");
        RandomData.AssertClose(actual, TorchOps.Embedding(ids, table, h), 0, 0, "vs TorchSharp");
    }

    [Test]
    public void EmbeddingF16KeepsSpecialValues()
    {
        // Subnormals, ±0, ±inf, the largest finite f16 and NaN widen exactly.
        Half[] values = [Half.Epsilon, -Half.Epsilon, (Half)0f, (Half)(-0f), Half.PositiveInfinity, Half.NegativeInfinity, Half.MaxValue, Half.NaN];
        var y = _backend.Zeros(1, values.Length);
        P.Embedding(_backend.Tensor(new[] { 0 }, 1), _backend.Tensor(values, 1, values.Length), y);
        var actual = y.ToArray<float>();
        for (int i = 0; i < values.Length; i++)
            Assert.That(BitConverter.SingleToUInt32Bits(actual[i]) == BitConverter.SingleToUInt32Bits((float)values[i]) || (float.IsNaN(actual[i]) && Half.IsNaN(values[i])),
                $"element {i}: {actual[i]:R} for f16 {values[i]}");
    }

    [TestCase(1, 1, 1)]
    [TestCase(3, 17, 10)]
    [TestCase(40, 33, 700)]
    public void ScatterRows(int n, int h, int rowsInDst)
    {
        float[] src = RandomData.Uniform(n * h, 39), dst = RandomData.Uniform(rowsInDst * h, 40);
        // n distinct rows in [0, rowsInDst), in a scrambled order.
        int[] rows = Enumerable.Range(0, rowsInDst).OrderBy(i => (i * 7919) % rowsInDst * 1.0 + i * 1e-6).Take(n).ToArray();
        var dt = _backend.Tensor(dst, rowsInDst, h);
        P.ScatterRows(_backend.Tensor(src, n, h), _backend.Tensor(rows, n), dt);
        var expected = (float[])dst.Clone();
        PrimitivesReference.ScatterRows(src, rows, expected, h);
        var actual = dt.ToArray<float>();
        RandomData.AssertClose(actual, expected, 0, 0, "vs PrimitivesReference");
        RandomData.AssertClose(actual, TorchOps.ScatterRows(src, rows, dst, h), 0, 0, "vs TorchSharp");
        Assert.That(actual, Is.Not.EqualTo(dst), "some row changed");
    }
}
