namespace Rellax.Kernels;

/// <summary>
/// One adapted linear layer for <see cref="CfloraLinear.Backward"/>: the forward's weights, the gradient of the loss
/// with respect to its output, and the parameter gradients wanted. With T token rows, S samples, forward
/// <c>y[t] = W0 x[t] (+ bias) + scale · B (G_sᵀ (A x[t]))</c>, u[t] = A x[t] and z[t] = Bᵀ dY[t]:
/// <code>
/// dA  = Σ_t du[t] ⊗ x[t]                du[t] = scale · G_s z[t]            [r, d_in]
/// dB  = Σ_t dY[t] ⊗ v[t]                v[t]  = scale · G_sᵀ u[t]            [d_out, r]
/// dG_s = scale · Σ_{t of s} u[t] ⊗ z[t]  (dG_s[i][j] = scale Σ_t u_i z_j)    [S, r, r]
/// </code>
/// The bias and W0 are frozen: no gradient is produced for them.
/// </summary>
/// <param name="W0">Frozen weight [d_out, d_in]; f32, f16 or bf16.</param>
/// <param name="A">LoRA A [r, d_in]; f32, f16 or bf16 (same dtype as B).</param>
/// <param name="B">LoRA B [d_out, r]; same dtype as A.</param>
/// <param name="G">Interaction matrices f32 [S, r, r] as in the forward, or <see langword="null"/> for the identity
/// (plain LoRA), which skips every r × r product (then <paramref name="DG"/> must be null).</param>
/// <param name="Scale">Adapter scale, usually lora_alpha / r; finite.</param>
/// <param name="DY">Gradient of the loss with respect to the module's output y, f32 [T, d_out].</param>
/// <param name="DA">Output: gradient with respect to A, f32 [r, d_in] (overwritten), or null when A is frozen.</param>
/// <param name="DB">Output: gradient with respect to B, f32 [d_out, r] (overwritten), or null when B is frozen.</param>
/// <param name="DG">Output: gradient with respect to G, f32 [S, r, r] (overwritten; a sample with no rows gets zeros),
/// or null when G is not trained (from which the generator's gradients follow).</param>
public readonly record struct CfloraBackwardModule(Tensor W0, Tensor A, Tensor B, Tensor? G, float Scale, Tensor DY,
    Tensor? DA = null, Tensor? DB = null, Tensor? DG = null)
{
    /// <summary>An int8 frozen weight in place of <see cref="W0"/> (left default then): an int8 base model, read dequantized
    /// (<c>scale_row ⊙ W8</c>) in the dX GEMM, the straight-through gradient of <see cref="BackwardOps.LinearInput"/>.</summary>
    public Int8Weights? W0Int8 { get; init; }

    /// <summary>d_out: rows of the frozen weight.</summary>
    internal int DOut => W0Int8?.Rows ?? W0.Dim(0);
}
