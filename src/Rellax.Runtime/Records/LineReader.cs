using System.Globalization;

namespace Rellax.Runtime;

/// <summary>
/// Reads the lines of a byte stream (a file, a pipe, a device) in bounded chunks, with a cap on a line's length: a line
/// longer than <see cref="MaxLineBytes"/> (16 MiB by default) is a <see cref="RecordException"/> naming the file and the
/// line as soon as that many bytes have been read without a line end, so a line of 100 MB or an endless input such as
/// <c>/dev/zero</c> fails after reading at most the cap, holding at most the cap plus one chunk in memory. The one line
/// reader of the library: JSONL (<see cref="JsonLines"/>), dataset text files and word-vector files go through it.
/// </summary>
/// <remarks>Lines end at <c>\n</c>; a <c>\r</c> before it is dropped, and so is a UTF-8 byte-order mark at the start of
/// the stream. The last line needs no terminator. Bytes are returned as they are (no decoding): the caller decodes or parses
/// them. Work is linear in the input: every byte is scanned once for the line end and copied at most once more.</remarks>
internal sealed class LineReader : IDisposable
{
    /// <summary>The default cap on a line's length: 16 MiB (2^24 bytes), far beyond any sane JSONL record.</summary>
    public const int DefaultMaxLineBytes = 16 << 20;

    private const int Chunk = 1 << 16;
    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private byte[] _buffer = new byte[Chunk];
    private int _start, _end, _scanned;  // line start, data end, and how far [_start, _end) has been searched for '\n'
    private bool _eof, _first = true;

    /// <summary>Reads <paramref name="stream"/>; <paramref name="fileName"/> names it in errors.</summary>
    /// <param name="stream">The input, read forward only.</param>
    /// <param name="fileName">The file as the user named it.</param>
    /// <param name="maxLineBytes">The longest line accepted, in bytes without the terminator (at least 1).</param>
    /// <param name="leaveOpen">Leave <paramref name="stream"/> open on <see cref="Dispose"/>.</param>
    public LineReader(Stream stream, string fileName, int maxLineBytes = DefaultMaxLineBytes, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(fileName);
        if (maxLineBytes < 1 || maxLineBytes > Array.MaxLength - 2 * Chunk)
            throw new ArgumentException($"maxLineBytes must be in [1, {Array.MaxLength - 2 * Chunk}], got {maxLineBytes}", nameof(maxLineBytes));
        _stream = stream;
        _leaveOpen = leaveOpen;
        FileName = fileName;
        MaxLineBytes = maxLineBytes;
    }

    /// <summary>Opens <paramref name="path"/> for reading (see <see cref="InputPaths.RequireFile"/> for the checks).</summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file is, for errors (<c>samples file</c>).</param>
    /// <param name="maxLineBytes">The longest line accepted, in bytes.</param>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="IOException">The path is a folder.</exception>
    public static LineReader Open(string path, string what, int maxLineBytes = DefaultMaxLineBytes)
    {
        InputPaths.RequireFile(path, what);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
        return new LineReader(stream, path, maxLineBytes);
    }

    /// <summary>The file as the user named it.</summary>
    public string FileName { get; }

    /// <summary>The cap on a line's length in bytes.</summary>
    public int MaxLineBytes { get; }

    /// <summary>The 1-based number of the line last returned (0 before the first).</summary>
    public long LineNumber { get; private set; }

    /// <summary>
    /// The next line, without its terminator; the bytes stay valid until the next call. Returns false at the end.
    /// </summary>
    /// <exception cref="RecordException">The line is longer than <see cref="MaxLineBytes"/>.</exception>
    public bool TryReadLine(out ReadOnlyMemory<byte> line)
    {
        while (true)
        {
            int nl = _buffer.AsSpan(_scanned, _end - _scanned).IndexOf((byte)'\n');
            if (nl >= 0)
            {
                int stop = _scanned + nl;
                line = Take(stop, stop + 1);
                return true;
            }
            _scanned = _end;
            // A line may end in '\r' before its '\n', which the cap does not count.
            if (_end - _start > MaxLineBytes + 1) throw TooLong(LineNumber + 1);
            if (_eof)
            {
                if (_end == _start) { line = default; return false; }
                line = Take(_end, _end);
                return true;
            }
            Fill();
        }
    }

    private ReadOnlyMemory<byte> Take(int stop, int next)
    {
        int begin = _start;
        if (_first)
        {
            _first = false;
            if (_buffer.AsSpan(begin, stop - begin).StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) begin += 3;
        }
        int end = stop > begin && _buffer[stop - 1] == (byte)'\r' ? stop - 1 : stop;
        LineNumber++;
        if (end - begin > MaxLineBytes) throw TooLong(LineNumber);
        _start = _scanned = next;
        return _buffer.AsMemory(begin, end - begin);
    }

    /// <summary>Moves the partial line to the front, grows the buffer when the line fills it, and reads one chunk.</summary>
    private void Fill()
    {
        int pending = _end - _start;
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, pending);
            _scanned -= _start;
            _start = 0;
            _end = pending;
        }
        if (_buffer.Length - _end < Chunk)
        {
            // Doubling keeps the copies linear; the cap bounds the size (the cap, a '\r' and one chunk).
            int size = (int)Math.Min((long)_buffer.Length * 2, (long)MaxLineBytes + 2 + Chunk);
            if (size - _end < Chunk) size = _end + Chunk;
            Array.Resize(ref _buffer, size);
        }
        int n = _stream.Read(_buffer, _end, _buffer.Length - _end);
        if (n == 0) _eof = true;
        _end += n;
    }

    private RecordException TooLong(long line) => new(FileName, line,
        string.Create(CultureInfo.InvariantCulture, $"the line is longer than {Describe(MaxLineBytes)}, the limit on one line (is this the right file?)"));

    /// <summary><c>16 MiB</c>, <c>12 KiB</c> or <c>100 bytes</c>.</summary>
    internal static string Describe(long bytes) =>
        bytes % (1 << 20) == 0 ? string.Create(CultureInfo.InvariantCulture, $"{bytes >> 20} MiB")
        : bytes % (1 << 10) == 0 ? string.Create(CultureInfo.InvariantCulture, $"{bytes >> 10} KiB")
        : string.Create(CultureInfo.InvariantCulture, $"{bytes} bytes");

    /// <summary>Closes the stream unless it was to be left open.</summary>
    public void Dispose()
    {
        if (!_leaveOpen) _stream.Dispose();
    }
}
