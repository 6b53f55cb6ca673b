using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Rellax.Runtime;

/// <summary>
/// Writes a safetensors file: tensors are added one by one (their bytes are copied at <see cref="Add{T}"/>), then
/// <see cref="Save"/> writes the header (names in ordinal order, padded so the data section is 8-byte aligned) and the
/// tensors back to back (no gaps: other readers require contiguous offsets) to a
/// temporary file beside the target and renames it into place, so a failure never leaves a half-written file.
/// </summary>
public sealed class SafeTensorsWriter
{
    private readonly SortedDictionary<string, (SafeTensorDType DType, int[] Shape, byte[] Data)> _tensors = new(StringComparer.Ordinal);

    /// <summary>The <c>__metadata__</c> string map written with the header.</summary>
    public IDictionary<string, string> Metadata { get; } = new SortedDictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Adds tensor <paramref name="name"/> with <paramref name="shape"/>, copying <paramref name="data"/>.</summary>
    /// <typeparam name="T">float, Half, sbyte, byte, short, int or long; must match <paramref name="dtype"/>'s size.</typeparam>
    /// <param name="name">Tensor name (not <c>__metadata__</c>, not already added).</param>
    /// <param name="dtype">The element type written in the header.</param>
    /// <param name="shape">Dimensions, outermost first; their product must equal <paramref name="data"/>.Length.</param>
    /// <param name="data">Row-major elements.</param>
    /// <exception cref="ArgumentException">Duplicate or reserved name, size mismatch, or a negative dimension.</exception>
    public void Add<T>(string name, SafeTensorDType dtype, ReadOnlySpan<int> shape, ReadOnlySpan<T> data) where T : unmanaged
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name == "__metadata__") throw new ArgumentException("'__metadata__' is reserved for the metadata map", nameof(name));
        if (_tensors.ContainsKey(name)) throw new ArgumentException($"tensor '{name}' was already added", nameof(name));
        if (Marshal.SizeOf<T>() != dtype.SizeInBytes())
            throw new ArgumentException($"tensor '{name}': {typeof(T).Name} elements do not match dtype {dtype.ToFormatString()}", nameof(data));
        long count = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"tensor '{name}': negative dimension in shape [{string.Join(", ", shape.ToArray())}]", nameof(shape));
            count *= d;
        }
        if (count != data.Length)
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape.ToArray())}] has {count} elements but {data.Length} were given", nameof(data));
        _tensors.Add(name, (dtype, shape.ToArray(), MemoryMarshal.AsBytes(data).ToArray()));
    }

    /// <summary>Writes the file through <see cref="OutputFile.Write"/>: atomically (temporary file, then rename) over a
    /// regular file or the target of a symbolic link, streamed into a device or FIFO.</summary>
    /// <param name="path">Destination path; its directory must exist.</param>
    /// <param name="cancellationToken">Checked before the file is renamed into place.</param>
    /// <exception cref="IOException">The file could not be written; nothing is left at <paramref name="path"/> that was not there before.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the old file is untouched and no temporary file remains.</exception>
    public void Save(string path, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        OutputFile.Write(path, stream =>
        {
            byte[] header = Header();
            Span<byte> length = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var (_, (_, _, data)) in _tensors)
            {
                cancellationToken.ThrowIfCancellationRequested();
                stream.Write(data);
            }
        }, cancellationToken);
    }

    private byte[] Header()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (Metadata.Count > 0)
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in Metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, (dtype, shape, data)) in _tensors)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype.ToFormatString());
                json.WriteStartArray("shape");
                foreach (int d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += data.Length;
            }
            json.WriteEndObject();
        }
        // Pad the header with spaces so the data section starts 8-byte aligned (the format allows trailing spaces).
        var header = new List<byte>(buffer.ToArray());
        while (header.Count % 8 != 0) header.Add((byte)' ');
        return header.ToArray();
    }
}
