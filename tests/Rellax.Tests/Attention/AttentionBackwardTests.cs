using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;
using static TorchSharp.torch;
using TTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Attention;

/// <summary>
/// The fp32 attention backward (<see cref="FlashAttention.Backward"/>) and the forward's saved log-sum-exp on the CPU
/// backend, against <see cref="AttentionReference.ExactBackward"/> (fp64), which is itself checked against TorchSharp
/// autograd through <c>scaled_dot_product_attention</c> with an explicit mask in float64. Odd head dimensions (8, 24,
/// 64), T from 1 to 300 (crossing the 64-key blocks and 64-row tiles), GQA, left padding, both layouts, causal or not.
/// <para>Tolerance: each gradient is a sum over up to T keys or queries of O(1) terms in fp32 (plus the exp of a
/// recomputed logit, and dS = P(dP − D) cancels): |a − e| ≤ 2e-5·max(max|e|, 1) + 1e-5·|e| with the maximum over the
/// whole tensor (inputs are standard normal, so the terms are O(1) even where a gradient is 0, e.g. T = 1); a wrong
/// mask, head or scale moves elements by a sizeable fraction of max|e|. The reference is compared with autograd to
/// 1e-7·max|e| + 1e-6·|e|: our scale is the f32 1/√D, torch's the f64 one (a 3e-8 relative difference).</para>
/// </summary>
[TestFixture]
public sealed class AttentionBackwardTests
{
    private static AttentionShape Shape(int batch, int hq, int hkv, int t, int d, AttentionLayout layout) => new(batch, hq, hkv, t, d, layout);

    private static int[] Lengths(int batch, int t, int seed)
    {
        var rng = new Random(seed);
        var lens = new int[batch];
        for (int b = 0; b < batch; b++) lens[b] = b == 0 ? t : rng.Next(0, t + 1); // the first full, others padded (maybe empty)
        return lens;
    }

    private static void AssertGrad(float[] actual, double[] expected, string what)
    {
        double max = expected.Length == 0 ? 0 : expected.Max(Math.Abs);
        RandomData.AssertClose(actual, expected.Select(x => (float)x).ToArray(), 2e-5 * Math.Max(max, 1), 1e-5, what);
    }

    private static (float[] O, float[] Lse, float[] Dq, float[] Dk, float[] Dv) RunCpu(float[] q, float[] k, float[] v, float[] dO,
        AttentionShape s, int[] lengths, bool causal, int threads)
    {
        using var backend = new CpuBackend(threads);
        int[] qs = s.ShapeOf(s.QueryHeads), ks = s.ShapeOf(s.KvHeads);
        var options = new AttentionOptions { Precision = AttentionPrecision.Fp32, Layout = s.Layout, Causal = causal };
        var qt = backend.Tensor(q, qs); var kt = backend.Tensor(k, ks); var vt = backend.Tensor(v, ks);
        var o = backend.Zeros(qs);
        var lse = backend.Zeros(s.Batch, s.QueryHeads, s.Tokens);
        backend.Attention.Prefill(qt, kt, vt, lengths, o, lse, options);
        var dq = backend.Tensor(Enumerable.Repeat(float.NaN, q.Length).ToArray(), qs); // overwritten, padding rows too
        var dk = backend.Tensor(Enumerable.Repeat(float.NaN, k.Length).ToArray(), ks);
        var dv = backend.Tensor(Enumerable.Repeat(float.NaN, k.Length).ToArray(), ks);
        backend.Attention.Backward(qt, kt, vt, o, backend.Tensor(dO, qs), lse, lengths, dq, dk, dv, options);
        return (o.ToArray<float>(), lse.ToArray<float>(), dq.ToArray<float>(), dk.ToArray<float>(), dv.ToArray<float>());
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        int i = 0;
        foreach (int d in new[] { 8, 24, 64 })
            foreach (int t in new[] { 1, 5, 64, 97, 300 })
            {
                if (d == 64 && t == 300 && i % 2 == 0) { i++; continue; }
                var layout = i % 2 == 0 ? AttentionLayout.HeadMajor : AttentionLayout.TokenMajor;
                bool causal = i % 5 != 3;
                int hq = i % 3 == 0 ? 4 : 6, hkv = i % 3 == 0 ? 1 : 2; // GQA groups of 4 and 3
                int batch = t > 100 ? 2 : 3;
                yield return new TestCaseData(batch, hq, hkv, t, d, layout, causal, 1 + i % 2)
                    .SetArgDisplayNames($"B{batch}", $"Hq{hq}", $"Hkv{hkv}", $"T{t}", $"D{d}", layout.ToString(), causal ? "causal" : "full", $"threads{1 + i % 2}");
                i++;
            }
    }

    [TestCaseSource(nameof(Cases))]
    public void CpuMatchesReference(int batch, int hq, int hkv, int t, int d, AttentionLayout layout, bool causal, int threads)
    {
        var s = Shape(batch, hq, hkv, t, d, layout);
        var (q, k, v) = AttentionCheck.Inputs(s, seed: t + d);
        var dO = AttentionCheck.Normal(q.Length, t * 3 + d);
        var lengths = Lengths(batch, t, t + 1);
        var expected = AttentionReference.ExactBackward(q, k, v, dO, s, lengths, 1f / MathF.Sqrt(d), causal);
        var actual = RunCpu(q, k, v, dO, s, lengths, causal, threads);
        for (int i = 0; i < expected.Lse.Length; i++)
        {
            if (double.IsNegativeInfinity(expected.Lse[i])) Assert.That(actual.Lse[i], Is.EqualTo(float.NegativeInfinity), $"lse[{i}] of a padding row");
            else Assert.That(actual.Lse[i], Is.EqualTo(expected.Lse[i]).Within(2e-6 * Math.Max(1, Math.Abs(expected.Lse[i]))), $"lse[{i}]");
        }
        AssertGrad(actual.Dq, expected.Dq, "dq");
        AssertGrad(actual.Dk, expected.Dk, "dk");
        AssertGrad(actual.Dv, expected.Dv, "dv");
    }

    /// <summary>Reference vs float64 autograd of TorchSharp's SDPA (head-major; GQA by repeat_interleave, whose gradient sums the group).</summary>
    [TestCase(2, 4, 2, 7, 8, true)]
    [TestCase(3, 6, 2, 70, 24, true)]
    [TestCase(2, 4, 4, 33, 64, false)]
    [TestCase(1, 8, 1, 130, 8, true)]
    public void ReferenceMatchesTorchAutograd(int batch, int hq, int hkv, int t, int d, bool causal)
    {
        var s = Shape(batch, hq, hkv, t, d, AttentionLayout.HeadMajor);
        var (q, k, v) = AttentionCheck.Inputs(s, seed: 5 * t + d);
        var dO = AttentionCheck.Normal(q.Length, t + 2 * d);
        var lengths = Lengths(batch, t, t + 7);
        // Padding query rows: torch sees every key there (finite softmax) and their dO is zeroed, so they contribute
        // nothing; ours skip them. Valid rows see the real keys (and j ≤ t when causal).
        var dOMasked = (float[])dO.Clone();
        var visible = new bool[batch * t * t];
        for (int b = 0; b < batch; b++)
        {
            int pad = t - lengths[b];
            for (int i = 0; i < t; i++)
                for (int j = 0; j < t; j++) visible[(b * t + i) * t + j] = i < pad || (j >= pad && (!causal || j <= i));
            for (int h = 0; h < hq; h++)
                for (int i = 0; i < pad; i++) Array.Clear(dOMasked, (int)s.Offset(hq, b, h, i), d);
        }
        var expected = AttentionReference.ExactBackward(q, k, v, dOMasked, s, lengths, 1f / MathF.Sqrt(d), causal);

        using var scope = torch.NewDisposeScope();
        TTensor D64(float[] x, params long[] shape) => torch.tensor(x, shape).to(float64);
        var tq = D64(q, batch, hq, t, d).requires_grad_();
        var tk = D64(k, batch, hkv, t, d).requires_grad_();
        var tv = D64(v, batch, hkv, t, d).requires_grad_();
        var mask = torch.tensor(visible, [batch, 1, t, t]);
        var o = nn.functional.scaled_dot_product_attention(tq, tk.repeat_interleave(s.Group, dim: 1), tv.repeat_interleave(s.Group, dim: 1), mask);
        (o * D64(dOMasked, batch, hq, t, d)).sum().backward();
        void Compare(double[] ours, TTensor x, string what)
        {
            var torchGrad = x.grad!.contiguous().data<double>().ToArray().Select(g => (float)g).ToArray();
            RandomData.AssertClose(ours.Select(g => (float)g).ToArray(), torchGrad, 1e-7 * ours.Max(Math.Abs), 1e-6, what);
        }
        Compare(expected.Dq, tq, "reference dq vs autograd");
        Compare(expected.Dk, tk, "reference dk vs autograd");
        Compare(expected.Dv, tv, "reference dv vs autograd");
    }

    [Test]
    public void RejectsInt8AndBadLse()
    {
        using var backend = new CpuBackend(1);
        var q = backend.Zeros(1, 2, 4, 8); var k = backend.Zeros(1, 1, 4, 8);
        var ex = Assert.Throws<ArgumentException>(() => backend.Attention.Prefill(q, k, k, [], backend.Zeros(1, 2, 4, 8), backend.Zeros(1, 2, 4)));
        Assert.That(ex!.Message, Does.Contain("Fp32"));
        var fp32 = new AttentionOptions { Precision = AttentionPrecision.Fp32 };
        ex = Assert.Throws<ArgumentException>(() => backend.Attention.Prefill(q, k, k, [], backend.Zeros(1, 2, 4, 8), backend.Zeros(1, 2, 5), fp32));
        Assert.That(ex!.ParamName, Is.EqualTo("lse"));
        ex = Assert.Throws<ArgumentException>(() => backend.Attention.Backward(q, k, k, backend.Zeros(1, 2, 4, 8), backend.Zeros(1, 2, 4, 8),
            backend.Zeros(1, 2, 4), [], backend.Zeros(1, 2, 4, 8), backend.Zeros(1, 2, 4, 8), backend.Zeros(1, 1, 4, 8), fp32));
        Assert.That(ex!.ParamName, Is.EqualTo("dk"));
    }
}
