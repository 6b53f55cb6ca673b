namespace Rellax.Kernels;

/// <summary>
/// One adapted linear layer for <see cref="CfloraLinear.Forward(Tensor, ReadOnlySpan{CfloraModule}, CfloraBatch)"/>:
/// the frozen weight, its adapter factors, the per-sample interaction matrices and the output.
/// </summary>
/// <param name="W0">Frozen weight [d_out, d_in] as stored in HF files; f32, f16 or bf16.</param>
/// <param name="Bias">Optional f32 bias [d_out] of the frozen layer, or <see langword="null"/>.</param>
/// <param name="A">LoRA A (PEFT <c>lora_A.weight</c>) [r, d_in]; f32, f16 or bf16 (same dtype as B).</param>
/// <param name="B">LoRA B (PEFT <c>lora_B.weight</c>) [d_out, r]; same dtype as A.</param>
/// <param name="G">Interaction matrices f32 [S, r, r], one per sample, applied as t'_j = Σ_i t_i G[s][i][j]
/// (the reference code's G; C_s = G_sᵀ). Identity matrices give vanilla LoRA; see <c>CfloraInteractions</c>.</param>
/// <param name="Scale">Adapter scale, usually lora_alpha / r; finite.</param>
/// <param name="Y">Output f32 [T, d_out]; must not overlap any input.</param>
public readonly record struct CfloraModule(Tensor W0, Tensor? Bias, Tensor A, Tensor B, Tensor G, float Scale, Tensor Y);
