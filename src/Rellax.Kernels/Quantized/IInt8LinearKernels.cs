namespace Rellax.Kernels;

/// <summary>
/// One backend's int8 linear layer (LLM.int8()-style W8A8). Arguments arrive checked by <see cref="Primitives"/>:
/// dtypes, shapes and backends agree, tensors are contiguous, the threshold is finite and positive.
/// </summary>
internal interface IInt8LinearKernels
{
    /// <summary>Quantizes w (f32, f16 or bf16 [N, K], finite) per row into a new <see cref="Int8Weights"/> whose activations
    /// will be quantized in groups of <paramref name="groupSize"/> columns (a multiple of 4, checked).</summary>
    Int8Weights Quantize(Tensor w, int groupSize);

    /// <summary>
    /// y[M,N] = x[M,K] · dequant(w)ᵀ (+ bias[N]) with activations quantized per row and group of w.GroupSize columns, and input columns whose largest
    /// |x| exceeds <paramref name="threshold"/> kept in fp32 (<see cref="PrimitivesReference.LinearInt8"/> defines it).
    /// </summary>
    void Linear(Tensor x, Int8Weights w, Tensor? bias, Tensor y, float threshold);

    /// <summary>y[t, :] = q[ids[t], :] · scale[ids[t]] (ids i32 [T], in range; y f32 [T, K]): the int8 embedding gather.</summary>
    void Embedding(Tensor ids, Int8Weights table, Tensor y);

    /// <summary>The values of w row-major [N·K].</summary>
    sbyte[] ReadValues(Int8Weights w);
}
