using NUnit.Framework;
using Rellax.Kernels;
using static Rellax.Tests.Attention.AttentionCheck;

namespace Rellax.Tests.Attention;

/// <summary>
/// <see cref="FlashAttention"/> on every backend of <see cref="TestBackends"/>: fp32 prefill against exact fp64
/// attention; int8 prefill against the int8 reference (tight) and against exact attention (SPEC §7: cosine ≥ 0.999,
/// relative L1 ≤ 0.02) on random inputs, keys with outlier channels, padding, GQA, T = 1, D in {8, 64, 128}, both
/// layouts; queries that are the last Tq of Tk ≥ Tq keys (both precisions, against the references and TorchSharp's
/// float64 <c>scaled_dot_product_attention</c>); the int8 KV cache (append, decode, chunked prefill) against the
/// reference quantizer; and NaN propagation.
/// The ILGPU emulator gets smaller problems (it is very slow).
/// </summary>
[TestFixtureSource(typeof(TestBackends), nameof(TestBackends.All))]
public sealed class FlashAttentionTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;

    [OneTimeSetUp] public void CreateBackend() => _backend = factory.Create();
    [OneTimeTearDown] public void DisposeBackend() => _backend.Dispose();

    private int Scale(int full, int emulated) => factory.Emulated ? emulated : full;

    /// <summary>Odd shapes: (B, Hq, Hkv, T, D, lengths) with padding, GQA, T = 1, and D from 8 to 128.</summary>
    private static IEnumerable<TestCaseData> Shapes()
    {
        yield return new TestCaseData(1, 1, 1, 1, 64, new[] { 1 }).SetArgDisplayNames("T=1");
        yield return new TestCaseData(2, 4, 2, 37, 64, new[] { 37, 20 }).SetArgDisplayNames("B=2,GQA2,T=37,padded");
        yield return new TestCaseData(3, 6, 2, 45, 128, new[] { 45, 1, 0 }).SetArgDisplayNames("B=3,GQA3,D=128,len-1-and-0");
        yield return new TestCaseData(1, 8, 4, 67, 8, new[] { 60 }).SetArgDisplayNames("D=8(stories260K),T=67");
        yield return new TestCaseData(2, 2, 2, 130, 64, new[] { 130, 129 }).SetArgDisplayNames("MHA,T=130");
    }

    [TestCaseSource(nameof(Shapes))]
    public void Fp32MatchesExactAttention(int batch, int hq, int hkv, int tokens, int d, int[] lengths)
    {
        foreach (var layout in new[] { AttentionLayout.HeadMajor, AttentionLayout.TokenMajor })
            foreach (bool causal in new[] { true, false })
            {
                var s = new AttentionShape(batch, hq, hkv, tokens, d, layout);
                var (q, k, v) = Inputs(s, tokens * 7 + d);
                float scale = 1f / MathF.Sqrt(d);
                var expected = AttentionReference.Exact(q, k, v, s, lengths, scale, causal);
                var actual = Prefill(_backend, q, k, v, s, lengths,
                    new AttentionOptions { Precision = AttentionPrecision.Fp32, Causal = causal });
                Assert.That(MaxAbs(actual, expected), Is.LessThan(2e-5), $"{layout}, causal {causal}");
                AssertPaddingRowsAreZero(actual, s, lengths);
            }
    }

    [TestCaseSource(nameof(Shapes))]
    public void Int8MatchesItsReferenceAndMeetsTheSpecBound(int batch, int hq, int hkv, int tokens, int d, int[] lengths)
    {
        foreach (var layout in new[] { AttentionLayout.HeadMajor, AttentionLayout.TokenMajor })
            foreach (bool outliers in new[] { false, true })
            {
                var s = new AttentionShape(batch, hq, hkv, tokens, d, layout);
                var (q, k, v) = Inputs(s, tokens * 11 + d, outliers);
                float scale = 1f / MathF.Sqrt(d);
                var actual = Prefill(_backend, q, k, v, s, lengths, new AttentionOptions());
                var quantized = AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, causal: true);
                var exact = AttentionReference.Exact(q, k, v, s, lengths, scale, causal: true);
                var againstQuantized = Measure(actual, quantized);
                Assert.That(againstQuantized.RelativeL1, Is.LessThan(1e-3), $"{layout}, outliers {outliers}: against the int8 reference, {againstQuantized}");
                var againstExact = Measure(actual, exact);
                Assert.That(againstExact.MeetsSpec, Is.True, $"{layout}, outliers {outliers}: against exact attention, {againstExact}");
                AssertPaddingRowsAreZero(actual, s, lengths);
            }
    }

    /// <summary>
    /// Fewer queries than keys: (B, Hq, Hkv, Tq, Tk, D, lengths of real key positions). Tq 1 (a decoding step), 3 and 17
    /// against Tk up to 300, GQA, sequences whose real keys are fewer than Tq (their first query rows are padding) or
    /// none, and Tq = Tk.
    /// </summary>
    private static IEnumerable<TestCaseData> ChunkShapes()
    {
        yield return new TestCaseData(1, 4, 2, 1, 300, 64, new[] { 300 }).SetArgDisplayNames("Tq=1,Tk=300,GQA2");
        yield return new TestCaseData(2, 6, 2, 3, 130, 24, new[] { 130, 70 }).SetArgDisplayNames("Tq=3,Tk=130,GQA3,D=24,padded");
        yield return new TestCaseData(3, 4, 1, 17, 200, 8, new[] { 200, 17, 5 }).SetArgDisplayNames("Tq=17,Tk=200,GQA4,D=8,len-17-and-5");
        yield return new TestCaseData(2, 8, 4, 1, 65, 128, new[] { 65, 0 }).SetArgDisplayNames("Tq=1,Tk=65,D=128,len-0");
        yield return new TestCaseData(1, 2, 2, 17, 17, 64, new[] { 12 }).SetArgDisplayNames("Tq=Tk=17");
    }

    [TestCaseSource(nameof(ChunkShapes))]
    public void FewerQueriesThanKeysMatchTheReferencesAndTorch(int batch, int hq, int hkv, int tq, int tk, int d, int[] lengths)
    {
        float scale = 1f / MathF.Sqrt(d);
        foreach (var layout in new[] { AttentionLayout.HeadMajor, AttentionLayout.TokenMajor })
            foreach (bool causal in new[] { true, false })
            {
                var s = new AttentionShape(batch, hq, hkv, tq, tk, d, layout);
                var (q, k, v) = Inputs(s, tq * 13 + tk + d);
                string where = $"{layout}, causal {causal}";
                var exact = AttentionReference.Exact(q, k, v, s, lengths, scale, causal);
                if (layout == AttentionLayout.HeadMajor)
                {
                    // The reference itself against torch's float64 scaled_dot_product_attention with an explicit mask.
                    var torch = TorchSdpa(q, k, v, s, lengths, causal, float64: true);
                    AssertRealRowsClose(exact.Select(x => (float)x).ToArray(), torch, s, lengths, 1e-6, $"reference vs torch, {where}");
                }

                var fp32 = Prefill(_backend, q, k, v, s, lengths, new AttentionOptions { Precision = AttentionPrecision.Fp32, Causal = causal });
                Assert.That(MaxAbs(fp32, exact), Is.LessThan(2e-5), $"fp32 against exact, {where}");
                AssertPaddingRowsAreZero(fp32, s, lengths);

                var int8 = Prefill(_backend, q, k, v, s, lengths, new AttentionOptions { Causal = causal });
                var againstQuantized = Measure(int8, AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, causal));
                Assert.That(againstQuantized.RelativeL1, Is.LessThan(1e-3), $"int8 against the int8 reference, {where}: {againstQuantized}");
                var againstExact = Measure(int8, exact);
                Assert.That(againstExact.MeetsSpec, Is.True, $"int8 against exact, {where}: {againstExact}");
                AssertPaddingRowsAreZero(int8, s, lengths);
            }
    }

    [Test]
    public void AChunkAttendingToCachedKeysEqualsTheSameRowsOfAFullPrefill([Values] AttentionPrecision precision)
    {
        // What LlamaSession does with its fp32 cache: the last Tq queries against all Tk keys give the last Tq rows of
        // the causal prefill over Tk tokens (int8: the key mean and so the quantization are the same, both see all Tk keys).
        var full = new AttentionShape(2, 4, 2, 150, 32, AttentionLayout.TokenMajor);
        var (q, k, v) = Inputs(full, 31);
        int[] lengths = [150, 90];
        var options = new AttentionOptions { Precision = precision, Layout = AttentionLayout.TokenMajor };
        var whole = Prefill(_backend, q, k, v, full, lengths, options);
        foreach (int tq in new[] { 1, 7, 64 })
        {
            var chunk = new AttentionShape(2, 4, 2, tq, 150, 32, AttentionLayout.TokenMajor);
            var o = Prefill(_backend, Slice(q, full, 4, 150 - tq, tq), k, v, chunk, lengths, options);
            var expected = Slice(whole, full, 4, 150 - tq, tq);
            for (int i = 0; i < o.Length; i++)
                Assert.That(o[i], Is.EqualTo(expected[i]).Within(precision == AttentionPrecision.Fp32 ? 2e-6 : 1e-5), $"Tq = {tq}, element {i}");
        }
    }

    [Test]
    public void Int8MeetsTheSpecBoundOnALongSequence()
    {
        // T = 4096 on real backends (SPEC §7's long prompts); the emulator runs T = 300.
        var s = new AttentionShape(1, 2, 1, Scale(4096, 300), 128, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 4096, outliers: true);
        var lengths = new[] { s.Tokens - 5 };
        float scale = 1f / MathF.Sqrt(s.HeadDim);
        var actual = Prefill(_backend, q, k, v, s, lengths, new AttentionOptions());
        var exact = AttentionReference.Exact(q, k, v, s, lengths, scale, causal: true);
        var accuracy = Measure(actual, exact);
        Assert.That(accuracy.MeetsSpec, Is.True, accuracy.ToString());
    }

    [Test]
    public void WithoutSmoothingTheOutlierCaseFailsTheSpecBound()
    {
        var s = new AttentionShape(1, 4, 2, Scale(256, 64), 64, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 99, outliers: true);
        var lengths = new[] { s.Tokens };
        var exact = AttentionReference.Exact(q, k, v, s, lengths, 1f / MathF.Sqrt(s.HeadDim), causal: true);
        var smoothed = Measure(Prefill(_backend, q, k, v, s, lengths, new AttentionOptions()), exact);
        var raw = Measure(Prefill(_backend, q, k, v, s, lengths, new AttentionOptions { SmoothKeys = false }), exact);
        Assert.That(smoothed.MeetsSpec, Is.True, $"smoothed: {smoothed}");
        Assert.That(raw.MeetsSpec, Is.False, $"without smoothing: {raw}");
    }

    [Test]
    public void NaNPropagatesToTheRowsThatReadIt([Values] AttentionPrecision precision)
    {
        var s = new AttentionShape(1, 2, 1, 16, 64, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 5);
        q[(int)s.Offset(2, 0, 1, 3) + 7] = float.NaN;          // query head 1, token 3
        v[(int)s.Offset(1, 0, 0, 10) + 2] = float.NaN;         // value token 10: every query at t >= 10 reads it
        var o = Prefill(_backend, q, k, v, s, [16], new AttentionOptions { Precision = precision });
        for (int h = 0; h < 2; h++)
            for (int t = 0; t < 16; t++)
            {
                var row = o.AsSpan((int)s.Offset(2, 0, h, t), 64);
                bool expectNaN = t >= 10 || (h == 1 && t == 3);
                if (expectNaN) Assert.That(row.ToArray().Any(float.IsNaN), Is.True, $"head {h}, token {t} should be NaN");
                else Assert.That(row.ToArray().All(float.IsFinite), Is.True, $"head {h}, token {t} should be finite");
            }
    }

    [Test]
    public void CacheHoldsWhatTheReferenceQuantizerWrites([Values] AttentionLayout layout)
    {
        var s = new AttentionShape(2, 2, 2, 13, 64, layout);
        var (_, k, v) = Inputs(s, 21, outliers: true);
        int[] lengths = [13, 9];
        using var cache = _backend.Attention.CreateKvCache(2, 2, 64, 20);
        var expected = new AttentionReference.CacheImage(2, 2, 64, 20);
        Append(cache, k, v, s, lengths);
        AttentionReference.QuantizeIntoCache(expected, k, v, s, lengths);
        AssertCacheMatches(Image(cache), expected);

        // A later append keeps the padding and the mean and writes after the filled positions.
        var s2 = s with { Tokens = 3 };
        var (_, k2, v2) = Inputs(s2, 22, outliers: true);
        Append(cache, k2, v2, s2, null);
        AttentionReference.QuantizeIntoCache(expected, k2, v2, s2, null);
        AssertCacheMatches(Image(cache), expected);
        Assert.That(cache.PaddingOf(1), Is.EqualTo(4));
    }

    [TestCase(1, 4, 4, 64, 40, 1)]
    [TestCase(2, 8, 2, 128, 33, 5)]
    [TestCase(3, 8, 4, 8, 20, 1)]
    public void DecodeMatchesTheReferenceAndExactAttention(int batch, int hq, int hkv, int d, int prompt, int steps)
    {
        // Prefill a padded prompt into the cache through the decode kernel (Tq = prompt), then decode `steps` tokens
        // one at a time; every output is checked against the int8 reference on the reference's own cache, and the
        // concatenation against exact attention over the whole sequence.
        int total = prompt + steps;
        var full = new AttentionShape(batch, hq, hkv, total, d, AttentionLayout.TokenMajor);
        var (q, k, v) = Inputs(full, d + prompt, outliers: true);
        int[] lengths = Enumerable.Range(0, batch).Select(b => prompt - 3 * b).ToArray();
        int[] fullLengths = lengths.Select(l => l + steps).ToArray();
        var exact = AttentionReference.Exact(q, k, v, full, fullLengths, 1f / MathF.Sqrt(d), causal: true);

        using var cache = _backend.Attention.CreateKvCache(batch, hkv, d, total + 2);
        var image = new AttentionReference.CacheImage(batch, hkv, d, total + 2);
        var output = new float[q.Length];
        int done = 0;
        foreach (int chunk in new[] { prompt }.Concat(Enumerable.Repeat(1, steps)))
        {
            var s = full with { Tokens = chunk };
            var qc = Slice(q, full, hq, done, chunk); var kc = Slice(k, full, hkv, done, chunk); var vc = Slice(v, full, hkv, done, chunk);
            Append(cache, kc, vc, s, done == 0 ? lengths : null);
            AttentionReference.QuantizeIntoCache(image, kc, vc, s, done == 0 ? lengths : null);
            var o = Decode(cache, qc, s);
            var expected = AttentionReference.Int8Decode(qc, image, s, 1f / MathF.Sqrt(d), causal: true);
            var accuracy = Measure(o, expected);
            Assert.That(accuracy.RelativeL1, Is.LessThan(1e-3), $"chunk at {done}: against the int8 reference, {accuracy}");
            Unslice(o, output, full, hq, done, chunk);
            done += chunk;
        }
        var overall = Measure(output, exact);
        Assert.That(overall.MeetsSpec, Is.True, $"against exact attention: {overall}");
    }

    private void Append(Int8KvCache cache, float[] k, float[] v, AttentionShape s, int[]? lengths)
    {
        using var kb = _backend.Upload<float>(k); using var vb = _backend.Upload<float>(v);
        var shape = s.ShapeOf(s.KvHeads);
        _backend.Attention.Append(cache, kb.AsTensor(shape), vb.AsTensor(shape), lengths ?? default(ReadOnlySpan<int>), s.Layout);
    }

    private float[] Decode(Int8KvCache cache, float[] q, AttentionShape s)
    {
        using var qb = _backend.Upload<float>(q);
        using var ob = _backend.Allocate(DType.F32, q.Length);
        var shape = s.ShapeOf(s.QueryHeads);
        _backend.Attention.Decode(qb.AsTensor(shape), cache, ob.AsTensor(shape), new AttentionOptions { Layout = s.Layout });
        _backend.Synchronize();
        return ob.AsTensor(shape).ToArray<float>();
    }

    /// <summary>Tokens [start, start + count) of a [B, T, H, D] array.</summary>
    private static float[] Slice(float[] x, AttentionShape s, int heads, int start, int count)
    {
        int row = heads * s.HeadDim;
        var result = new float[s.Batch * count * row];
        for (int b = 0; b < s.Batch; b++)
            Array.Copy(x, ((long)b * s.Tokens + start) * row, result, (long)b * count * row, (long)count * row);
        return result;
    }

    private static void Unslice(float[] chunk, float[] x, AttentionShape s, int heads, int start, int count)
    {
        int row = heads * s.HeadDim;
        for (int b = 0; b < s.Batch; b++)
            Array.Copy(chunk, (long)b * count * row, x, ((long)b * s.Tokens + start) * row, (long)count * row);
    }

    /// <summary>Query rows whose key position (Tk − Tq + t) is padding are exactly 0.</summary>
    private static void AssertPaddingRowsAreZero(float[] o, AttentionShape s, int[] lengths)
    {
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.QueryHeads; h++)
                for (int t = 0; t < Math.Min(s.Tokens, s.KeyTokens - lengths[b] - s.QueryStart); t++)
                    Assert.That(o.AsSpan((int)s.QueryOffset(b, h, t), s.HeadDim).ToArray(), Is.All.EqualTo(0f),
                        $"padding query row (b {b}, head {h}, token {t})");
    }

    /// <summary>|a − e| ≤ tolerance on the query rows whose position is real (head-major).</summary>
    private static void AssertRealRowsClose(float[] actual, float[] expected, AttentionShape s, int[] lengths, double tolerance, string what)
    {
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.QueryHeads; h++)
                for (int t = Math.Max(0, s.KeyTokens - lengths[b] - s.QueryStart); t < s.Tokens; t++)
                {
                    int o = (int)s.QueryOffset(b, h, t);
                    for (int c = 0; c < s.HeadDim; c++)
                        Assert.That(actual[o + c], Is.EqualTo(expected[o + c]).Within(tolerance), $"{what}: (b {b}, head {h}, query {t}, channel {c})");
                }
    }
}
