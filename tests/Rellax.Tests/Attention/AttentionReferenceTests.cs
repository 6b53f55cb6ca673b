using NUnit.Framework;
using Rellax.Kernels;
using static Rellax.Tests.Attention.AttentionCheck;

namespace Rellax.Tests.Attention;

/// <summary>
/// The references themselves: exact attention against TorchSharp's <c>scaled_dot_product_attention</c> (GQA by
/// repeating KV heads, padding by a boolean mask), the quantizer's rounding rules, and the two accuracy claims the
/// int8 design rests on: smoothing is what makes outlier keys pass, and per-token scales are at least as accurate as
/// SageAttention's 128/64-token blocks.
/// </summary>
public sealed class AttentionReferenceTests
{
    [TestCase(true)]
    [TestCase(false)]
    public void ExactReferenceMatchesTorchSdpa(bool causal)
    {
        var s = new AttentionShape(2, 6, 2, 29, 24, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 3);
        int[] lengths = [29, 17];
        var expected = AttentionReference.Exact(q, k, v, s, lengths, 1f / MathF.Sqrt(24), causal);

        var o = TorchSdpa(q, k, v, s, lengths, causal);
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 6; h++)
                for (int t = 29 - lengths[b]; t < 29; t++)
                    for (int c = 0; c < 24; c++)
                    {
                        long i = s.Offset(6, b, h, t) + c;
                        Assert.That(o[i], Is.EqualTo(expected[i]).Within(2e-5), $"(b {b}, head {h}, token {t}, channel {c})");
                    }
    }

    [Test]
    public void QuantizeRowRoundsHalfToEvenAndKeepsNonFiniteScales()
    {
        var x = new float[] { 127f, 0.5f, 1.5f, -2.5f, -127f, 0f };
        var q = new sbyte[6];
        Assert.That(AttentionReference.QuantizeRow(x, q, 2f), Is.EqualTo(2f));
        Assert.That(q, Is.EqualTo(new sbyte[] { 127, 0, 2, -2, -127, 0 }));
        Assert.That(AttentionReference.QuantizeRow(new float[4], q), Is.EqualTo(0f));
        Assert.That(q.AsSpan(0, 4).ToArray(), Is.All.EqualTo((sbyte)0));
        Assert.That(float.IsNaN(AttentionReference.QuantizeRow([1f, float.NaN, 3f], q)), Is.True);
        Assert.That(AttentionReference.QuantizeRow([1f, float.NegativeInfinity], q), Is.EqualTo(float.PositiveInfinity));
    }

    [Test]
    public void SmoothingIsWhatMakesOutlierKeysPass()
    {
        var s = new AttentionShape(1, 4, 2, 256, 64, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 99, outliers: true);
        int[] lengths = [256];
        float scale = 1f / MathF.Sqrt(64);
        var exact = AttentionReference.Exact(q, k, v, s, lengths, scale, true);
        var smooth = Measure(AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, true), exact);
        var raw = Measure(AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, true, smoothKeys: false), exact);
        TestContext.Out.WriteLine($"outlier keys: smoothed {smooth}; not smoothed {raw}");
        Assert.That(smooth.MeetsSpec, Is.True, smooth.ToString());
        Assert.That(raw.MeetsSpec, Is.False, raw.ToString());
    }

    [TestCase(false)]
    [TestCase(true)]
    public void PerTokenScalesAreAtLeastAsAccurateAsSageBlocks(bool outliers)
    {
        var s = new AttentionShape(1, 4, 2, 512, 128, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 5, outliers);
        int[] lengths = [512];
        float scale = 1f / MathF.Sqrt(128);
        var exact = AttentionReference.Exact(q, k, v, s, lengths, scale, true);
        var perToken = Measure(AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, true), exact);
        var blocks = Measure(AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, true, queryBlock: 128, keyBlock: 64), exact);
        TestContext.Out.WriteLine($"outliers {outliers}: per token {perToken}; 128/64-token blocks {blocks}");
        Assert.That(perToken.RelativeL1, Is.LessThanOrEqualTo(blocks.RelativeL1));
        Assert.That(perToken.MeetsSpec && blocks.MeetsSpec, Is.True);
    }
}
