using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cuda;
using static Rellax.Tests.Attention.AttentionCheck;

namespace Rellax.Tests.Cuda;

/// <summary>
/// <c>kernels/int8_attention.cu</c> through <see cref="CudaBackend"/>'s attention front, beyond what the backend-generic
/// <c>FlashAttentionTests</c> covers: that the hand-written kernels are the ones used, every prefill instantiation
/// (d64, d128, d256) including head dimensions that are not a multiple of the 32-channel mma step (the zero-padded
/// scratch), several 64-row query tiles and key tiles with padding that does not align to them, decode over a long cache
/// (many 32-key chunks, GQA, causal or not), and the cached scratch growing and being reused between calls of different sizes. Int8 outputs must be within 1e-3 relative L1 of
/// <see cref="AttentionReference.Int8Prefill"/> (P·V runs in f16 tensor cores). GPU-only: ignored without a CUDA device
/// (the kernels' logic is checked without one by <c>kernels/tests/sim/attention_sim.cpp</c>, their compilation by
/// <see cref="NvrtcCompileTests"/>).
/// </summary>
[TestFixture]
public sealed class CudaAttentionTests : CudaDeviceFixture
{
    [Test]
    public void TheBackendUsesTheHandWrittenKernels() =>
        Assert.That(Backend.AttentionKernels, Is.InstanceOf<CudaAttentionKernels>());

    [TestCase(8)]
    [TestCase(32)]
    [TestCase(64)]
    [TestCase(96)]
    [TestCase(128)]
    [TestCase(136)]
    [TestCase(256)]
    public void Int8PrefillMatchesTheReferenceForEveryHeadDimension(int d)
    {
        foreach (var layout in new[] { AttentionLayout.HeadMajor, AttentionLayout.TokenMajor })
            foreach (bool causal in new[] { true, false })
            {
                var s = new AttentionShape(2, 4, 2, 200, d, layout);
                int[] lengths = [200, 77];
                var (q, k, v) = Inputs(s, d * 3 + (causal ? 1 : 0), outliers: true);
                float scale = 1f / MathF.Sqrt(d);
                var actual = Prefill(Backend, q, k, v, s, lengths, new AttentionOptions { Layout = layout, Causal = causal });
                var quantized = AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, causal);
                var accuracy = Measure(actual, quantized);
                Assert.That(accuracy.RelativeL1, Is.LessThan(1e-3), $"D = {d}, {layout}, causal {causal}: {accuracy}");
                for (int h = 0; h < s.QueryHeads; h++)
                    for (int t = 0; t < 200 - 77; t++)
                        Assert.That(actual.AsSpan((int)s.Offset(s.QueryHeads, 1, h, t), d).ToArray(), Is.All.EqualTo(0f), $"padding row {t}");
            }
    }

    [Test]
    public void ScratchIsReusedAndGrownBetweenCallsOfDifferentSizes()
    {
        foreach (int tokens in new[] { 300, 20, 513, 64 })
        {
            var s = new AttentionShape(1, 4, 1, tokens, 64, AttentionLayout.TokenMajor);
            int[] lengths = [tokens - tokens / 3];
            var (q, k, v) = Inputs(s, tokens);
            var actual = Prefill(Backend, q, k, v, s, lengths, new AttentionOptions { Layout = AttentionLayout.TokenMajor });
            var accuracy = Measure(actual, AttentionReference.Int8Prefill(q, k, v, s, lengths, 0.125f, causal: true));
            Assert.That(accuracy.RelativeL1, Is.LessThan(1e-3), $"T = {tokens}: {accuracy}");
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void DecodeOverALongCacheMatchesTheReference(bool causal)
    {
        // 1000 prompt tokens (32 key chunks per warp, padding of 300 in sequence 1), then a 3-token step: every chunk of
        // the decode kernel's online softmax and the GQA head mapping, against Int8Decode on the reference's own cache.
        var backend = Backend;
        var prompt = new AttentionShape(2, 8, 2, 1000, 64, AttentionLayout.TokenMajor);
        var step = prompt with { Tokens = 3 };
        int[] lengths = [1000, 700];
        using var cache = backend.Attention.CreateKvCache(2, 2, 64, 1003);
        var image = new AttentionReference.CacheImage(2, 2, 64, 1003);
        foreach (var (s, seed) in new[] { (prompt, 1), (step, 2) })
        {
            var (q, k, v) = Inputs(s, seed, outliers: true);
            using (var kb = backend.Upload<float>(k))
            using (var vb = backend.Upload<float>(v))
                backend.Attention.Append(cache, kb.AsTensor(s.ShapeOf(2)), vb.AsTensor(s.ShapeOf(2)), s == prompt ? lengths : default, s.Layout);
            AttentionReference.QuantizeIntoCache(image, k, v, s, s == prompt ? lengths : null);
            if (s == prompt) continue;
            using var qb = backend.Upload<float>(q);
            using var ob = backend.Allocate(DType.F32, q.Length);
            backend.Attention.Decode(qb.AsTensor(s.ShapeOf(8)), cache, ob.AsTensor(s.ShapeOf(8)),
                new AttentionOptions { Layout = s.Layout, Causal = causal });
            backend.Synchronize();
            var accuracy = Measure(ob.AsTensor(s.ShapeOf(8)).ToArray<float>(), AttentionReference.Int8Decode(q, image, s, 0.125f, causal));
            Assert.That(accuracy.RelativeL1, Is.LessThan(1e-3), $"causal {causal}: {accuracy}");
        }
        AssertCacheMatches(Image(cache), image);
    }
}
