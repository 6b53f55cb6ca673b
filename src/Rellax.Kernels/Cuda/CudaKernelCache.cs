using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// On-disk cache of compiled kernel images (PTX / cubin), keyed by the SHA-256 of everything that affects the
/// output: sources, headers, options, target architecture, image kind and NVRTC version.
/// </summary>
/// <remarks>
/// Default directory: <c>$XDG_CACHE_HOME/rellax/cuda</c>, else <c>~/.cache/rellax/cuda</c>. Entries are written
/// atomically (temporary file, then rename) and carry a header with a checksum of the payload; an entry that is
/// truncated or corrupt is deleted and treated as a miss, so it is rebuilt. The cache never makes a compilation
/// fail: I/O errors only cost the cache.
/// </remarks>
internal sealed class CudaKernelCache
{
    private static ReadOnlySpan<byte> Magic => "RLXCUDA1"u8;
    private const int HeaderSize = 8 + 8 + 32; // magic, payload length, payload SHA-256

    private long _hits, _misses, _rejected;

    /// <summary>Creates a cache in <paramref name="directory"/> (created on first write), or in <see cref="DefaultDirectory"/>.</summary>
    /// <param name="directory">The cache directory, or <see langword="null"/> for the default.</param>
    public CudaKernelCache(string? directory = null) => Directory = directory ?? DefaultDirectory;

    /// <summary><c>$XDG_CACHE_HOME/rellax/cuda</c>, else <c>~/.cache/rellax/cuda</c>.</summary>
    public static string DefaultDirectory
    {
        get
        {
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            var root = !string.IsNullOrWhiteSpace(xdg) && Path.IsPathRooted(xdg)
                ? xdg
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.Combine(root, "rellax", "cuda");
        }
    }

    /// <summary>The directory entries live in.</summary>
    public string Directory { get; }

    /// <summary>Lookups that found a valid entry.</summary>
    public long Hits => Interlocked.Read(ref _hits);

    /// <summary>Lookups that found nothing usable (including rejected entries).</summary>
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Entries found corrupt or truncated (and deleted).</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    /// <summary>The key for a compilation: hex SHA-256 over every input, each length-prefixed.</summary>
    /// <param name="parts">Inputs (version, architecture, kind, options, source names and texts).</param>
    public static string ComputeKey(IEnumerable<string> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> length = stackalloc byte[8];
        foreach (var part in parts.Prepend("rellax-cuda-cache-v1"))
        {
            var bytes = Encoding.UTF8.GetBytes(part);
            BinaryPrimitives.WriteInt64LittleEndian(length, bytes.Length);
            hash.AppendData(length);
            hash.AppendData(bytes);
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>The file an entry lives in.</summary>
    /// <param name="key">A key from <see cref="ComputeKey"/>.</param>
    public string PathFor(string key)
    {
        if (key.Length != 64 || !key.All(char.IsAsciiHexDigitLower))
        {
            throw new ArgumentException($"Cache key must be 64 lower-case hex digits, got '{key}'.", nameof(key));
        }

        return Path.Combine(Directory, key + ".bin");
    }

    /// <summary>Reads a valid entry; a corrupt one is deleted and reported as a miss.</summary>
    /// <param name="key">A key from <see cref="ComputeKey"/>.</param>
    /// <param name="image">The cached bytes when found.</param>
    public bool TryGet(string key, out byte[] image)
    {
        var path = PathFor(key);
        image = [];
        byte[] file;
        try
        {
            file = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Interlocked.Increment(ref _misses);
            return false; // absent or unreadable
        }

        if (!TryDecode(file, out image))
        {
            Interlocked.Increment(ref _rejected);
            Interlocked.Increment(ref _misses);
            TryDelete(path);
            return false;
        }

        Interlocked.Increment(ref _hits);
        return true;
    }

    /// <summary>Stores an entry atomically (temporary file in the same directory, then rename). Never throws on I/O errors.</summary>
    /// <param name="key">A key from <see cref="ComputeKey"/>.</param>
    /// <param name="image">The bytes to store.</param>
    /// <returns>Whether the entry was written.</returns>
    public bool Put(string key, ReadOnlySpan<byte> image)
    {
        var path = PathFor(key);
        var temp = Path.Combine(Directory, $".{key}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                Span<byte> header = stackalloc byte[HeaderSize];
                Magic.CopyTo(header);
                BinaryPrimitives.WriteInt64LittleEndian(header[8..], image.Length);
                SHA256.HashData(image, header[16..]);
                stream.Write(header);
                stream.Write(image);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            return false;
        }
    }

    private static bool TryDecode(byte[] file, out byte[] image)
    {
        image = [];
        if (file.Length < HeaderSize || !file.AsSpan(0, 8).SequenceEqual(Magic))
        {
            return false;
        }

        var length = BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(8));
        if (length != file.Length - HeaderSize)
        {
            return false;
        }

        var payload = file.AsSpan(HeaderSize);
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(payload, hash);
        if (!hash.SequenceEqual(file.AsSpan(16, 32)))
        {
            return false;
        }

        image = payload.ToArray();
        return true;
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
