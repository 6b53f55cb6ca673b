namespace Rellax.Kernels.Cpu;

/// <summary>
/// CPU attention kernels. PLACEHOLDER: runs <see cref="AttentionReference"/> on host copies so that the contract,
/// the tests and the runtime wiring can land first; the SIMD flash kernels replace it.
/// </summary>
internal sealed class CpuAttention(CpuBackend backend) : IAttentionKernels
{
    private readonly CpuBackend _backend = backend;

    public void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, AttentionShape shape, int[] lengths, float scale, bool causal,
        AttentionPrecision precision, bool smoothKeys)
    {
        _ = _backend;
        var result = precision == AttentionPrecision.Fp32
            ? AttentionReference.Exact(q.ToArray<float>(), k.ToArray<float>(), v.ToArray<float>(), shape, lengths, scale, causal)
            : AttentionReference.Int8Prefill(q.ToArray<float>(), k.ToArray<float>(), v.ToArray<float>(), shape, lengths, scale, causal, smoothKeys);
        var span = CpuBackend.Span<float>(o);
        for (int i = 0; i < span.Length; i++) span[i] = (float)result[i];
    }

    public void Append(Int8KvCache cache, Tensor k, Tensor v, AttentionShape shape, int start)
    {
        var image = Image(cache);
        var lengths = new int[cache.Batch];
        for (int b = 0; b < lengths.Length; b++) lengths[b] = shape.Tokens - cache.PaddingOf(b);
        AttentionReference.QuantizeIntoCache(image, k.ToArray<float>(), v.ToArray<float>(), shape, start == 0 ? lengths : null);
        cache.Keys.CopyFrom<sbyte>(image.Keys); cache.Values.CopyFrom<sbyte>(image.Values);
        cache.KeyScales.CopyFrom<float>(image.KeyScales); cache.KeySums.CopyFrom<int>(image.KeySums);
        cache.ValueScales.CopyFrom<float>(image.ValueScales); cache.KeyMean.CopyFrom<float>(image.KeyMean);
    }

    public void Decode(Tensor q, Int8KvCache cache, Tensor o, AttentionShape shape, float scale, bool causal)
    {
        var result = AttentionReference.Int8Decode(q.ToArray<float>(), Image(cache), shape, scale, causal);
        var span = CpuBackend.Span<float>(o);
        for (int i = 0; i < span.Length; i++) span[i] = (float)result[i];
    }

    private static AttentionReference.CacheImage Image(Int8KvCache cache)
    {
        var image = new AttentionReference.CacheImage(cache.Batch, cache.KvHeads, cache.HeadDim, cache.Capacity) { Count = cache.Count };
        cache.Keys.CopyTo<sbyte>(image.Keys); cache.Values.CopyTo<sbyte>(image.Values);
        cache.KeyScales.CopyTo<float>(image.KeyScales); cache.KeySums.CopyTo<int>(image.KeySums);
        cache.ValueScales.CopyTo<float>(image.ValueScales); cache.KeyMean.CopyTo<float>(image.KeyMean);
        cache.Padding.CopyTo<int>(image.Padding);
        return image;
    }
}
