using System.Runtime.InteropServices;
using System.Text;

namespace Rellax.Interop;

/// <summary>
/// Checked wrappers over the CUDA driver API: every failure becomes a <see cref="CudaException"/> naming the call.
/// Call <see cref="TryInitialize"/> (never throws) or <see cref="Initialize"/> first.
/// </summary>
public static unsafe class CudaDriver
{
    private static readonly Lock Gate = new();
    private static bool initialized;
    private static string? failure;

    /// <summary>Whether the driver library loaded and <c>cuInit</c> succeeded (initializes on first use; never throws).</summary>
    public static bool IsAvailable => TryInitialize(out _);

    /// <summary>
    /// Loads libcuda and calls <c>cuInit(0)</c> once. Never throws: a missing library, a missing entry point or a
    /// failing <c>cuInit</c> (no device, stub library, ...) gives <see langword="false"/> and a readable reason.
    /// </summary>
    /// <param name="reason">Empty on success, else why CUDA cannot be used.</param>
    /// <returns>Whether the driver is usable.</returns>
    public static bool TryInitialize(out string reason)
    {
        lock (Gate)
        {
            if (!initialized && failure is null)
            {
                failure = InitializeOnce();
                initialized = failure is null;
            }

            reason = failure ?? string.Empty;
            return initialized;
        }
    }

    /// <summary>Like <see cref="TryInitialize"/> but throws <see cref="InvalidOperationException"/> with the reason.</summary>
    public static void Initialize()
    {
        if (!TryInitialize(out var reason))
        {
            throw new InvalidOperationException(reason);
        }
    }

    // cuInit is required before any other driver call; ILGPU calls it too, so this is usually a cached no-op.
    private static void EnsureInitialized()
    {
        if (!initialized)
        {
            Initialize();
        }
    }

    private static string? InitializeOnce()
    {
        try
        {
            var result = CudaDriverNative.cuInit(0);
            if (result != CUresult.Success)
            {
                var (name, text) = DescribeError(result);
                return $"CUDA driver ({NativeLibraryResolver.LoadedCudaDriver ?? "libcuda.so.1"}) present but cuInit failed: {name} ({(int)result}): {text}";
            }

            return null;
        }
        catch (DllNotFoundException)
        {
            return $"CUDA driver (libcuda.so.1) not found (searched ${NativeLibraryResolver.CudaDriverPathVariable}, libcuda.so.1, libcuda.so); install the NVIDIA driver to use the CUDA backend";
        }
        catch (EntryPointNotFoundException e)
        {
            return $"CUDA driver ({NativeLibraryResolver.LoadedCudaDriver ?? "libcuda.so.1"}) is too old or not a real driver: {e.Message}";
        }
        catch (Exception e) when (e is BadImageFormatException or MarshalDirectiveException)
        {
            return $"CUDA driver (libcuda.so.1) could not be loaded: {e.Message}";
        }
    }

    /// <summary>Throws <see cref="CudaException"/> unless <paramref name="result"/> is success.</summary>
    /// <param name="result">A driver result.</param>
    /// <param name="call">The call that produced it (e.g. <c>"cuMemAlloc_v2(4096 bytes)"</c>).</param>
    public static void Check(CUresult result, string call)
    {
        if (result != CUresult.Success)
        {
            throw new CudaException(call, result);
        }
    }

    /// <summary>The driver's name and description of an error code; falls back to the enum name when the driver is absent.</summary>
    /// <param name="result">The error code.</param>
    public static (string Name, string Description) DescribeError(CUresult result)
    {
        string? name = null, text = null;
        try
        {
            if (CudaDriverNative.cuGetErrorName(result, out var n) == CUresult.Success && n != IntPtr.Zero)
            {
                name = Marshal.PtrToStringUTF8(n);
            }

            if (CudaDriverNative.cuGetErrorString(result, out var s) == CUresult.Success && s != IntPtr.Zero)
            {
                text = Marshal.PtrToStringUTF8(s);
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
        }

        name ??= Enum.IsDefined(result) ? "CUDA_ERROR_" + ToUpperSnake(result.ToString()) : "CUDA_ERROR_" + (int)result;
        return (name, text ?? "(no description)");
    }

    private static string ToUpperSnake(string pascal)
    {
        var sb = new StringBuilder(pascal.Length + 8);
        for (var i = 0; i < pascal.Length; i++)
        {
            if (i > 0 && char.IsUpper(pascal[i]) && !char.IsUpper(pascal[i - 1]))
            {
                sb.Append('_');
            }

            sb.Append(char.ToUpperInvariant(pascal[i]));
        }

        return sb.ToString();
    }

    /// <summary>Driver API version as (major, minor), e.g. (12, 4).</summary>
    public static (int Major, int Minor) GetDriverVersion()
    {
        Check(CudaDriverNative.cuDriverGetVersion(out var v), "cuDriverGetVersion");
        return (v / 1000, v % 1000 / 10);
    }

    /// <summary>Number of CUDA devices.</summary>
    public static int GetDeviceCount()
    {
        EnsureInitialized();
        Check(CudaDriverNative.cuDeviceGetCount(out var n), "cuDeviceGetCount");
        return n;
    }

    /// <summary>The device handle (<c>CUdevice</c>) for an ordinal.</summary>
    /// <param name="ordinal">0-based device ordinal.</param>
    public static int GetDevice(int ordinal)
    {
        EnsureInitialized();
        Check(CudaDriverNative.cuDeviceGet(out var d, ordinal), $"cuDeviceGet({ordinal})");
        return d;
    }

    /// <summary>The device's marketing name (e.g. "NVIDIA H100 80GB HBM3").</summary>
    /// <param name="device">A <c>CUdevice</c>.</param>
    public static string GetDeviceName(int device)
    {
        var buffer = stackalloc byte[256];
        Check(CudaDriverNative.cuDeviceGetName(buffer, 256, device), $"cuDeviceGetName({device})");
        return Marshal.PtrToStringUTF8((IntPtr)buffer) ?? string.Empty;
    }

    /// <summary>A device attribute.</summary>
    /// <param name="device">A <c>CUdevice</c>.</param>
    /// <param name="attribute">The attribute.</param>
    public static int GetAttribute(int device, CUdeviceAttribute attribute)
    {
        Check(CudaDriverNative.cuDeviceGetAttribute(out var v, attribute, device), $"cuDeviceGetAttribute({device}, {attribute})");
        return v;
    }

    /// <summary>Compute capability, e.g. (9, 0) for H100.</summary>
    /// <param name="device">A <c>CUdevice</c>.</param>
    public static (int Major, int Minor) GetComputeCapability(int device) =>
        (GetAttribute(device, CUdeviceAttribute.ComputeCapabilityMajor), GetAttribute(device, CUdeviceAttribute.ComputeCapabilityMinor));

    /// <summary>Total device memory in bytes.</summary>
    /// <param name="device">A <c>CUdevice</c>.</param>
    public static ulong GetTotalMemory(int device)
    {
        Check(CudaDriverNative.cuDeviceTotalMem(out var bytes, device), $"cuDeviceTotalMem_v2({device})");
        return bytes;
    }

    /// <summary>The calling thread's current context (<see cref="IntPtr.Zero"/> if none).</summary>
    public static IntPtr GetCurrentContext()
    {
        EnsureInitialized();
        Check(CudaDriverNative.cuCtxGetCurrent(out var c), "cuCtxGetCurrent");
        return c;
    }

    /// <summary>Binds a context to the calling thread (replacing the top of its context stack).</summary>
    /// <param name="context">A <c>CUcontext</c>.</param>
    public static void SetCurrentContext(IntPtr context) =>
        Check(CudaDriverNative.cuCtxSetCurrent(context), "cuCtxSetCurrent");

    /// <summary>Pushes a context onto the calling thread's context stack.</summary>
    /// <param name="context">A <c>CUcontext</c>.</param>
    public static void PushContext(IntPtr context) =>
        Check(CudaDriverNative.cuCtxPushCurrent(context), "cuCtxPushCurrent_v2");

    /// <summary>Pops the calling thread's current context and returns it.</summary>
    public static IntPtr PopContext()
    {
        Check(CudaDriverNative.cuCtxPopCurrent(out var c), "cuCtxPopCurrent_v2");
        return c;
    }

    /// <summary>
    /// Makes <paramref name="context"/> current until the returned scope is disposed. Pushes only when another
    /// context is current, so it is cheap when the caller (e.g. ILGPU's bound accelerator) already made it current.
    /// </summary>
    /// <param name="context">A <c>CUcontext</c>, e.g. ILGPU's <c>CudaAccelerator.NativePtr</c>.</param>
    public static CudaContextScope Enter(IntPtr context)
    {
        if (context == IntPtr.Zero)
        {
            throw new ArgumentException("The CUDA context handle is null.", nameof(context));
        }

        if (GetCurrentContext() == context)
        {
            return default;
        }

        PushContext(context);
        return new CudaContextScope(pushed: true);
    }

    /// <summary>The device (<c>CUdevice</c>) a context belongs to.</summary>
    /// <param name="context">A <c>CUcontext</c>.</param>
    public static int GetContextDevice(IntPtr context)
    {
        using var scope = Enter(context);
        Check(CudaDriverNative.cuCtxGetDevice(out var device), "cuCtxGetDevice");
        return device;
    }

    /// <summary>Waits for the current context's work.</summary>
    public static void SynchronizeContext() => Check(CudaDriverNative.cuCtxSynchronize(), "cuCtxSynchronize");

    /// <summary>Waits for a stream's work.</summary>
    /// <param name="stream">A <c>CUstream</c> (zero: the legacy default stream).</param>
    public static void SynchronizeStream(IntPtr stream) =>
        Check(CudaDriverNative.cuStreamSynchronize(stream), "cuStreamSynchronize");

    /// <summary>Retains the device's primary context (the one the CUDA runtime uses); dispose to release.</summary>
    /// <param name="device">A <c>CUdevice</c>.</param>
    public static CudaPrimaryContextHandle RetainPrimaryContext(int device)
    {
        EnsureInitialized();
        Check(CudaDriverNative.cuDevicePrimaryCtxRetain(out var c, device), $"cuDevicePrimaryCtxRetain({device})");
        return new CudaPrimaryContextHandle(c, device);
    }

    /// <summary>
    /// Loads a module image (cubin, fatbin, or PTX) into <paramref name="context"/>. PTX is JIT-compiled by the
    /// driver; a JIT failure's error log is part of the exception.
    /// </summary>
    /// <param name="context">The context to load into (e.g. ILGPU's).</param>
    /// <param name="image">The image bytes; PTX need not be NUL-terminated (a terminator is appended).</param>
    /// <param name="imageName">A name for error messages (file or source name).</param>
    public static CudaModuleHandle LoadModule(IntPtr context, ReadOnlySpan<byte> image, string imageName)
    {
        if (image.IsEmpty)
        {
            throw new ArgumentException($"Module image '{imageName}' is empty.", nameof(image));
        }

        using var scope = Enter(context);
        var copy = new byte[image.Length + 1]; // PTX must be NUL-terminated; harmless for binary images
        image.CopyTo(copy);
        const int LogSize = 16 * 1024;
        var errorLog = new byte[LogSize];
        var options = stackalloc CUjitOption[2] { CUjitOption.ErrorLogBuffer, CUjitOption.ErrorLogBufferSizeBytes };
        fixed (byte* imagePtr = copy)
        fixed (byte* logPtr = errorLog)
        {
            var values = stackalloc void*[2] { logPtr, (void*)(nint)LogSize };
            var result = CudaDriverNative.cuModuleLoadDataEx(out var module, imagePtr, 2, options, values);
            if (result != CUresult.Success)
            {
                var length = Array.IndexOf(errorLog, (byte)0);
                var log = Encoding.UTF8.GetString(errorLog, 0, length < 0 ? LogSize : length);
                throw new CudaException($"cuModuleLoadDataEx({imageName})", result, log);
            }

            return new CudaModuleHandle(module, context);
        }
    }

    /// <summary>Looks up a kernel (<c>extern "C" __global__</c> name) in a loaded module.</summary>
    /// <param name="module">The module.</param>
    /// <param name="name">The kernel's unmangled name.</param>
    public static IntPtr GetFunction(CudaModuleHandle module, string name)
    {
        ArgumentNullException.ThrowIfNull(module);
        var added = false;
        module.DangerousAddRef(ref added);
        try
        {
            Check(CudaDriverNative.cuModuleGetFunction(out var f, module.DangerousGetHandle(), name), $"cuModuleGetFunction({name})");
            return f;
        }
        finally
        {
            if (added)
            {
                module.DangerousRelease();
            }
        }
    }

    /// <summary>Launches a kernel on a stream (asynchronous) in the current context.</summary>
    /// <param name="function">A <c>CUfunction</c>.</param>
    /// <param name="name">The kernel's name, for error messages.</param>
    /// <param name="grid">Grid size in blocks.</param>
    /// <param name="block">Block size in threads.</param>
    /// <param name="sharedMemoryBytes">Dynamic shared memory per block.</param>
    /// <param name="stream">A <c>CUstream</c> in the current context (e.g. ILGPU's <c>CudaStream.StreamPtr</c>).</param>
    /// <param name="arguments">Pointers to each kernel argument's value, in order.</param>
    public static void LaunchKernel(IntPtr function, string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block,
        uint sharedMemoryBytes, IntPtr stream, ReadOnlySpan<IntPtr> arguments)
    {
        fixed (IntPtr* args = arguments)
        {
            Check(CudaDriverNative.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z,
                    sharedMemoryBytes, stream, (void**)args, null),
                $"cuLaunchKernel({name}, grid=({grid.X},{grid.Y},{grid.Z}), block=({block.X},{block.Y},{block.Z}))");
        }
    }

    /// <summary>Allocates device memory in the current context.</summary>
    /// <param name="bytes">Size in bytes (greater than zero).</param>
    public static CudaDeviceMemory Allocate(ulong bytes)
    {
        ArgumentOutOfRangeException.ThrowIfZero(bytes);
        Check(CudaDriverNative.cuMemAlloc(out var p, (nuint)bytes), $"cuMemAlloc_v2({bytes} bytes)");
        var context = GetCurrentContext();
        return new CudaDeviceMemory(new CudaDeviceMemoryHandle(p, context), bytes);
    }

    /// <summary>Copies host data to the device (synchronous).</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="destination">Device address.</param>
    /// <param name="source">Host elements.</param>
    public static void CopyToDevice<T>(CUdeviceptr destination, ReadOnlySpan<T> source) where T : unmanaged
    {
        var bytes = (nuint)source.Length * (nuint)sizeof(T);
        if (bytes == 0)
        {
            return;
        }

        fixed (T* s = source)
        {
            Check(CudaDriverNative.cuMemcpyHtoD(destination, s, bytes), $"cuMemcpyHtoD_v2({bytes} bytes to {destination})");
        }
    }

    /// <summary>Copies device data to the host (synchronous).</summary>
    /// <typeparam name="T">Element type.</typeparam>
    /// <param name="destination">Host elements.</param>
    /// <param name="source">Device address.</param>
    public static void CopyToHost<T>(Span<T> destination, CUdeviceptr source) where T : unmanaged
    {
        var bytes = (nuint)destination.Length * (nuint)sizeof(T);
        if (bytes == 0)
        {
            return;
        }

        fixed (T* d = destination)
        {
            Check(CudaDriverNative.cuMemcpyDtoH(d, source, bytes), $"cuMemcpyDtoH_v2({bytes} bytes from {source})");
        }
    }
}

/// <summary>Restores the previous context when disposed (see <see cref="CudaDriver.Enter"/>).</summary>
public readonly struct CudaContextScope : IDisposable
{
    private readonly bool pushed;

    internal CudaContextScope(bool pushed) => this.pushed = pushed;

    /// <summary>Pops the context if this scope pushed it.</summary>
    public void Dispose()
    {
        if (pushed)
        {
            CudaDriverNative.cuCtxPopCurrent(out _);
        }
    }
}
