using System.Text.Json;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// The JSONL input of <c>rellax score</c>: one object per line,
/// <c>{"id": any JSON value, "prompt": "...", "instance": [d_h floats], "hist_embeddings": [[E floats], ...],
/// "target_embedding": [E floats]}</c>. Only <c>id</c> and <c>prompt</c> are required; the vectors may be absent or
/// <c>null</c>; other fields (a label, say) are ignored. Blank lines (empty or white space only) are skipped but still
/// counted, so line numbers in messages are the editor's line numbers.
/// </summary>
/// <remarks>Sizes are not checked here (the reader does not know d_h or E): <see cref="CtrScorer.Validate"/> does that
/// against the adapter.</remarks>
internal static class ScoreRequestsFile
{
    /// <summary>One input line.</summary>
    /// <param name="Request">The parsed request.</param>
    /// <param name="RawId">The id exactly as written in the file (any JSON value, e.g. <c>17</c>, <c>"u3"</c>, <c>[1, 2]</c>),
    /// echoed unchanged in the output.</param>
    /// <param name="Line">1-based line number.</param>
    public readonly record struct Entry(CtrRequest Request, string RawId, int Line);

    /// <summary>Parses every non-blank line of <paramref name="reader"/>, lazily.</summary>
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
            yield return Parse(line, $"{fileName}:{lineNumber}", lineNumber);
        }
    }

    /// <summary>Parses one line; <paramref name="where"/> (<c>FILE:LINE</c>) starts every error message.</summary>
    /// <exception cref="InvalidDataException">The line is not a JSON object with the fields above, correctly typed.</exception>
    public static Entry Parse(string line, string where, int lineNumber)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new InvalidDataException($"{where}: {JsonError(e)}", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{where}: expected a JSON object, got {Kind(root)}");
            if (!root.TryGetProperty("id", out var id)) throw new InvalidDataException($"{where}: missing \"id\" (any JSON value)");
            if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{where}: \"prompt\" must be a string" + (prompt.ValueKind == JsonValueKind.Undefined ? " (missing)" : $", got {Kind(prompt)}"));
            float[]? instance = Vector(root, "instance", where);
            float[]? target = Vector(root, "target_embedding", where);
            List<float[]>? hist = null;
            if (root.TryGetProperty("hist_embeddings", out var h) && h.ValueKind != JsonValueKind.Null)
            {
                if (h.ValueKind != JsonValueKind.Array)
                    throw new InvalidDataException($"{where}: \"hist_embeddings\" must be an array of float arrays, got {Kind(h)}");
                hist = new List<float[]>(h.GetArrayLength());
                foreach (var row in h.EnumerateArray())
                {
                    string field = $"hist_embeddings[{hist.Count}]";
                    if (row.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{where}: \"{field}\" must be an array of floats, got {Kind(row)}");
                    hist.Add(Floats(row, field, where));
                }
            }
            return new Entry(new CtrRequest(prompt.GetString()!, instance, hist, target), id.GetRawText(), lineNumber);
        }
    }

    private static float[]? Vector(JsonElement root, string name, string where)
    {
        if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{where}: \"{name}\" must be an array of floats, got {Kind(e)}");
        return Floats(e, name, where);
    }

    private static float[] Floats(JsonElement array, string field, string where)
    {
        var values = new float[array.GetArrayLength()];
        int i = 0;
        foreach (var e in array.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out double v) || !double.IsFinite(v) || Math.Abs(v) > float.MaxValue)
                throw new InvalidDataException($"{where}: \"{field}\"[{i}] = {Shorten(e.GetRawText())} is not a finite float");
            values[i++] = (float)v;
        }
        return values;
    }

    /// <summary><c>not valid JSON at byte 26: what the parser says</c>, without its "LineNumber: 0 | BytePositionInLine" tail.</summary>
    internal static string JsonError(JsonException e)
    {
        string message = e.Message;
        int tail = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (tail >= 0) message = message[..tail];
        message = message.Replace(" Change the reader options.", "", StringComparison.Ordinal).TrimEnd();
        return e.BytePositionInLine is long b ? $"not valid JSON at byte {b + 1}: {message}" : $"not valid JSON: {message}";
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => e.ValueKind.ToString(),
    };

    private static string Shorten(string raw) => raw.Length <= 40 ? raw : raw[..37] + "...";
}
