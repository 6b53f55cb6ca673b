namespace Rellax.Kernels;

/// <summary>
/// One backend's attention kernels. Arguments arrive checked by <see cref="FlashAttention"/>: f32 tensors of the
/// shapes <see cref="AttentionShape.QueryShape"/> (q, o) and <see cref="AttentionShape.KeyShape"/> (k, v) give
/// (Tq ≤ Tk), on this backend, contiguous, o not overlapping the inputs; Hq a multiple of Hkv; D up to
/// <see cref="FlashAttention.MaxHeadDim"/> (a multiple of <see cref="FlashAttention.HeadDimMultiple"/> for int8 and the
/// backward); a finite positive scale. <see cref="AttentionReference"/> is the ground truth of every method (its int8
/// functions are the exact quantization contract). Every forward method is implemented on every backend; Kernels may run
/// asynchronously.
/// </summary>
internal interface IAttentionKernels
{
    /// <summary>
    /// Prefill: for every sequence b, query head h and query t (key position Tk − Tq + t),
    /// <c>o[b, h, t] = Σ_j p_j v[b, h / group, j]</c> over the visible keys j (<see cref="FlashAttention"/>'s masking;
    /// padding query rows get 0), with p the
    /// softmax of <c>scale · q·k</c>; scores in fp32 or as <see cref="AttentionReference.Int8Prefill"/> defines
    /// (smoothing only when <paramref name="smoothKeys"/>).
    /// </summary>
    /// <remarks><paramref name="lengths"/> is a host copy: B values in [0, Tk] (real key positions).</remarks>
    void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, AttentionShape shape, int[] lengths, float scale, bool causal,
        AttentionPrecision precision, bool smoothKeys);

    /// <summary>
    /// Quantizes <c>shape.Tokens</c> new tokens (k, v in <c>shape.Layout</c>, Hq = Hkv = the cache's heads) into
    /// cache positions <c>[start, start + Tn)</c> as <see cref="AttentionReference.QuantizeIntoCache"/> defines.
    /// When <paramref name="start"/> is 0 it first writes the key mean over each sequence's valid tokens (the padding
    /// is already in <see cref="Int8KvCache.Padding"/>). Positions below a sequence's padding get zeros.
    /// </summary>
    void Append(Int8KvCache cache, Tensor k, Tensor v, AttentionShape shape, int start);

    /// <summary>
    /// Decode: query t (of <c>shape.Tokens</c>) is cache position <c>Count - Tq + t</c>; it sees the cache positions j
    /// in <c>[padding[b], Count)</c> with, when causal, <c>j ≤</c> its own position; as
    /// <see cref="AttentionReference.Int8Decode"/> defines.
    /// </summary>
    void Decode(Tensor q, Int8KvCache cache, Tensor o, AttentionShape shape, float scale, bool causal);

    /// <summary>
    /// Fp32 prefill as the other <c>Prefill</c> that also writes each query row's log-sum-exp of its visible logits,
    /// <c>lse[b, h, t] = ln Σ_j exp(scale · q·k_j)</c> (natural log; f32 [B, Hq, Tq] whatever the layout; padding rows get
    /// −∞, the log of an empty sum), which <see cref="Backward"/> uses to recompute P without a second softmax pass.
    /// </summary>
    void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape, int[] lengths, float scale, bool causal) =>
        throw new NotSupportedException($"this backend has no attention forward that saves the log-sum-exp yet");

    /// <summary>
    /// The backward of fp32 prefill (FlashAttention-2 style): with P recomputed as <c>exp(scale · q·k_j − lse)</c> over the
    /// visible keys and <c>D_t = dO_t · o_t</c>: <c>dV_j = Σ_t P_tj dO_t</c>, <c>dS_tj = P_tj (dO_t · v_j − D_t)</c>,
    /// <c>dQ_t = scale Σ_j dS_tj k_j</c>, <c>dK_j = scale Σ_t dS_tj q_t</c>, summed over the query heads of a KV head.
    /// dq has q's shape, dk and dv k's; all overwritten (padding rows get 0). Tq = Tk only (checked by the front).
    /// </summary>
    void Backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, Tensor dq, Tensor dk, Tensor dv,
        AttentionShape shape, int[] lengths, float scale, bool causal) =>
        throw new NotSupportedException($"this backend has no attention backward yet");
}
