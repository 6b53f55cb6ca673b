namespace Rellax.Kernels.Cpu;

/// <summary>The SIMD CPU implementation of <see cref="IBackwardKernels"/>, split over partial files like the front.</summary>
internal sealed partial class CpuBackwardKernels(CpuBackend backend) : IBackwardKernels
{
    private readonly CpuBackend _backend = backend;
}
