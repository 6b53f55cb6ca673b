namespace Rellax.Runtime;

/// <summary>
/// The checks every input path goes through before it is opened, so that a folder passed where a file is expected (and the
/// reverse) says so in one line instead of a .NET access error.
/// </summary>
internal static class InputPaths
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
    /// <param name="what">What the folder is, for the message (<c>model folder</c>).</param>
    /// <exception cref="DirectoryNotFoundException">Nothing exists at <paramref name="path"/>.</exception>
    /// <exception cref="IOException"><paramref name="path"/> is a file.</exception>
    public static void RequireDirectory(string path, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (File.Exists(path)) throw new IOException($"{what} '{path}' is a file, not a folder");
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"{what} '{path}' does not exist");
    }

    /// <summary>The largest JSON config read (<c>config.json</c>, <c>adapter_config.json</c>, a shard index): 16 MiB.</summary>
    public const int MaxConfigBytes = 16 << 20;

    /// <summary>The largest <c>tokenizer.json</c> read: 256 MiB (Llama 3's is 9 MB, the largest multilingual ones about 35 MB).</summary>
    public const int MaxTokenizerBytes = 256 << 20;

    /// <summary><see cref="ReadAllBytes"/> decoded as UTF-8 (a byte-order mark is dropped; invalid bytes become U+FFFD, as
    /// <see cref="File.ReadAllText(string)"/> does).</summary>
    public static string ReadAllText(string path, string what, int maxBytes)
    {
        byte[] bytes = ReadAllBytes(path, what, maxBytes);
        var span = bytes.AsSpan();
        if (span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) span = span[3..];
        return System.Text.Encoding.UTF8.GetString(span);
    }

    /// <summary>
    /// The whole content of a small file (a manifest, a config), read in chunks and refused once it passes
    /// <paramref name="maxBytes"/>, so a huge or endless file (a symlink to <c>/dev/zero</c>) fails fast.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file is, for the message.</param>
    /// <param name="maxBytes">The largest size accepted.</param>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">The path is a folder.</exception>
    /// <exception cref="RecordException">The file is larger than <paramref name="maxBytes"/>.</exception>
    public static byte[] ReadAllBytes(string path, string what, int maxBytes)
    {
        RequireFile(path, what);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        var buffer = new MemoryStream();
        var chunk = new byte[1 << 16];
        for (int n; (n = stream.Read(chunk)) > 0;)
        {
            if (buffer.Length + n > maxBytes)
                throw new RecordException(path, null, $"the {what} is larger than {LineReader.Describe(maxBytes)}, the most read for one (is this the right file?)");
            buffer.Write(chunk, 0, n);
        }
        return buffer.ToArray();
    }
}
