namespace Rellax.Kernels;

// The frozen Llama layer's dX-only backward kernels; semantics and argument rules in BackwardOps.Llama.cs.
internal partial interface IBackwardKernels
{
    /// <summary>RMSNorm backward (weight frozen): dx from x [rows, N], weight [N], eps, dy (dx may be dy).</summary>
    void RmsNorm(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx);

    /// <summary>dx = Σ_m dY_m · W_m over frozen f32/f16/bf16 weights (valid, non-empty).</summary>
    void LinearInput(ReadOnlySpan<FrozenLinearTerm> terms, Tensor dx);

    /// <summary>RoPE backward in place on dy [T, H, D]: the inverse rotation (positions i32 [T], cos/sin [P, D/2]).</summary>
    void Rope(Tensor dy, Tensor positions, Tensor cos, Tensor sin);

    /// <summary>SwiGLU backward: dGate, dUp from gate, up, dy (outputs may be exactly an input).</summary>
    void SwiGlu(Tensor gate, Tensor up, Tensor dy, Tensor dGate, Tensor dUp);
}
