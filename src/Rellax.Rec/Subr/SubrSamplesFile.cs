using Rellax.Kernels;
using System.Text;
using System.Text.Json;

namespace Rellax.Rec;

/// <summary>
/// Reads and writes SUBR samples as JSON lines: input <c>{"id": ..., "history": [item ids], "target": item id}</c>,
/// output <c>{"id": ..., "retrieved": [item ids], "positions": [ints]}</c> (plus <c>"scores"</c> when asked).
/// Ids may be numbers or strings and are written back exactly as read. Blank lines are skipped.
/// </summary>
public static class SubrSamplesFile
{
    /// <summary>One input line: the sample, its id as raw JSON (to echo it unchanged), and its line number.</summary>
    /// <param name="Sample">The parsed sample (its <see cref="SubrSample.Id"/> is the id's text).</param>
    /// <param name="RawId">The id exactly as it appears in the file, e.g. <c>17</c> or <c>"u3-t9"</c>.</param>
    /// <param name="Line">1-based line number.</param>
    public readonly record struct Entry(SubrSample Sample, string RawId, int Line);

    /// <summary>Parses the lines of <paramref name="reader"/> lazily.</summary>
    /// <param name="reader">The JSONL text.</param>
    /// <param name="fileName">Name used in error messages.</param>
    /// <exception cref="InvalidDataException">A malformed line; the message is <c>FILE:LINE: what is wrong</c>.</exception>
    public static IEnumerable<Entry> Read(TextReader reader, string fileName)
    {
        ArgumentNullException.ThrowIfNull(reader);
        int lineNumber = 0;
        for (string? line = reader.ReadLine(); line is not null; line = reader.ReadLine())
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            yield return Parse(line, fileName, lineNumber);
        }
    }

    private static Entry Parse(string line, string fileName, int lineNumber)
    {
        string where = $"{fileName}:{lineNumber}";
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new InvalidDataException($"{where}: not valid JSON ({e.Message})", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{where}: expected a JSON object, got {root.ValueKind}");
            if (!root.TryGetProperty("id", out var id) || id.ValueKind is not (JsonValueKind.Number or JsonValueKind.String))
                throw new InvalidDataException($"{where}: \"id\" must be a number or a string");
            string idText = id.ValueKind == JsonValueKind.String ? id.GetString()! : id.GetRawText();
            if (!root.TryGetProperty("history", out var history) || history.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{where}: sample '{idText}': \"history\" must be an array of item ids");
            var items = new long[history.GetArrayLength()];
            int p = 0;
            foreach (var e in history.EnumerateArray())
            {
                if (!TryItem(e, out items[p]))
                    throw new InvalidDataException($"{where}: sample '{idText}': history[{p}] = {e.GetRawText()} is not an integer item id");
                p++;
            }
            if (!root.TryGetProperty("target", out var target) || !TryItem(target, out long t))
                throw new InvalidDataException($"{where}: sample '{idText}': \"target\" must be an integer item id");
            return new Entry(new SubrSample(idText, items, t), id.GetRawText(), lineNumber);
        }
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
