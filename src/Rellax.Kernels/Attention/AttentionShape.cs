namespace Rellax.Kernels;

/// <summary>
/// The geometry of one attention call, checked by <see cref="FlashAttention"/>: B sequences, Hq query heads reading
/// Hkv key/value heads (query head h reads KV head h / (Hq / Hkv)), T tokens of D channels, in <see cref="Layout"/>.
/// Element strides say where row (b, h, t) of a q/o tensor (H = Hq) or a k/v tensor (H = Hkv) starts.
/// </summary>
internal readonly record struct AttentionShape(int Batch, int QueryHeads, int KvHeads, int Tokens, int HeadDim, AttentionLayout Layout)
{
    /// <summary>Query heads per KV head.</summary>
    public int Group => QueryHeads / KvHeads;

    /// <summary>Elements between consecutive tokens of one head, for a tensor with <paramref name="heads"/> heads.</summary>
    public long TokenStride(int heads) => Layout == AttentionLayout.HeadMajor ? HeadDim : (long)heads * HeadDim;

    /// <summary>Elements between consecutive heads of one token.</summary>
    public long HeadStride(int heads) => Layout == AttentionLayout.HeadMajor ? (long)Tokens * HeadDim : HeadDim;

    /// <summary>Elements between consecutive sequences.</summary>
    public long BatchStride(int heads) => (long)heads * Tokens * HeadDim;

    /// <summary>First element of row (b, h, t) of a tensor with <paramref name="heads"/> heads.</summary>
    public long Offset(int heads, int b, int h, int t) => b * BatchStride(heads) + h * HeadStride(heads) + t * TokenStride(heads);

    /// <summary>The 4-D shape a tensor with <paramref name="heads"/> heads must have.</summary>
    public int[] ShapeOf(int heads) => Layout == AttentionLayout.HeadMajor
        ? [Batch, heads, Tokens, HeadDim]
        : [Batch, Tokens, heads, HeadDim];
}
