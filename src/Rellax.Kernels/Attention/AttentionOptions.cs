namespace Rellax.Kernels;

/// <summary>How <see cref="FlashAttention"/> computes the scores <c>q·kᵀ</c>.</summary>
public enum AttentionPrecision
{
    /// <summary>fp32 scores, fp32 softmax and P·V: the accuracy (and speed) reference of the same flash-style kernel.</summary>
    Fp32,

    /// <summary>
    /// SageAttention-style (SPEC §7): K smoothed (its per-channel mean over each sequence's valid tokens subtracted,
    /// exact under softmax), Q and K quantized to int8 with one fp32 scale per token and head (the softmax scale folded
    /// into Q's), int8 dot products with int32 accumulation, online softmax in fp32, P·V in fp32 (never int8 P).
    /// </summary>
    Int8,
}

/// <summary>The memory layout of the 4-D q, k, v and o tensors given to <see cref="FlashAttention"/>.</summary>
public enum AttentionLayout
{
    /// <summary><c>[B, H, T, D]</c>: each head's tokens contiguous (PyTorch's <c>scaled_dot_product_attention</c>).</summary>
    HeadMajor,

    /// <summary><c>[B, T, H, D]</c>: each token's heads contiguous, the layout the Q/K/V projections produce
    /// (<c>[B·T, H·D]</c> viewed as 4-D), so a model needs no transpose.</summary>
    TokenMajor,
}

/// <summary>Options of one <see cref="FlashAttention"/> call. The defaults are int8, head-major, causal, 1/√D.</summary>
public sealed record AttentionOptions
{
    /// <summary>The shared default instance.</summary>
    public static AttentionOptions Default { get; } = new();

    /// <summary>Score precision (default <see cref="AttentionPrecision.Int8"/>).</summary>
    public AttentionPrecision Precision { get; init; } = AttentionPrecision.Int8;

    /// <summary>Layout of q, k, v and o (default <see cref="AttentionLayout.HeadMajor"/>).</summary>
    public AttentionLayout Layout { get; init; } = AttentionLayout.HeadMajor;

    /// <summary>Logit scale; <c>null</c> (the default) means 1/√D. Must be finite and &gt; 0.</summary>
    public float? Scale { get; init; }

    /// <summary>Whether query t is masked from keys after its own position (default true).</summary>
    public bool Causal { get; init; } = true;

    /// <summary>
    /// Int8 only: subtract K's per-channel mean before quantizing (default true). Turning it off exists to measure
    /// what smoothing buys (keys with outlier channels lose their small channels to the shared scale).
    /// </summary>
    internal bool SmoothKeys { get; init; } = true;

    internal float ScaleFor(int headDim) => Scale ?? 1f / MathF.Sqrt(headDim);
}
