using System.Runtime.InteropServices;

namespace Rellax.Interop;

/// <summary>An owned <c>CUmodule</c>; unloads it (with its context pushed) when released.</summary>
public sealed class CudaModuleHandle : SafeHandle
{
    internal CudaModuleHandle(IntPtr module, IntPtr context)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(module);
        Context = context;
    }

    /// <summary>The context the module was loaded into.</summary>
    public IntPtr Context { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc />
    protected override bool ReleaseHandle() =>
        CudaHandleRelease.InContext(Context, () => CudaDriverNative.cuModuleUnload(handle));
}

/// <summary>An owned device allocation (<c>cuMemAlloc_v2</c>); freed with its context pushed when released.</summary>
public sealed class CudaDeviceMemoryHandle : SafeHandle
{
    internal CudaDeviceMemoryHandle(CUdeviceptr pointer, IntPtr context)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle((IntPtr)(long)pointer.Value);
        Context = context;
    }

    /// <summary>The context the memory belongs to.</summary>
    public IntPtr Context { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc />
    protected override bool ReleaseHandle() =>
        CudaHandleRelease.InContext(Context, () => CudaDriverNative.cuMemFree(CUdeviceptr.FromIntPtr(handle)));
}

/// <summary>A retained primary context (<c>cuDevicePrimaryCtxRetain</c>); released on dispose.</summary>
public sealed class CudaPrimaryContextHandle : SafeHandle
{
    internal CudaPrimaryContextHandle(IntPtr context, int device)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(context);
        Device = device;
    }

    /// <summary>The device (<c>CUdevice</c>) whose primary context this is.</summary>
    public int Device { get; }

    /// <summary>The <c>CUcontext</c> handle (valid while this object is not disposed).</summary>
    public IntPtr Context => handle;

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc />
    protected override bool ReleaseHandle() =>
        CudaHandleRelease.Tolerated(CudaDriverNative.cuDevicePrimaryCtxRelease(Device));
}

/// <summary>An owned NVRTC program (<c>nvrtcProgram</c>); destroyed on release.</summary>
public sealed class NvrtcProgramHandle : SafeHandle
{
    internal NvrtcProgramHandle(IntPtr program)
        : base(IntPtr.Zero, ownsHandle: true) => SetHandle(program);

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc />
    protected override bool ReleaseHandle()
    {
        var p = handle;
        return NvrtcNative.nvrtcDestroyProgram(ref p) == NvrtcResult.Success;
    }
}

/// <summary>
/// Owned device memory: a <see cref="CudaDeviceMemoryHandle"/> with its size. Used by tests and tools; the runtime's
/// tensors normally live in ILGPU buffers.
/// </summary>
public sealed class CudaDeviceMemory : IDisposable
{
    private readonly CudaDeviceMemoryHandle handle;

    internal CudaDeviceMemory(CudaDeviceMemoryHandle handle, ulong bytes)
    {
        this.handle = handle;
        Bytes = bytes;
    }

    /// <summary>The device address.</summary>
    public CUdeviceptr Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(handle.IsClosed, this);
            return CUdeviceptr.FromIntPtr(handle.DangerousGetHandle());
        }
    }

    /// <summary>Size in bytes.</summary>
    public ulong Bytes { get; }

    /// <summary>Frees the memory.</summary>
    public void Dispose() => handle.Dispose();
}

internal static class CudaHandleRelease
{
    // After the owning context (or the driver) is gone, the resource went with it: that is not a leak.
    internal static bool Tolerated(CUresult r) =>
        r is CUresult.Success or CUresult.Deinitialized or CUresult.ContextIsDestroyed or CUresult.InvalidContext;

    internal static bool InContext(IntPtr context, Func<CUresult> release)
    {
        if (context == IntPtr.Zero)
        {
            return Tolerated(release());
        }

        var pushed = CudaDriverNative.cuCtxPushCurrent(context);
        if (pushed != CUresult.Success)
        {
            return Tolerated(pushed);
        }

        try
        {
            return Tolerated(release());
        }
        finally
        {
            CudaDriverNative.cuCtxPopCurrent(out _);
        }
    }
}
