using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// Compiles CUDA C++ with NVRTC to PTX (<c>compute_XY</c>) or a cubin (<c>sm_XY</c>), with the embedded headers
/// available to <c>#include "..."</c>, and caches the result on disk.
/// </summary>
/// <remarks>
/// Default options: <c>-std=c++17</c> only (no <c>--use_fast_math</c>: kernels must match the CPU reference).
/// NVRTC is found by <see cref="NativeLibraryResolver"/>: <c>RELLAX_NVRTC_PATH</c>, then common sonames.
/// Without a GPU, <c>.ci/fetch-nvrtc.sh DIR</c> provides one (Debian's CUDA 11.8 NVRTC).
/// </remarks>
internal sealed class NvrtcCompiler
{
    /// <summary>Options every compilation gets, before the architecture and any extra options.</summary>
    public static IReadOnlyList<string> DefaultOptions { get; } = ["-std=c++17"];

    /// <summary>Creates a compiler; loads NVRTC now and throws if it cannot.</summary>
    /// <param name="cache">The image cache, or <see langword="null"/> for none.</param>
    /// <exception cref="DllNotFoundException">NVRTC is not installed or not found (the message says where it looked).</exception>
    public NvrtcCompiler(CudaKernelCache? cache)
    {
        Cache = cache;
        Version = Nvrtc.Version;
    }

    /// <summary>Creates a compiler with the default on-disk cache (<see cref="CudaKernelCache.DefaultDirectory"/>).</summary>
    public NvrtcCompiler()
        : this(new CudaKernelCache())
    {
    }

    /// <summary>Whether NVRTC can be loaded (never throws).</summary>
    /// <param name="reason">Why not, when it cannot.</param>
    public static bool IsAvailable(out string reason) => Nvrtc.TryGetVersion(out _, out reason);

    /// <summary>The cache, or <see langword="null"/>.</summary>
    public CudaKernelCache? Cache { get; }

    /// <summary>NVRTC's version, e.g. (11, 8).</summary>
    public (int Major, int Minor) Version { get; }

    /// <summary>The architectures this NVRTC can target, lowest first.</summary>
    public IReadOnlyList<CudaArchitecture> SupportedArchitectures =>
        _supported ??= Nvrtc.GetSupportedArchitectures().Select(CudaArchitecture.FromNumber).Order().ToArray();

    private CudaArchitecture[]? _supported;

    /// <summary>Compiles one embedded kernel source (e.g. <c>rmsnorm.cu</c>) with the embedded headers.</summary>
    /// <param name="sourceName">File name under <c>kernels/</c>.</param>
    /// <param name="architecture">Target architecture.</param>
    /// <param name="kind">PTX (virtual architecture) or cubin (real architecture).</param>
    /// <param name="extraOptions">Options added after the defaults, e.g. <c>-lineinfo</c>.</param>
    public CudaImage CompileEmbedded(string sourceName, CudaArchitecture architecture, CudaImageKind kind, IReadOnlyList<string>? extraOptions = null) =>
        Compile(sourceName, CudaKernelSources.Read(sourceName), architecture, kind, CudaKernelSources.Headers, extraOptions);

    /// <summary>Compiles a source; the result comes from the cache when an identical compilation is there.</summary>
    /// <param name="sourceName">Name for diagnostics (appears in NVRTC's log lines).</param>
    /// <param name="source">CUDA C++ source.</param>
    /// <param name="architecture">Target architecture.</param>
    /// <param name="kind">PTX (for <c>compute_XY</c>) or cubin (for <c>sm_XY</c>).</param>
    /// <param name="headers">Headers as (include name, text); <see langword="null"/> for the embedded ones.</param>
    /// <param name="extraOptions">Options added after the defaults.</param>
    /// <exception cref="NvrtcException">Compilation failed; the message holds NVRTC's log.</exception>
    public CudaImage Compile(string sourceName, string source, CudaArchitecture architecture, CudaImageKind kind,
        IReadOnlyList<KeyValuePair<string, string>>? headers = null, IReadOnlyList<string>? extraOptions = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(sourceName);
        ArgumentNullException.ThrowIfNull(source);
        headers ??= CudaKernelSources.Headers;
        var options = BuildOptions(architecture, kind, extraOptions);

        var key = CudaKernelCache.ComputeKey(KeyParts(sourceName, source, architecture, kind, headers, options));
        if (Cache is not null && Cache.TryGet(key, out var cached))
        {
            return new CudaImage(sourceName, kind, architecture, cached, string.Empty, FromCache: true);
        }

        using var program = Nvrtc.CreateProgram(source, sourceName, headers);
        var (result, log) = Nvrtc.Compile(program, options);
        if (result != NvrtcResult.Success)
        {
            throw new NvrtcException($"nvrtcCompileProgram({sourceName}, {string.Join(' ', options)})", result, log);
        }

        var bytes = kind == CudaImageKind.Ptx ? Nvrtc.GetPtx(program) : Nvrtc.GetCubin(program);
        Cache?.Put(key, bytes);
        return new CudaImage(sourceName, kind, architecture, bytes, log, FromCache: false);
    }

    /// <summary>
    /// The best target for a device: a cubin for its own architecture when this NVRTC knows it, else PTX for the
    /// newest architecture NVRTC knows that the device can run (the driver JIT-compiles it).
    /// </summary>
    /// <param name="device">The device's compute capability.</param>
    /// <exception cref="NotSupportedException">The device is older than anything this NVRTC targets.</exception>
    public (CudaArchitecture Architecture, CudaImageKind Kind) ChooseTarget(CudaArchitecture device)
    {
        var supported = SupportedArchitectures;
        if (supported.Contains(device))
        {
            return (device, CudaImageKind.Cubin);
        }

        var older = supported.Where(a => a.CompareTo(device) <= 0).ToArray();
        if (older.Length == 0)
        {
            throw new NotSupportedException(
                $"NVRTC {Version.Major}.{Version.Minor} targets {string.Join(", ", supported.Select(a => a.RealName))}; device sm_{device.Number} is older than all of them.");
        }

        return (older[^1], CudaImageKind.Ptx);
    }

    private List<string> BuildOptions(CudaArchitecture architecture, CudaImageKind kind, IReadOnlyList<string>? extra)
    {
        var options = new List<string>(DefaultOptions)
        {
            "--gpu-architecture=" + (kind == CudaImageKind.Ptx ? architecture.VirtualName : architecture.RealName),
        };
        if (extra is not null)
        {
            options.AddRange(extra);
        }

        return options;
    }

    private IEnumerable<string> KeyParts(string sourceName, string source, CudaArchitecture architecture, CudaImageKind kind,
        IReadOnlyList<KeyValuePair<string, string>> headers, List<string> options)
    {
        yield return $"nvrtc {Version.Major}.{Version.Minor}";
        yield return $"arch {architecture.Number}";
        yield return $"kind {kind}";
        yield return $"options {options.Count}";
        foreach (var o in options)
        {
            yield return o;
        }

        yield return sourceName;
        yield return source;
        yield return $"headers {headers.Count}";
        foreach (var (name, text) in headers.OrderBy(h => h.Key, StringComparer.Ordinal))
        {
            yield return name;
            yield return text;
        }
    }
}
