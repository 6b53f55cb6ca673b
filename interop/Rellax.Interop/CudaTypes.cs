using System.Runtime.InteropServices;

namespace Rellax.Interop;

/// <summary>CUDA driver API result codes (<c>CUresult</c>); values not listed here still round-trip as numbers.</summary>
public enum CUresult
{
    /// <summary>No error.</summary>
    Success = 0,
    /// <summary>An argument was out of range.</summary>
    InvalidValue = 1,
    /// <summary>Device memory exhausted.</summary>
    OutOfMemory = 2,
    /// <summary><c>cuInit</c> was not called or failed.</summary>
    NotInitialized = 3,
    /// <summary>The driver is shutting down.</summary>
    Deinitialized = 4,
    /// <summary>The libcuda found is a stub (toolkit without driver).</summary>
    StubLibrary = 34,
    /// <summary>No CUDA-capable device is present.</summary>
    NoDevice = 100,
    /// <summary>The device ordinal is not valid.</summary>
    InvalidDevice = 101,
    /// <summary>The module image is not valid.</summary>
    InvalidImage = 200,
    /// <summary>No context is current, or the context is not valid.</summary>
    InvalidContext = 201,
    /// <summary>No kernel image fits the device.</summary>
    NoBinaryForGpu = 209,
    /// <summary>PTX JIT compilation failed.</summary>
    InvalidPtx = 218,
    /// <summary>The PTX was produced by a newer toolchain than the driver supports.</summary>
    UnsupportedPtxVersion = 222,
    /// <summary>The handle is not valid.</summary>
    InvalidHandle = 400,
    /// <summary>A named symbol (kernel) was not found.</summary>
    NotFound = 500,
    /// <summary>A kernel accessed an invalid address.</summary>
    IllegalAddress = 700,
    /// <summary>Too many resources requested for launch.</summary>
    LaunchOutOfResources = 701,
    /// <summary>The context was destroyed.</summary>
    ContextIsDestroyed = 709,
    /// <summary>A kernel launch failed.</summary>
    LaunchFailed = 719,
    /// <summary>Unknown error.</summary>
    Unknown = 999,
}

/// <summary>Device attributes used here (<c>CUdevice_attribute</c>).</summary>
public enum CUdeviceAttribute
{
    /// <summary>Maximum threads per block.</summary>
    MaxThreadsPerBlock = 1,
    /// <summary>Number of streaming multiprocessors.</summary>
    MultiprocessorCount = 16,
    /// <summary>Compute capability, major part.</summary>
    ComputeCapabilityMajor = 75,
    /// <summary>Compute capability, minor part.</summary>
    ComputeCapabilityMinor = 76,
}

/// <summary>JIT options for <c>cuModuleLoadDataEx</c> (<c>CUjit_option</c>) used here.</summary>
public enum CUjitOption
{
    /// <summary>Pointer to a buffer for informational log output.</summary>
    InfoLogBuffer = 3,
    /// <summary>Size of the info log buffer in bytes (in: capacity, out: used).</summary>
    InfoLogBufferSizeBytes = 4,
    /// <summary>Pointer to a buffer for error log output.</summary>
    ErrorLogBuffer = 5,
    /// <summary>Size of the error log buffer in bytes (in: capacity, out: used).</summary>
    ErrorLogBufferSizeBytes = 6,
}

/// <summary>
/// A CUDA device address (<c>CUdeviceptr</c>, 64-bit). Obtain one from <see cref="CudaDeviceMemory"/>, from an ILGPU
/// buffer (<c>ArrayView.LoadEffectiveAddressAsPtr()</c> / <c>MemoryBuffer.NativePtr</c>) or any other allocation in
/// the same CUDA context.
/// </summary>
/// <param name="Value">The raw device address.</param>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct CUdeviceptr(ulong Value)
{
    /// <summary>The null device pointer.</summary>
    public static CUdeviceptr Null => default;

    /// <summary>Whether this is the null pointer.</summary>
    public bool IsNull => Value == 0;

    /// <summary>Wraps a device address held in an <see cref="IntPtr"/> (as ILGPU returns them).</summary>
    /// <param name="pointer">The device address.</param>
    public static CUdeviceptr FromIntPtr(IntPtr pointer) => new((ulong)(long)pointer);

    /// <summary>The address <paramref name="bytes"/> bytes further on.</summary>
    /// <param name="bytes">Byte offset.</param>
    public CUdeviceptr Offset(long bytes) => new((ulong)((long)Value + bytes));

    /// <inheritdoc />
    public override string ToString() => $"0x{Value:x}";
}
