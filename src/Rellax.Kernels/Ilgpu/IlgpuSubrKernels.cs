namespace Rellax.Kernels.Ilgpu;

/// <summary>SUBR top-K on ILGPU (placeholder until the kernel lands).</summary>
internal class IlgpuSubrKernels(IlgpuBackend backend) : ISubrKernels
{
    private readonly IlgpuBackend _backend = backend;

    public virtual void TopK(Tensor table, Tensor scales, Tensor history, Tensor offsets, Tensor targets, int k, bool byScore,
        Tensor positions, Tensor scores) => throw new NotImplementedException($"SUBR on {_backend.Name} is not written yet");
}
