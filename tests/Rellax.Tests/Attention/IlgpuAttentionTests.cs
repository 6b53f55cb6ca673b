using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Ilgpu;
using static Rellax.Tests.Attention.AttentionCheck;

namespace Rellax.Tests.Attention;

/// <summary>
/// ILGPU-specific checks of <see cref="IlgpuAttentionKernels"/> beyond the backend-generic
/// <see cref="FlashAttentionTests"/>: the int8 dot (the plain-int fallback against scalar products, and dp4a against the
/// fallback where a CUDA device exists; the CPU emulator can only run the fallback), both team widths (one lane per row,
/// and a warp per row with shuffles, which is the GPU default) with several group sizes, every head dimension from 8 to
/// 256, scratch reuse across calls of different sizes and paddings, and disposal.
/// </summary>
[TestFixture]
public sealed class IlgpuAttentionTests
{
    /// <summary>The ILGPU devices to run on: the emulator always, CUDA when present.</summary>
    public static IEnumerable<IlgpuDeviceKind> Devices()
    {
        yield return IlgpuDeviceKind.CpuEmulator;
        if (IlgpuBackend.ListDevices().Any(d => d.Kind == IlgpuDeviceKind.Cuda)) yield return IlgpuDeviceKind.Cuda;
    }

    private static IlgpuAttentionKernels KernelsOf(IlgpuBackend backend) => (IlgpuAttentionKernels)backend.AttentionKernels;

    [Test]
    public void Dot4FallbackIsTheExactSumOfSignedByteProducts()
    {
        var rng = new Random(3);
        int[] edges = [0, -1, 1, -128, 127, -127, 0x7F7F7F7F, unchecked((int)0x80808080), unchecked((int)0x81018081)];
        var values = edges.Concat(Enumerable.Range(0, 2000).Select(_ => rng.Next(int.MinValue, int.MaxValue))).ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            int a = values[i], b = values[(i * 7 + 3) % values.Length], acc = rng.Next(-1 << 20, 1 << 20);
            int expected = acc;
            for (int byteIndex = 0; byteIndex < 4; byteIndex++)
                expected += (sbyte)(a >> (8 * byteIndex)) * (sbyte)(b >> (8 * byteIndex));
            Assert.That(IlgpuAttentionKernels.Dot4Fallback(a, b, acc), Is.EqualTo(expected), $"a = 0x{a:X8}, b = 0x{b:X8}, acc = {acc}");
        }
        // Byte 0 is the lowest (dp4a's order): only the low bytes are non-zero here.
        Assert.That(IlgpuAttentionKernels.Dot4Fallback(0x000000FF, 0x00000002, 10), Is.EqualTo(10 - 2));
    }

    [TestCaseSource(nameof(Devices))]
    public void Dp4aAndTheFallbackGiveIdenticalResults(IlgpuDeviceKind kind)
    {
        using var backend = new IlgpuBackend(kind);
        var kernels = KernelsOf(backend);
        // dp4a exists only on the PTX backend: on the emulator both runs below take the fallback (this test then only
        // checks that the switch is inert there); on CUDA they take different instructions and must agree bitwise.
        Assert.That(kernels.Dp4aAvailable, Is.EqualTo(kind == IlgpuDeviceKind.Cuda));
        var s = new AttentionShape(2, 4, 2, 29, 64, AttentionLayout.TokenMajor);
        var (q, k, v) = Inputs(s, 41, outliers: true);
        int[] lengths = [29, 17];
        kernels.UseDp4a = true;
        var withDp4a = Prefill(backend, q, k, v, s, lengths, new AttentionOptions());
        kernels.UseDp4a = false;
        var fallback = Prefill(backend, q, k, v, s, lengths, new AttentionOptions());
        Assert.That(withDp4a, Is.EqualTo(fallback), "int8 prefill");
        var quantized = AttentionReference.Int8Prefill(q, k, v, s, lengths, 1f / 8f, causal: true);
        Assert.That(Measure(fallback, quantized).RelativeL1, Is.LessThan(1e-3));

        // Decode reads the cache's int8 keys through the same dot.
        using var cache = backend.Attention.CreateKvCache(2, 2, 64, 29);
        using (var kb = backend.Upload<float>(k))
        using (var vb = backend.Upload<float>(v))
            backend.Attention.Append(cache, kb.AsTensor(s.ShapeOf(2)), vb.AsTensor(s.ShapeOf(2)), lengths, s.Layout);
        var dq = s with { Tokens = 2 };
        var qd = Normal(2 * 2 * 4 * 64, 42);
        kernels.UseDp4a = true;
        var decodeDp4a = DecodeOn(backend, cache, qd, dq, causal: true);
        kernels.UseDp4a = false;
        var decodeFallback = DecodeOn(backend, cache, qd, dq, causal: true);
        Assert.That(decodeDp4a, Is.EqualTo(decodeFallback), "int8 decode");
        Assert.That(decodeFallback.All(float.IsFinite), Is.True);
    }

    /// <summary>Team widths (1 lane, a warp) and rows per group, on prefill (both precisions, causal or not) and decode.</summary>
    [TestCase(1, 1)]
    [TestCase(1, 7)]
    [TestCase(32, 3)]
    [TestCase(32, 8)]
    public void EveryTeamWidthAndGroupSizeMatchesTheReferences(int lanes, int rowsPerGroup)
    {
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        var kernels = KernelsOf(backend);
        kernels.LanesPerRow = lanes;
        kernels.RowsPerGroup = rowsPerGroup;
        Assert.That((kernels.LanesPerRow, kernels.RowsPerGroup), Is.EqualTo((lanes, rowsPerGroup)));

        // 37 keys: one full 32-key tile and a partial one for warp teams; padding, GQA, D = 40 (not a multiple of 32).
        // Small, because every warp shuffle is a warp barrier on the emulator (a warp team costs ~30x a lane team there).
        var s = new AttentionShape(2, 2, 1, 37, 40, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 77, outliers: true);
        int[] lengths = [37, 34];
        float scale = 1f / MathF.Sqrt(s.HeadDim);
        foreach (bool causal in new[] { true, false })
        {
            var fp32 = Prefill(backend, q, k, v, s, lengths, new AttentionOptions { Precision = AttentionPrecision.Fp32, Causal = causal });
            Assert.That(MaxAbs(fp32, AttentionReference.Exact(q, k, v, s, lengths, scale, causal)), Is.LessThan(2e-5), $"fp32, causal {causal}");
            var int8 = Prefill(backend, q, k, v, s, lengths, new AttentionOptions { Causal = causal });
            var quantized = AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, causal);
            Assert.That(Measure(int8, quantized).RelativeL1, Is.LessThan(1e-3), $"int8, causal {causal}");
        }

        // Decode: 40 positions (8 of them padding in sequence 1) in the cache, then 3 queries, causal and not.
        var c = new AttentionShape(2, 4, 2, 40, 40, AttentionLayout.TokenMajor);
        var (_, kc, vc) = Inputs(c, 78);
        using var cache = backend.Attention.CreateKvCache(2, 2, 40, 48);
        var image = new AttentionReference.CacheImage(2, 2, 40, 48);
        int[] cacheLengths = [40, 32];
        using (var kb = backend.Upload<float>(kc))
        using (var vb = backend.Upload<float>(vc))
            backend.Attention.Append(cache, kb.AsTensor(c.ShapeOf(2)), vb.AsTensor(c.ShapeOf(2)), cacheLengths, c.Layout);
        AttentionReference.QuantizeIntoCache(image, kc, vc, c, cacheLengths);
        var dq = c with { Tokens = 3 };
        var qd = Normal(2 * 3 * 4 * 40, 79);
        foreach (bool causal in new[] { true, false })
        {
            var o = DecodeOn(backend, cache, qd, dq, causal);
            var expected = AttentionReference.Int8Decode(qd, image, dq, scale, causal);
            Assert.That(Measure(o, expected).RelativeL1, Is.LessThan(1e-3), $"decode, causal {causal}");
        }
    }

    [Test]
    public void LanesPerRowMustBeOneOrTheWarpSize()
    {
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        var kernels = KernelsOf(backend);
        Assert.That(kernels.LanesPerRow, Is.EqualTo(1), "the emulator default: no shuffles");
        Assert.Throws<ArgumentOutOfRangeException>(() => kernels.LanesPerRow = 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => kernels.LanesPerRow = 2 * kernels.WarpSize);
        kernels.LanesPerRow = kernels.WarpSize;
        Assert.That(kernels.RowsPerGroup * kernels.LanesPerRow, Is.LessThanOrEqualTo(kernels.MaxGroup));
        Assert.Throws<ArgumentOutOfRangeException>(() => kernels.RowsPerGroup = kernels.MaxGroup / kernels.WarpSize + 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => kernels.RowsPerGroup = 0);
    }

    [Test]
    public void EveryHeadDimensionFrom8To256()
    {
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        for (int d = 8; d <= 256; d += 8)
        {
            var s = new AttentionShape(1, 2, 1, 6, d, AttentionLayout.TokenMajor);
            var (q, k, v) = Inputs(s, d, outliers: d >= 16);
            int[] lengths = [5];
            float scale = 1f / MathF.Sqrt(d);
            var fp32 = Prefill(backend, q, k, v, s, lengths, new AttentionOptions { Precision = AttentionPrecision.Fp32 });
            Assert.That(MaxAbs(fp32, AttentionReference.Exact(q, k, v, s, lengths, scale, causal: true)), Is.LessThan(2e-5), $"fp32, D = {d}");
            var int8 = Prefill(backend, q, k, v, s, lengths, new AttentionOptions());
            var quantized = AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, causal: true);
            Assert.That(Measure(int8, quantized).RelativeL1, Is.LessThan(1e-3), $"int8, D = {d}");
        }
    }

    [Test]
    public void ScratchIsReusedAcrossCallsOfDifferentSizesAndPaddings()
    {
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        var kernels = KernelsOf(backend);
        var big = new AttentionShape(2, 4, 2, 40, 64, AttentionLayout.HeadMajor);
        var small = new AttentionShape(2, 2, 1, 9, 32, AttentionLayout.TokenMajor);
        var (qb, kb, vb) = Inputs(big, 5);
        var (qs, ks, vs) = Inputs(small, 6, outliers: true);

        void Check(AttentionShape s, float[] q, float[] k, float[] v, int[] lengths, string what)
        {
            var int8 = Prefill(backend, q, k, v, s, lengths, new AttentionOptions());
            var quantized = AttentionReference.Int8Prefill(q, k, v, s, lengths, 1f / MathF.Sqrt(s.HeadDim), causal: true);
            Assert.That(Measure(int8, quantized).RelativeL1, Is.LessThan(1e-3), what);
        }

        Assert.That(kernels.ScratchElements, Is.Zero, "nothing allocated before the first call");
        Check(big, qb, kb, vb, [40, 31], "big");
        long afterBig = kernels.ScratchElements;
        Assert.That(afterBig, Is.GreaterThan(0));
        // Smaller calls reuse the scratch; a new padding with the same batch must be uploaded, not taken from the cache.
        Check(small, qs, ks, vs, [9, 4], "small, padded");
        Check(small, qs, ks, vs, [2, 9], "small, other padding");
        Check(small, qs, ks, vs, [2, 9], "small, same padding again");
        Check(big, qb, kb, vb, [40, 31], "big again");
        Assert.That(kernels.ScratchElements, Is.EqualTo(afterBig), "no reallocation for calls no larger than the first");
        // A larger call grows it and still computes the right thing.
        var bigger = big with { Tokens = 70 };
        var (qg, kg, vg) = Inputs(bigger, 7);
        Check(bigger, qg, kg, vg, [70, 12], "bigger");
        Assert.That(kernels.ScratchElements, Is.GreaterThan(afterBig));
        Check(small, qs, ks, vs, [9, 4], "small after growth");
    }

    [Test]
    public void KernelsAreCreatedOnceAndDisposedWithTheBackend()
    {
        var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        var kernels = KernelsOf(backend);
        Assert.That(KernelsOf(backend), Is.SameAs(kernels), "created on first use, then cached");
        var s = new AttentionShape(1, 1, 1, 4, 8, AttentionLayout.HeadMajor);
        var (q, k, v) = Inputs(s, 1);
        Prefill(backend, q, k, v, s, [4], new AttentionOptions());
        Assert.That(kernels.ScratchElements, Is.GreaterThan(0));
        backend.Dispose();
        Assert.That(kernels.ScratchElements, Is.Zero, "scratch freed with the backend");
        Assert.Throws<ObjectDisposedException>(() => _ = backend.AttentionKernels);
        Assert.Throws<ObjectDisposedException>(() => kernels.Prefill(default, default, default, default, s, [4], 1f, true, AttentionPrecision.Int8, true));
        Assert.DoesNotThrow(kernels.Dispose, "idempotent");
        Assert.DoesNotThrow(backend.Dispose, "idempotent");
    }

    private static float[] DecodeOn(ComputeBackend backend, Int8KvCache cache, float[] q, AttentionShape s, bool causal)
    {
        using var qb = backend.Upload<float>(q);
        using var ob = backend.Allocate(DType.F32, q.Length);
        var shape = s.ShapeOf(s.QueryHeads);
        backend.Attention.Decode(qb.AsTensor(shape), cache, ob.AsTensor(shape), new AttentionOptions { Layout = s.Layout, Causal = causal });
        backend.Synchronize();
        return ob.AsTensor(shape).ToArray<float>();
    }
}
