using System.Reflection;
using System.Runtime.InteropServices;

namespace Rellax.Interop;

/// <summary>
/// Finds the CUDA driver (<c>libcuda.so.1</c>) and NVRTC (<c>libnvrtc.so.*</c>) at run time.
/// The bindings use the logical library names <see cref="CudaLibraryName"/> and <see cref="NvrtcLibraryName"/>;
/// this resolver maps them to real files.
/// </summary>
/// <remarks>
/// Search order for NVRTC: the environment variable <c>RELLAX_NVRTC_PATH</c> (a library file, or a directory
/// holding one of the known sonames), then the sonames <c>libnvrtc.so.13</c>, <c>libnvrtc.so.12</c>,
/// <c>libnvrtc.so.11.2</c>, <c>libnvrtc.so</c> on the default loader search path, then
/// <c>$CUDA_PATH/lib64</c> and <c>/usr/local/cuda/lib64</c>. When NVRTC is loaded from a directory, a
/// <c>libnvrtc-builtins</c> library in the same directory is loaded first, so NVRTC finds it without
/// <c>LD_LIBRARY_PATH</c>.
/// Search order for the driver: <c>RELLAX_CUDA_DRIVER_PATH</c> (file or directory), then <c>libcuda.so.1</c>,
/// <c>libcuda.so</c> (Windows: <c>nvcuda.dll</c>).
/// </remarks>
public static class NativeLibraryResolver
{
    /// <summary>Logical name the driver bindings import from.</summary>
    public const string CudaLibraryName = "rellax-cuda";

    /// <summary>Logical name the NVRTC bindings import from.</summary>
    public const string NvrtcLibraryName = "rellax-nvrtc";

    /// <summary>Environment variable naming an NVRTC library file or a directory holding one.</summary>
    public const string NvrtcPathVariable = "RELLAX_NVRTC_PATH";

    /// <summary>Environment variable naming a CUDA driver library file or a directory holding one.</summary>
    public const string CudaDriverPathVariable = "RELLAX_CUDA_DRIVER_PATH";

    private static readonly string[] NvrtcNames = OperatingSystem.IsWindows()
        ? ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"]
        : ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"];

    private static readonly string[] CudaNames = OperatingSystem.IsWindows()
        ? ["nvcuda.dll"]
        : ["libcuda.so.1", "libcuda.so"];

    private static readonly Lock Gate = new();
    private static bool registered;
    private static IntPtr nvrtcHandle;
    private static IntPtr cudaHandle;

    /// <summary>The path or soname NVRTC was loaded from, or <see langword="null"/> before it was loaded.</summary>
    public static string? LoadedNvrtc { get; private set; }

    /// <summary>The path or soname the CUDA driver was loaded from, or <see langword="null"/> before it was loaded.</summary>
    public static string? LoadedCudaDriver { get; private set; }

    /// <summary>Registers the resolver for this assembly (idempotent; called by the binding classes).</summary>
    internal static void EnsureRegistered()
    {
        lock (Gate)
        {
            if (registered)
            {
                return;
            }

            NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
            registered = true;
        }
    }

    /// <summary>Describes where NVRTC is searched, for error messages.</summary>
    public static string DescribeNvrtcSearch() =>
        $"${NvrtcPathVariable} ({Environment.GetEnvironmentVariable(NvrtcPathVariable) ?? "unset"}), then {string.Join(", ", NvrtcNames)}" +
        " on the loader path, $CUDA_PATH/lib64 and /usr/local/cuda/lib64";

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        lock (Gate)
        {
            if (libraryName == NvrtcLibraryName)
            {
                if (nvrtcHandle == IntPtr.Zero)
                {
                    (nvrtcHandle, var from) = TryLoad(NvrtcPathVariable, NvrtcNames, loadBuiltins: true);
                    LoadedNvrtc = from;
                }

                return nvrtcHandle;
            }

            if (libraryName == CudaLibraryName)
            {
                if (cudaHandle == IntPtr.Zero)
                {
                    (cudaHandle, var from) = TryLoad(CudaDriverPathVariable, CudaNames, loadBuiltins: false);
                    LoadedCudaDriver = from;
                }

                return cudaHandle;
            }

            return IntPtr.Zero; // default probing for anything else
        }
    }

    private static (IntPtr Handle, string? From) TryLoad(string variable, string[] names, bool loadBuiltins)
    {
        var configured = Environment.GetEnvironmentVariable(variable);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            var found = TryLoadFromPath(configured, names, loadBuiltins);
            if (found.Handle != IntPtr.Zero)
            {
                return found;
            }
        }

        foreach (var name in names)
        {
            if (NativeLibrary.TryLoad(name, out var handle))
            {
                return (handle, name);
            }
        }

        if (loadBuiltins)
        {
            var cudaPath = Environment.GetEnvironmentVariable("CUDA_PATH");
            foreach (var dir in new[] { cudaPath is null ? null : Path.Combine(cudaPath, "lib64"), "/usr/local/cuda/lib64" })
            {
                if (dir is not null && Directory.Exists(dir))
                {
                    var found = TryLoadFromPath(dir, names, loadBuiltins);
                    if (found.Handle != IntPtr.Zero)
                    {
                        return found;
                    }
                }
            }
        }

        return (IntPtr.Zero, null);
    }

    private static (IntPtr Handle, string? From) TryLoadFromPath(string path, string[] names, bool loadBuiltins)
    {
        if (File.Exists(path))
        {
            if (loadBuiltins)
            {
                PreloadBuiltins(Path.GetDirectoryName(Path.GetFullPath(path))!);
            }

            return NativeLibrary.TryLoad(path, out var handle) ? (handle, path) : (IntPtr.Zero, null);
        }

        if (!Directory.Exists(path))
        {
            return (IntPtr.Zero, null);
        }

        if (loadBuiltins)
        {
            PreloadBuiltins(path);
        }

        foreach (var name in names)
        {
            var candidate = Path.Combine(path, name);
            if (File.Exists(candidate) && NativeLibrary.TryLoad(candidate, out var handle))
            {
                return (handle, candidate);
            }
        }

        return (IntPtr.Zero, null);
    }

    // NVRTC dlopens "libnvrtc-builtins.so.X.Y" by soname; a library already loaded under that soname satisfies it.
    private static void PreloadBuiltins(string directory)
    {
        var pattern = OperatingSystem.IsWindows() ? "nvrtc-builtins*.dll" : "libnvrtc-builtins.so*";
        try
        {
            foreach (var file in Directory.EnumerateFiles(directory, pattern).Order(StringComparer.Ordinal))
            {
                if (NativeLibrary.TryLoad(file, out _))
                {
                    return;
                }
            }
        }
        catch (IOException)
        {
            // Best effort: NVRTC reports a clear error itself if it cannot find its builtins.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
