using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// All hand-written kernels (<c>kernels/*.cu</c>) loaded into one CUDA context, found by entry-point name.
/// </summary>
/// <remarks>
/// Where the code comes from, in order: a prebuilt fatbin (<c>$RELLAX_CUDA_FATBIN</c>, else
/// <c>rellax_kernels.fatbin</c> next to this assembly; built by the top-level <c>CMakeLists.txt</c>), else every
/// embedded source compiled by NVRTC for the context's device (cubin when NVRTC knows the architecture, else PTX),
/// through the on-disk cache. Everything is compiled and loaded in <see cref="Load"/>, not on the first launch.
/// </remarks>
internal sealed class CudaKernelLibrary : IDisposable
{
    /// <summary>File name of the prebuilt fatbin looked for next to the assembly.</summary>
    public const string FatbinFileName = "rellax_kernels.fatbin";

    /// <summary>Environment variable naming a prebuilt fatbin to load instead of compiling.</summary>
    public const string FatbinVariable = "RELLAX_CUDA_FATBIN";

    private readonly List<CudaModule> _modules;
    private readonly Dictionary<string, CudaModule> _byEntryPoint;

    private CudaKernelLibrary(IntPtr context, List<CudaModule> modules, Dictionary<string, CudaModule> byEntryPoint, string origin)
    {
        Context = context;
        _modules = modules;
        _byEntryPoint = byEntryPoint;
        Origin = origin;
    }

    /// <summary>The <c>CUcontext</c> the kernels are loaded into.</summary>
    public IntPtr Context { get; }

    /// <summary>Where the code came from, e.g. <c>fatbin /opt/x/rellax_kernels.fatbin</c> or <c>nvrtc 11.8 Cubin sm_90</c>.</summary>
    public string Origin { get; }

    /// <summary>
    /// The prebuilt fatbin to use: <c>$RELLAX_CUDA_FATBIN</c> if set (it must exist), else
    /// <c>rellax_kernels.fatbin</c> next to this assembly if present, else <see langword="null"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException"><c>RELLAX_CUDA_FATBIN</c> names a missing file.</exception>
    public static string? FindPrebuiltFatbin()
    {
        var configured = Environment.GetEnvironmentVariable(FatbinVariable);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return File.Exists(configured)
                ? configured
                : throw new FileNotFoundException($"${FatbinVariable} names '{configured}', which does not exist.", configured);
        }

        var nextToAssembly = Path.Combine(AppContext.BaseDirectory, FatbinFileName);
        var location = typeof(CudaKernelLibrary).Assembly.Location;
        if (!File.Exists(nextToAssembly) && !string.IsNullOrEmpty(location))
        {
            nextToAssembly = Path.Combine(Path.GetDirectoryName(location)!, FatbinFileName);
        }

        return File.Exists(nextToAssembly) ? nextToAssembly : null;
    }

    /// <summary>Loads every kernel into <paramref name="context"/> (see the remarks for where code comes from).</summary>
    /// <param name="context">A <c>CUcontext</c>, e.g. ILGPU's <c>CudaAccelerator.NativePtr</c>.</param>
    /// <param name="compiler">The NVRTC compiler to use when there is no fatbin; <see langword="null"/>: a default one, created only if needed.</param>
    /// <param name="usePrebuiltFatbin">Whether to look for a prebuilt fatbin first.</param>
    public static CudaKernelLibrary Load(IntPtr context, NvrtcCompiler? compiler = null, bool usePrebuiltFatbin = true)
    {
        if (context == IntPtr.Zero)
        {
            throw new ArgumentException("The CUDA context handle is null.", nameof(context));
        }

        var entryPoints = CudaKernelSources.SourceNames
            .Select(s => (Source: s, Names: CudaKernelSources.FindEntryPoints(CudaKernelSources.Read(s))))
            .ToArray();

        var fatbin = usePrebuiltFatbin ? FindPrebuiltFatbin() : null;
        if (fatbin is not null)
        {
            var module = CudaModule.Load(context, File.ReadAllBytes(fatbin), fatbin);
            var map = entryPoints.SelectMany(e => e.Names).ToDictionary(n => n, _ => module, StringComparer.Ordinal);
            return new CudaKernelLibrary(context, [module], map, "fatbin " + fatbin);
        }

        compiler ??= new NvrtcCompiler();
        var device = CudaDriver.GetContextDevice(context);
        var (major, minor) = CudaDriver.GetComputeCapability(device);
        var (architecture, kind) = compiler.ChooseTarget(new CudaArchitecture(major, minor));
        var modules = new List<CudaModule>();
        var byEntryPoint = new Dictionary<string, CudaModule>(StringComparer.Ordinal);
        try
        {
            foreach (var (source, names) in entryPoints)
            {
                var module = CudaModule.Load(context, compiler.CompileEmbedded(source, architecture, kind));
                modules.Add(module);
                foreach (var name in names)
                {
                    byEntryPoint.Add(name, module);
                }
            }
        }
        catch
        {
            modules.ForEach(m => m.Dispose());
            throw;
        }

        return new CudaKernelLibrary(context, modules, byEntryPoint,
            $"nvrtc {compiler.Version.Major}.{compiler.Version.Minor} {kind} sm_{architecture.Number}");
    }

    /// <summary>The kernel with this <c>extern "C"</c> name.</summary>
    /// <param name="entryPoint">Kernel name, e.g. <c>rellax_rmsnorm_f32</c>.</param>
    /// <exception cref="KeyNotFoundException">No embedded source defines it.</exception>
    /// <exception cref="CudaException">The loaded image lacks it (e.g. a stale fatbin).</exception>
    public CudaFunction GetFunction(string entryPoint)
    {
        ObjectDisposedException.ThrowIf(_modules.Count == 0, this);
        return _byEntryPoint.TryGetValue(entryPoint, out var module)
            ? module.GetFunction(entryPoint)
            : throw new KeyNotFoundException($"No kernel '{entryPoint}' in the embedded CUDA sources ({string.Join(", ", CudaKernelSources.SourceNames)}).");
    }

    /// <summary>Unloads every module.</summary>
    public void Dispose()
    {
        foreach (var m in _modules)
        {
            m.Dispose();
        }

        _modules.Clear();
        _byEntryPoint.Clear();
    }
}
