using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using static Rellax.Tests.Attention.AttentionCheck;

namespace Rellax.Tests.Attention;

/// <summary>
/// The CPU attention kernels beyond the backend-generic <see cref="FlashAttentionTests"/>: every int8 dot strategy
/// (AVX-VNNI, AVX-512BW) gives bitwise the same output as the scalar one (the dot products are exact integers and everything after them is
/// shared), the Vector512 and Vector256 softmax/P·V paths, shapes around the 64-key/64-row block boundaries, many
/// sequences with mixed lengths, GQA with more than 64 query heads per KV head, 2 threads bitwise equal to 1, decode
/// with chunks of Tq &gt; 1 (causal or not), fp32 against TorchSharp's <c>scaled_dot_product_attention</c>, and the
/// exp2 and quantizer building blocks.
/// </summary>
[TestFixture]
[NonParallelizable] // toggles the process-wide CpuGemm.UseVector512 switch
public sealed class CpuAttentionTests
{
    /// <summary>The SIMD int8 dot strategies this CPU can run.</summary>
    private static CpuAttention.DotStrategy[] SimdStrategies =>
        [.. AvxVnni.IsSupported ? [CpuAttention.DotStrategy.AvxVnni] : Array.Empty<CpuAttention.DotStrategy>(),
         .. Avx512BW.IsSupported ? [CpuAttention.DotStrategy.Avx512BW] : Array.Empty<CpuAttention.DotStrategy>()];

    /// <summary>The instruction-set option that selects attention dot strategy <paramref name="dots"/>.</summary>
    private static CpuInstructionSet SetFor(CpuAttention.DotStrategy dots) => dots switch
    {
        CpuAttention.DotStrategy.AvxVnni => CpuInstructionSet.AvxVnni,
        CpuAttention.DotStrategy.Avx512BW => CpuInstructionSet.Avx512,
        _ => CpuInstructionSet.Scalar,
    };

    /// <summary>A backend whose options select <paramref name="dots"/> (only strategies this CPU has are asked for).</summary>
    private static CpuBackend Backend(int threads, CpuAttention.DotStrategy dots)
    {
        var cpu = new CpuBackend(new CpuBackendOptions { Threads = threads, InstructionSet = SetFor(dots) });
        Assert.That(cpu.AttentionDots, Is.EqualTo(dots), $"the backend built for {dots}");
        return cpu;
    }

    private static T With<T>(bool vector512, Func<T> body)
    {
        bool saved512 = CpuGemm.UseVector512;
        CpuGemm.UseVector512 = vector512 && Vector512.IsHardwareAccelerated;
        try { return body(); }
        finally { CpuGemm.UseVector512 = saved512; }
    }

    /// <summary>Prefill on a fresh backend of <paramref name="threads"/> threads with dot strategy <paramref name="dots"/> (null: the default options).</summary>
    private static float[] Run(int threads, AttentionShape s, float[] q, float[] k, float[] v, int[] lengths, AttentionOptions options,
        CpuAttention.DotStrategy? dots = null)
    {
        using var cpu = dots is { } d ? Backend(threads, d) : new CpuBackend(threads);
        return Prefill(cpu, q, k, v, s, lengths, options);
    }

    /// <summary>Around the block boundaries (63, 64, 65, 127, 129 tokens), GQA 1, 3 and 66 (one token per item), mixed padding.</summary>
    private static IEnumerable<TestCaseData> BoundaryShapes()
    {
        foreach (int t in new[] { 63, 64, 65, 127, 129 })
            yield return new TestCaseData(2, 6, 2, t, 64, new[] { t, t - 1 }).SetArgDisplayNames($"GQA3,T={t}");
        yield return new TestCaseData(1, 4, 4, 128, 128, new[] { 65 }).SetArgDisplayNames("MHA,T=128,len=65");
        yield return new TestCaseData(1, 66, 1, 9, 32, new[] { 7 }).SetArgDisplayNames("GQA66,T=9");
        yield return new TestCaseData(6, 2, 1, 100, 72, new[] { 0, 1, 63, 64, 65, 100 }).SetArgDisplayNames("B=6,mixed-lengths,D=72");
    }

    [TestCaseSource(nameof(BoundaryShapes))]
    public void Int8DotStrategiesAreBitwiseEqualAndMatchTheReference(int batch, int hq, int hkv, int tokens, int d, int[] lengths)
    {
        Assume.That(SimdStrategies, Is.Not.Empty, "this CPU has neither AVX-VNNI nor AVX-512BW: only the scalar strategy exists here");
        foreach (var layout in new[] { AttentionLayout.HeadMajor, AttentionLayout.TokenMajor })
            foreach (bool causal in new[] { true, false })
            {
                var s = new AttentionShape(batch, hq, hkv, tokens, d, layout);
                var (q, k, v) = Inputs(s, tokens + d + hq, outliers: true);
                var options = new AttentionOptions { Causal = causal };
                var scalar = Run(1, s, q, k, v, lengths, options, CpuAttention.DotStrategy.Scalar);
                foreach (var strategy in SimdStrategies)
                {
                    var simd = Run(1, s, q, k, v, lengths, options, strategy);
                    Assert.That(simd, Is.EqualTo(scalar).AsCollection, $"{layout}, causal {causal}: {strategy} against scalar dots");
                }
                var expected = AttentionReference.Int8Prefill(q, k, v, s, lengths, 1f / MathF.Sqrt(d), causal);
                var accuracy = Measure(scalar, expected);
                Assert.That(accuracy.RelativeL1, Is.LessThan(1e-4), $"{layout}, causal {causal}: against the int8 reference, {accuracy}");
            }
    }

    [TestCaseSource(nameof(BoundaryShapes))]
    public void Fp32MatchesExactAttentionOnBothVectorWidths(int batch, int hq, int hkv, int tokens, int d, int[] lengths)
    {
        foreach (var layout in new[] { AttentionLayout.HeadMajor, AttentionLayout.TokenMajor })
            foreach (bool vector512 in new[] { true, false })
            {
                var s = new AttentionShape(batch, hq, hkv, tokens, d, layout);
                var (q, k, v) = Inputs(s, tokens * 3 + d);
                var options = new AttentionOptions { Precision = AttentionPrecision.Fp32 };
                var actual = With(vector512, () => Run(2, s, q, k, v, lengths, options));
                var expected = AttentionReference.Exact(q, k, v, s, lengths, 1f / MathF.Sqrt(d), causal: true);
                Assert.That(MaxAbs(actual, expected), Is.LessThan(2e-5), $"{layout}, Vector512 {vector512}");
            }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Int8OnVector256MatchesTheReference(bool scalarDots)
    {
        var s = new AttentionShape(3, 8, 2, 129, 128, AttentionLayout.TokenMajor);
        var (q, k, v) = Inputs(s, 77, outliers: true);
        int[] lengths = [129, 64, 3];
        var dots = scalarDots || !AvxVnni.IsSupported ? CpuAttention.DotStrategy.Scalar : CpuAttention.DotStrategy.AvxVnni;
        var actual = With(false, () => Run(2, s, q, k, v, lengths, new AttentionOptions(), dots));
        var accuracy = Measure(actual, AttentionReference.Int8Prefill(q, k, v, s, lengths, 1f / MathF.Sqrt(128), causal: true));
        Assert.That(accuracy.RelativeL1, Is.LessThan(1e-4), accuracy.ToString());
    }

    [Test]
    public void TwoThreadsGiveBitwiseTheSameOutputAsOne([Values] AttentionPrecision precision)
    {
        var s = new AttentionShape(5, 8, 2, 200, 64, AttentionLayout.TokenMajor);
        var (q, k, v) = Inputs(s, 8);
        int[] lengths = [200, 1, 150, 65, 0];
        var options = new AttentionOptions { Precision = precision };
        var one = Run(1, s, q, k, v, lengths, options);
        var two = Run(2, s, q, k, v, lengths, options);
        Assert.That(two, Is.EqualTo(one).AsCollection);
        Assert.That(one.Any(x => x != 0), Is.True, "the output is not all zeros");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void DecodeInChunksMatchesTheReference(bool causal)
    {
        // A padded prompt of 70 through Decode (Tq = 70), then chunks of 17, 64 and 1 (Tq > 1 crosses key blocks),
        // each against the reference decode on the reference's cache, on both dot strategies (bitwise equal).
        const int batch = 2, hq = 8, hkv = 2, d = 64;
        int[] chunks = [70, 17, 64, 1];
        int total = chunks.Sum();
        var full = new AttentionShape(batch, hq, hkv, total, d, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(full, 31, outliers: true);
        int[] lengths = [70, 40];
        // One backend (and its own cache, fed the same chunks) per strategy: the strategy is a backend option.
        var strategies = new[] { CpuAttention.DotStrategy.Scalar }.Concat(SimdStrategies).ToArray();
        var backends = strategies.Select(dots => Backend(2, dots)).ToArray();
        var caches = backends.Select(cpu => cpu.Attention.CreateKvCache(batch, hkv, d, total)).ToArray();
        try
        {
            var image = new AttentionReference.CacheImage(batch, hkv, d, total);
            int done = 0;
            foreach (int chunk in chunks)
            {
                var s = full with { Tokens = chunk };
                var qc = SliceHeadMajor(q, full, hq, done, chunk);
                var kc = SliceHeadMajor(k, full, hkv, done, chunk);
                var vc = SliceHeadMajor(v, full, hkv, done, chunk);
                float[]? scalar = null;
                for (int i = 0; i < backends.Length; i++)
                {
                    var cpu = backends[i];
                    using (var kb = cpu.Upload<float>(kc))
                    using (var vb = cpu.Upload<float>(vc))
                        cpu.Attention.Append(caches[i], kb.AsTensor(s.ShapeOf(hkv)), vb.AsTensor(s.ShapeOf(hkv)), done == 0 ? lengths : default);
                    using var qb = cpu.Upload<float>(qc);
                    using var ob = cpu.Allocate(DType.F32, qc.Length);
                    cpu.Attention.Decode(qb.AsTensor(s.ShapeOf(hq)), caches[i], ob.AsTensor(s.ShapeOf(hq)), new AttentionOptions { Causal = causal });
                    var output = ob.AsTensor(s.ShapeOf(hq)).ToArray<float>();
                    if (scalar is null) scalar = output;
                    else Assert.That(output, Is.EqualTo(scalar).AsCollection, $"chunk at {done}: {strategies[i]} against scalar");
                }
                AttentionReference.QuantizeIntoCache(image, kc, vc, s, done == 0 ? lengths : null);
                var expected = AttentionReference.Int8Decode(qc, image, s, 1f / MathF.Sqrt(d), causal);
                var accuracy = Measure(scalar!, expected);
                Assert.That(accuracy.RelativeL1, Is.LessThan(1e-4), $"chunk at {done} (Tq {chunk}): {accuracy}");
                done += chunk;
            }
        }
        finally
        {
            foreach (var cache in caches) cache.Dispose();
            foreach (var cpu in backends) cpu.Dispose();
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Fp32MatchesTorchScaledDotProductAttention(bool causal)
    {
        // Odd shape: B = 2, GQA 3, T = 77 (one full block and a partial one), D = 40, the second sequence padded.
        var s = new AttentionShape(2, 6, 2, 77, 40, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 13);
        int[] lengths = [77, 50];
        var actual = Run(2, s, q, k, v, lengths, new AttentionOptions { Precision = AttentionPrecision.Fp32, Causal = causal });

        var expected = TorchSdpa(q, k, v, s, lengths, causal);
        double worst = 0;
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 6; h++)
                for (int t = 0; t < 77; t++)
                    for (int c = 0; c < 40; c++)
                    {
                        long i = s.Offset(6, b, h, t) + c;
                        if (t < 77 - lengths[b]) Assert.That(actual[i], Is.EqualTo(0f), $"padding row (b {b}, h {h}, t {t})");
                        else worst = Math.Max(worst, Math.Abs(actual[i] - expected[i]));
                    }
        Assert.That(worst, Is.LessThan(2e-5));
    }

    /// <summary>Tq = 5 against Tk = 140 (the second sequence has 3 real keys, so its first 2 query rows are padding), GQA 3;
    /// and an MQA decoding step (one KV head: its 8 query heads are split over the threads).</summary>
    private static IEnumerable<TestCaseData> ChunkShapes()
    {
        foreach (var layout in new[] { AttentionLayout.HeadMajor, AttentionLayout.TokenMajor })
        {
            yield return new TestCaseData(2, 6, 2, 5, 140, layout, new[] { 140, 3 }).SetArgDisplayNames($"Tq=5,Tk=140,{layout}");
            yield return new TestCaseData(1, 8, 1, 1, 300, layout, new[] { 290 }).SetArgDisplayNames($"MQA,Tq=1,Tk=300,{layout}");
        }
    }

    [TestCaseSource(nameof(ChunkShapes))]
    public void FewerQueriesThanKeysAreBitwiseTheSameForThreadsAndStrategies(int batch, int hq, int hkv, int tq, int tk, AttentionLayout layout, int[] lengths)
    {
        var s = new AttentionShape(batch, hq, hkv, tq, tk, 64, layout);
        var (q, k, v) = Inputs(s, 57);
        foreach (var precision in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
        {
            var options = new AttentionOptions { Precision = precision };
            Assert.That(Run(2, s, q, k, v, lengths, options), Is.EqualTo(Run(1, s, q, k, v, lengths, options)), $"{precision}: 2 threads vs 1");
        }
        var scalar = Run(2, s, q, k, v, lengths, new AttentionOptions(), CpuAttention.DotStrategy.Scalar);
        foreach (var strategy in SimdStrategies)
            Assert.That(Run(2, s, q, k, v, lengths, new AttentionOptions(), strategy), Is.EqualTo(scalar), $"{strategy} vs scalar dots");
    }

    [TestCase(1, 1)]
    [TestCase(1, 4)]
    [TestCase(3, 2)]
    public void Fp32DecodeScoresKeysInPlaceOnBothVectorWidths(int tq, int group)
    {
        // Tq·group < 8 rows per tile: keys are scored row-major straight from k (no packing); D = 20 leaves a tail of 4.
        foreach (bool vector512 in new[] { true, false })
            foreach (int d in new[] { 20, 64 })
            {
                var s = new AttentionShape(1, 2 * group, 2, tq, 333, d, AttentionLayout.TokenMajor);
                var (q, k, v) = Inputs(s, tq + group + d);
                int[] lengths = [300];
                var actual = With(vector512, () => Run(2, s, q, k, v, lengths, new AttentionOptions { Precision = AttentionPrecision.Fp32 }));
                var expected = AttentionReference.Exact(q, k, v, s, lengths, 1f / MathF.Sqrt(d), causal: true);
                Assert.That(MaxAbs(actual, expected), Is.LessThan(2e-5), $"Vector512 {vector512}, D = {d}");
            }
    }

    [Test]
    public void LogSumExpOfAChunkEqualsTheSameRowsOfAFullPrefill()
    {
        var full = new AttentionShape(2, 4, 2, 100, 16, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(full, 77);
        int[] lengths = [100, 60];
        using var cpu = new CpuBackend(2);
        var options = new AttentionOptions { Precision = AttentionPrecision.Fp32 };
        float[] Lse(AttentionShape s, float[] qs)
        {
            var lse = cpu.Zeros(s.Batch, s.QueryHeads, s.Tokens);
            cpu.Attention.Prefill(cpu.Tensor(qs, s.QueryShape), cpu.Tensor(k, s.KeyShape), cpu.Tensor(v, s.KeyShape), lengths,
                cpu.Zeros(s.QueryShape), lse, options);
            return lse.ToArray<float>();
        }
        var whole = Lse(full, q);
        const int tq = 9;
        var chunk = new AttentionShape(2, 4, 2, tq, 100, 16, AttentionLayout.HeadMajor);
        var qc = new float[2 * 4 * tq * 16];
        for (int bh = 0; bh < 8; bh++) Array.Copy(q, (bh * 100 + 100 - tq) * 16, qc, bh * tq * 16, tq * 16);
        var part = Lse(chunk, qc);
        for (int bh = 0; bh < 8; bh++)
            for (int t = 0; t < tq; t++)
                Assert.That(part[bh * tq + t], Is.EqualTo(whole[bh * 100 + 100 - tq + t]).Within(1e-5), $"row {bh}, query {t}");
    }

    [Test]
    public void Exp2IsAccurateAndHandlesTheEdges()
    {
        var rng = new Random(3);
        var x = new float[4096];
        for (int i = 0; i < x.Length; i++) x[i] = -130f * rng.NextSingle();
        x[0] = 0; x[1] = -0.5f; x[2] = -126f; x[3] = -126.4f; x[4] = -127f;
        double worst = 0;
        for (int i = 0; i < x.Length; i += 16)
        {
            var v512 = CpuAttention.Exp2(Vector512.Create(x.AsSpan(i, 16)));
            var v256 = CpuAttention.Exp2(Vector256.Create(x.AsSpan(i, 8)));
            for (int l = 0; l < 16; l++)
            {
                double e = Math.Pow(2, x[i + l]);
                float scalar = CpuAttention.Exp2Scalar(x[i + l]);
                if (x[i + l] < -126f)
                {
                    Assert.That(v512[l], Is.EqualTo(0f), $"2^{x[i + l]} flushes to 0");
                    Assert.That(scalar, Is.EqualTo(0f));
                    continue;
                }
                Assert.That(scalar, Is.EqualTo(v512[l]), $"scalar and vector agree at {x[i + l]}");
                if (l < 8) Assert.That(v256[l], Is.EqualTo(v512[l]));
                worst = Math.Max(worst, Math.Abs(v512[l] - e) / e);
            }
        }
        Assert.That(worst, Is.LessThan(3e-7), "relative error");
        var edges = CpuAttention.Exp2(Vector256.Create(float.NegativeInfinity, float.NaN, 0f, -1f, -2f, -3.5f, -200f, -0f));
        Assert.That(edges[0], Is.EqualTo(0f));
        Assert.That(float.IsNaN(edges[1]), Is.True);
        Assert.That(edges[2], Is.EqualTo(1f));
        Assert.That(edges[3], Is.EqualTo(0.5f));
        Assert.That(edges[4], Is.EqualTo(0.25f));
        Assert.That(edges[6], Is.EqualTo(0f));
        Assert.That(float.IsNaN(CpuAttention.Exp2Scalar(float.NaN)), Is.True);
    }

    [Test]
    public unsafe void QuantizeRowMatchesTheReferenceBitwise()
    {
        var rng = new Random(17);
        foreach (int d in new[] { 8, 24, 64, 128, 136 })
            for (int trial = 0; trial < 50; trial++)
            {
                var x = new float[d];
                for (int c = 0; c < d; c++) x[c] = (float)(rng.NextDouble() * 2 - 1) * (trial % 5 == 0 ? 1e-30f : 10f);
                if (trial % 7 == 1) for (int c = 0; c < d; c++) x[c] = (c % 5 - 2) * 63.5f / 127f; // exact halves after scaling
                if (trial % 7 == 2) x[rng.Next(d)] = float.NaN;
                if (trial % 7 == 3) x[rng.Next(d)] = float.PositiveInfinity;
                if (trial % 7 == 4) Array.Clear(x);
                var expected = new sbyte[d];
                float expectedScale = AttentionReference.QuantizeRow(x, expected, 0.37f);
                var actual = new sbyte[d];
                float scale;
                fixed (float* px = x)
                fixed (sbyte* pa = actual)
                    scale = CpuAttention.QuantizeRow(px, pa, d, 0.37f);
                Assert.That(actual, Is.EqualTo(expected).AsCollection, $"D {d}, trial {trial}");
                Assert.That(scale, Is.EqualTo(expectedScale), $"D {d}, trial {trial}");
            }
    }

    /// <summary>Tokens [start, start + count) of a head-major [B, H, T, D] array.</summary>
    private static float[] SliceHeadMajor(float[] x, AttentionShape s, int heads, int start, int count)
    {
        var result = new float[s.Batch * heads * count * s.HeadDim];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < heads; h++)
                Array.Copy(x, s.Offset(heads, b, h, start), result, ((long)(b * heads + h) * count) * s.HeadDim, (long)count * s.HeadDim);
        return result;
    }
}
