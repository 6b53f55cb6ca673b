using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// The hand-written CUDA sources (<c>kernels/*.cu</c>) and shared headers (<c>kernels/*.cuh</c>) embedded in this
/// assembly as resources named <c>kernels/&lt;file&gt;</c>.
/// </summary>
internal static partial class CudaKernelSources
{
    /// <summary>Prefix of the embedded resource names.</summary>
    public const string ResourcePrefix = "kernels/";

    private static readonly Assembly Owner = typeof(CudaKernelSources).Assembly;

    private static readonly Lazy<string[]> AllFiles = new(() => Owner.GetManifestResourceNames()
        .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal))
        .Select(n => n[ResourcePrefix.Length..])
        .Order(StringComparer.Ordinal)
        .ToArray());

    /// <summary>File names of the kernel sources, e.g. <c>rmsnorm.cu</c>, in ordinal order.</summary>
    public static IReadOnlyList<string> SourceNames { get; } =
        AllFiles.Value.Where(n => n.EndsWith(".cu", StringComparison.Ordinal)).ToArray();

    /// <summary>File names of the shared headers, e.g. <c>rellax_common.cuh</c>.</summary>
    public static IReadOnlyList<string> HeaderNames { get; } =
        AllFiles.Value.Where(n => n.EndsWith(".cuh", StringComparison.Ordinal)).ToArray();

    private static readonly Lazy<KeyValuePair<string, string>[]> HeaderContents = new(() =>
        HeaderNames.Select(h => KeyValuePair.Create(h, Read(h))).ToArray());

    /// <summary>Every header as (include name, text): what NVRTC gets for <c>#include "name"</c>.</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> Headers => HeaderContents.Value;

    /// <summary>Reads an embedded source or header by file name (e.g. <c>rmsnorm.cu</c>).</summary>
    /// <param name="fileName">The file name under <c>kernels/</c>.</param>
    /// <exception cref="FileNotFoundException">No such embedded file.</exception>
    public static string Read(string fileName)
    {
        ArgumentException.ThrowIfNullOrEmpty(fileName);
        using var stream = Owner.GetManifestResourceStream(ResourcePrefix + fileName)
            ?? throw new FileNotFoundException(
                $"No embedded CUDA source '{ResourcePrefix}{fileName}' in {Owner.GetName().Name}; embedded: {string.Join(", ", AllFiles.Value)}",
                fileName);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>
    /// The <c>extern "C" __global__</c> kernel names defined in a source (comments are ignored), in order of
    /// appearance. These are the names <c>cuModuleGetFunction</c> finds and the PTX <c>.entry</c> names.
    /// </summary>
    /// <param name="source">CUDA C++ source text.</param>
    public static IReadOnlyList<string> FindEntryPoints(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var code = CommentPattern().Replace(source, " ");
        return EntryPointPattern().Matches(code).Select(m => m.Groups["name"].Value).Distinct().ToArray();
    }

    /// <summary>The embedded source file that defines kernel <paramref name="entryPoint"/>, or <see langword="null"/>.</summary>
    /// <param name="entryPoint">An <c>extern "C"</c> kernel name.</param>
    public static string? FindSourceOf(string entryPoint) =>
        SourceNames.FirstOrDefault(s => FindEntryPoints(Read(s)).Contains(entryPoint, StringComparer.Ordinal));

    [GeneratedRegex(@"//[^\n]*|/\*.*?\*/", RegexOptions.Singleline)]
    private static partial Regex CommentPattern();

    [GeneratedRegex(@"extern\s+""C""\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(?<name>[A-Za-z_]\w*)\s*\(")]
    private static partial Regex EntryPointPattern();
}
