namespace Rellax.Kernels;

/// <summary>One frozen linear layer for <see cref="BackwardOps.LinearInput"/>: its output gradient and its weight.</summary>
/// <param name="DY">Gradient of the loss with respect to the layer's output, f32 [T, d_out].</param>
/// <param name="W">The frozen weight [d_out, d_in] (as stored in HF files), f32, f16 or bf16.</param>
public readonly record struct FrozenLinearTerm(Tensor DY, Tensor W);
