using ILGPU.Runtime.Cuda;
using Rellax.Interop;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// The CUDA backend: ILGPU's CUDA accelerator (its context, stream and device buffers) with the hand-written
/// kernels of <c>kernels/*.cu</c> loaded into the same context and launched on the same stream wherever one
/// exists (today: RMSNorm); every other primitive runs as the ILGPU kernel. The <c>.cu</c> sources are compiled
/// with NVRTC at construction (cached on disk), or taken from a CMake-built fatbin when one is present.
/// </summary>
public sealed class CudaBackend : IlgpuBackend
{
    private CudaBackend(int deviceIndex)
        : base(IlgpuDeviceKind.Cuda, deviceIndex, static b => new CudaPrimitiveKernels(b))
    {
    }

    /// <summary>Creates the backend on CUDA device <paramref name="deviceIndex"/>.</summary>
    /// <exception cref="InvalidOperationException">CUDA is not available here; the message says why (no driver, no device, ...).</exception>
    public static CudaBackend Create(int deviceIndex = 0)
    {
        var probe = CudaAvailability.Probe(deviceIndex);
        if (!probe.Available) throw new InvalidOperationException($"the cuda backend is not available: {probe.Reason}");
        return new CudaBackend(deviceIndex);
    }

    /// <summary>Where the hand-written kernels came from (fatbin path or NVRTC version and target).</summary>
    public string KernelOrigin => ((CudaPrimitiveKernels)IlgpuKernels).Library.Origin;

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (!IsDisposed) ((CudaPrimitiveKernels)IlgpuKernels).Library.Dispose();
        base.Dispose();
    }
}

/// <summary>ILGPU's primitives with the hand-written CUDA kernels substituted where they exist.</summary>
internal sealed class CudaPrimitiveKernels : IlgpuPrimitiveKernels
{
    private readonly CudaRmsNorm _rmsNorm;

    public CudaPrimitiveKernels(IlgpuBackend backend) : base(backend)
    {
        var accelerator = (CudaAccelerator)backend.Accelerator;
        Library = CudaKernelLibrary.Load(accelerator.NativePtr);
        try
        {
            _rmsNorm = new CudaRmsNorm(Library);
        }
        catch
        {
            Library.Dispose();
            throw;
        }
    }

    /// <summary>The hand-written kernels, loaded into the accelerator's context.</summary>
    public CudaKernelLibrary Library { get; }

    private IntPtr StreamHandle => ((CudaStream)Backend.Stream).StreamPtr;

    private static CUdeviceptr Pointer(in Tensor t) => CUdeviceptr.FromIntPtr(IlgpuBuffer.DevicePointer(t));

    public override void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y)
    {
        // The launch must see ILGPU's context current on this thread (a no-op scope when it already is).
        using var scope = CudaDriver.Enter(Library.Context);
        _rmsNorm.Launch(StreamHandle, Pointer(x), Pointer(weight), Pointer(y), x.Rows, x.Dim(-1), eps);
    }
}
