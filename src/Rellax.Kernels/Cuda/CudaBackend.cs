using ILGPU.Runtime.Cuda;
using Rellax.Interop;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// The CUDA backend: ILGPU's CUDA accelerator (its context, stream and device buffers) with the hand-written
/// kernels of <c>kernels/*.cu</c> loaded into the same context and launched on the same stream wherever one
/// exists (today: RMSNorm, the CFLoRA forward, SUBR top-K, int8 attention and the int8 linear layer); every other primitive runs as the ILGPU kernel. The <c>.cu</c> sources are compiled
/// with NVRTC at construction (cached on disk), or taken from a CMake-built fatbin when one is present.
/// </summary>
public sealed class CudaBackend : IlgpuBackend
{
    private CudaBackend(int deviceIndex)
        : base(IlgpuDeviceKind.Cuda, deviceIndex, static b => new CudaPrimitiveKernels(b),
            static b => new CudaCfloraKernels(b, ((CudaPrimitiveKernels)b.IlgpuKernels).Library))
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

    /// <summary>The int8 linear layer and gather run as <c>kernels/int8_linear.cu</c> (<see cref="CudaInt8LinearKernels"/>);
    /// quantization at load is ILGPU's (the same layout).</summary>
    private protected override IInt8LinearKernels CreateInt8LinearKernels() => new CudaInt8LinearKernels(this, ((CudaPrimitiveKernels)IlgpuKernels).Library);

    /// <summary>SUBR runs as <c>kernels/subr_topk.cu</c> (<see cref="CudaSubrKernels"/>), not as the ILGPU kernel.</summary>
    private protected override ISubrKernels CreateSubrKernels() => new CudaSubrKernels(this, ((CudaPrimitiveKernels)IlgpuKernels).Library);

    /// <summary>
    /// Int8 attention (prefill, KV-cache append and decode) runs as <c>kernels/int8_attention.cu</c>
    /// (<see cref="CudaAttentionKernels"/>); fp32-precision prefill is delegated to the ILGPU attention kernels.
    /// </summary>
    private protected override IAttentionKernels CreateAttentionKernels()
    {
        var fp32 = base.CreateAttentionKernels();
        try
        {
            return new CudaAttentionKernels(this, ((CudaPrimitiveKernels)IlgpuKernels).Library, fp32);
        }
        catch
        {
            (fp32 as IDisposable)?.Dispose();
            throw;
        }
    }

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

/// <summary>
/// ILGPU's CFLoRA kernels with the forward replaced by <c>kernels/cflora.cu</c> (f32, f16 and bf16 weights, r up to
/// <see cref="CudaCflora.MaxRank"/>; anything else falls back to the ILGPU kernels). The generator stays ILGPU's.
/// Shares the primitives' <see cref="CudaKernelLibrary"/> (one per backend, disposed by <see cref="CudaBackend"/>).
/// </summary>
internal sealed class CudaCfloraKernels : IlgpuCfloraKernels
{
    private readonly CudaKernelLibrary _library;
    private readonly CudaCflora _cflora;

    public CudaCfloraKernels(IlgpuBackend backend, CudaKernelLibrary library) : base(backend)
    {
        _library = library;
        try
        {
            _cflora = new CudaCflora(library);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private IntPtr StreamHandle => ((CudaStream)Backend.Stream).StreamPtr;

    private static CUdeviceptr Pointer(in Tensor t) => CUdeviceptr.FromIntPtr(IlgpuBuffer.DevicePointer(t));

    private static bool Supported(DType d) => d is DType.F32 or DType.F16 or DType.BF16;

    public override void Forward(Tensor x, ReadOnlySpan<CfloraModule> modules, Tensor rowSample)
    {
        int maxR = 0;
        foreach (var m in modules)
        {
            int r = m.A.Dim(0);
            if (r > CudaCflora.MaxRank || !Supported(m.W0.DType) || !Supported(m.A.DType)
                || (x.Dim(0) + CudaCflora.GemmTile - 1) / CudaCflora.GemmTile > 65535)
            {
                base.Forward(x, modules, rowSample);
                return;
            }
            maxR = Math.Max(maxR, r);
        }
        int rows = x.Dim(0), din = x.Dim(1);
        var v = AdapterScratch(rows, maxR);
        // The launches must see ILGPU's context current on this thread (a no-op scope when it already is).
        using var scope = CudaDriver.Enter(_library.Context);
        foreach (var m in modules)
        {
            int r = m.A.Dim(0), dout = m.W0.Dim(0);
            _cflora.LaunchDown(StreamHandle, Pointer(x), Pointer(m.A), m.A.DType, Pointer(m.G), Pointer(rowSample), Pointer(v),
                rows, din, r, m.Scale);
            var bias = m.Bias is { } b ? Pointer(b) : default;
            _cflora.LaunchGemm(StreamHandle, Pointer(x), Pointer(v), Pointer(m.W0), m.W0.DType, Pointer(m.B), m.B.DType,
                bias, Pointer(m.Y), rows, dout, din, r);
        }
    }

    /// <summary>The backward through <c>kernels/cflora.cu</c>'s <c>rellax_cflora_back_*</c> kernels (same fallbacks as the forward).</summary>
    public override void Backward(Tensor x, ReadOnlySpan<CfloraBackwardModule> modules, Tensor rowSample, int samples, Tensor? dx)
    {
        int maxR = 0;
        foreach (var m in modules)
        {
            int r = m.A.Dim(0);
            if (r > CudaCflora.MaxRank || !Supported(m.W0.DType) || !Supported(m.A.DType)
                || (x.Dim(0) + CudaCflora.GemmTile - 1) / CudaCflora.GemmTile > 65535)
            {
                base.Backward(x, modules, rowSample, samples, dx);
                return;
            }
            maxR = Math.Max(maxR, r);
        }
        int rows = x.Dim(0), din = x.Dim(1);
        var scratch = BackwardScratch(rows, maxR);
        using var scope = CudaDriver.Enter(_library.Context);
        for (int i = 0; i < modules.Length; i++)
        {
            var m = modules[i];
            _cflora.LaunchBackward(_library, StreamHandle, Pointer(x), Pointer(m.DY), Pointer(m.W0), m.W0.DType, Pointer(m.A), Pointer(m.B),
                m.A.DType, m.G is { } g ? Pointer(g) : default, Pointer(rowSample), Pointer(scratch),
                m.DA is { } da ? Pointer(da) : default, m.DB is { } db ? Pointer(db) : default, m.DG is { } dg ? Pointer(dg) : default,
                dx is { } d ? Pointer(d) : default, rows, samples, din, m.W0.Dim(0), m.A.Dim(0), m.Scale, accumulate: i > 0);
        }
    }
}

/// <summary>
/// SUBR top-K as <c>kernels/subr_topk.cu</c> (f32, f16 and i8 tables, k up to <see cref="CudaSubr.MaxK"/>), launched
/// on the backend's stream with the device addresses of its ILGPU buffers, so it is ordered with every other kernel and
/// copy of the backend. Shares the primitives' <see cref="CudaKernelLibrary"/> (one per backend, disposed by
/// <see cref="CudaBackend"/>).
/// </summary>
internal sealed class CudaSubrKernels : ISubrKernels
{
    private readonly IlgpuBackend _backend;
    private readonly CudaKernelLibrary _library;
    private readonly CudaSubr _subr;

    public CudaSubrKernels(IlgpuBackend backend, CudaKernelLibrary library)
    {
        _backend = backend;
        _library = library;
        _subr = new CudaSubr(library);
    }

    private IntPtr StreamHandle => ((CudaStream)_backend.Stream).StreamPtr;

    private static CUdeviceptr Pointer(in Tensor t) => CUdeviceptr.FromIntPtr(IlgpuBuffer.DevicePointer(t));

    /// <inheritdoc/>
    public void TopK(Tensor table, Tensor scales, Tensor history, Tensor offsets, Tensor targets, int k, bool byScore,
        Tensor positions, Tensor scores)
    {
        int samples = targets.Dim(0);
        if (samples == 0) return;
        // An empty batch of histories still has a one-element device buffer (SubrQueries.On): its pointer is valid.
        var historyPointer = Pointer(history);
        var scalesPointer = table.DType == DType.I8 ? Pointer(scales) : default;
        // The launch must see ILGPU's context current on this thread (a no-op scope when it already is).
        using var scope = CudaDriver.Enter(_library.Context);
        _subr.Launch(StreamHandle, Pointer(table), table.DType, scalesPointer, historyPointer, Pointer(offsets), Pointer(targets),
            samples, table.Dim(1), k, byScore, Pointer(positions), Pointer(scores));
    }
}
