using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace Rellax.Kernels.Ilgpu;

/// <summary>
/// The ILGPU backend: one ILGPU <see cref="ILGPU.Context"/> and one accelerator (CUDA, OpenCL or the CPU
/// emulator), device buffers in accelerator memory, and the primitive kernels compiled once at construction.
/// All work is queued on the accelerator's default stream; <see cref="Synchronize"/> waits for it.
/// </summary>
/// <remarks>
/// Designed for one subclass: the CUDA backend derives from it on a CUDA accelerator and replaces some
/// kernels with hand-written ones that share <see cref="Accelerator"/> and <see cref="Stream"/>
/// (same CUDA context, same stream), through the kernel factory of the internal constructor.
/// A backend is not thread-safe: queue work on it from one thread at a time.
/// </remarks>
public class IlgpuBackend : ComputeBackend
{
    private readonly Context _context;
    private readonly IlgpuPrimitiveKernels _primitives;
    private readonly Func<IlgpuBackend, IlgpuCfloraKernels> _cfloraFactory;
    private IlgpuCfloraKernels? _cflora;
    private ISubrKernels? _subr;
    private IAttentionKernels? _attention;
    private IInt8LinearKernels? _int8;
    private bool _disposed;

    /// <summary>Creates a backend on device <paramref name="deviceIndex"/> of <paramref name="kind"/> (see <see cref="ListDevices"/>).</summary>
    /// <exception cref="InvalidOperationException">No such device, or the accelerator could not be created.</exception>
    public IlgpuBackend(IlgpuDeviceKind kind, int deviceIndex = 0) : this(kind, deviceIndex, static b => new IlgpuPrimitiveKernels(b)) { }

    /// <summary>As the factory constructor below, with the ILGPU CFLoRA kernels.</summary>
    internal IlgpuBackend(IlgpuDeviceKind kind, int deviceIndex, Func<IlgpuBackend, IlgpuPrimitiveKernels> kernelFactory)
        : this(kind, deviceIndex, kernelFactory, static b => new IlgpuCfloraKernels(b)) { }

    /// <summary>
    /// Creates the accelerator, then the kernels through <paramref name="kernelFactory"/> (called once, at the end of
    /// construction, when <see cref="Accelerator"/> and <see cref="Stream"/> are set; subclass fields are not yet).
    /// The CUDA backend passes a factory that returns an <see cref="IlgpuPrimitiveKernels"/> subclass overriding
    /// the kernels it replaces; tests use it to check that replacement reaches <see cref="ComputeBackend.Primitives"/>.
    /// <paramref name="cfloraFactory"/> creates the CFLoRA kernels on first use of <see cref="ComputeBackend.Cflora"/>
    /// (after the primitives exist, so a CUDA subclass can share their kernel library); they are loaded once then.
    /// </summary>
    internal IlgpuBackend(IlgpuDeviceKind kind, int deviceIndex, Func<IlgpuBackend, IlgpuPrimitiveKernels> kernelFactory,
        Func<IlgpuBackend, IlgpuCfloraKernels> cfloraFactory)
    {
        _cfloraFactory = cfloraFactory;
        ArgumentOutOfRangeException.ThrowIfNegative(deviceIndex);
        Kind = kind;
        Context? context = null;
        Accelerator? accelerator = null;
        try
        {
            context = IlgpuDevices.CreateContext(kind);
            var devices = IlgpuDevices.DevicesOf(context, kind);
            if (deviceIndex >= devices.Count)
                throw new InvalidOperationException($"ILGPU found {devices.Count} {kind} device(s); device {deviceIndex} does not exist");
            accelerator = devices[deviceIndex] is CPUDevice cpu
                // Parallel, not Auto: Auto turns sequential under a debugger, which deadlocks on group barriers.
                ? cpu.CreateCPUAccelerator(context, CPUAcceleratorMode.Parallel)
                : devices[deviceIndex].CreateAccelerator(context);
            _context = context;
            Accelerator = accelerator;
            Stream = accelerator.DefaultStream;
            Name = $"ilgpu:{kind}:{accelerator.Name}";
            _primitives = kernelFactory(this);
        }
        catch (Exception e)
        {
            accelerator?.Dispose();
            context?.Dispose();
            if (e is InvalidOperationException) throw;
            throw new InvalidOperationException($"could not create an ILGPU {kind} accelerator (device {deviceIndex}): {e.Message}", e);
        }
    }

    /// <summary>
    /// Creates a backend on the best device present: the first CUDA device, else the first OpenCL device,
    /// else the CPU emulator (which always works, slowly).
    /// </summary>
    public static IlgpuBackend CreateBest()
    {
        foreach (var kind in new[] { IlgpuDeviceKind.Cuda, IlgpuDeviceKind.OpenCL })
        {
            try { return new IlgpuBackend(kind); }
            catch (InvalidOperationException) { /* no usable device of this kind; try the next */ }
        }
        return new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
    }

    /// <summary>Lists the devices ILGPU can use here and why any family is missing. Never throws for missing drivers.</summary>
    public static IlgpuProbe Probe() => IlgpuDevices.Probe();

    /// <summary>The devices ILGPU can use here, CUDA first, then OpenCL, then the CPU emulator. Never throws for missing drivers.</summary>
    public static IReadOnlyList<IlgpuDeviceInfo> ListDevices() => IlgpuDevices.Probe().Devices;

    /// <summary>The accelerator family this backend runs on.</summary>
    public IlgpuDeviceKind Kind { get; }

    /// <inheritdoc/>
    public override string Name { get; }

    /// <summary>The ILGPU accelerator (for the CUDA backend: a <c>CudaAccelerator</c> whose context hand-written kernels share).</summary>
    internal Accelerator Accelerator { get; }

    /// <summary>The stream every kernel and copy of this backend is queued on.</summary>
    internal AcceleratorStream Stream { get; }

    /// <summary>The ILGPU kernels of this backend (a subclass may have replaced some of them).</summary>
    internal IlgpuPrimitiveKernels IlgpuKernels => _primitives;

    internal override IPrimitiveKernels PrimitiveKernels => _primitives;

    /// <summary>The CFLoRA kernels, created (and compiled) on first use.</summary>
    internal IlgpuCfloraKernels IlgpuCfloraKernels
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _cflora ??= _cfloraFactory(this);
        }
    }

    internal override ICfloraKernels CfloraKernels => IlgpuCfloraKernels;

    /// <summary>The SUBR kernel, created (and compiled) on first use of <see cref="ComputeBackend.Subr"/>.</summary>
    internal override ISubrKernels SubrKernels
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _subr ??= CreateSubrKernels();
        }
    }

    /// <summary>Creates this backend's SUBR kernel; the CUDA backend returns its hand-written one.</summary>
    private protected virtual ISubrKernels CreateSubrKernels() => new IlgpuSubrKernels(this);

    /// <summary>The attention kernels, created (and compiled) on first use of <see cref="ComputeBackend.Attention"/>.</summary>
    internal override IAttentionKernels AttentionKernels
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _attention ??= CreateAttentionKernels();
        }
    }

    /// <summary>Creates this backend's attention kernels; the CUDA backend returns its hand-written ones.</summary>
    private protected virtual IAttentionKernels CreateAttentionKernels() => new IlgpuAttentionKernels(this);

    /// <summary>The int8 linear kernels (<see cref="CreateInt8LinearKernels"/>), compiled on first use.</summary>
    internal override IInt8LinearKernels Int8LinearKernels
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _int8 ??= CreateInt8LinearKernels();
        }
    }

    /// <summary>Creates this backend's int8 linear kernels (<see cref="IlgpuInt8Linear"/>); the CUDA backend returns its
    /// hand-written ones.</summary>
    private protected virtual IInt8LinearKernels CreateInt8LinearKernels() => new IlgpuInt8Linear(this);

    /// <inheritdoc/>
    public override DeviceBuffer Allocate(DType dtype, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new IlgpuBuffer(this, dtype, length);
    }

    /// <inheritdoc/>
    public override void Synchronize()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Stream.Synchronize();
    }

    /// <summary>True once disposed; buffers check it so that freeing after the backend is a no-op.</summary>
    internal bool IsDisposed => _disposed;

    /// <summary>Disposes the accelerator (which frees any buffer still alive) and the context. Idempotent.</summary>
    public override void Dispose()
    {
        if (_disposed) return;
        _cflora?.Dispose();
        (_subr as IDisposable)?.Dispose();
        (_attention as IDisposable)?.Dispose();
        _disposed = true;
        Accelerator.Dispose();
        _context.Dispose();
        base.Dispose();
    }
}
