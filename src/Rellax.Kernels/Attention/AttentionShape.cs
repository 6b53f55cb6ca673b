namespace Rellax.Kernels;

/// <summary>
/// The geometry of one attention call, checked by <see cref="FlashAttention"/>: B sequences, Hq query heads reading
/// Hkv key/value heads (query head h reads KV head h / (Hq / Hkv)), <see cref="Tokens"/> = Tq query tokens and
/// <see cref="KeyTokens"/> = Tk ≥ Tq key positions (query t sits at key position <c>Tk − Tq + t</c>), D channels, in
/// <see cref="Layout"/>. The Query* / Key* members say where row (b, h, t) of a q/o tensor or a k/v tensor starts.
/// </summary>
internal readonly record struct AttentionShape(int Batch, int QueryHeads, int KvHeads, int Tokens, int HeadDim, AttentionLayout Layout)
{
    private readonly int _keyTokens;

    /// <summary>A shape whose k/v hold <paramref name="keyTokens"/> positions (≥ <paramref name="queryTokens"/>).</summary>
    public AttentionShape(int batch, int queryHeads, int kvHeads, int queryTokens, int keyTokens, int headDim, AttentionLayout layout)
        : this(batch, queryHeads, kvHeads, queryTokens, headDim, layout) => _keyTokens = keyTokens;

    /// <summary>Tk: key/value positions per sequence (Tq when not given).</summary>
    public int KeyTokens => _keyTokens > 0 ? _keyTokens : Tokens;

    /// <summary>Key position of query 0: <c>Tk − Tq</c> (0 when q and k have the same tokens).</summary>
    public int QueryStart => KeyTokens - Tokens;

    /// <summary>Query heads per KV head.</summary>
    public int Group => QueryHeads / KvHeads;

    /// <summary>Element strides (batch, head, token) of the q/o tensors.</summary>
    public (long Batch, long Head, long Token) QueryStrides => Strides(QueryHeads, Tokens);

    /// <summary>Element strides (batch, head, token) of the k/v tensors.</summary>
    public (long Batch, long Head, long Token) KeyStrides => Strides(KvHeads, KeyTokens);

    /// <summary>First element of row (b, h, t) of q or o.</summary>
    public long QueryOffset(int b, int h, int t) => At(QueryStrides, b, h, t);

    /// <summary>First element of row (b, kvh, j) of k or v.</summary>
    public long KeyOffset(int b, int kvh, int j) => At(KeyStrides, b, kvh, j);

    /// <summary>The 4-D shape q and o must have.</summary>
    public int[] QueryShape => ShapeOf(QueryHeads, Tokens);

    /// <summary>The 4-D shape k and v must have.</summary>
    public int[] KeyShape => ShapeOf(KvHeads, KeyTokens);

    // The forms below take the head count and use Tokens for both sides: for shapes with Tq == Tk only (tests, the
    // cache append), so they refuse a shape whose k/v have more positions than q.

    /// <summary>Elements between consecutive tokens of one head, for a tensor with <paramref name="heads"/> heads (Tq == Tk).</summary>
    public long TokenStride(int heads) => SameTokens().Strides(heads, Tokens).Token;

    /// <summary>Elements between consecutive heads of one token (Tq == Tk).</summary>
    public long HeadStride(int heads) => SameTokens().Strides(heads, Tokens).Head;

    /// <summary>Elements between consecutive sequences (Tq == Tk).</summary>
    public long BatchStride(int heads) => SameTokens().Strides(heads, Tokens).Batch;

    /// <summary>First element of row (b, h, t) of a tensor with <paramref name="heads"/> heads (Tq == Tk).</summary>
    public long Offset(int heads, int b, int h, int t) => At(SameTokens().Strides(heads, Tokens), b, h, t);

    /// <summary>The 4-D shape a tensor with <paramref name="heads"/> heads must have (Tq == Tk).</summary>
    public int[] ShapeOf(int heads) => SameTokens().ShapeOf(heads, Tokens);

    private AttentionShape SameTokens() => KeyTokens == Tokens ? this
        : throw new InvalidOperationException($"shape has Tq = {Tokens} and Tk = {KeyTokens}: use the Query*/Key* members");

    private (long Batch, long Head, long Token) Strides(int heads, int tokens) => Layout == AttentionLayout.HeadMajor
        ? ((long)heads * tokens * HeadDim, (long)tokens * HeadDim, HeadDim)
        : ((long)heads * tokens * HeadDim, HeadDim, (long)heads * HeadDim);

    private static long At((long Batch, long Head, long Token) s, int b, int h, int t) => b * s.Batch + h * s.Head + t * s.Token;

    private int[] ShapeOf(int heads, int tokens) => Layout == AttentionLayout.HeadMajor
        ? [Batch, heads, tokens, HeadDim]
        : [Batch, tokens, heads, HeadDim];
}
