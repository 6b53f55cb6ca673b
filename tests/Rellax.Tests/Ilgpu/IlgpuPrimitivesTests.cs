using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Tests.Ilgpu;

/// <summary>
/// Every primitive on the ILGPU CPU-emulator backend against <see cref="PrimitivesReference"/> (double accumulation),
/// on odd shapes and seeded random data. Tolerances (|got - want| &lt;= atol + rtol·|want|):
/// GEMM 1e-5 + 1e-5 (fp32 sums of up to 65 products of values in [-1, 1]); norms and softmax 1e-5 + 1e-5
/// (fp32 reductions over up to 4097 elements); RoPE, SwiGLU, add 1e-6 + 1e-6 (a few fp32 roundings);
/// GELU 1e-6 + 2e-6 (the kernel's erf is accurate to about 1 ulp); attention 1e-5 + 1e-5 (fp32 online softmax
/// over up to 2000 keys); embedding exact (a copy).
/// </summary>
[TestFixture]
public sealed class IlgpuPrimitivesTests
{
    private IlgpuBackend _backend = null!;

    [OneTimeSetUp]
    public void CreateBackend() => _backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);

    [OneTimeTearDown]
    public void DisposeBackend() => _backend.Dispose();

    private Primitives P => _backend.Primitives;

    private static float[] RandomArray(int seed, int n, float lo = -1f, float hi = 1f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * (float)rng.NextDouble();
        return a;
    }

    private static void AssertClose(float[] got, float[] want, double atol, double rtol, string what)
    {
        Assert.That(got, Has.Length.EqualTo(want.Length), what);
        int worst = -1;
        double worstExcess = 0;
        for (int i = 0; i < want.Length; i++)
        {
            double err = Math.Abs((double)got[i] - want[i]);
            double excess = err - (atol + rtol * Math.Abs(want[i]));
            if (!(excess <= 0) && (worst < 0 || excess > worstExcess || double.IsNaN(excess))) { worst = i; worstExcess = excess; }
        }
        Assert.That(worst, Is.EqualTo(-1), () => $"{what}: element {worst} is {got[worst]:R}, expected {want[worst]:R} (tolerance {atol} + {rtol}·|want|)");
    }

    private DeviceBuffer Up(float[] data) => _backend.Upload<float>(data);

    private static float[] Down(in Tensor t) => t.ToArray<float>();

    [TestCase(1, 1, 1)]
    [TestCase(3, 17, 1)]
    [TestCase(1, 3, 17)]
    [TestCase(17, 16, 3)]
    [TestCase(33, 65, 47)]
    public void MatMul(int m, int k, int n)
    {
        var x = RandomArray(1, m * k); var w = RandomArray(2, n * k);
        var want = new float[m * n];
        PrimitivesReference.MatMul(x, w, want, m, k, n);
        using var xb = Up(x); using var wb = Up(w); using var yb = _backend.Allocate(DType.F32, m, n);
        P.MatMul(xb.AsTensor(m, k), wb.AsTensor(n, k), yb.AsTensor(m, n));
        AssertClose(Down(yb.AsTensor(m, n)), want, 1e-5, 1e-5, $"MatMul {m}x{k}x{n}");
    }

    [Test]
    public void MatMulOnViewsAtAnOffset()
    {
        // x is rows 2..6 of a 9-row buffer; y is written into the middle of a bigger buffer whose edges must survive.
        const int k = 19, n = 7;
        var all = RandomArray(3, 9 * k); var w = RandomArray(4, n * k);
        using var xb = Up(all); using var wb = Up(w);
        using var yb = Up(Enumerable.Repeat(42f, 10 * n).ToArray());
        var y = yb.AsTensor(10, n).Slice(3, 5);
        P.MatMul(xb.AsTensor(9, k).Slice(2, 5), wb.AsTensor(n, k), y);
        var want = new float[5 * n];
        PrimitivesReference.MatMul(all.AsSpan(2 * k, 5 * k), w, want, 5, k, n);
        AssertClose(Down(y), want, 1e-5, 1e-5, "MatMul on views");
        var whole = Down(yb.AsTensor(10 * n));
        Assert.That(whole[..(3 * n)], Is.All.EqualTo(42f));
        Assert.That(whole[(8 * n)..], Is.All.EqualTo(42f));
    }

    [TestCase(1, 1)]
    [TestCase(3, 17)]
    [TestCase(17, 3)]
    [TestCase(2, 4097)]
    public void RmsNorm(int rows, int n)
    {
        var x = RandomArray(5, rows * n, -3, 3); var wt = RandomArray(6, n, 0.5f, 1.5f);
        var want = new float[x.Length];
        PrimitivesReference.RmsNorm(x, wt, 1e-6f, want, n);
        using var xb = Up(x); using var wb = Up(wt); using var yb = _backend.Allocate(DType.F32, rows, n);
        P.RmsNorm(xb.AsTensor(rows, n), wb.AsTensor(n), 1e-6f, yb.AsTensor(rows, n));
        AssertClose(Down(yb.AsTensor(rows, n)), want, 1e-5, 1e-5, $"RmsNorm {rows}x{n}");
        // In place (y == x) gives the same answer.
        P.RmsNorm(xb.AsTensor(rows, n), wb.AsTensor(n), 1e-6f, xb.AsTensor(rows, n));
        AssertClose(Down(xb.AsTensor(rows, n)), want, 1e-5, 1e-5, $"RmsNorm in place {rows}x{n}");
    }

    [TestCase(1, 1)]
    [TestCase(3, 17)]
    [TestCase(17, 3)]
    [TestCase(2, 4097)]
    public void LayerNorm(int rows, int n)
    {
        // An offset mean makes one-pass variance formulas lose digits; the kernel must not.
        var x = RandomArray(7, rows * n, 9, 11); var wt = RandomArray(8, n, 0.5f, 1.5f); var bias = RandomArray(9, n);
        var want = new float[x.Length];
        PrimitivesReference.LayerNorm(x, wt, bias, 1e-5f, want, n);
        using var xb = Up(x); using var wb = Up(wt); using var bb = Up(bias); using var yb = _backend.Allocate(DType.F32, rows, n);
        P.LayerNorm(xb.AsTensor(rows, n), wb.AsTensor(n), bb.AsTensor(n), 1e-5f, yb.AsTensor(rows, n));
        AssertClose(Down(yb.AsTensor(rows, n)), want, 1e-5, 1e-5, $"LayerNorm {rows}x{n}");
    }

    [TestCase(1, 1)]
    [TestCase(3, 17)]
    [TestCase(17, 3)]
    [TestCase(2, 4097)]
    public void Softmax(int rows, int n)
    {
        // Large logits: a kernel that forgets to subtract the row max overflows exp.
        var x = RandomArray(10, rows * n, -20, 120);
        var want = new float[x.Length];
        PrimitivesReference.Softmax(x, want, n);
        using var xb = Up(x); using var yb = _backend.Allocate(DType.F32, rows, n);
        P.Softmax(xb.AsTensor(rows, n), yb.AsTensor(rows, n));
        AssertClose(Down(yb.AsTensor(rows, n)), want, 1e-5, 1e-5, $"Softmax {rows}x{n}");
        P.Softmax(xb.AsTensor(rows, n), xb.AsTensor(rows, n));
        AssertClose(Down(xb.AsTensor(rows, n)), want, 1e-5, 1e-5, $"Softmax in place {rows}x{n}");
    }

    [TestCase(1, 1, 2)]
    [TestCase(3, 3, 34)]
    [TestCase(17, 2, 64)]
    [TestCase(5, 4, 256)]
    public void Rope(int t, int h, int d)
    {
        const int positions = 40;
        var (cos, sin) = RopeTables.Build(RopeTables.InverseFrequencies(d, 10000), positions);
        var rng = new Random(11);
        var pos = Enumerable.Range(0, t).Select(_ => rng.Next(positions)).ToArray();
        var x = RandomArray(12, t * h * d);
        var want = (float[])x.Clone();
        PrimitivesReference.Rope(want, pos, cos, sin, h, d);
        using var xb = Up(x); using var pb = _backend.Upload<int>(pos); using var cb = Up(cos); using var sb = Up(sin);
        P.Rope(xb.AsTensor(t, h, d), pb.AsTensor(t), cb.AsTensor(positions, d / 2), sb.AsTensor(positions, d / 2));
        AssertClose(Down(xb.AsTensor(t, h, d)), want, 1e-6, 1e-6, $"Rope {t}x{h}x{d}");
    }

    [Test]
    public void RopeLeavesOutOfRangePositionsUnrotated()
    {
        const int d = 8, positions = 4;
        var (cos, sin) = RopeTables.Build(RopeTables.InverseFrequencies(d, 10000), positions);
        var x = RandomArray(13, 3 * d);
        int[] pos = [1, 4, -1];
        var want = (float[])x.Clone();
        PrimitivesReference.Rope(want.AsSpan(0, d), pos.AsSpan(0, 1), cos, sin, 1, d);
        using var xb = Up(x); using var pb = _backend.Upload<int>(pos); using var cb = Up(cos); using var sb = Up(sin);
        P.Rope(xb.AsTensor(3, 1, d), pb.AsTensor(3), cb.AsTensor(positions, d / 2), sb.AsTensor(positions, d / 2));
        AssertClose(Down(xb.AsTensor(3, 1, d)), want, 1e-6, 1e-6, "Rope with positions 4 and -1 outside [0, 4)");
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(17)]
    [TestCase(4099)]
    public void SwiGlu(int n)
    {
        var g = RandomArray(14, n, -30, 30); var u = RandomArray(15, n, -2, 2);
        var want = new float[n];
        PrimitivesReference.SwiGlu(g, u, want);
        using var gb = Up(g); using var ub = Up(u); using var yb = _backend.Allocate(DType.F32, n);
        P.SwiGlu(gb.AsTensor(n), ub.AsTensor(n), yb.AsTensor(n));
        AssertClose(Down(yb.AsTensor(n)), want, 1e-6, 1e-6, $"SwiGlu {n}");
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(17)]
    [TestCase(4099)]
    public void Gelu(int n)
    {
        var x = RandomArray(16, n, -8, 8);
        var want = new float[n];
        PrimitivesReference.Gelu(x, want);
        using var xb = Up(x); using var yb = _backend.Allocate(DType.F32, n);
        P.Gelu(xb.AsTensor(n), yb.AsTensor(n));
        AssertClose(Down(yb.AsTensor(n)), want, 1e-6, 2e-6, $"Gelu {n}");
        P.Gelu(xb.AsTensor(n), xb.AsTensor(n));
        AssertClose(Down(xb.AsTensor(n)), want, 1e-6, 2e-6, $"Gelu in place {n}");
    }

    [Test]
    public void GeluSpecialValuesAndErfAccuracy()
    {
        // Dense sweep across both erf branches (|x/√2| below and above 0.9277), the branch point, zero and the tails.
        var x = Enumerable.Range(0, 2001).Select(i => -10f + i * 0.01f)
            .Concat([0f, -0f, 1.3119962f, -1.3119962f, 30f, -30f, 1e-20f]).ToArray();
        var want = new float[x.Length];
        PrimitivesReference.Gelu(x, want);
        using var xb = Up(x); using var yb = _backend.Allocate(DType.F32, x.Length);
        P.Gelu(xb.AsTensor(x.Length), yb.AsTensor(x.Length));
        AssertClose(Down(yb.AsTensor(x.Length)), want, 1e-6, 2e-6, "Gelu sweep");
        // The device erf itself, run on the host: within 2e-7 of the double reference.
        for (int i = -3000; i <= 3000; i++)
        {
            float v = i * 0.002f;
            Assert.That((double)IlgpuErf(v), Is.EqualTo(PrimitivesReference.Erf(v)).Within(2e-7), $"erf({v})");
        }
    }

    private static float IlgpuErf(float v) => IlgpuPrimitiveKernels.Erf(v);

    [TestCase(1, 1, 1, 1, 1, true)]
    [TestCase(3, 3, 2, 1, 17, true)]
    [TestCase(1, 17, 4, 2, 64, true)]
    [TestCase(17, 17, 4, 4, 32, true)]
    [TestCase(17, 17, 4, 4, 32, false)]
    [TestCase(3, 300, 2, 1, 256, true)]
    [TestCase(1, 2000, 2, 1, 64, true)]
    public void Attention(int t, int s, int hq, int hkv, int d, bool causal)
    {
        var q = RandomArray(17, t * hq * d, -2, 2); var k = RandomArray(18, s * hkv * d, -2, 2); var v = RandomArray(19, s * hkv * d);
        float scale = 1f / MathF.Sqrt(d);
        // Formerly Primitives.Attention; now fp32 FlashAttention.Prefill with q [1, T, Hq, D] against k, v [1, S, Hkv, D].
        var (actual, want) = Rellax.Tests.Attention.AttentionCheck.Fp32Sequence(_backend, q, k, v, t, s, hq, hkv, d, scale, causal);
        AssertClose(actual, want, 1e-5, 1e-5, $"Attention T={t} S={s} Hq={hq} Hkv={hkv} D={d} causal={causal}");
    }

    [Test]
    public void AttentionRejectsHeadDimensionsBeyondTheKernelLimit()
    {
        const int d = 258;
        using var qb = _backend.Allocate(DType.F32, 1, 1, 1, d); using var kb = _backend.Allocate(DType.F32, 1, 1, 1, d);
        using var vb = _backend.Allocate(DType.F32, 1, 1, 1, d); using var ob = _backend.Allocate(DType.F32, 1, 1, 1, d);
        var ex = Assert.Throws<ArgumentException>(() => _backend.Attention.Prefill(qb.AsTensor(1, 1, 1, d), kb.AsTensor(1, 1, 1, d),
            vb.AsTensor(1, 1, 1, d), default, ob.AsTensor(1, 1, 1, d), new AttentionOptions { Precision = AttentionPrecision.Fp32, Scale = 0.1f }));
        Assert.That(ex!.Message, Does.Contain("D = 258 is not supported"));
    }

    [TestCase(1, 1, 1)]
    [TestCase(3, 5, 17)]
    [TestCase(17, 3, 3)]
    [TestCase(33, 50, 129)]
    public void Embedding(int t, int vocab, int hidden)
    {
        var rng = new Random(20);
        var ids = Enumerable.Range(0, t).Select(_ => rng.Next(vocab)).ToArray();
        var table = RandomArray(21, vocab * hidden);
        var want = new float[t * hidden];
        PrimitivesReference.Embedding(ids, table, want, hidden);
        using var ib = _backend.Upload<int>(ids); using var tb = Up(table); using var yb = _backend.Allocate(DType.F32, t, hidden);
        P.Embedding(ib.AsTensor(t), tb.AsTensor(vocab, hidden), yb.AsTensor(t, hidden));
        Assert.That(Down(yb.AsTensor(t, hidden)), Is.EqualTo(want));
    }

    [Test]
    public void EmbeddingWritesZeroRowsForOutOfRangeIds()
    {
        const int vocab = 4, hidden = 5;
        int[] ids = [2, 4, -1, 0, int.MaxValue];
        var table = RandomArray(22, vocab * hidden);
        using var ib = _backend.Upload<int>(ids); using var tb = Up(table);
        using var yb = Up(Enumerable.Repeat(7f, ids.Length * hidden).ToArray());
        P.Embedding(ib.AsTensor(ids.Length), tb.AsTensor(vocab, hidden), yb.AsTensor(ids.Length, hidden));
        var got = Down(yb.AsTensor(ids.Length, hidden));
        var want = new float[ids.Length * hidden];
        table.AsSpan(2 * hidden, hidden).CopyTo(want.AsSpan(0));
        table.AsSpan(0, hidden).CopyTo(want.AsSpan(3 * hidden));
        Assert.That(got, Is.EqualTo(want));
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(17)]
    [TestCase(4099)]
    public void Add(int n)
    {
        var a = RandomArray(23, n, -100, 100); var b = RandomArray(24, n, -100, 100);
        var want = new float[n];
        PrimitivesReference.Add(a, b, want);
        using var ab = Up(a); using var bb = Up(b); using var yb = _backend.Allocate(DType.F32, n);
        P.Add(ab.AsTensor(n), bb.AsTensor(n), yb.AsTensor(n));
        Assert.That(Down(yb.AsTensor(n)), Is.EqualTo(want));
        P.Add(ab.AsTensor(n), bb.AsTensor(n), ab.AsTensor(n));
        Assert.That(Down(ab.AsTensor(n)), Is.EqualTo(want), "in place");
    }
}
