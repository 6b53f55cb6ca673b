using System.Text.Json;

namespace Rellax.Runtime;

/// <summary>One object of a JSON Lines input, as <see cref="JsonLinesReader.ReadObjects"/> yields it.</summary>
/// <param name="Line">The 1-based line number (blank lines count, so it is the editor's line number).</param>
/// <param name="Object">The line's JSON object (<see cref="JsonValueKind.Object"/>). Valid only until the enumeration
/// moves to the next line, when its document is disposed: copy what you keep (<see cref="JsonElement.Clone"/>, or the
/// parsed values).</param>
public readonly record struct JsonLine(long Line, JsonElement Object);

/// <summary>
/// Reads a JSON Lines input (one JSON object per line: request logs, item catalogues, the files of the <c>rellax</c>
/// commands) with the bounds and errors the library's own readers have. Memory is bounded by the longest line, never by
/// the input: a line longer than <see cref="MaxLineBytes"/> (16 MiB by default) fails as soon as that many bytes have been
/// read without a line end, so an endless input such as <c>/dev/zero</c> fails fast. Every malformed line is a
/// <see cref="RecordException"/> <c>FILE:LINE: reason</c>: too long, not UTF-8, not valid JSON, or not an object.
/// </summary>
/// <remarks>Blank lines (empty, or only spaces, tabs and <c>\r</c>) are skipped but counted; lines end at <c>\n</c> with an
/// optional <c>\r</c>; a UTF-8 byte-order mark at the start is dropped; the last line needs no terminator. The reader goes
/// forward only: a second <see cref="ReadObjects"/> continues where the first stopped. Not thread-safe.</remarks>
/// <example>
/// <code>
/// using var reader = JsonLinesReader.Open("requests.jsonl", "requests file");
/// foreach (var (line, obj) in reader.ReadObjects())
///     if (!obj.TryGetProperty("prompt", out var prompt) || prompt.ValueKind != JsonValueKind.String)
///         throw new RecordException(reader.FileName, line, "\"prompt\" must be a string");
/// </code>
/// </example>
public sealed class JsonLinesReader : IDisposable
{
    /// <summary>The default cap on a line's length: 16 MiB (2^24 bytes), far beyond any sane JSON Lines record.</summary>
    public const int DefaultMaxLineBytes = LineReader.DefaultMaxLineBytes;

    private readonly LineReader _lines;

    /// <summary>Reads <paramref name="stream"/>, forward only.</summary>
    /// <param name="stream">The input (a file, a pipe, a network stream).</param>
    /// <param name="fileName">How errors name the input (a path, <c>request body</c>).</param>
    /// <param name="maxLineBytes">The longest line accepted, in bytes without the terminator (at least 1).</param>
    /// <param name="leaveOpen">Leave <paramref name="stream"/> open on <see cref="Dispose"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="maxLineBytes"/> is below 1 or too large for one array.</exception>
    public JsonLinesReader(Stream stream, string fileName, int maxLineBytes = DefaultMaxLineBytes, bool leaveOpen = false)
    {
        _lines = new LineReader(stream, fileName, maxLineBytes, leaveOpen);
    }

    private JsonLinesReader(LineReader lines, bool isRegularFile)
    {
        _lines = lines;
        IsRegularFile = isRegularFile;
    }

    /// <summary>Opens the file <paramref name="path"/>; errors name it as given.</summary>
    /// <param name="path">The file: a regular file, or a device or FIFO (<c>/dev/stdin</c>, a named pipe); not a folder.</param>
    /// <param name="what">What the file is, for the messages about the path itself (<c>requests file</c>, <c>--input</c>).</param>
    /// <param name="maxLineBytes">The longest line accepted, in bytes.</param>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>: <c>WHAT 'PATH' does not exist</c>.</exception>
    /// <exception cref="IOException"><paramref name="path"/> is a folder: <c>WHAT 'PATH' is a folder, not a file</c>.</exception>
    public static JsonLinesReader Open(string path, string what, int maxLineBytes = DefaultMaxLineBytes)
    {
        ArgumentNullException.ThrowIfNull(what);
        var lines = LineReader.Open(path, what, maxLineBytes);
        try
        {
            return new JsonLinesReader(lines, OutputFile.IsRegularFile(path));
        }
        catch
        {
            lines.Dispose();
            throw;
        }
    }

    /// <summary>How errors name the input: the path given to <see cref="Open"/> or the name given to the constructor.</summary>
    public string FileName => _lines.FileName;

    /// <summary>The cap on a line's length, in bytes.</summary>
    public int MaxLineBytes => _lines.MaxLineBytes;

    /// <summary>
    /// Whether the input was opened by <see cref="Open"/> on a regular file (after following links), which can be opened
    /// and read again, e.g. once to check every line and once to process it. False for a FIFO, a pipe, a device such as
    /// <c>/dev/stdin</c>, and for a reader made from a stream: read those once.
    /// </summary>
    public bool IsRegularFile { get; }

    /// <summary>The JSON object of every non-blank line from where the reader stands, lazily, one line at a time.</summary>
    /// <exception cref="RecordException">A line too long, not valid UTF-8, not valid JSON, or not a JSON object:
    /// <c>FILE:LINE: reason</c> (thrown when the enumeration reaches it).</exception>
    public IEnumerable<JsonLine> ReadObjects()
    {
        foreach (var (line, root) in JsonLines.Objects(_lines))
            yield return new JsonLine(line, root);
    }

    /// <summary>Closes the input unless the constructor was asked to leave it open.</summary>
    public void Dispose() => _lines.Dispose();
}
