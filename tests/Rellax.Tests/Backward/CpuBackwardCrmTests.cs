using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Backward;

/// <summary>
/// The CPU kernels of the CRM backward ops (<see cref="BackwardOps"/>: Linear, ReLU, GELU, LayerNorm, embedding
/// scatter-add, DIN's target interaction and weighted sum, sigmoid-BCE) against <see cref="BackwardReference"/> on random
/// data, rows 1, 7, 33, 257 and widths that are not multiples of 16 (vector tails, partial GEMM tiles); a 2-thread backend
/// so the parallel splits run. Plus the argument checks (one message naming the argument and the shapes).
/// </summary>
[TestFixture]
public sealed class CpuBackwardCrmTests
{
    private CpuBackend _cpu = null!;
    private BackwardOps B => _cpu.Backward;

    [OneTimeSetUp] public void Create() => _cpu = new CpuBackend(threads: 2);
    [OneTimeTearDown] public void Free() => _cpu.Dispose();

    private static readonly int[] Rows = [1, 7, 33, 257];

    private float[] Read(Tensor t)
    {
        var a = new float[t.ElementCount];
        t.Buffer.CopyTo<float>(a, t.Offset);
        return a;
    }

    private static IEnumerable<TestCaseData> LinearCases()
    {
        foreach (int m in Rows)
            foreach (var (k, n) in new[] { (5, 3), (37, 29), (70, 130) })
                yield return new TestCaseData(m, k, n);
    }

    [TestCaseSource(nameof(LinearCases))]
    public void LinearBackwardMatchesReference(int m, int k, int n)
    {
        var x = RandomData.Uniform(m * k, 1);
        var w = RandomData.Uniform(n * k, 2);
        var dy = RandomData.Uniform(m * n, 3);
        var (dx, dw, db) = (_cpu.Zeros(m, k), _cpu.Zeros(n, k), _cpu.Zeros(n));
        // Outputs are overwritten: start them dirty.
        dx.Buffer.CopyFrom<float>(RandomData.Uniform(m * k, 9));
        B.LinearBackward(_cpu.Tensor(x, m, k), _cpu.Tensor(w, n, k), _cpu.Tensor(dy, m, n), dx, dw, db);
        var (ex, ew, eb) = (new float[m * k], new float[n * k], new float[n]);
        BackwardReference.LinearBackward(x, w, dy, ex, ew, eb, m, k, n);
        RandomData.AssertClose(Read(dx), ex, 1e-5 * Math.Sqrt(n), 1e-5, "dx");
        RandomData.AssertClose(Read(dw), ew, 1e-5 * Math.Sqrt(m), 1e-5, "dw");
        RandomData.AssertClose(Read(db), eb, 1e-5 * Math.Sqrt(m), 1e-5, "db");
    }

    [Test]
    public void LinearBackwardSkipsNullOutputs()
    {
        var x = RandomData.Uniform(7 * 5, 1);
        var w = RandomData.Uniform(3 * 5, 2);
        var dy = RandomData.Uniform(7 * 3, 3);
        var dw = _cpu.Zeros(3, 5);
        B.LinearBackward(_cpu.Tensor(x, 7, 5), _cpu.Tensor(w, 3, 5), _cpu.Tensor(dy, 7, 3), null, dw, null);
        var ew = new float[15];
        BackwardReference.LinearBackward(x, w, dy, default, ew, default, 7, 5, 3);
        RandomData.AssertClose(Read(dw), ew, 1e-5, 1e-5, "dw");
    }

    [TestCaseSource(nameof(Rows))]
    public void ReluAndGeluBackwardMatchReference(int rows)
    {
        int n = rows * 19;
        var x = RandomData.Uniform(n, 4, -4, 4);
        x[0] = 0; // the kink: ReLU's gradient is 0 there, as torch's
        var dy = RandomData.Uniform(n, 5);
        var relu = _cpu.Zeros(rows, 19);
        B.ReluBackward(_cpu.Tensor(x, rows, 19), _cpu.Tensor(dy, rows, 19), relu);
        var er = new float[n];
        BackwardReference.ReluBackward(x, dy, er);
        Assert.That(Read(relu), Is.EqualTo(er), "ReLU masks exactly");

        var gelu = _cpu.Zeros(rows, 19);
        B.GeluBackward(_cpu.Tensor(x, rows, 19), _cpu.Tensor(dy, rows, 19), gelu);
        var eg = new float[n];
        BackwardReference.GeluBackward(x, dy, eg);
        RandomData.AssertClose(Read(gelu), eg, 1e-6, 1e-5, "gelu dx");
    }

    [Test]
    public void ReluBackwardInPlace()
    {
        var y = RandomData.Uniform(257, 6);
        var dy = RandomData.Uniform(257, 7);
        var t = _cpu.Tensor((float[])dy.Clone(), 257);
        B.ReluBackward(_cpu.Tensor(y, 257), t, t);
        var e = new float[257];
        BackwardReference.ReluBackward(y, dy, e);
        Assert.That(Read(t), Is.EqualTo(e));
    }

    private static IEnumerable<TestCaseData> NormCases()
    {
        foreach (int m in Rows) foreach (int n in new[] { 5, 37 }) yield return new TestCaseData(m, n);
    }

    [TestCaseSource(nameof(NormCases))]
    public void LayerNormBackwardMatchesReference(int rows, int n)
    {
        var x = RandomData.Uniform(rows * n, 8, -2, 3);
        var w = RandomData.Uniform(n, 9);
        var dy = RandomData.Uniform(rows * n, 10);
        var (dx, dg, dbeta) = (_cpu.Zeros(rows, n), _cpu.Zeros(n), _cpu.Zeros(n));
        B.LayerNormBackward(_cpu.Tensor(x, rows, n), _cpu.Tensor(w, n), 1e-5f, _cpu.Tensor(dy, rows, n), dx, dg, dbeta);
        var (ex, eg, eb) = (new float[rows * n], new float[n], new float[n]);
        BackwardReference.LayerNormBackward(x, w, 1e-5f, dy, ex, eg, eb, n);
        RandomData.AssertClose(Read(dx), ex, 1e-5, 1e-4, "dx");
        RandomData.AssertClose(Read(dg), eg, 1e-5 * Math.Sqrt(rows), 1e-5, "dγ");
        RandomData.AssertClose(Read(dbeta), eb, 1e-5 * Math.Sqrt(rows), 1e-5, "dβ");
    }

    [TestCaseSource(nameof(Rows))]
    public void EmbeddingBackwardAddsIntoUsedRowsOnly(int n)
    {
        const int v = 50, e = 13;
        var rows = RandomData.Ints(n, 20, 11);          // rows 20..49 are never used; repeats add up
        var dy = RandomData.Uniform(n * e, 12);
        var table = RandomData.Uniform(v * e, 13);       // accumulated into, so start non-zero
        var t = _cpu.Tensor((float[])table.Clone(), v, e);
        B.EmbeddingBackward(_cpu.Tensor(rows, n), _cpu.Tensor(dy, n, e), t);
        var expected = (float[])table.Clone();
        BackwardReference.EmbeddingBackward(rows, dy, expected, e);
        var actual = Read(t);
        RandomData.AssertClose(actual, expected, 1e-6, 1e-6, "dtable");
        Assert.That(actual.AsSpan(20 * e).ToArray(), Is.EqualTo(table.AsSpan(20 * e).ToArray()), "unused rows untouched");
    }

    /// <summary>Ragged offsets for <paramref name="batch"/> samples with 0..max positions each (some empty).</summary>
    private static int[] Starts(int batch, int max, int seed)
    {
        var lengths = RandomData.Ints(batch, max + 1, seed);
        var s = new int[batch + 1];
        for (int b = 0; b < batch; b++) s[b + 1] = s[b] + lengths[b];
        return s;
    }

    [TestCaseSource(nameof(Rows))]
    public void TargetInteractionAndWeightedSumMatchReference(int batch)
    {
        const int e = 21;
        var starts = Starts(batch, 9, 14);
        int p = starts[^1];
        var t = RandomData.Uniform(batch * e, 15);
        var h = RandomData.Uniform(p * e, 16);
        var dz = RandomData.Uniform(p * 2 * e, 17);
        var dt0 = RandomData.Uniform(batch * e, 18);
        var dh0 = RandomData.Uniform(p * e, 19);
        var (dt, dh) = (_cpu.Tensor((float[])dt0.Clone(), batch, e), _cpu.Tensor((float[])dh0.Clone(), p, e));
        var st = _cpu.Tensor(starts, batch + 1);
        B.TargetInteractionBackward(_cpu.Tensor(t, batch, e), _cpu.Tensor(h, p, e), st, _cpu.Tensor(dz, p, 2 * e), dt, dh);
        var (et, eh) = ((float[])dt0.Clone(), (float[])dh0.Clone());
        BackwardReference.TargetInteractionBackward(t, h, starts, dz, et, eh, e);
        RandomData.AssertClose(Read(dt), et, 1e-5, 1e-5, "dtarget");
        RandomData.AssertClose(Read(dh), eh, 1e-5, 1e-5, "dhist");

        var s = RandomData.Uniform(p, 20);
        var du = RandomData.Uniform(batch * e, 21);
        var ds = _cpu.Zeros(p);
        var dh2 = _cpu.Tensor((float[])dh0.Clone(), p, e);
        B.WeightedSumBackward(_cpu.Tensor(s, p), _cpu.Tensor(h, p, e), st, _cpu.Tensor(du, batch, e), ds, dh2);
        var (es, eh2) = (new float[p], (float[])dh0.Clone());
        BackwardReference.WeightedSumBackward(s, h, starts, du, es, eh2, e);
        RandomData.AssertClose(Read(ds), es, 1e-5, 1e-5, "dscores");
        RandomData.AssertClose(Read(dh2), eh2, 1e-5, 1e-5, "dhist");
    }

    [Test]
    public void SigmoidBceIsStableAtExtremeLogits()
    {
        float[] z = [-100f, -30f, -1f, 0f, 0.5f, 30f, 100f, 88.8f, -88.8f];
        float[] y = [1, 0, 1, 0, 1, 1, 0, 1, 0];
        var d = _cpu.Zeros(z.Length);
        double sum = B.SigmoidBce(_cpu.Tensor(z, z.Length), _cpu.Tensor(y, y.Length), 0.25f, d);
        var e = new float[z.Length];
        double esum = BackwardReference.SigmoidBce(z, y, 0.25f, e);
        Assert.That(double.IsFinite(sum), Is.True);
        Assert.That(sum, Is.EqualTo(esum).Within(1e-5).Percent);
        // z = -100, y = 1: loss 100 (log(1 + e^100)); z = 100, y = 0: loss 100.
        Assert.That(esum, Is.GreaterThan(200));
        RandomData.AssertClose(Read(d), e, 1e-7, 1e-5, "dlogits");
    }

    [Test]
    public void SigmoidBceMatchesReferenceOnRandomBatches([Values(1, 7, 33, 257)] int n)
    {
        var z = RandomData.Uniform(n, 22, -8, 8);
        var y = RandomData.Ints(n, 2, 23).Select(v => (float)v).ToArray();
        var d = _cpu.Zeros(n);
        double sum = B.SigmoidBce(_cpu.Tensor(z, n), _cpu.Tensor(y, n), 1f / n, d);
        var e = new float[n];
        double esum = BackwardReference.SigmoidBce(z, y, 1f / n, e);
        Assert.That(sum, Is.EqualTo(esum).Within(1e-5).Percent);
        RandomData.AssertClose(Read(d), e, 1e-7, 1e-5, "dlogits");
    }

    [Test]
    public void ArgumentErrorsNameTheArgumentAndShapes()
    {
        var x = _cpu.Zeros(4, 5);
        var w = _cpu.Zeros(3, 5);
        var e1 = Assert.Throws<ArgumentException>(() => B.LinearBackward(x, w, _cpu.Zeros(4, 2), null, null, null))!;
        Assert.That(e1.Message, Does.Contain("dy f32[4, 2]").And.Contain("w f32[3, 5]"));
        var e2 = Assert.Throws<ArgumentException>(() => B.LinearBackward(x, w, _cpu.Zeros(4, 3), _cpu.Zeros(5, 4), null, null))!;
        Assert.That(e2.ParamName, Is.EqualTo("dx"));
        var e3 = Assert.Throws<ArgumentException>(() => B.EmbeddingBackward(_cpu.Tensor(new[] { 0, 7 }, 2), _cpu.Zeros(2, 5), _cpu.Zeros(7, 5)))!;
        Assert.That(e3.Message, Does.Contain("rows[1] = 7").And.Contain("[0, 7)"));
        var e4 = Assert.Throws<ArgumentException>(() => B.WeightedSumBackward(_cpu.Zeros(3), _cpu.Zeros(3, 4), _cpu.Tensor(new[] { 0, 1, 2 }, 3),
            _cpu.Zeros(2, 4), _cpu.Zeros(3), _cpu.Zeros(3, 4)))!;
        Assert.That(e4.Message, Does.Contain("starts ends at 2").And.Contain("3 positions"));
        var e5 = Assert.Throws<ArgumentException>(() => B.TargetInteractionBackward(_cpu.Zeros(2, 4), _cpu.Zeros(3, 4), _cpu.Tensor(new[] { 0, 3 }, 2),
            _cpu.Zeros(3, 8), _cpu.Zeros(2, 4), _cpu.Zeros(3, 4)))!;
        Assert.That(e5.ParamName, Is.EqualTo("starts"));
        Assert.Throws<ArgumentException>(() => B.ReluBackward(_cpu.Zeros(3), _cpu.Zeros(4), _cpu.Zeros(3)));
        Assert.Throws<ArgumentOutOfRangeException>(() => B.SigmoidBce(_cpu.Zeros(3), _cpu.Zeros(3), float.NaN, _cpu.Zeros(3)));
    }
}
