using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace Rellax.Runtime;

/// <summary>
/// A read-only, memory-mapped safetensors file
/// (<see href="https://github.com/huggingface/safetensors">format</see>: u64 little-endian header
/// length N, N bytes of UTF-8 JSON, then the raw little-endian tensor data).
/// The whole header is validated on <see cref="Open"/>; tensor bytes are never copied until read.
/// </summary>
/// <remarks>
/// Ownership: this object owns the <see cref="MemoryMappedFile"/>, its view and the acquired view
/// pointer; <see cref="Dispose"/> releases all three. Spans returned by <see cref="GetBytes"/> are
/// valid only until <see cref="Dispose"/>. Reads are thread-safe; Dispose must not race with reads.
/// </remarks>
public sealed unsafe partial class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted (100 MB), so a corrupt length can never cause a huge allocation.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const string ConvertAdvice =
        "Pickle-based checkpoints (.bin/.pt/.pth) can execute arbitrary code and are never unpickled here. " +
        "Convert it once, in a trusted Python environment: " +
        "`import torch, safetensors.torch; safetensors.torch.save_file(torch.load(p), out)` " +
        "(for transformers models: `model.save_pretrained(dir, safe_serialization=True)`).";

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base; // start of the file in the mapped view; null after Dispose
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;

    private SafeTensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr,
        long dataStart, Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        _dataStart = dataStart;
        _tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>All tensors by name (the <c>__metadata__</c> entry excluded).</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    /// <summary>The optional <c>__metadata__</c> string map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Byte offset where the data section starts (8 + header length).</summary>
    public long DataStart => _dataStart;

    /// <summary>
    /// Opens and memory-maps <paramref name="path"/> read-only and validates the whole header.
    /// </summary>
    /// <param name="path">A <c>.safetensors</c> file.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafeTensorsFormatException">The file is a pickle (.bin/.pt/.pth or pickle/zip magic)
    /// or violates the format: too short, header length 0 / over 100 MB / past the end, header not a UTF-8
    /// JSON object, bad <c>__metadata__</c>, unknown dtype, bad shape, offsets outside the data section,
    /// shape × dtype size ≠ byte length, overlapping ranges, duplicate names.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = System.IO.Path.GetFullPath(path);
        string ext = System.IO.Path.GetExtension(full).ToLowerInvariant();
        if (ext is ".bin" or ".pt" or ".pth" or ".pkl" or ".ckpt")
            throw new SafeTensorsFormatException(full, null, $"'{ext}' is a pickle checkpoint extension. {ConvertAdvice}");
        if (System.IO.Directory.Exists(full)) throw new IOException($"safetensors file '{path}' is a folder, not a file");
        if (!File.Exists(full))
            throw new FileNotFoundException($"Safetensors file not found: '{full}'.", full);

        var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        byte* basePtr = null;
        try
        {
            long fileLength = stream.Length;
            if (fileLength < 8)
                throw new SafeTensorsFormatException(full, null, $"file is {fileLength} bytes; at least 8 (the header length) are required.");

            // leaveOpen: false — the map now owns the stream.
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            stream = null!;
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            basePtr += view.PointerOffset;

            var (tensors, metadata, dataStart) = ParseHeader(full, basePtr, fileLength);
            return new SafeTensorsFile(full, map, view, basePtr, dataStart, tensors, metadata);
        }
        catch
        {
            if (basePtr != null) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            stream?.Dispose();
            throw;
        }
    }

    private static bool LooksLikePickle(ReadOnlySpan<byte> head) =>
        (head.Length >= 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && head[2] == 3 && head[3] == 4) // zip (torch.save >= 1.6)
        || (head.Length >= 2 && head[0] == 0x80 && head[1] is >= 2 and <= 5); // pickle PROTO opcode

    private static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>, long) ParseHeader(
        string path, byte* basePtr, long fileLength)
    {
        var head = new ReadOnlySpan<byte>(basePtr, (int)Math.Min(fileLength, 16));
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(head);
        bool plausible = n > 0 && n <= MaxHeaderBytes && n <= (ulong)(fileLength - 8) && head.Length > 8 && head[8] == (byte)'{';
        if (!plausible && LooksLikePickle(head))
            throw new SafeTensorsFormatException(path, null, $"the file starts with pickle/zip magic (a torch.save checkpoint), not a safetensors header. {ConvertAdvice}");
        if (n == 0)
            throw new SafeTensorsFormatException(path, null, "header length is 0; the header must be a non-empty JSON object.");
        if (n > MaxHeaderBytes)
            throw new SafeTensorsFormatException(path, null, $"declared header length {n} bytes exceeds the {MaxHeaderBytes}-byte limit (corrupt or not a safetensors file).");
        if (n > (ulong)(fileLength - 8))
            throw new SafeTensorsFormatException(path, null, $"declared header length {n} bytes runs past the end of the file ({fileLength} bytes; truncated?).");

        long headerLength = (long)n;
        long dataStart = 8 + headerLength;
        long dataLength = fileLength - dataStart;
        var headerBytes = new ReadOnlySpan<byte>(basePtr + 8, (int)headerLength);

        JsonDocument doc;
        try
        {
            // Validate UTF-8 up front for a clear message (Utf8JsonReader also rejects invalid UTF-8 in strings).
            if (!Utf8.IsValid(headerBytes))
                throw new SafeTensorsFormatException(path, null, "header is not valid UTF-8.");
            doc = JsonDocument.Parse(headerBytes.ToArray(), new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new SafeTensorsFormatException(path, null, $"header is not valid JSON ({e.Message}).", e);
        }

        using (doc)
        {
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsFormatException(path, null, $"header JSON must be an object, found {root.ValueKind}.");

            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var ranges = new List<(long Begin, long End, string Name)>();
            bool sawMetadata = false;
            foreach (JsonProperty prop in root.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (sawMetadata)
                        throw new SafeTensorsFormatException(path, null, "'__metadata__' appears twice.");
                    sawMetadata = true;
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new SafeTensorsFormatException(path, null, "'__metadata__' must be an object of string values.");
                    foreach (JsonProperty m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new SafeTensorsFormatException(path, null, $"'__metadata__' entry '{m.Name}' must be a string, found {m.Value.ValueKind}.");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!))
                            throw new SafeTensorsFormatException(path, null, $"'__metadata__' key '{m.Name}' appears twice.");
                    }
                    continue;
                }

                SafeTensorInfo info = ParseEntry(path, prop, dataStart, dataLength);
                if (!tensors.TryAdd(info.Name, info))
                    throw new SafeTensorsFormatException(path, info.Name, "the tensor name appears twice in the header.");
                if (info.ByteLength > 0)
                    ranges.Add((info.DataOffset - dataStart, info.DataOffset - dataStart + info.ByteLength, info.Name));
            }

            ranges.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            for (int i = 1; i < ranges.Count; i++)
            {
                if (ranges[i].Begin < ranges[i - 1].End)
                    throw new SafeTensorsFormatException(path, ranges[i].Name,
                        $"data_offsets [{ranges[i].Begin}, {ranges[i].End}) overlap tensor '{ranges[i - 1].Name}' [{ranges[i - 1].Begin}, {ranges[i - 1].End}).");
            }
            return (tensors, metadata, dataStart);
        }
    }

    private static SafeTensorInfo ParseEntry(string path, JsonProperty prop, long dataStart, long dataLength)
    {
        string name = prop.Name;
        JsonElement e = prop.Value;
        if (e.ValueKind != JsonValueKind.Object)
            throw new SafeTensorsFormatException(path, name, $"entry must be an object with dtype, shape, data_offsets; found {e.ValueKind}.");

        if (!e.TryGetProperty("dtype", out JsonElement dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw new SafeTensorsFormatException(path, name, "missing or non-string 'dtype'.");
        string dtypeText = dtypeEl.GetString()!;
        if (!SafeTensorDTypes.TryParse(dtypeText, out SafeTensorDType dtype))
            throw new SafeTensorsFormatException(path, name, $"unknown dtype '{dtypeText}' (known: F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2).");

        if (!e.TryGetProperty("shape", out JsonElement shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw new SafeTensorsFormatException(path, name, "missing or non-array 'shape'.");
        int rank = shapeEl.GetArrayLength();
        var shape = new int[rank];
        long count = 1;
        int k = 0;
        foreach (JsonElement d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim))
                throw new SafeTensorsFormatException(path, name, $"shape[{k}] is not an integer ({d.GetRawText()}).");
            if (dim < 0)
                throw new SafeTensorsFormatException(path, name, $"shape[{k}] is negative ({dim}).");
            if (dim > int.MaxValue)
                throw new SafeTensorsFormatException(path, name, $"shape[{k}] = {dim} exceeds {int.MaxValue}.");
            shape[k++] = (int)dim;
            try { count = checked(count * dim); }
            catch (OverflowException) { throw new SafeTensorsFormatException(path, name, "the element count (product of shape) overflows 64 bits."); }
        }

        if (!e.TryGetProperty("data_offsets", out JsonElement offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw new SafeTensorsFormatException(path, name, "'data_offsets' must be an array [begin, end].");
        if (!offEl[0].TryGetInt64Safe(out long begin) || !offEl[1].TryGetInt64Safe(out long end))
            throw new SafeTensorsFormatException(path, name, $"'data_offsets' {offEl.GetRawText()} must be two non-negative integers.");
        if (begin < 0 || end < begin || end > dataLength)
            throw new SafeTensorsFormatException(path, name,
                $"data_offsets [{begin}, {end}] lie outside the data section [0, {dataLength}] (need 0 <= begin <= end <= data length).");

        long expected;
        try { expected = checked(count * dtype.SizeInBytes()); }
        catch (OverflowException) { throw new SafeTensorsFormatException(path, name, "shape × dtype size overflows 64 bits."); }
        if (expected != end - begin)
            throw new SafeTensorsFormatException(path, name,
                $"shape [{string.Join(", ", shape)}] × {dtypeText} ({dtype.SizeInBytes()} bytes) = {expected} bytes, but data_offsets span {end - begin} bytes.");

        foreach (JsonProperty other in e.EnumerateObject())
        {
            if (other.Name is not ("dtype" or "shape" or "data_offsets"))
                throw new SafeTensorsFormatException(path, name, $"unexpected field '{other.Name}' in tensor entry.");
        }
        return new SafeTensorInfo(name, dtype, shape, dataStart + begin, end - begin);
    }

    /// <summary>Whether the file holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor; the message names the tensor and the file.</exception>
    public SafeTensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out SafeTensorInfo? info)
            ? info
            : throw new KeyNotFoundException($"Tensor '{name}' is not in safetensors file '{Path}' ({_tensors.Count} tensors).");

    /// <summary>
    /// Zero-copy view of the raw little-endian bytes of <paramref name="name"/> in the mapped file
    /// (length <see cref="SafeTensorInfo.ByteLength"/>). Valid until <see cref="Dispose"/>.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="ObjectDisposedException">The file was disposed.</exception>
    /// <exception cref="NotSupportedException">The tensor is 2 GiB or larger (a span cannot address it).</exception>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        SafeTensorInfo info = Info(name);
        ObjectDisposedException.ThrowIf(_base == null, this);
        if (info.ByteLength > int.MaxValue)
            throw new NotSupportedException($"Tensor '{name}' in '{Path}' is {info.ByteLength} bytes; spans are limited to {int.MaxValue} bytes.");
        return new ReadOnlySpan<byte>(_base + info.DataOffset, (int)info.ByteLength);
    }

    /// <summary>
    /// Address of the first byte of <paramref name="name"/> in the mapping (<see cref="SafeTensorInfo.ByteLength"/> bytes,
    /// read-only, any size). Valid until <see cref="Dispose"/>: whoever keeps such a pointer must keep this file open.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="ObjectDisposedException">The file was disposed.</exception>
    internal byte* DataPointer(string name)
    {
        SafeTensorInfo info = Info(name);
        ObjectDisposedException.ThrowIf(_base == null, this);
        return _base + info.DataOffset;
    }

    /// <summary>
    /// Tells the kernel that this process no longer needs the mapped pages of <paramref name="name"/> (Linux
    /// <c>madvise(MADV_DONTNEED)</c> on the page-aligned range around it): they leave the resident set at once and stay in the
    /// page cache, so a later read (of this tensor or of a neighbour sharing a boundary page) faults them back in unchanged;
    /// the mapping is read-only, so nothing is lost. Used after quantizing a tensor at load, so that the load's peak resident
    /// set is the quantized model plus about one tensor, not the whole file. A no-op elsewhere or where madvise fails.
    /// </summary>
    internal void ReleasePages(string name)
    {
        if (!OperatingSystem.IsLinux()) return;
        SafeTensorInfo info = Info(name);
        ObjectDisposedException.ThrowIf(_base == null, this);
        long page = Environment.SystemPageSize;
        long start = (long)(_base + info.DataOffset) / page * page;
        long end = ((long)(_base + info.DataOffset + info.ByteLength) + page - 1) / page * page;
        try { _ = Madvise((void*)start, (nuint)(end - start), MadvDontNeed); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    private const int MadvDontNeed = 4;

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);

    /// <summary>
    /// Reads tensor <paramref name="name"/> into a new float32 array of <see cref="SafeTensorInfo.ElementCount"/>
    /// elements (row-major, same order as the file). F32 is copied, F16 and BF16 are converted exactly.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="NotSupportedException">The dtype is not F32/F16/BF16, or the tensor has over 2^31-1 elements.</exception>
    /// <exception cref="ObjectDisposedException">The file was disposed.</exception>
    public float[] ReadFloat32(string name)
    {
        SafeTensorInfo info = Info(name);
        if (info.ElementCount > Array.MaxLength)
            throw new NotSupportedException($"Tensor '{name}' in '{Path}' has {info.ElementCount} elements, too many for one array.");
        var result = GC.AllocateUninitializedArray<float>((int)info.ElementCount);
        ReadFloat32(name, result);
        return result;
    }

    /// <summary>
    /// Reads tensor <paramref name="name"/> as float32 into <paramref name="destination"/>, whose length must be
    /// exactly <see cref="SafeTensorInfo.ElementCount"/>. F32 is copied, F16 and BF16 are converted exactly.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has the wrong length.</exception>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="NotSupportedException">The dtype is not F32/F16/BF16.</exception>
    /// <exception cref="ObjectDisposedException">The file was disposed.</exception>
    public void ReadFloat32(string name, Span<float> destination)
    {
        SafeTensorInfo info = Info(name);
        if (destination.Length != info.ElementCount)
            throw new ArgumentException(
                $"Destination has {destination.Length} elements but tensor '{name}' in '{Path}' has {info.ElementCount} (shape [{string.Join(", ", info.Shape)}]).",
                nameof(destination));
        ReadOnlySpan<byte> src = GetBytes(name);
        if (!BitConverter.IsLittleEndian)
            throw new NotSupportedException("Big-endian hosts are not supported.");
        switch (info.DType)
        {
            case SafeTensorDType.F32:
                MemoryMarshal.Cast<byte, float>(src).CopyTo(destination);
                break;
            case SafeTensorDType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), destination);
                break;
            case SafeTensorDType.BF16:
                Bf16ToF32(MemoryMarshal.Cast<byte, ushort>(src), destination);
                break;
            default:
                throw new NotSupportedException(
                    $"Tensor '{name}' in '{Path}' has dtype {info.DType}; only F32, F16 and BF16 can be read as float32.");
        }
    }

    /// <summary>Exact BF16 → F32 widening (bits shifted left by 16), 8 or 16 elements at a time where SIMD is available.</summary>
    internal static void Bf16ToF32(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("Destination too short.", nameof(dst));
        Span<uint> bits = MemoryMarshal.Cast<float, uint>(dst);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref ushort s = ref MemoryMarshal.GetReference(src);
            ref uint d = ref MemoryMarshal.GetReference(bits);
            for (; i <= src.Length - 16; i += 16)
            {
                Vector256<ushort> v = Vector256.LoadUnsafe(ref s, (nuint)i);
                (Vector256<uint> lo, Vector256<uint> hi) = Vector256.Widen(v);
                Vector256.ShiftLeft(lo, 16).StoreUnsafe(ref d, (nuint)i);
                Vector256.ShiftLeft(hi, 16).StoreUnsafe(ref d, (nuint)(i + 8));
            }
        }
        for (; i < src.Length; i++)
            bits[i] = (uint)src[i] << 16;
    }

    /// <summary>Unmaps the file and closes it. Idempotent.</summary>
    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}

internal static class JsonElementExtensions
{
    /// <summary>TryGetInt64 that returns false (instead of throwing) for non-number elements.</summary>
    public static bool TryGetInt64Safe(this JsonElement e, out long value)
    {
        value = 0;
        return e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out value);
    }
}
