using System.Collections.Concurrent;
using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// A module image (cubin, fatbin or PTX) loaded into a CUDA context, e.g. ILGPU's
/// (<c>CudaAccelerator.NativePtr</c> is the <c>CUcontext</c> in ILGPU 1.5). Unloaded on dispose.
/// </summary>
internal sealed class CudaModule : IDisposable
{
    private readonly CudaModuleHandle _handle;
    private readonly ConcurrentDictionary<string, CudaFunction> _functions = new(StringComparer.Ordinal);

    private CudaModule(CudaModuleHandle handle, string name)
    {
        _handle = handle;
        Name = name;
    }

    /// <summary>The image's name (file or source) for messages.</summary>
    public string Name { get; }

    /// <summary>The <c>CUcontext</c> the module lives in.</summary>
    public IntPtr Context => _handle.Context;

    /// <summary>Loads an image into <paramref name="context"/> (pushed for the call if not already current).</summary>
    /// <param name="context">A <c>CUcontext</c> handle.</param>
    /// <param name="image">Cubin, fatbin or PTX bytes.</param>
    /// <param name="name">A name for error messages.</param>
    /// <exception cref="CudaException">The driver rejected the image (the JIT log is included for PTX).</exception>
    public static CudaModule Load(IntPtr context, ReadOnlySpan<byte> image, string name) =>
        new(CudaDriver.LoadModule(context, image, name), name);

    /// <summary>Loads a compiled image into <paramref name="context"/>.</summary>
    /// <param name="context">A <c>CUcontext</c> handle.</param>
    /// <param name="image">An NVRTC result.</param>
    public static CudaModule Load(IntPtr context, CudaImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Load(context, image.Bytes, $"{image.SourceName} ({image.Kind}, sm_{image.Architecture.Number})");
    }

    /// <summary>The kernel named <paramref name="name"/> (an <c>extern "C" __global__</c> name); looked up once.</summary>
    /// <param name="name">Kernel name.</param>
    /// <exception cref="CudaException">No such kernel in this module.</exception>
    public CudaFunction GetFunction(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        return _functions.GetOrAdd(name, n =>
        {
            using var scope = CudaDriver.Enter(Context);
            try
            {
                return new CudaFunction(CudaDriver.GetFunction(_handle, n), n, Context);
            }
            catch (CudaException e)
            {
                throw new CudaException($"cuModuleGetFunction({n}) in module {Name}", e.Result);
            }
        });
    }

    /// <summary>Unloads the module (its functions become invalid).</summary>
    public void Dispose() => _handle.Dispose();
}

/// <summary>A kernel in a loaded module (<c>CUfunction</c>), valid while its <see cref="CudaModule"/> is loaded.</summary>
/// <param name="Handle">The <c>CUfunction</c>.</param>
/// <param name="Name">The kernel's name.</param>
/// <param name="Context">The <c>CUcontext</c> its module lives in.</param>
internal sealed record CudaFunction(IntPtr Handle, string Name, IntPtr Context)
{
    /// <summary>
    /// Launches the kernel asynchronously on <paramref name="stream"/>, making its context current for the call if
    /// needed. <paramref name="arguments"/> holds a pointer to each argument's value, in the kernel's order.
    /// </summary>
    /// <param name="grid">Blocks per grid.</param>
    /// <param name="block">Threads per block.</param>
    /// <param name="sharedMemoryBytes">Dynamic shared memory per block.</param>
    /// <param name="stream">A <c>CUstream</c> of the same context (e.g. ILGPU's <c>CudaStream.StreamPtr</c>), or zero.</param>
    /// <param name="arguments">Pointers to the argument values.</param>
    public void Launch((uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedMemoryBytes, IntPtr stream, ReadOnlySpan<IntPtr> arguments)
    {
        using var scope = CudaDriver.Enter(Context);
        CudaDriver.LaunchKernel(Handle, Name, grid, block, sharedMemoryBytes, stream, arguments);
    }
}
