using System.Runtime.InteropServices;

namespace Rellax.Interop;

/// <summary>
/// Raw CUDA driver API entry points (libcuda). Handles are <see cref="IntPtr"/>: <c>CUcontext</c>, <c>CUmodule</c>,
/// <c>CUfunction</c>, <c>CUstream</c>; <c>CUdevice</c> is an <see cref="int"/>. Prefer the checked wrappers in
/// <see cref="CudaDriver"/>.
/// </summary>
internal static unsafe partial class CudaDriverNative
{
    static CudaDriverNative() => NativeLibraryResolver.EnsureRegistered();

    private const string Lib = NativeLibraryResolver.CudaLibraryName;

    /// <summary><c>cuInit</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuInit")]
    public static partial CUresult cuInit(uint flags);

    /// <summary><c>cuDriverGetVersion</c> (e.g. 12040 for 12.4).</summary>
    [LibraryImport(Lib, EntryPoint = "cuDriverGetVersion")]
    public static partial CUresult cuDriverGetVersion(out int version);

    /// <summary><c>cuDeviceGetCount</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuDeviceGetCount")]
    public static partial CUresult cuDeviceGetCount(out int count);

    /// <summary><c>cuDeviceGet</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuDeviceGet")]
    public static partial CUresult cuDeviceGet(out int device, int ordinal);

    /// <summary><c>cuDeviceGetName</c> (NUL-terminated ASCII into <paramref name="name"/>).</summary>
    [LibraryImport(Lib, EntryPoint = "cuDeviceGetName")]
    public static partial CUresult cuDeviceGetName(byte* name, int length, int device);

    /// <summary><c>cuDeviceGetAttribute</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuDeviceGetAttribute")]
    public static partial CUresult cuDeviceGetAttribute(out int value, CUdeviceAttribute attribute, int device);

    /// <summary><c>cuDeviceTotalMem_v2</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuDeviceTotalMem_v2")]
    public static partial CUresult cuDeviceTotalMem(out nuint bytes, int device);

    /// <summary><c>cuCtxGetCurrent</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuCtxGetCurrent")]
    public static partial CUresult cuCtxGetCurrent(out IntPtr context);

    /// <summary><c>cuCtxSetCurrent</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuCtxSetCurrent")]
    public static partial CUresult cuCtxSetCurrent(IntPtr context);

    /// <summary><c>cuCtxPushCurrent_v2</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuCtxPushCurrent_v2")]
    public static partial CUresult cuCtxPushCurrent(IntPtr context);

    /// <summary><c>cuCtxPopCurrent_v2</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuCtxPopCurrent_v2")]
    public static partial CUresult cuCtxPopCurrent(out IntPtr context);

    /// <summary><c>cuCtxGetDevice</c>: the device of the current context.</summary>
    [LibraryImport(Lib, EntryPoint = "cuCtxGetDevice")]
    public static partial CUresult cuCtxGetDevice(out int device);

    /// <summary><c>cuCtxSynchronize</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuCtxSynchronize")]
    public static partial CUresult cuCtxSynchronize();

    /// <summary><c>cuDevicePrimaryCtxRetain</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRetain")]
    public static partial CUresult cuDevicePrimaryCtxRetain(out IntPtr context, int device);

    /// <summary><c>cuDevicePrimaryCtxRelease_v2</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
    public static partial CUresult cuDevicePrimaryCtxRelease(int device);

    /// <summary><c>cuModuleLoadDataEx</c>: loads a cubin, fatbin or NUL-terminated PTX image into the current context.</summary>
    [LibraryImport(Lib, EntryPoint = "cuModuleLoadDataEx")]
    public static partial CUresult cuModuleLoadDataEx(out IntPtr module, void* image, uint numOptions, CUjitOption* options, void** optionValues);

    /// <summary><c>cuModuleUnload</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuModuleUnload")]
    public static partial CUresult cuModuleUnload(IntPtr module);

    /// <summary><c>cuModuleGetFunction</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuModuleGetFunction", StringMarshalling = StringMarshalling.Utf8)]
    public static partial CUresult cuModuleGetFunction(out IntPtr function, IntPtr module, string name);

    /// <summary><c>cuLaunchKernel</c>: <paramref name="kernelParams"/> is an array of pointers to each argument's value.</summary>
    [LibraryImport(Lib, EntryPoint = "cuLaunchKernel")]
    public static partial CUresult cuLaunchKernel(
        IntPtr function,
        uint gridDimX, uint gridDimY, uint gridDimZ,
        uint blockDimX, uint blockDimY, uint blockDimZ,
        uint sharedMemBytes, IntPtr stream, void** kernelParams, void** extra);

    /// <summary><c>cuMemAlloc_v2</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuMemAlloc_v2")]
    public static partial CUresult cuMemAlloc(out CUdeviceptr pointer, nuint bytes);

    /// <summary><c>cuMemFree_v2</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuMemFree_v2")]
    public static partial CUresult cuMemFree(CUdeviceptr pointer);

    /// <summary><c>cuMemcpyHtoD_v2</c> (synchronous).</summary>
    [LibraryImport(Lib, EntryPoint = "cuMemcpyHtoD_v2")]
    public static partial CUresult cuMemcpyHtoD(CUdeviceptr destination, void* source, nuint bytes);

    /// <summary><c>cuMemcpyDtoH_v2</c> (synchronous).</summary>
    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoH_v2")]
    public static partial CUresult cuMemcpyDtoH(void* destination, CUdeviceptr source, nuint bytes);

    /// <summary><c>cuStreamSynchronize</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "cuStreamSynchronize")]
    public static partial CUresult cuStreamSynchronize(IntPtr stream);

    /// <summary><c>cuGetErrorName</c>: a static NUL-terminated string.</summary>
    [LibraryImport(Lib, EntryPoint = "cuGetErrorName")]
    public static partial CUresult cuGetErrorName(CUresult error, out IntPtr name);

    /// <summary><c>cuGetErrorString</c>: a static NUL-terminated string.</summary>
    [LibraryImport(Lib, EntryPoint = "cuGetErrorString")]
    public static partial CUresult cuGetErrorString(CUresult error, out IntPtr text);
}
