namespace Rellax.Kernels;

/// <summary>
/// One backend's CFLoRA kernels. Arguments arrive checked by <see cref="CfloraLinear"/>: shapes agree, tensors are
/// contiguous and on this backend, the row index is valid. Kernels may run asynchronously.
/// </summary>
internal interface ICfloraKernels
{
    /// <summary>
    /// For every module m (all reading the same x[T, d_in]) and row t with s = rowSample[t]:
    /// <c>y_m[t] = w0_m x[t] (+ bias_m) + scale_m · b_m (G_m[s]ᵀ (a_m x[t]))</c>, fp32 accumulation.
    /// w0 is f32, f16 or bf16 [d_out, d_in]; a [r, d_in] and b [d_out, r] share one of those dtypes;
    /// G f32 [S, r, r] row-major (G[s][i][j]); rowSample i32 [T]; y f32 [T, d_out].
    /// </summary>
    void Forward(Tensor x, ReadOnlySpan<CfloraModule> modules, Tensor rowSample);

    /// <summary>
    /// The CFLoRA generator, batched over samples: <c>g[s] = W2 · GELU(W1 · LayerNorm(h[s]) + b1) + b2</c>.
    /// h f32 [S, d_h]; lnWeight, lnBias f32 [d_h]; w1 f32 [2r², d_h]; b1 f32 [2r²]; w2 f32 [r², 2r²]; b2 f32 [r²];
    /// g f32 [S, r, r] (the r² outputs read row-major). GELU is the exact erf form.
    /// </summary>
    void Generate(Tensor h, Tensor lnWeight, Tensor lnBias, float lnEps, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor g);

    /// <summary>
    /// The backward of <see cref="Forward"/> for modules that all read x [T, d_in] (semantics in
    /// <see cref="CfloraBackwardModule"/>): each module's requested dA, dB, dG (overwritten), and, when
    /// <paramref name="dx"/> is given, <c>dX = Σ_m (dY_m W0_m + du_m A_m)</c> f32 [T, d_in] (overwritten). A null G is the
    /// identity. rowSample i32 [T], each in [0, samples).
    /// </summary>
    void Backward(Tensor x, ReadOnlySpan<CfloraBackwardModule> modules, Tensor rowSample, int samples, Tensor? dx);
}

/// <summary>Backends that can add the adapter term alone (for base layers computed by another op, e.g. int8).</summary>
internal interface ICfloraAdapterKernels
{
    /// <summary>y[t] += scale · b (G[rowSample[t]]ᵀ (a x[t])); shapes as in <see cref="ICfloraKernels.Forward"/>.</summary>
    void AddAdapter(Tensor x, Tensor a, Tensor b, Tensor g, float scale, Tensor rowSample, Tensor y);
}
