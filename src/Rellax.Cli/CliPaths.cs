namespace Rellax.Cli;

/// <summary>
/// The checks a command's input paths go through before any long work, so that a folder passed where a file is expected
/// (and the reverse) says so in one line naming the option, not in a .NET access error later.
/// </summary>
internal static class CliPaths
{
    /// <summary>
    /// <paramref name="path"/> must name something that can be read as a file: a regular file, or a device or FIFO
    /// (<c>/dev/stdin</c>, a pipe), never a folder.
    /// </summary>
    /// <param name="path">The path as the user gave it.</param>
    /// <param name="what">What the file is, for the message (<c>samples file</c>, <c>--input</c>).</param>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    /// <exception cref="IOException"><paramref name="path"/> is a folder.</exception>
    public static void RequireFile(string path, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path)) throw new IOException($"{what} '{path}' is a folder, not a file");
        if (!File.Exists(path)) throw new FileNotFoundException($"{what} '{path}' does not exist", path);
    }

    /// <summary><paramref name="path"/> must be an existing folder, not a file.</summary>
    /// <param name="path">The path as the user gave it.</param>
    /// <param name="what">What the folder is, for the message (<c>--data folder</c>).</param>
    /// <exception cref="DirectoryNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    /// <exception cref="IOException"><paramref name="path"/> is a file.</exception>
    public static void RequireDirectory(string path, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (File.Exists(path)) throw new IOException($"{what} '{path}' is a file, not a folder");
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"{what} '{path}' does not exist");
    }
}
