namespace Rellax.Kernels;

/// <summary>One frozen linear layer for <see cref="BackwardOps.LinearInput"/>: its output gradient and its weight.</summary>
/// <param name="DY">Gradient of the loss with respect to the layer's output, f32 [T, d_out].</param>
/// <param name="W">The frozen weight [d_out, d_in] (as stored in HF files), f32, f16 or bf16; unused (default) when
/// <see cref="W8"/> is set.</param>
public readonly record struct FrozenLinearTerm(Tensor DY, Tensor W)
{
    /// <summary>A frozen int8 weight (an int8 base model): the backward reads it dequantized, <c>W = scale_row ⊙ W8</c>.</summary>
    /// <param name="dy">Gradient of the loss with respect to the layer's output, f32 [T, d_out].</param>
    /// <param name="w8">The quantized weight [d_out, d_in] from <see cref="Primitives.QuantizeInt8(Tensor)"/>.</param>
    public FrozenLinearTerm(Tensor dy, Int8Weights w8) : this(dy, default(Tensor)) => W8 = w8;

    /// <summary>The int8 weight, or null when <see cref="W"/> is the (dense) weight.</summary>
    public Int8Weights? W8 { get; init; }
}
