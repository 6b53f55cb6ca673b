using System.Runtime.InteropServices;

namespace Rellax.Runtime;

/// <summary>
/// The one way Rellax writes an output file or folder, so that an output path never destroys anything.
/// <list type="bullet">
/// <item>A regular file (or a path that does not exist yet) is written atomically: a temporary file beside the target
/// (<c>NAME.tmp-PID-GUID</c>) is filled, flushed to disk and renamed over it; an existing file's permissions are kept.
/// A failed or cancelled write deletes the temporary file and leaves whatever was there before untouched.</item>
/// <item>A symbolic link is followed to its final target, and the target is replaced (the link stays a link).</item>
/// <item>A character device or a FIFO (<c>/dev/null</c>, <c>/dev/stdout</c>, a named pipe) is written directly, streamed,
/// with no temporary file and no rename: it is never replaced by a regular file.</item>
/// <item><see cref="Check"/> refuses an output that is the same file as one of the command's inputs (same device and
/// inode after following links, so hard links and different spellings are caught), naming both.</item>
/// <item><see cref="WriteFolder"/> is the folder form: a hidden temporary folder (<c>.NAME.tmp-PID-GUID</c>) renamed into
/// place, replacing an existing folder only when the caller allows it.</item>
/// </list>
/// </summary>
/// <remarks>Every writer of the library (<see cref="SafeTensorsWriter"/>, adapters, DIN checkpoints, prepared datasets,
/// pipeline caches) and of the CLI goes through this type; it is safe to call from several threads on different paths.</remarks>
public static partial class OutputFile
{
    /// <summary>
    /// The name of the <see cref="AppContext"/> data slot that may hold an <c>Action&lt;string, CancellationToken&gt;</c>
    /// called just before a temporary file or folder is renamed into place, with the final path. It is a test seam, not
    /// an API: the <c>rellax</c> command fills it only when its tests ask (<c>RELLAX_TEST_HOLD=output</c>), to hold a
    /// command at that point and interrupt it. It is read at each commit; nothing else of the library reads or sets it.
    /// </summary>
    internal const string BeforeCommitData = "Rellax.Runtime.OutputFile.BeforeCommit";

    /// <summary>The hook in <see cref="BeforeCommitData"/>, or null (the normal case).</summary>
    private static Action<string, CancellationToken>? BeforeCommit => AppContext.GetData(BeforeCommitData) as Action<string, CancellationToken>;

    /// <summary>What sits at a path, after following symbolic links.</summary>
    private enum Kind { Missing, Regular, Directory, CharacterDevice, Fifo, Other }

    /// <summary>
    /// Fails early, before any long work, when <paramref name="path"/> could not be written at the end or would overwrite
    /// an input: its folder does not exist, it is a folder, or it is the same file as one of <paramref name="inputs"/>
    /// (a file, or a folder whose files count as inputs; compared by device and inode).
    /// </summary>
    /// <param name="path">The output file.</param>
    /// <param name="option">How the user named it, for messages (e.g. <c>--output</c>).</param>
    /// <param name="inputs">The command's input files and folders (null entries are skipped).</param>
    /// <exception cref="DirectoryNotFoundException">The output's folder does not exist.</exception>
    /// <exception cref="IOException">The output is a folder, or the same file as an input.</exception>
    public static void Check(string path, string option, params IEnumerable<string?> inputs)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var kind = KindOf(Path.GetFullPath(path));
        if (kind == Kind.Directory) throw new IOException($"{option} '{path}' is a folder, not a file");
        if (kind is Kind.CharacterDevice or Kind.Fifo) return;
        string target = Resolve(path);
        string? dir = Path.GetDirectoryName(target);
        if (dir is not null && !Directory.Exists(dir)) throw new DirectoryNotFoundException($"{option} '{path}': folder '{dir}' does not exist");
        if (kind == Kind.Missing) return;
        foreach (string? input in inputs)
        {
            if (string.IsNullOrEmpty(input)) continue;
            if (IsSameFile(target, input))
                throw new IOException($"{option} '{path}' is the same file as the input '{input}'; refusing to overwrite an input");
            if (KindOf(Resolve(input)) == Kind.Directory)
                foreach (string file in Directory.EnumerateFiles(input))
                    if (IsSameFile(target, file))
                        throw new IOException($"{option} '{path}' is the same file as '{file}' of the input '{input}'; refusing to overwrite an input");
        }
    }

    /// <summary>
    /// Fails early when the folder <paramref name="path"/> could not be written by <see cref="WriteFolder"/>: its parent
    /// does not exist, it is a file, an existing folder that <paramref name="refuse"/> will not let be replaced, or a folder
    /// that is or holds one of <paramref name="inputs"/>.
    /// </summary>
    /// <param name="path">The output folder.</param>
    /// <param name="option">How the user named it, for messages.</param>
    /// <param name="refuse">Given an existing folder's full path, the reason it must not be replaced, or null when it may be.</param>
    /// <param name="inputs">The command's input files and folders (null entries are skipped).</param>
    /// <exception cref="DirectoryNotFoundException">The parent folder does not exist.</exception>
    /// <exception cref="IOException">The target is a file, may not be replaced, or is or holds an input.</exception>
    public static void CheckFolder(string path, string option, Func<string, string?> refuse, params IEnumerable<string?> inputs)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(refuse);
        string target = Resolve(path);
        string? parent = Path.GetDirectoryName(target);
        if (parent is null) throw new IOException($"{option} '{path}' has no parent folder");
        if (!Directory.Exists(parent)) throw new DirectoryNotFoundException($"{option} '{path}': its parent folder '{parent}' does not exist");
        var kind = KindOf(target);
        if (kind == Kind.Missing) return;
        if (kind != Kind.Directory) throw new IOException($"{option} '{path}' is a file, not a folder");
        if (refuse(target) is { } reason) throw new IOException($"{option} '{path}' {reason}; refusing to replace it");
        foreach (string? input in inputs)
        {
            if (string.IsNullOrEmpty(input)) continue;
            for (string? at = Resolve(input); at is not null; at = Path.GetDirectoryName(at))
                if (IsSameFile(target, at))
                    throw new IOException($"{option} '{path}' is or holds the input '{input}'; refusing to replace it");
        }
    }

    /// <summary>
    /// Writes <paramref name="path"/> (see the type's summary): <paramref name="write"/> fills a stream that is then flushed
    /// to disk and renamed over the target, or streams straight into a character device or FIFO.
    /// </summary>
    /// <param name="path">The output file; its folder must exist.</param>
    /// <param name="write">Writes the content; it may check <paramref name="cancellationToken"/> between units of work.</param>
    /// <param name="cancellationToken">Checked before the rename: a cancelled write leaves no temporary file and the old
    /// target untouched.</param>
    /// <exception cref="IOException">The path is a folder or writing failed; nothing new is left behind.</exception>
    /// <exception cref="OperationCanceledException">Cancelled before the rename.</exception>
    public static void Write(string path, Action<Stream> write, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(write);
        // The kernel follows links for the kind (/dev/stdout -> /proc/self/fd/1 -> "pipe:[...]", which is no path).
        string full = Path.GetFullPath(path);
        var kind = KindOf(full);
        if (kind == Kind.Directory) throw new IOException($"'{path}' is a folder, not a file");
        if (kind is Kind.CharacterDevice or Kind.Fifo)
        {
            using var device = new FileStream(full, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1 << 16);
            write(device);
            device.Flush();
            return;
        }
        if (kind == Kind.Other) throw new IOException($"'{path}' is neither a regular file, a character device nor a FIFO; refusing to replace it");
        string target = Resolve(path);
        string temp = target + $".tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            if (kind == Kind.Regular && !OperatingSystem.IsWindows())
                File.SetUnixFileMode(temp, File.GetUnixFileMode(target));
            BeforeCommit?.Invoke(target, cancellationToken);
            cancellationToken.ThrowIfCancellationRequested();
            File.Move(temp, target, overwrite: true);
        }
        finally
        {
            TryDelete(temp);
        }
    }

    /// <summary>
    /// Writes the folder <paramref name="path"/>: <paramref name="write"/> fills a new hidden folder beside it, which then
    /// takes the target's place (an existing folder is swapped out with two renames and deleted; if the second rename
    /// fails, it is moved back). A failed or cancelled write deletes the temporary folder and leaves the old one as it was.
    /// </summary>
    /// <param name="path">The output folder; its parent must exist. A symbolic link is followed.</param>
    /// <param name="refuse">Given an existing folder's full path, the reason it must not be replaced, or null when it may be
    /// (e.g. it is empty or an earlier output of the same kind).</param>
    /// <param name="write">Fills the temporary folder (its full path is passed; it exists and is empty).</param>
    /// <param name="cancellationToken">Checked before the rename.</param>
    /// <exception cref="DirectoryNotFoundException">The parent folder does not exist.</exception>
    /// <exception cref="IOException">The target is a file or may not be replaced, or writing failed.</exception>
    /// <exception cref="OperationCanceledException">Cancelled before the rename.</exception>
    public static void WriteFolder(string path, Func<string, string?> refuse, Action<string> write, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(write);
        CheckFolder(path, "output folder", refuse);
        string target = Resolve(path);
        string parent = Path.GetDirectoryName(target)!;
        string temp = Path.Combine(parent, $".{Path.GetFileName(target)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            Directory.CreateDirectory(temp);
            write(temp);
            BeforeCommit?.Invoke(target, cancellationToken);
            cancellationToken.ThrowIfCancellationRequested();
            Replace(temp, target);
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }

    /// <summary>Whether <paramref name="a"/> and <paramref name="b"/> are the same file or folder: same device and inode
    /// after following links (on Windows, the same full path after following links). A missing path is never the same.</summary>
    public static bool IsSameFile(string a, string b)
    {
        string ra = Resolve(a), rb = Resolve(b);
        if (OperatingSystem.IsWindows())
            return (File.Exists(ra) || Directory.Exists(ra)) && string.Equals(ra, rb, StringComparison.OrdinalIgnoreCase);
        return Stat(ra) is { } sa && Stat(rb) is { } sb && sa.Device == sb.Device && sa.Inode == sb.Inode;
    }

    /// <summary>Whether <paramref name="path"/> is, after following links, a regular file: one that can be read twice
    /// (not a FIFO, a character device such as <c>/dev/stdin</c> on a terminal, or a pipe behind <c>/dev/stdin</c>).</summary>
    /// <param name="path">Any path; a missing one is not a regular file.</param>
    internal static bool IsRegularFile(string path) => KindOf(Path.GetFullPath(path)) == Kind.Regular;

    /// <summary>The full path with every symbolic link followed to its final target (a dangling link gives the path it
    /// points to, which the write then creates).</summary>
    private static string Resolve(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        for (int hops = 0; hops < 40; hops++)
        {
            FileSystemInfo info = Directory.Exists(full) ? new DirectoryInfo(full) : new FileInfo(full);
            if (info.LinkTarget is not { } link) return full;
            full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(link, Path.GetDirectoryName(full)!));
        }
        throw new IOException($"'{path}': too many levels of symbolic links");
    }

    private static Kind KindOf(string resolved)
    {
        if (OperatingSystem.IsWindows())
            return Directory.Exists(resolved) ? Kind.Directory : File.Exists(resolved) ? Kind.Regular : Kind.Missing;
        if (Stat(resolved) is not { } s) return Kind.Missing;
        return (s.Mode & 0xF000) switch
        {
            0x8000 => Kind.Regular,
            0x4000 => Kind.Directory,
            0x2000 => Kind.CharacterDevice,
            0x1000 => Kind.Fifo,
            _ => Kind.Other,
        };
    }

    private static void Replace(string temp, string target)
    {
        if (!Directory.Exists(target))
        {
            Directory.Move(temp, target);
            return;
        }
        string old = Path.Combine(Path.GetDirectoryName(target)!, $".{Path.GetFileName(target)}.old-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.Move(target, old);
        try
        {
            Directory.Move(temp, target);
        }
        catch
        {
            Directory.Move(old, target);
            throw;
        }
        try { Directory.Delete(old, recursive: true); }
        catch (IOException) { /* the new folder is in place; a leftover hidden .old folder is harmless */ }
        catch (UnauthorizedAccessException) { }
    }

    private static void TryDelete(string temp)
    {
        try { if (File.Exists(temp)) File.Delete(temp); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private readonly record struct StatResult(ulong Device, ulong Inode, int Mode);

    /// <summary><c>statx(2)</c> following links (its buffer layout is the same on every Linux architecture), or null when
    /// the path does not exist or cannot be examined.</summary>
    private static unsafe StatResult? Stat(string path)
    {
        const int AtFdCwd = -100, StatxBasicStats = 0x7ff;
        byte* buffer = stackalloc byte[256];
        if (Native.Statx(AtFdCwd, path, 0, StatxBasicStats, buffer) != 0) return null;
        int mode = *(ushort*)(buffer + 28);
        ulong inode = *(ulong*)(buffer + 32);
        ulong device = ((ulong)*(uint*)(buffer + 136) << 32) | *(uint*)(buffer + 140);
        return new StatResult(device, inode, mode);
    }

    private static partial class Native
    {
        [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static unsafe partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);
    }
}
