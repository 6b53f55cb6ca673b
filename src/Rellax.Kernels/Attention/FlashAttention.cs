namespace Rellax.Kernels;

/// <summary>
/// Flash-style (online-softmax, the T × T score matrix is never written) attention over a batch of left-padded
/// sequences on one backend, with int8 (SageAttention-style, SPEC §7) or fp32 scores; grouped-query heads; a causal
/// mask; and an int8 KV cache for decoding (<see cref="CreateKvCache"/>, <see cref="Decode"/>).
/// </summary>
/// <remarks>
/// <para><b>Queries and keys.</b> k and v hold Tk positions per sequence, q holds the last Tq ≤ Tk of them: query t
/// sits at key position <c>Tk - Tq + t</c>. Tq = Tk is a prefill over whole sequences; Tq &lt; Tk is a chunk of new
/// tokens (Tq = 1: one decoding step) attending to an fp32 KV cache that already holds the chunk's keys and values.</para>
/// <para><b>Padding.</b> Sequence b holds <c>lengths[b]</c> real key positions at the right end of its Tk positions
/// (left padding): positions <c>[Tk - lengths[b], Tk)</c>. Keys at padding positions are masked; query rows at padding
/// positions attend to nothing and their output is 0.</para>
/// <para><b>Masking.</b> Query t of sequence b sees the keys <c>j</c> with <c>Tk - lengths[b] ≤ j</c> and, when
/// causal, <c>j ≤ Tk - Tq + t</c>.</para>
/// <para><b>Int8 scores.</b> Keys are smoothed per (sequence, KV head): <c>k' = k - mean_j(k_j)</c> over the valid
/// tokens (exact, softmax ignores a per-row constant). Each row x of q (times scale · log2 e) and of k' is quantized as
/// <c>s = max|x| / 127</c>, <c>x̂ = round(x / s)</c> (half to even; s = 0 gives x̂ = 0), per token and head (finer
/// than SageAttention's 128/64-token blocks, at no cost here); the logit is <c>(Σ x̂_q · x̂_k) · s_q · s_k</c> with an
/// exact int32 dot product, and the softmax runs in fp32 with exp2.</para>
/// <para><b>Non-finite input.</b> NaN or ∞ in q, k or v is not checked (that would cost a pass over the data); it
/// propagates: every output row that reads it becomes NaN. With int8 scores, a non-finite key poisons the smoothing
/// mean and so its whole (sequence, KV head).</para>
/// </remarks>
public sealed class FlashAttention
{
    /// <summary>The largest head dimension D supported. Int8 scores (and the fp32 backward) also need D to be a multiple
    /// of <see cref="HeadDimMultiple"/>; fp32 prefill takes any D from 1.</summary>
    public const int MaxHeadDim = 256;

    /// <summary>Int8 scores and the backward need D to be a multiple of this (int8 dot products run over groups of 4
    /// channels, vectors over 8).</summary>
    public const int HeadDimMultiple = 8;

    private readonly ComputeBackend _backend;

    internal FlashAttention(ComputeBackend backend) => _backend = backend;

    private IAttentionKernels K => _backend.AttentionKernels;

    /// <summary>
    /// Prefill attention: <c>o = softmax(scale · q kᵀ + mask) v</c> for every sequence and query head.
    /// </summary>
    /// <param name="q">Queries, f32 [B, Hq, Tq, D] (head-major) or [B, Tq, Hq, D] (token-major, <see cref="AttentionOptions.Layout"/>).</param>
    /// <param name="k">Keys, f32 [B, Hkv, Tk, D] or [B, Tk, Hkv, D] with Tk ≥ Tq; Hq a multiple of Hkv.</param>
    /// <param name="v">Values, same shape as k.</param>
    /// <param name="lengths">Real key positions of each sequence, B values in [0, Tk] (left padding); empty means all Tk.</param>
    /// <param name="o">Output, same shape as q; must not overlap q, k or v.</param>
    /// <param name="options">Precision, layout, scale and mask; null means <see cref="AttentionOptions.Default"/>.</param>
    /// <exception cref="ArgumentException">A shape, dtype, backend, head count, head dimension or length that does not fit;
    /// the message names the argument and the shapes.</exception>
    public void Prefill(Tensor q, Tensor k, Tensor v, ReadOnlySpan<int> lengths, Tensor o, AttentionOptions? options = null)
    {
        options ??= AttentionOptions.Default;
        var shape = CheckQkv(q, k, v, o, options.Layout, options.Precision);
        float scale = CheckScale(options, shape.HeadDim);
        var lens = CheckLengths(lengths, shape.Batch, shape.KeyTokens);
        Check.NoOverlap(o, nameof(o), q, nameof(q)); Check.NoOverlap(o, nameof(o), k, nameof(k)); Check.NoOverlap(o, nameof(o), v, nameof(v));
        if (o.ElementCount == 0) return;
        K.Prefill(q, k, v, o, shape, lens, scale, options.Causal, options.Precision, options.SmoothKeys);
    }

    /// <summary>
    /// Fp32 prefill that also saves, for the backward (<see cref="Backward"/>), each query row's log-sum-exp
    /// <c>lse[b, h, t] = ln Σ_j exp(scale · q_t·k_j)</c> over its visible keys (natural log, −∞ for padding rows).
    /// Otherwise as <see cref="Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/>.
    /// </summary>
    /// <param name="q">Queries, f32 [B, Hq, Tq, D] or [B, Tq, Hq, D].</param>
    /// <param name="k">Keys, f32 [B, Hkv, Tk, D] or [B, Tk, Hkv, D], Tk ≥ Tq.</param>
    /// <param name="v">Values, same shape as k.</param>
    /// <param name="lengths">Real key positions of each sequence (left padding); empty means all Tk.</param>
    /// <param name="o">Output, same shape as q.</param>
    /// <param name="lse">Output: f32 [B, Hq, Tq] in either layout.</param>
    /// <param name="options">Layout, scale and mask; the precision must be fp32 (the backward is fp32).</param>
    public void Prefill(Tensor q, Tensor k, Tensor v, ReadOnlySpan<int> lengths, Tensor o, Tensor lse, AttentionOptions? options = null)
    {
        options ??= AttentionOptions.Default;
        if (options.Precision != AttentionPrecision.Fp32)
            throw new ArgumentException("the log-sum-exp is saved for the fp32 backward: use AttentionPrecision.Fp32", nameof(options));
        var shape = CheckQkv(q, k, v, o, options.Layout, options.Precision);
        float scale = CheckScale(options, shape.HeadDim);
        var lens = CheckLengths(lengths, shape.Batch, shape.KeyTokens);
        CheckLse(lse, shape, q);
        Check.NoOverlap(o, nameof(o), q, nameof(q)); Check.NoOverlap(o, nameof(o), k, nameof(k)); Check.NoOverlap(o, nameof(o), v, nameof(v));
        foreach (var (t, name) in new[] { (q, nameof(q)), (k, nameof(k)), (v, nameof(v)), (o, nameof(o)) }) Check.NoOverlap(lse, nameof(lse), t, name);
        if (o.ElementCount == 0) return;
        K.Prefill(q, k, v, o, lse, shape, lens, scale, options.Causal);
    }

    /// <summary>
    /// The backward of fp32 <see cref="Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, Tensor, AttentionOptions?)"/>
    /// (FlashAttention-2 style: P is recomputed from the saved log-sum-exp, never stored): given the forward's q, k, v,
    /// its output o and lse, and dO = ∂loss/∂o, writes dq, dk, dv (overwritten; GQA: a KV head's gradients sum over its
    /// query heads; padding rows and keys get 0). Cost ≈ 2.5x the forward's FLOPs (five T×T×D products instead of two).
    /// Only for q, k and v of the same T (Tq = Tk: training runs whole sequences) and D a multiple of
    /// <see cref="HeadDimMultiple"/>.
    /// </summary>
    /// <param name="q">The forward's queries, f32 [B, Hq, T, D] or [B, T, Hq, D].</param>
    /// <param name="k">The forward's keys, f32 [B, Hkv, T, D] or [B, T, Hkv, D].</param>
    /// <param name="v">The forward's values, same shape as k.</param>
    /// <param name="o">The forward's output, same shape as q.</param>
    /// <param name="dO">Gradient of the loss with respect to o, same shape as q.</param>
    /// <param name="lse">The forward's log-sum-exp, f32 [B, Hq, T].</param>
    /// <param name="lengths">The forward's lengths (left padding); empty means all T.</param>
    /// <param name="dq">Output, same shape as q.</param>
    /// <param name="dk">Output, same shape as k.</param>
    /// <param name="dv">Output, same shape as k.</param>
    /// <param name="options">The forward's layout, scale and mask; the precision must be fp32.</param>
    /// <exception cref="ArgumentException">A shape, dtype, backend, overlap or precision that does not fit.</exception>
    public void Backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, ReadOnlySpan<int> lengths,
        Tensor dq, Tensor dk, Tensor dv, AttentionOptions? options = null)
    {
        options ??= AttentionOptions.Default;
        if (options.Precision != AttentionPrecision.Fp32)
            throw new ArgumentException("the attention backward is fp32: use AttentionPrecision.Fp32 in the forward and here", nameof(options));
        var shape = CheckQkv(q, k, v, o, options.Layout, AttentionPrecision.Int8); // the backward's D rule is int8's
        if (shape.KeyTokens != shape.Tokens)
            throw new ArgumentException($"the attention backward needs q and k of the same T; q {q} has {shape.Tokens} tokens, k {k} {shape.KeyTokens} ({options.Layout})", nameof(k));
        float scale = CheckScale(options, shape.HeadDim);
        var lens = CheckLengths(lengths, shape.Batch, shape.Tokens);
        CheckLse(lse, shape, q);
        Check.F32(_backend, dO, nameof(dO), 4); Check.SameShape(q, nameof(q), dO, nameof(dO));
        Check.F32(_backend, dq, nameof(dq), 4); Check.SameShape(q, nameof(q), dq, nameof(dq));
        Check.F32(_backend, dk, nameof(dk), 4); Check.SameShape(k, nameof(k), dk, nameof(dk));
        Check.F32(_backend, dv, nameof(dv), 4); Check.SameShape(k, nameof(k), dv, nameof(dv));
        var inputs = new[] { (q, nameof(q)), (k, nameof(k)), (v, nameof(v)), (o, nameof(o)), (dO, nameof(dO)), (lse, nameof(lse)) };
        var outputs = new[] { (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)) };
        for (int i = 0; i < outputs.Length; i++)
        {
            foreach (var (t, name) in inputs) Check.NoOverlap(outputs[i].Item1, outputs[i].Item2, t, name);
            for (int j = i + 1; j < outputs.Length; j++) Check.NoOverlap(outputs[i].Item1, outputs[i].Item2, outputs[j].Item1, outputs[j].Item2);
        }
        if (q.ElementCount == 0) return;
        K.Backward(q, k, v, o, dO, lse, dq, dk, dv, shape, lens, scale, options.Causal);
    }

    private void CheckLse(in Tensor lse, AttentionShape shape, in Tensor q)
    {
        Check.F32(_backend, lse, nameof(lse), 3);
        if (lse.Dim(0) != shape.Batch || lse.Dim(1) != shape.QueryHeads || lse.Dim(2) != shape.Tokens)
            throw new ArgumentException($"lse {lse} must be [B, Hq, Tq] = [{shape.Batch}, {shape.QueryHeads}, {shape.Tokens}] for q {q} ({shape.Layout})", nameof(lse));
    }

    /// <summary>
    /// Creates an int8 KV cache for <paramref name="batch"/> sequences on this backend (see <see cref="Int8KvCache"/>).
    /// </summary>
    /// <param name="batch">Sequences, &gt;= 1.</param>
    /// <param name="kvHeads">Key/value heads, &gt;= 1.</param>
    /// <param name="headDim">D, a multiple of <see cref="HeadDimMultiple"/> up to <see cref="MaxHeadDim"/>.</param>
    /// <param name="capacity">Positions per sequence, &gt;= 1.</param>
    public Int8KvCache CreateKvCache(int batch, int kvHeads, int headDim, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(kvHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        CheckHeadDim(headDim, nameof(headDim));
        return new Int8KvCache(_backend, batch, kvHeads, headDim, capacity);
    }

    /// <summary>
    /// Quantizes Tn new tokens of keys and values per sequence and appends them to <paramref name="cache"/>
    /// (positions <c>[Count, Count + Tn)</c>). The first append after creation or <see cref="Int8KvCache.Reset"/>
    /// fixes each sequence's left padding from <paramref name="lengths"/> and the key-smoothing mean of each
    /// (sequence, KV head) from its valid tokens; later appends must have every token valid.
    /// </summary>
    /// <param name="cache">A cache created by this backend's <see cref="CreateKvCache"/>.</param>
    /// <param name="k">New keys, f32 [B, Hkv, Tn, D] (head-major) or [B, Tn, Hkv, D] (token-major), Tn &gt;= 1.</param>
    /// <param name="v">New values, same shape.</param>
    /// <param name="lengths">First append only: real tokens per sequence, B values in [0, Tn]; empty means all Tn.</param>
    /// <param name="layout">Layout of k and v.</param>
    /// <exception cref="ArgumentException">Shapes that do not match the cache, or lengths given to a later append.</exception>
    /// <exception cref="InvalidOperationException">The cache would overflow its capacity.</exception>
    public void Append(Int8KvCache cache, Tensor k, Tensor v, ReadOnlySpan<int> lengths = default, AttentionLayout layout = AttentionLayout.HeadMajor)
    {
        CheckCache(cache);
        Check.F32(_backend, k, nameof(k), 4); Check.F32(_backend, v, nameof(v), 4);
        Check.SameShape(k, nameof(k), v, nameof(v));
        int tokens = layout == AttentionLayout.HeadMajor ? k.Dim(2) : k.Dim(1);
        var shape = new AttentionShape(cache.Batch, cache.KvHeads, cache.KvHeads, tokens, cache.HeadDim, layout);
        if (!k.Shape.SequenceEqual(shape.ShapeOf(cache.KvHeads)) || tokens < 1)
            throw new ArgumentException($"k {k} must be {Tensor.Format(shape.ShapeOf(cache.KvHeads))} ({layout}, Tn >= 1) for a cache of " +
                $"{cache.Batch} sequences x {cache.KvHeads} KV heads x D = {cache.HeadDim}", nameof(k));
        if (cache.Count + tokens > cache.Capacity)
            throw new InvalidOperationException($"appending {tokens} tokens to a KV cache holding {cache.Count} of {cache.Capacity} positions would overflow it");
        int[] padding;
        if (cache.Count == 0)
        {
            var lens = CheckLengths(lengths, cache.Batch, tokens);
            padding = new int[cache.Batch];
            for (int b = 0; b < padding.Length; b++) padding[b] = tokens - lens[b];
        }
        else
        {
            if (!lengths.IsEmpty)
                throw new ArgumentException($"lengths may only be given to the first append; the cache already holds {cache.Count} positions", nameof(lengths));
            padding = cache.PaddingArray;
        }
        cache.BeginAppend(padding);
        K.Append(cache, k, v, shape, cache.Count);
        cache.EndAppend(tokens);
    }

    /// <summary>
    /// Decode attention against an int8 KV cache: the Tq queries are the last Tq positions of the cache (already
    /// appended with <see cref="Append"/>), so one-token decoding has Tq = 1 and a chunked prefill Tq = the chunk.
    /// Scores are int8 (q quantized per token and head as in <see cref="AttentionPrecision.Int8"/>); values are the
    /// cache's int8 values with their per-token scales, accumulated in fp32.
    /// </summary>
    /// <param name="q">Queries, f32 [B, Hq, Tq, D] or [B, Tq, Hq, D] (<see cref="AttentionOptions.Layout"/>), Hq a multiple of the cache's Hkv.</param>
    /// <param name="cache">The cache, holding at least Tq positions.</param>
    /// <param name="o">Output, same shape as q; must not overlap q.</param>
    /// <param name="options">Layout, scale and causal mask (among the Tq queries); the precision must be int8.</param>
    public void Decode(Tensor q, Int8KvCache cache, Tensor o, AttentionOptions? options = null)
    {
        options ??= AttentionOptions.Default;
        CheckCache(cache);
        if (options.Precision != AttentionPrecision.Int8)
            throw new ArgumentException("an int8 KV cache is read with int8 scores; use Prefill for fp32 attention", nameof(options));
        Check.F32(_backend, q, nameof(q), 4); Check.F32(_backend, o, nameof(o), 4);
        Check.SameShape(q, nameof(q), o, nameof(o));
        bool headMajor = options.Layout == AttentionLayout.HeadMajor;
        int heads = headMajor ? q.Dim(1) : q.Dim(2), tokens = headMajor ? q.Dim(2) : q.Dim(1);
        if (q.Dim(0) != cache.Batch || q.Dim(3) != cache.HeadDim)
            throw new ArgumentException($"q {q} ({options.Layout}) must have B = {cache.Batch} and D = {cache.HeadDim} to read this cache", nameof(q));
        if (heads < 1 || heads % cache.KvHeads != 0)
            throw new ArgumentException($"query heads ({heads}) must be a positive multiple of the cache's KV heads ({cache.KvHeads}); q {q}", nameof(q));
        if (tokens < 1 || tokens > cache.Count)
            throw new ArgumentException($"q {q} has {tokens} query tokens but the cache holds {cache.Count} positions (need 1 <= Tq <= Count)", nameof(q));
        float scale = CheckScale(options, cache.HeadDim);
        Check.NoOverlap(o, nameof(o), q, nameof(q));
        K.Decode(q, cache, o, new AttentionShape(cache.Batch, heads, cache.KvHeads, tokens, cache.HeadDim, options.Layout), scale, options.Causal);
    }

    private AttentionShape CheckQkv(in Tensor q, in Tensor k, in Tensor v, in Tensor o, AttentionLayout layout, AttentionPrecision precision)
    {
        Check.F32(_backend, q, nameof(q), 4); Check.F32(_backend, k, nameof(k), 4);
        Check.F32(_backend, v, nameof(v), 4); Check.F32(_backend, o, nameof(o), 4);
        Check.SameShape(q, nameof(q), o, nameof(o)); Check.SameShape(k, nameof(k), v, nameof(v));
        bool headMajor = layout == AttentionLayout.HeadMajor;
        int hq = headMajor ? q.Dim(1) : q.Dim(2), hkv = headMajor ? k.Dim(1) : k.Dim(2);
        int t = headMajor ? q.Dim(2) : q.Dim(1), tk = headMajor ? k.Dim(2) : k.Dim(1);
        string names = headMajor ? "[B, H, T, D]" : "[B, T, H, D]";
        if (q.Dim(0) != k.Dim(0) || t > tk || q.Dim(3) != k.Dim(3))
            throw new ArgumentException($"q {q} and k {k} ({layout}, {names}) must agree on B and D, and k must hold at least q's T positions", nameof(k));
        if (hkv < 1 || hq % hkv != 0)
            throw new ArgumentException($"query heads ({hq}) must be a positive multiple of KV heads ({hkv}); q {q}, k {k} ({layout}, {names})", nameof(k));
        if (precision == AttentionPrecision.Int8) CheckHeadDim(q.Dim(3), nameof(q));
        else if (q.Dim(3) < 1 || q.Dim(3) > MaxHeadDim)
            throw new ArgumentException($"head dimension D = {q.Dim(3)} is not supported: fp32 attention takes D from 1 to {MaxHeadDim}", nameof(q));
        return new AttentionShape(q.Dim(0), hq, hkv, t, tk, q.Dim(3), layout);
    }

    private static void CheckHeadDim(int d, string name)
    {
        if (d < HeadDimMultiple || d > MaxHeadDim || d % HeadDimMultiple != 0)
            throw new ArgumentException($"head dimension D = {d} is not supported: it must be a multiple of {HeadDimMultiple} from {HeadDimMultiple} to {MaxHeadDim} " +
                "(int8 scores and the backward; fp32 prefill takes any D)", name);
    }

    private static float CheckScale(AttentionOptions options, int d)
    {
        float scale = options.ScaleFor(d);
        if (!(scale > 0) || !float.IsFinite(scale))
            throw new ArgumentOutOfRangeException(nameof(options), scale, "attention scale must be finite and positive");
        return scale;
    }

    private static int[] CheckLengths(ReadOnlySpan<int> lengths, int batch, int tokens)
    {
        if (lengths.IsEmpty) return Enumerable.Repeat(tokens, batch).ToArray();
        if (lengths.Length != batch)
            throw new ArgumentException($"lengths has {lengths.Length} values for a batch of {batch} sequences", nameof(lengths));
        for (int b = 0; b < batch; b++)
            if ((uint)lengths[b] > (uint)tokens)
                throw new ArgumentOutOfRangeException(nameof(lengths), lengths[b], $"lengths[{b}] = {lengths[b]} is outside [0, T = {tokens}] (key positions)");
        return lengths.ToArray();
    }

    private void CheckCache(Int8KvCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ObjectDisposedException.ThrowIf(cache.IsDisposed, cache);
        if (!ReferenceEquals(cache.Backend, _backend))
            throw new ArgumentException($"the KV cache lives on backend '{cache.Backend.Name}', not '{_backend.Name}'", nameof(cache));
    }
}
