namespace Rellax.Kernels.Cpu;

/// <summary>SUBR top-K on the CPU (placeholder until the SIMD kernel lands).</summary>
internal sealed class CpuSubr(CpuBackend backend) : ISubrKernels
{
    private readonly CpuBackend _backend = backend;

    public void TopK(Tensor table, Tensor scales, Tensor history, Tensor offsets, Tensor targets, int k, bool byScore,
        Tensor positions, Tensor scores) => throw new NotImplementedException($"SUBR on {_backend.Name} is not written yet");
}
