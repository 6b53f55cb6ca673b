using Rellax.Kernels;
using Rellax.Runtime;
using System.Text;
using System.Text.Json;

namespace Rellax.Rec;

/// <summary>
/// Reads and writes SUBR samples as JSON lines: input <c>{"id": ..., "history": [item ids], "target": item id}</c>,
/// output <c>{"id": ..., "retrieved": [item ids], "positions": [ints]}</c> (plus <c>"scores"</c> when asked).
/// Ids may be numbers or strings and are written back exactly as read. Blank lines are skipped (but counted); lines go
/// through the library's one JSONL reader (<see cref="JsonLines"/>, 16 MiB per line at most).
/// </summary>
public static class SubrSamplesFile
{
    /// <summary>One input line: the sample, its id as raw JSON (to echo it unchanged), and its line number.</summary>
    /// <param name="Sample">The parsed sample (its <see cref="SubrSample.Id"/> is the id's text).</param>
    /// <param name="RawId">The id exactly as it appears in the file, e.g. <c>17</c> or <c>"u3-t9"</c>.</param>
    /// <param name="Line">1-based line number.</param>
    public readonly record struct Entry(SubrSample Sample, string RawId, long Line);

    /// <summary>Parses the lines of the file at <paramref name="path"/> lazily, closing it at the end of the enumeration.</summary>
    /// <param name="path">The JSONL file; it names every error.</param>
    /// <exception cref="FileNotFoundException">No such file (thrown at once).</exception>
    /// <exception cref="IOException">The path is a folder (thrown at once).</exception>
    /// <exception cref="RecordException">A malformed line, or one longer than 16 MiB: <c>FILE:LINE: what is wrong</c>.</exception>
    public static IEnumerable<Entry> Read(string path)
    {
        var objects = JsonLines.Objects(path, "samples file");
        return Parse(objects, path);
    }

    /// <summary>Parses the lines of <paramref name="reader"/> lazily.</summary>
    internal static IEnumerable<Entry> Read(LineReader reader) => Parse(JsonLines.Objects(reader), reader.FileName);

    private static IEnumerable<Entry> Parse(IEnumerable<JsonLines.Record> records, string fileName)
    {
        foreach (var (line, root) in records) yield return Parse(root, fileName, line);
    }

    private static Entry Parse(JsonElement root, string fileName, long lineNumber)
    {
        RecordException Fail(string reason) => new(fileName, lineNumber, reason);
        if (!root.TryGetProperty("id", out var id) || id.ValueKind is not (JsonValueKind.Number or JsonValueKind.String))
            throw Fail("\"id\" must be a number or a string");
        string idText = id.ValueKind == JsonValueKind.String ? id.GetString()! : id.GetRawText();
        if (!root.TryGetProperty("history", out var history) || history.ValueKind != JsonValueKind.Array)
            throw Fail($"sample '{idText}': \"history\" must be an array of item ids");
        var items = new long[history.GetArrayLength()];
        int p = 0;
        foreach (var e in history.EnumerateArray())
        {
            if (!TryItem(e, out items[p]))
                throw Fail($"sample '{idText}': history[{p}] = {e.GetRawText()} is not an integer item id");
            p++;
        }
        if (!root.TryGetProperty("target", out var target) || !TryItem(target, out long t))
            throw Fail($"sample '{idText}': \"target\" must be an integer item id");
        return new Entry(new SubrSample(idText, items, t), id.GetRawText(), lineNumber);
    }

    private static bool TryItem(JsonElement e, out long id)
    {
        id = 0;
        return e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out id);
    }

    /// <summary>Writes one output line for <paramref name="entry"/> from sample <paramref name="index"/> of <paramref name="result"/>.</summary>
    /// <param name="writer">Destination.</param>
    /// <param name="entry">The input line (its raw id is echoed).</param>
    /// <param name="result">The retrieval result of the batch that held the sample.</param>
    /// <param name="index">The sample's index in that batch.</param>
    /// <param name="itemIdOf">Maps a table row to its item id.</param>
    /// <param name="withScores">Also write <c>"scores"</c>.</param>
    public static void Write(TextWriter writer, in Entry entry, SubrResult result, int index, Func<int, long> itemIdOf, bool withScores)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(itemIdOf);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WritePropertyName("id");
            json.WriteRawValue(entry.RawId);
            json.WriteStartArray("retrieved");
            foreach (int row in result.RowsOf(index)) json.WriteNumberValue(itemIdOf(row));
            json.WriteEndArray();
            json.WriteStartArray("positions");
            foreach (int p in result.PositionsOf(index)) json.WriteNumberValue(p);
            json.WriteEndArray();
            if (withScores)
            {
                json.WriteStartArray("scores");
                foreach (float s in result.ScoresOf(index)) json.WriteNumberValue(s);
                json.WriteEndArray();
            }
            json.WriteEndObject();
        }
        writer.Write(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
        writer.Write('\n');
    }
}
