namespace Rellax.Kernels.Ilgpu;

/// <summary>The ILGPU attention kernels. PLACEHOLDER until the kernels land: every method throws.</summary>
internal sealed class IlgpuAttentionKernels(IlgpuBackend backend) : IAttentionKernels
{
    private NotSupportedException Missing() => new($"the {backend.Name} backend has no attention kernels yet");

    public void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, AttentionShape shape, int[] lengths, float scale, bool causal,
        AttentionPrecision precision, bool smoothKeys) => throw Missing();

    public void Append(Int8KvCache cache, Tensor k, Tensor v, AttentionShape shape, int start) => throw Missing();

    public void Decode(Tensor q, Int8KvCache cache, Tensor o, AttentionShape shape, float scale, bool causal) => throw Missing();
}
