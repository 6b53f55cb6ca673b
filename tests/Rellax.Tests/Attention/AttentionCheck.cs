using NUnit.Framework;
using Rellax.Kernels;

namespace Rellax.Tests.Attention;

/// <summary>Inputs, runs and accuracy measures shared by the attention tests.</summary>
internal static class AttentionCheck
{
    /// <summary>Cosine similarity and relative L1 error (Σ|a - e| / Σ|e|) of an output against an fp64 reference.</summary>
    public readonly record struct Accuracy(double Cosine, double RelativeL1)
    {
        /// <summary>SPEC §7's bound for int8 attention: cosine ≥ 0.999 and relative L1 ≤ 0.02.</summary>
        public bool MeetsSpec => Cosine >= 0.999 && RelativeL1 <= 0.02;

        public override string ToString() => $"cosine {Cosine:F6}, relative L1 {RelativeL1:E3}";
    }

    public static Accuracy Measure(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        double dot = 0, na = 0, ne = 0, l1 = 0, l1e = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double a = actual[i], e = expected[i];
            dot += a * e; na += a * a; ne += e * e; l1 += Math.Abs(a - e); l1e += Math.Abs(e);
        }
        double cosine = na == 0 && ne == 0 ? 1 : dot / Math.Sqrt(na * ne);
        return new Accuracy(cosine, l1e == 0 ? l1 : l1 / l1e);
    }

    public static Accuracy Measure(double[] actual, double[] expected) =>
        Measure(actual.Select(x => (float)x).ToArray(), expected);

    /// <summary>Largest |a - e| over all elements.</summary>
    public static double MaxAbs(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        double worst = 0;
        for (int i = 0; i < actual.Length; i++) worst = Math.Max(worst, Math.Abs(actual[i] - expected[i]));
        return worst;
    }

    /// <summary>Standard-normal floats from a fixed seed.</summary>
    public static float[] Normal(int n, int seed, float sigma = 1f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            a[i] = sigma * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return a;
    }

    /// <summary>
    /// Keys with outlier channels, as SageAttention observed in real models: a few channels (every 16th) carry a large
    /// per-channel bias shared by all tokens, 20 times the size of the other channels, plus small per-token noise.
    /// Without smoothing the bias takes the whole int8 range and the ordinary channels lose their precision.
    /// </summary>
    public static float[] KeysWithOutliers(AttentionShape s, int seed)
    {
        var k = Normal(s.Batch * s.KvHeads * s.KeyTokens * s.HeadDim, seed);
        var rng = new Random(seed + 1);
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.KvHeads; h++)
            {
                var bias = new float[s.HeadDim];
                for (int c = 0; c < s.HeadDim; c += 16) bias[c] = 20f * (rng.Next(2) == 0 ? -1 : 1) * (1 + rng.NextSingle());
                for (int t = 0; t < s.KeyTokens; t++)
                {
                    long row = s.KeyOffset(b, h, t);
                    for (int c = 0; c < s.HeadDim; c += 16) k[row + c] = bias[c] + k[row + c];
                }
            }
        return k;
    }

    /// <summary>Random q, k, v for a shape (q of Tq tokens, k and v of Tk): N(0, 1) entries (keys with outliers when asked).</summary>
    public static (float[] Q, float[] K, float[] V) Inputs(AttentionShape s, int seed, bool outliers = false)
    {
        int nq = s.Batch * s.QueryHeads * s.Tokens * s.HeadDim, nk = s.Batch * s.KvHeads * s.KeyTokens * s.HeadDim;
        return (Normal(nq, seed), outliers ? KeysWithOutliers(s, seed + 7) : Normal(nk, seed + 7), Normal(nk, seed + 13));
    }

    /// <summary>
    /// TorchSharp's <c>scaled_dot_product_attention</c> (default scale 1/√D) on head-major inputs: GQA by repeating each
    /// KV head, padding and causality through a boolean mask (key j is visible to query i, at key position
    /// p = Tk − Tq + i, when it is real and, if causal, j ≤ p). Padding query rows see only their own position so torch
    /// stays finite there; their output is not meaningful (ours is 0). With <paramref name="float64"/> the inputs are
    /// widened and torch computes in double (the result is rounded to float at the end).
    /// </summary>
    public static float[] TorchSdpa(float[] q, float[] k, float[] v, AttentionShape s, int[] lengths, bool causal, bool float64 = false)
    {
        if (s.Layout != AttentionLayout.HeadMajor) throw new ArgumentException("TorchSdpa takes head-major inputs", nameof(s));
        int tq = s.Tokens, tk = s.KeyTokens, start = s.QueryStart;
        var visible = new bool[s.Batch * tq * tk];
        for (int b = 0; b < s.Batch; b++)
            for (int i = 0; i < tq; i++)
                for (int j = 0; j < tk; j++)
                {
                    int pad = tk - lengths[b], p = start + i;
                    visible[((long)b * tq + i) * tk + j] = (j >= pad && (!causal || j <= p)) || (p < pad && j == p);
                }
        using var scope = TorchSharp.torch.NewDisposeScope();
        var type = float64 ? TorchSharp.torch.ScalarType.Float64 : TorchSharp.torch.ScalarType.Float32;
        var tQ = TorchSharp.torch.tensor(q, [s.Batch, s.QueryHeads, tq, s.HeadDim]).to_type(type);
        var tK = TorchSharp.torch.tensor(k, [s.Batch, s.KvHeads, tk, s.HeadDim]).to_type(type).repeat_interleave(s.Group, dim: 1);
        var tV = TorchSharp.torch.tensor(v, [s.Batch, s.KvHeads, tk, s.HeadDim]).to_type(type).repeat_interleave(s.Group, dim: 1);
        var mask = TorchSharp.torch.tensor(visible, [s.Batch, 1, tq, tk]);
        return TorchSharp.torch.nn.functional.scaled_dot_product_attention(tQ, tK, tV, mask).to_type(TorchSharp.torch.ScalarType.Float32)
            .data<float>().ToArray();
    }

    /// <summary>Runs <see cref="FlashAttention.Prefill"/> on the backend and returns o.</summary>
    public static float[] Prefill(ComputeBackend backend, float[] q, float[] k, float[] v, AttentionShape s, int[] lengths,
        AttentionOptions options)
    {
        using var qb = backend.Upload<float>(q); using var kb = backend.Upload<float>(k); using var vb = backend.Upload<float>(v);
        using var ob = backend.Allocate(DType.F32, q.Length);
        int[] qs = s.QueryShape, ks = s.KeyShape;
        var o = ob.AsTensor(qs);
        backend.Attention.Prefill(qb.AsTensor(qs), kb.AsTensor(ks), vb.AsTensor(ks), lengths, o, options with { Layout = s.Layout });
        backend.Synchronize();
        return o.ToArray<float>();
    }

    /// <summary>
    /// Fp32 attention on [T, Hq, D] queries against [S, Hkv, D] keys and values (S ≥ T, query t at position S − T + t:
    /// the form the old <c>Primitives.Attention</c> took, i.e. token-major B = 1), through <see cref="FlashAttention.Prefill"/>
    /// with every position real; returns o and the fp64 reference <see cref="AttentionReference.Exact"/> rounded to float.
    /// </summary>
    public static (float[] Actual, float[] Expected) Fp32Sequence(ComputeBackend backend, float[] q, float[] k, float[] v,
        int t, int s, int hq, int hkv, int d, float scale, bool causal)
    {
        var shape = new AttentionShape(1, hq, hkv, t, s, d, AttentionLayout.TokenMajor);
        var actual = Prefill(backend, q, k, v, shape, [s],
            new AttentionOptions { Precision = AttentionPrecision.Fp32, Scale = scale, Causal = causal });
        var expected = AttentionReference.Exact(q, k, v, shape, [s], scale, causal).Select(x => (float)x).ToArray();
        return (actual, expected);
    }

    /// <summary>Copies a backend cache into a host image, for comparing with <see cref="AttentionReference.QuantizeIntoCache"/>.</summary>
    public static AttentionReference.CacheImage Image(Int8KvCache cache)
    {
        cache.Backend.Synchronize();
        var image = new AttentionReference.CacheImage(cache.Batch, cache.KvHeads, cache.HeadDim, cache.Capacity) { Count = cache.Count };
        cache.Keys.CopyTo<sbyte>(image.Keys); cache.Values.CopyTo<sbyte>(image.Values);
        cache.KeyScales.CopyTo<float>(image.KeyScales); cache.KeySums.CopyTo<int>(image.KeySums);
        cache.ValueScales.CopyTo<float>(image.ValueScales); cache.KeyMean.CopyTo<float>(image.KeyMean);
        cache.Padding.CopyTo<int>(image.Padding);
        return image;
    }

    /// <summary>
    /// Asserts a backend's cache holds what the reference quantizer writes: positions filled, padding, the key mean to
    /// fp32 rounding of a different summation order, int8 rows within 1 (a mean that differs in its last bit can move
    /// a value across a rounding boundary) and nearly all exact, key sums consistent with the backend's own keys, and
    /// scales to 1e-5.
    /// </summary>
    public static void AssertCacheMatches(AttentionReference.CacheImage actual, AttentionReference.CacheImage expected)
    {
        Assert.That(actual.Count, Is.EqualTo(expected.Count), "positions filled");
        Assert.That(actual.Padding, Is.EqualTo(expected.Padding), "padding");
        for (int i = 0; i < expected.KeyMean.Length; i++)
            Assert.That(actual.KeyMean[i], Is.EqualTo(expected.KeyMean[i]).Within(1e-5 + 1e-5 * Math.Abs(expected.KeyMean[i])), $"key mean {i}");
        int d = expected.HeadDim, off = 0, total = 0;
        for (int b = 0; b < expected.Batch; b++)
            for (int h = 0; h < expected.KvHeads; h++)
                for (int j = 0; j < expected.Count; j++)
                {
                    int r = expected.Row(b, h, j);
                    int sum = 0;
                    for (int c = 0; c < d; c++)
                    {
                        int dk = Math.Abs(actual.Keys[r * d + c] - expected.Keys[r * d + c]);
                        int dv = Math.Abs(actual.Values[r * d + c] - expected.Values[r * d + c]);
                        Assert.That(Math.Max(dk, dv), Is.LessThanOrEqualTo(1), $"int8 key/value of (b {b}, head {h}, position {j}, channel {c})");
                        off += (dk > 0 ? 1 : 0) + (dv > 0 ? 1 : 0);
                        total += 2;
                        sum += actual.Keys[r * d + c];
                    }
                    Assert.That(actual.KeySums[r], Is.EqualTo(sum), $"key sum of (b {b}, head {h}, position {j})");
                    Assert.That(actual.KeyScales[r], Is.EqualTo(expected.KeyScales[r]).Within(1e-5 * Math.Abs(expected.KeyScales[r]) + 1e-30), $"key scale (b {b}, head {h}, position {j})");
                    Assert.That(actual.ValueScales[r], Is.EqualTo(expected.ValueScales[r]).Within(1e-6 * Math.Abs(expected.ValueScales[r]) + 1e-30), $"value scale (b {b}, head {h}, position {j})");
                }
        Assert.That(off, Is.LessThanOrEqualTo(Math.Max(2, total / 1000)), $"{off} of {total} int8 values differ from the reference by 1");
    }
}
