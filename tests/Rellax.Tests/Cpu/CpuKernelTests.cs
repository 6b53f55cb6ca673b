using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Cpu;

/// <summary>
/// CPU-specific checks against <see cref="PrimitivesReference"/>: the Vector256 fallback (forced on this AVX-512
/// machine), GEMM tile edges around the 8×32 microkernel and 256-deep K blocks, and GELU's relative accuracy deep in
/// both tails. Tolerances as in <see cref="Oracle.PrimitivesOracleTests"/>.
/// </summary>
[TestFixture]
[NonParallelizable] // toggles the process-wide CpuGemm.UseVector512 switch
public sealed class CpuKernelTests
{
    private static IEnumerable<TestCaseData> Isas()
    {
        yield return new TestCaseData(true).SetArgDisplayNames("vector512-if-available");
        yield return new TestCaseData(false).SetArgDisplayNames("vector256");
    }

    private static void WithIsa(bool vector512, Action body)
    {
        bool saved = CpuGemm.UseVector512;
        CpuGemm.UseVector512 = vector512 && System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
        try { body(); }
        finally { CpuGemm.UseVector512 = saved; }
    }

    [TestCaseSource(nameof(Isas))]
    public void GemmTileEdgesMatchReference(bool vector512) => WithIsa(vector512, () =>
    {
        using var backend = new CpuBackend(2);
        // M around GemvMaxRows and MR multiples, N around NR, K around KC: every tail combination of the blocked path.
        foreach (int m in new[] { 1, 2, 4, 5, 7, 8, 9, 16, 23, 129 })
            foreach (int n in new[] { 1, 31, 32, 33, 95 })
                foreach (int k in new[] { 1, 15, 16, 17, 255, 256, 257, 600 })
                {
                    float[] x = RandomData.Uniform(m * k, m * 1000 + k), w = RandomData.Uniform(n * k, n * 1000 + k + 1);
                    var y = backend.Zeros(m, n);
                    backend.Primitives.MatMul(backend.Tensor(x, m, k), backend.Tensor(w, n, k), y);
                    var expected = new float[m * n];
                    PrimitivesReference.MatMul(x, w, expected, m, k, n);
                    RandomData.AssertClose(y.ToArray<float>(), expected, 1e-5 * Math.Sqrt(k), 0, $"MatMul m={m} k={k} n={n}");
                }
    });

    [TestCaseSource(nameof(Isas))]
    public void GeluIsRelativelyAccurateOverBothTails(bool vector512) => WithIsa(vector512, () =>
    {
        using var backend = new CpuBackend(1);
        // Relative error ≤ 1e-6 everywhere. [-6, 13] against the double reference (its 1 + erf cancels below Φ ~ 1e-10),
        // plus 0 and tiny values.
        var x = new List<float> { 0f, 1e-30f, -1e-30f, 1e-4f, -1e-4f };
        for (float v = -6f; v <= 13f; v += 0.0037f) x.Add(v);
        float[] xs = x.ToArray();
        var y = backend.Zeros(xs.Length);
        backend.Primitives.Gelu(backend.Tensor(xs, xs.Length), y);
        var expected = new float[xs.Length];
        PrimitivesReference.Gelu(xs, expected);
        RandomData.AssertClose(y.ToArray<float>(), expected, 1e-37, 1e-6, "GELU relative accuracy on [-6, 13]");

        // [-13, -6] against the asymptotic series Φ(x) = φ(x)/|x| · Σ (-1)^n (2n-1)!! / x^(2n) (12 terms: < 1e-7 relative here).
        var tail = new List<float>();
        for (float v = -13f; v <= -6f; v += 0.0037f) tail.Add(v);
        float[] ts = tail.ToArray();
        var yt = backend.Zeros(ts.Length);
        backend.Primitives.Gelu(backend.Tensor(ts, ts.Length), yt);
        var tailExpected = ts.Select(v => (float)(v * NormalCdfLowerTail(v))).ToArray();
        RandomData.AssertClose(yt.ToArray<float>(), tailExpected, 1e-44, 1e-6, "GELU relative accuracy on [-13, -6]");
    });

    private static double NormalCdfLowerTail(double x)
    {
        double x2 = x * x, term = 1, sum = 1;
        for (int n = 1; n <= 12; n++) { term *= -(2 * n - 1) / x2; sum += term; }
        return Math.Exp(-x2 / 2) / Math.Sqrt(2 * Math.PI) / -x * sum;
    }

    [TestCaseSource(nameof(Isas))]
    public void RopeAttentionAndDotMatchReference(bool vector512) => WithIsa(vector512, () =>
    {
        using var backend = new CpuBackend(2);
        int t = 7, s = 40, hq = 4, hkv = 2, d = 50;
        float[] q = RandomData.Uniform(t * hq * d, 30), k = RandomData.Uniform(s * hkv * d, 31), v = RandomData.Uniform(s * hkv * d, 32);
        int[] pos = RandomData.Ints(t, 100, 33);
        var (cos, sin) = RopeTables.Build(RopeTables.InverseFrequencies(d, 500000), 100);
        var qt = backend.Tensor(q, t, hq, d);
        backend.Primitives.Rope(qt, backend.Tensor(pos, t), backend.Tensor(cos, 100, d / 2), backend.Tensor(sin, 100, d / 2));
        float[] qExpected = (float[])q.Clone();
        PrimitivesReference.Rope(qExpected, pos, cos, sin, hq, d);
        RandomData.AssertClose(qt.ToArray<float>(), qExpected, 1e-6, 2e-6, "RoPE");

        // Attention on the roped q (formerly Primitives.Attention): fp32 FlashAttention, q [1, T, Hq, D], k/v [1, S, Hkv, D].
        var (o, oExpected) = Rellax.Tests.Attention.AttentionCheck.Fp32Sequence(backend, qt.ToArray<float>(), k, v, t, s, hq, hkv, d, 0.125f, causal: true);
        RandomData.AssertClose(o, oExpected, 2e-6, 1e-5, "Attention");
    });

    [Test]
    public void EmbeddingRejectsOutOfRangeIds()
    {
        using var backend = new CpuBackend(1);
        var y = backend.Zeros(2, 3);
        var table = backend.Tensor(RandomData.Uniform(12, 1), 4, 3);
        foreach (int bad in new[] { 4, -1 })
        {
            var ex = Assert.Throws<ArgumentOutOfRangeException>(() => backend.Primitives.Embedding(backend.Tensor(new[] { 0, bad }, 2), table, y));
            Assert.That(ex!.ParamName, Is.EqualTo("ids"));
        }
    }

    [Test]
    public void RopeRejectsOutOfRangePositions()
    {
        using var backend = new CpuBackend(1);
        var x = backend.Zeros(2, 1, 4);
        var cos = backend.Zeros(5, 2);
        foreach (int bad in new[] { 5, -3 })
        {
            var ex = Assert.Throws<ArgumentOutOfRangeException>(() => backend.Primitives.Rope(x, backend.Tensor(new[] { 1, bad }, 2), cos, cos));
            Assert.That(ex!.ParamName, Is.EqualTo("positions"));
        }
    }
}
