using Rellax.Runtime;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Rellax.Rec;

/// <summary>
/// An on-disk cache for the pipeline's expensive, deterministic stages (LLM item vectors; SUBR positions), so a second run
/// over the same inputs does not recompute them. Each entry is one file named by the SHA-256 of everything that went into
/// it (<see cref="CacheKey"/>); a changed input gives a new name, never a stale hit. Files are written to a temporary name
/// and renamed. A file that is unreadable or fails its checks is ignored (and reported through <see cref="Warn"/>), never
/// trusted: the stage recomputes and overwrites it.
/// </summary>
/// <remarks>
/// Formats (little-endian): vectors <c>item-vectors-KEY.bin</c> = <c>"RLXVEC01"</c>, int32 rows, int32 dim, rows × dim f32;
/// positions <c>subr-KEY.bin</c> = <c>"RLXPOS01"</c>, int32 samples, then per sample int32 n and n int32 positions.
/// </remarks>
internal sealed class PipelineCache(string directory, Action<string>? warn = null)
{
    private static readonly byte[] VectorsMagic = "RLXVEC01"u8.ToArray();
    private static readonly byte[] PositionsMagic = "RLXPOS01"u8.ToArray();

    /// <summary>The cache folder.</summary>
    public string Directory { get; } = directory;

    /// <summary>Receives one line per ignored or unwritable cache file.</summary>
    public Action<string>? Warn { get; } = warn;

    /// <summary>The path of the vectors entry for <paramref name="key"/>.</summary>
    public string VectorsPath(string key) => Path.Combine(Directory, $"item-vectors-{key}.bin");

    /// <summary>The path of the positions entry for <paramref name="key"/>.</summary>
    public string PositionsPath(string key) => Path.Combine(Directory, $"subr-{key}.bin");

    /// <summary>Reads cached vectors [rows, dim], or null on a miss (or a bad file, reported).</summary>
    public float[]? TryLoadVectors(string key, int rows, int dim)
    {
        string path = VectorsPath(key);
        if (!File.Exists(path)) return null;
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            long expected = 16 + (long)rows * dim * 4;
            if (bytes.Length != expected || !bytes.AsSpan(0, 8).SequenceEqual(VectorsMagic)
                || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8)) != rows || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(12)) != dim)
            {
                Warn?.Invoke($"cache file '{path}' does not hold [{rows}, {dim}] vectors; recomputing");
                return null;
            }
            var result = MemoryMarshal.Cast<byte, float>(bytes.AsSpan(16)).ToArray();
            foreach (float v in result)
                if (!float.IsFinite(v)) { Warn?.Invoke($"cache file '{path}' holds a non-finite value; recomputing"); return null; }
            return result;
        }
        catch (IOException e) { Warn?.Invoke($"cache file '{path}' could not be read ({e.Message}); recomputing"); return null; }
    }

    /// <summary>Writes vectors [rows, dim] for <paramref name="key"/>; a failure to write is reported, not thrown.</summary>
    public void SaveVectors(string key, ReadOnlySpan<float> vectors, int rows, int dim)
    {
        var bytes = new byte[16 + vectors.Length * 4];
        VectorsMagic.CopyTo(bytes, 0);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), rows);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), dim);
        MemoryMarshal.AsBytes(vectors).CopyTo(bytes.AsSpan(16));
        Write(VectorsPath(key), bytes);
    }

    /// <summary>Reads cached positions for <paramref name="samples"/> samples, each list checked against its history
    /// length and <paramref name="k"/>; null on a miss or a bad file (reported).</summary>
    public int[][]? TryLoadPositions(string key, IReadOnlyList<ReLLaSample> samples, int k)
    {
        string path = PositionsPath(key);
        if (!File.Exists(path)) return null;
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            var span = bytes.AsSpan();
            if (span.Length < 12 || !span[..8].SequenceEqual(PositionsMagic) || BinaryPrimitives.ReadInt32LittleEndian(span[8..]) != samples.Count)
            {
                Warn?.Invoke($"cache file '{path}' does not hold positions for {samples.Count} samples; recomputing");
                return null;
            }
            int at = 12;
            var result = new int[samples.Count][];
            for (int s = 0; s < samples.Count; s++)
            {
                if (at + 4 > span.Length) { Warn?.Invoke($"cache file '{path}' is truncated; recomputing"); return null; }
                int n = BinaryPrimitives.ReadInt32LittleEndian(span[at..]);
                at += 4;
                int history = samples[s].HistoryLength;
                if (n != Math.Min(k, history) || at + 4L * n > span.Length) { Warn?.Invoke($"cache file '{path}': sample {s} has a bad count; recomputing"); return null; }
                var p = new int[n];
                for (int j = 0; j < n; j++, at += 4)
                {
                    p[j] = BinaryPrimitives.ReadInt32LittleEndian(span[at..]);
                    if ((uint)p[j] >= (uint)history) { Warn?.Invoke($"cache file '{path}': sample {s} has a position outside its history; recomputing"); return null; }
                }
                result[s] = p;
            }
            if (at != span.Length) { Warn?.Invoke($"cache file '{path}' has trailing bytes; recomputing"); return null; }
            return result;
        }
        catch (IOException e) { Warn?.Invoke($"cache file '{path}' could not be read ({e.Message}); recomputing"); return null; }
    }

    /// <summary>Writes positions for <paramref name="key"/>; a failure to write is reported, not thrown.</summary>
    public void SavePositions(string key, IReadOnlyList<int[]> positions)
    {
        long words = 1 + positions.Count + positions.Sum(p => (long)p.Length);
        var bytes = new byte[8 + 4 * words];
        PositionsMagic.CopyTo(bytes, 0);
        int at = 8;
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at), positions.Count);
        at += 4;
        foreach (var p in positions)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at), p.Length);
            at += 4;
            foreach (int v in p) { BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at), v); at += 4; }
        }
        Write(PositionsPath(key), bytes);
    }

    private void Write(string path, byte[] bytes)
    {
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            OutputFile.Write(path, stream => stream.Write(bytes));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Warn?.Invoke($"could not write cache file '{path}' ({e.Message}); continuing without it");
        }
    }
}

/// <summary>Builds a cache key: the SHA-256 (hex, 32 characters kept) of every part added, each length-prefixed so that
/// different splits of the same bytes never collide.</summary>
internal sealed class CacheKey : IDisposable
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    /// <summary>Starts a key for entries of kind <paramref name="kind"/> (e.g. <c>item-vectors v1</c>).</summary>
    public CacheKey(string kind) => Add(kind);

    /// <summary>Adds a string.</summary>
    public CacheKey Add(string value)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        Add(bytes.Length);
        _hash.AppendData(bytes);
        return this;
    }

    /// <summary>Adds an integer.</summary>
    public CacheKey Add(long value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, value);
        _hash.AppendData(b);
        return this;
    }

    /// <summary>Adds raw bytes of unmanaged values.</summary>
    public CacheKey Add<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        Add(values.Length);
        _hash.AppendData(MemoryMarshal.AsBytes(values));
        return this;
    }

    /// <summary>Adds a file's identity: full path, length and last write time (not its content: model files are large).</summary>
    public CacheKey AddFileIdentity(string path)
    {
        var info = new FileInfo(path);
        Add(info.FullName);
        Add(info.Exists ? info.Length : -1);
        Add(info.Exists ? info.LastWriteTimeUtc.Ticks : 0);
        return this;
    }

    /// <summary>The key as 32 hex characters.</summary>
    public string Finish() => Convert.ToHexStringLower(_hash.GetHashAndReset())[..32];

    /// <inheritdoc/>
    public void Dispose() => _hash.Dispose();
}
