using NUnit.Framework;

namespace Rellax.Tests;

/// <summary>
/// Locates the read-only test material folder <c>shared/data</c>: the environment variable
/// <c>RELLAX_SHARED_DATA</c> when set, otherwise the first <c>shared/data</c> found beside the test assembly
/// directory or any of its ancestors (the repository is cloned with <c>shared/</c> beside its root).
/// </summary>
public static class TestData
{
    /// <summary>Full path of <c>shared/data</c>, or <see langword="null"/> when it is not present.</summary>
    public static string? SharedDataDir { get; } = Find();

    private static string? Find()
    {
        string? env = Environment.GetEnvironmentVariable("RELLAX_SHARED_DATA");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return Path.GetFullPath(env);
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "data");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>The repository root: the first folder holding <c>Kernels.sln</c> at or above the test assembly's.</summary>
    /// <exception cref="DirectoryNotFoundException">No such folder.</exception>
    public static string RepoRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Kernels.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"the repository root (Kernels.sln) was not found above '{AppContext.BaseDirectory}'");
    }

    /// <summary>
    /// Full path of <paramref name="relative"/> (a file or folder under <c>shared/data</c>); marks the
    /// calling test ignored when it is absent.
    /// </summary>
    public static string RequireShared(string relative)
    {
        if (SharedDataDir is null)
            Assert.Ignore($"shared/data not found at any ancestor of '{AppContext.BaseDirectory}' (or RELLAX_SHARED_DATA); needed for '{relative}'.");
        string path = Path.Combine(SharedDataDir!, relative);
        if (!File.Exists(path) && !Directory.Exists(path))
            Assert.Ignore($"Test data '{relative}' not found at '{path}'.");
        return path;
    }
}
