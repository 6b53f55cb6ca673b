namespace Rellax.Kernels;

/// <summary>
/// One backend's implementation of the transformer primitives. Arguments arrive already checked by
/// <see cref="Primitives"/>: dtypes, shapes, backends and ranges are valid, tensors are contiguous views.
/// Kernels may run asynchronously; outputs never alias inputs unless the method says so.
/// </summary>
internal interface IPrimitiveKernels
{
    /// <summary>y[M,N] = x[M,K] · w[N,K]^T (all f32).</summary>
    void MatMulTransposed(Tensor x, Tensor w, Tensor y);

    /// <summary>y[M,N] = x[M,K] · w[N,K]^T (+ bias[N]); x, y, bias f32; w f32, f16 or bf16 (widened, fp32 accumulation).</summary>
    void Linear(Tensor x, Tensor w, Tensor? bias, Tensor y);

    /// <summary>dst[rows[i], :] = src[i, :] with src f32[n,H], rows i32[n] (distinct, in range), dst f32[R,H].</summary>
    void ScatterRows(Tensor src, Tensor rows, Tensor dst);

    /// <summary>y[R,N] = x / sqrt(mean(x^2) + eps) * weight[N], per row.</summary>
    void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y);

    /// <summary>y[R,N] = (x - mean) / sqrt(var + eps) * weight[N] + bias[N], per row (biased variance).</summary>
    void LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y);

    /// <summary>In place on x[T,H,D]: HF rotate_half RoPE with angles cos/sin[P, D/2] at positions[T] (i32).</summary>
    void Rope(Tensor x, Tensor positions, Tensor cos, Tensor sin);

    /// <summary>y = silu(gate) * up, elementwise over [R,N].</summary>
    void SwiGlu(Tensor gate, Tensor up, Tensor y);

    /// <summary>y = x * Phi(x) (exact erf GELU), elementwise. May run in place (y == x).</summary>
    void Gelu(Tensor x, Tensor y);

    /// <summary>Row softmax over the last axis of x[R,N]. May run in place.</summary>
    void Softmax(Tensor x, Tensor y);

    /// <summary>y[T,H] = table[ids[t], :] with ids i32[T]; table f32, f16 or bf16 (widened to f32).</summary>
    void Embedding(Tensor ids, Tensor table, Tensor y);

    /// <summary>y = a + b, elementwise. May run in place (y == a or y == b).</summary>
    void Add(Tensor a, Tensor b, Tensor y);
}
