using System.Text.Json;

namespace Rellax.Runtime;

/// <summary>
/// JSON Lines over <see cref="LineReader"/>: one JSON object per line; blank lines (empty or only spaces, tabs and
/// <c>\r</c>) are skipped but counted, so line numbers are the editor's. A line longer than the reader's cap (16 MiB by
/// default), a line that is not valid JSON (or not UTF-8) and a value that is not an object are
/// <see cref="RecordException"/>s <c>FILE:LINE: reason</c>.
/// </summary>
internal static class JsonLines
{
    /// <summary>One parsed line: its 1-based number and its object, valid only until the enumeration moves on.</summary>
    /// <param name="Line">1-based line number.</param>
    /// <param name="Root">The line's JSON object (its document is disposed when the enumeration moves on).</param>
    public readonly record struct Record(long Line, JsonElement Root);

    /// <summary>The JSON object of every non-blank line of <paramref name="reader"/>, lazily.</summary>
    /// <exception cref="RecordException">A line too long, not valid JSON, or not an object.</exception>
    public static IEnumerable<Record> Objects(LineReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        while (TryReadLine(reader, out var line))
        {
            using var doc = Parse(line, reader.FileName, reader.LineNumber);
            yield return new Record(reader.LineNumber, doc.RootElement);
        }
    }

    /// <summary>
    /// The next non-blank line as UTF-8 bytes checked to be valid UTF-8, for readers that parse it themselves (with a
    /// <see cref="Utf8JsonReader"/>, no DOM); valid until the next call. False at the end.
    /// </summary>
    /// <exception cref="RecordException">A line too long, or not valid UTF-8.</exception>
    public static bool TryReadObjectLine(LineReader reader, out ReadOnlySpan<byte> line)
    {
        ArgumentNullException.ThrowIfNull(reader);
        bool found = TryReadLine(reader, out var memory);
        line = memory.Span;
        return found;
    }

    private static bool TryReadLine(LineReader reader, out ReadOnlyMemory<byte> line)
    {
        while (reader.TryReadLine(out line))
        {
            var span = line.Span;
            if (IsBlank(span)) continue;
            if (!System.Text.Unicode.Utf8.IsValid(span))
            {
                throw new RecordException(reader.FileName, reader.LineNumber, $"not valid UTF-8 (byte {FirstInvalid(span) + 1})");
            }
            return true;
        }
        return false;
    }

    /// <summary>The 0-based offset of the first byte that does not start a valid UTF-8 sequence.</summary>
    private static int FirstInvalid(ReadOnlySpan<byte> utf8)
    {
        int offset = 0;
        while (offset < utf8.Length)
        {
            var status = System.Text.Rune.DecodeFromUtf8(utf8[offset..], out _, out int used);
            if (status != System.Buffers.OperationStatus.Done) return offset;
            offset += used;
        }
        return offset;
    }

    /// <summary>The JSON objects of a file, read and closed lazily (see <see cref="Objects(LineReader)"/>).</summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file is, for errors about the path itself.</param>
    /// <param name="maxLineBytes">The longest line accepted, in bytes.</param>
    /// <exception cref="FileNotFoundException">No such file (thrown at once, not on enumeration).</exception>
    /// <exception cref="IOException">The path is a folder (thrown at once).</exception>
    public static IEnumerable<Record> Objects(string path, string what, int maxLineBytes = LineReader.DefaultMaxLineBytes)
    {
        InputPaths.RequireFile(path, what);
        return Iterate();

        IEnumerable<Record> Iterate()
        {
            using var reader = LineReader.Open(path, what, maxLineBytes);
            foreach (var record in Objects(reader)) yield return record;
        }
    }

    /// <summary>Whether a line holds only JSON white space.</summary>
    public static bool IsBlank(ReadOnlySpan<byte> line) => line.IndexOfAnyExcept((byte)' ', (byte)'\t', (byte)'\r') < 0;

    private static JsonDocument Parse(ReadOnlyMemory<byte> line, string file, long number)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new RecordException(file, number, Describe(e), e); }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            string kind = Kind(doc.RootElement);
            doc.Dispose();
            throw new RecordException(file, number, $"expected a JSON object, got {kind}");
        }
        return doc;
    }

    /// <summary><c>not valid JSON at byte 26: what the parser says</c>, without its "LineNumber: 0 | BytePositionInLine" tail.</summary>
    public static string Describe(JsonException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        string message = e.Message;
        int tail = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (tail >= 0) message = message[..tail];
        message = message.Replace(" Change the reader options.", "", StringComparison.Ordinal).TrimEnd();
        return e.BytePositionInLine is long b ? $"not valid JSON at byte {b + 1}: {message}" : $"not valid JSON: {message}";
    }

    /// <summary>A JSON value's kind as a message says it: <c>an object</c>, <c>an array</c>, <c>a string</c>, ...</summary>
    public static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => e.ValueKind.ToString(),
    };
}
