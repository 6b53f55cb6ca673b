namespace Rellax.Kernels.Cpu;

/// <summary>CPU implementation of the primitives (placeholder: scalar reference until the SIMD kernels land).</summary>
internal sealed class CpuPrimitiveKernels(CpuBackend backend) : IPrimitiveKernels
{
    private readonly CpuBackend _backend = backend;

    public void MatMulTransposed(Tensor x, Tensor w, Tensor y) =>
        PrimitivesReference.MatMul(CpuBackend.Span<float>(x), CpuBackend.Span<float>(w), CpuBackend.Span<float>(y), x.Dim(0), x.Dim(1), w.Dim(0));

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y) =>
        PrimitivesReference.RmsNorm(CpuBackend.Span<float>(x), CpuBackend.Span<float>(weight), eps, CpuBackend.Span<float>(y), x.Dim(-1));

    public void LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y) =>
        PrimitivesReference.LayerNorm(CpuBackend.Span<float>(x), CpuBackend.Span<float>(weight), CpuBackend.Span<float>(bias), eps, CpuBackend.Span<float>(y), x.Dim(-1));

    public void Rope(Tensor x, Tensor positions, Tensor cos, Tensor sin)
    {
        var pos = CpuBackend.Span<int>(positions);
        foreach (int p in pos)
            if ((uint)p >= (uint)cos.Dim(0))
                throw new ArgumentOutOfRangeException(nameof(positions), p, $"position outside the RoPE table of {cos.Dim(0)} positions");
        PrimitivesReference.Rope(CpuBackend.Span<float>(x), pos, CpuBackend.Span<float>(cos), CpuBackend.Span<float>(sin), x.Dim(1), x.Dim(2));
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor y) =>
        PrimitivesReference.SwiGlu(CpuBackend.Span<float>(gate), CpuBackend.Span<float>(up), CpuBackend.Span<float>(y));

    public void Gelu(Tensor x, Tensor y) => PrimitivesReference.Gelu(CpuBackend.Span<float>(x), CpuBackend.Span<float>(y));

    public void Softmax(Tensor x, Tensor y) => PrimitivesReference.Softmax(CpuBackend.Span<float>(x), CpuBackend.Span<float>(y), x.Dim(-1));

    public void Attention(Tensor q, Tensor k, Tensor v, Tensor o, float scale, bool causal) =>
        PrimitivesReference.Attention(CpuBackend.Span<float>(q), CpuBackend.Span<float>(k), CpuBackend.Span<float>(v), CpuBackend.Span<float>(o),
            q.Dim(0), k.Dim(0), q.Dim(1), k.Dim(1), q.Dim(2), scale, causal);

    public void Embedding(Tensor ids, Tensor table, Tensor y)
    {
        var idSpan = CpuBackend.Span<int>(ids);
        foreach (int id in idSpan)
            if ((uint)id >= (uint)table.Dim(0))
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the embedding table of {table.Dim(0)} rows");
        PrimitivesReference.Embedding(idSpan, CpuBackend.Span<float>(table), CpuBackend.Span<float>(y), table.Dim(1));
    }

    public void Add(Tensor a, Tensor b, Tensor y) => PrimitivesReference.Add(CpuBackend.Span<float>(a), CpuBackend.Span<float>(b), CpuBackend.Span<float>(y));
}
