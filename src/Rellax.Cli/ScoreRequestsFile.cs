using System.Text.Json;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// The JSONL input of <c>rellax score</c>: one object per line,
/// <c>{"id": any JSON value, "prompt": "...", "instance": [d_h floats], "hist_embeddings": [[E floats], ...],
/// "target_embedding": [E floats]}</c>. Only <c>id</c> and <c>prompt</c> are required; the vectors may be absent or
/// <c>null</c>; other fields (a label, say) are ignored. Blank lines (empty or white space only) are skipped but still
/// counted, so line numbers in messages are the editor's line numbers. Read through the library's JSONL reader
/// (<see cref="JsonLinesReader"/>): a line longer than 16 MiB is refused naming the file and line.
/// </summary>
/// <remarks>Sizes are not checked here (the reader does not know d_h or E): <see cref="CtrScorer.Validate"/> does that
/// against the adapter. <see cref="ReadLabelled"/> reads the same lines with a required <c>"label"</c> (0 or 1) for
/// <c>rellax train</c>.</remarks>
internal static class ScoreRequestsFile
{
    /// <summary>One input line.</summary>
    /// <param name="Request">The parsed request.</param>
    /// <param name="RawId">The id exactly as written in the file (any JSON value, e.g. <c>17</c>, <c>"u3"</c>, <c>[1, 2]</c>),
    /// echoed unchanged in the output.</param>
    /// <param name="Line">1-based line number.</param>
    public readonly record struct Entry(CtrRequest Request, string RawId, long Line);

    /// <summary>Parses every non-blank line of <paramref name="reader"/>, lazily (lines are capped at
    /// <see cref="JsonLinesReader.MaxLineBytes"/>, 16 MiB by default).</summary>
    /// <param name="reader">The JSONL input; its file name starts every error.</param>
    /// <exception cref="RecordException">A malformed line: <c>FILE:LINE: what is wrong</c>.</exception>
    public static IEnumerable<Entry> Read(JsonLinesReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        foreach (var (line, root) in reader.ReadObjects())
            yield return Parse(root, new Where(reader.FileName, line));
    }

    /// <summary>
    /// Parses every non-blank line as <see cref="Read"/> does, plus its <c>"label"</c>, which must be the number 0 or 1
    /// (<c>rellax train</c>'s input).
    /// </summary>
    /// <exception cref="RecordException">A malformed line, or a label that is missing or not 0/1: <c>FILE:LINE: what is wrong</c>.</exception>
    public static IEnumerable<(Entry Entry, int Label)> ReadLabelled(JsonLinesReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        foreach (var (line, root) in reader.ReadObjects())
        {
            var where = new Where(reader.FileName, line);
            var entry = Parse(root, where);
            if (!root.TryGetProperty("label", out var label))
                throw where.Fail($"id {entry.RawId}: missing \"label\" (0 or 1)");
            if (label.ValueKind != JsonValueKind.Number || !label.TryGetDouble(out double v) || (v != 0 && v != 1))
                throw where.Fail($"id {entry.RawId}: \"label\" must be 0 or 1, got {Shorten(label.GetRawText())}");
            yield return (entry, (int)v);
        }
    }

    /// <summary>
    /// Checks one parsed line against <paramref name="scorer"/> (vector lengths, markers against embeddings, prompt length
    /// against the context) and returns its token count.
    /// </summary>
    /// <exception cref="RecordException"><c>FILE:LINE: id ID: what is wrong</c>; a prompt that is too long also says how
    /// many tokens <c>--template none</c> would save.</exception>
    public static int Check(CtrScorer scorer, string inputPath, Entry entry)
    {
        try
        {
            return scorer.Validate(entry.Request);
        }
        catch (ArgumentException e)
        {
            var template = scorer.Options.Template;
            string advice = e is PromptTooLongException && template.Name != PromptTemplate.None.Name
                ? $" (--template none drops the {template.Name} template's {scorer.Model.Tokenizer.Encode(template.Apply(""), addSpecialTokens: false).Count} tokens)"
                : "";
            throw new RecordException(inputPath, entry.Line, $"id {entry.RawId}: {e.Message}{advice}", e);
        }
    }

    /// <summary>A line of the input, where an error is.</summary>
    private readonly record struct Where(string File, long Line)
    {
        public RecordException Fail(string reason) => new(File, Line, reason);
    }

    /// <summary>Parses one line's object.</summary>
    /// <exception cref="RecordException">The object lacks a field above or has one of the wrong type.</exception>
    private static Entry Parse(JsonElement root, Where where)
    {
        if (!root.TryGetProperty("id", out var id)) throw where.Fail("missing \"id\" (any JSON value)");
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind != JsonValueKind.String)
            throw where.Fail("\"prompt\" must be a string" + (prompt.ValueKind == JsonValueKind.Undefined ? " (missing)" : $", got {Kind(prompt)}"));
        float[]? instance = Vector(root, "instance", where);
        float[]? target = Vector(root, "target_embedding", where);
        List<float[]>? hist = null;
        if (root.TryGetProperty("hist_embeddings", out var h) && h.ValueKind != JsonValueKind.Null)
        {
            if (h.ValueKind != JsonValueKind.Array)
                throw where.Fail($"\"hist_embeddings\" must be an array of float arrays, got {Kind(h)}");
            hist = new List<float[]>(h.GetArrayLength());
            foreach (var row in h.EnumerateArray())
            {
                string field = $"hist_embeddings[{hist.Count}]";
                if (row.ValueKind != JsonValueKind.Array) throw where.Fail($"\"{field}\" must be an array of floats, got {Kind(row)}");
                hist.Add(Floats(row, field, where));
            }
        }
        return new Entry(new CtrRequest(prompt.GetString()!, instance, hist, target), id.GetRawText(), where.Line);
    }

    private static float[]? Vector(JsonElement root, string name, Where where)
    {
        if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind != JsonValueKind.Array) throw where.Fail($"\"{name}\" must be an array of floats, got {Kind(e)}");
        return Floats(e, name, where);
    }

    private static float[] Floats(JsonElement array, string field, Where where)
    {
        var values = new float[array.GetArrayLength()];
        int i = 0;
        foreach (var e in array.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out double v) || !double.IsFinite(v) || Math.Abs(v) > float.MaxValue)
                throw where.Fail($"\"{field}\"[{i}] = {Shorten(e.GetRawText())} is not a finite float");
            values[i++] = (float)v;
        }
        return values;
    }

    /// <summary>A JSON value's kind as a message says it: <c>an object</c>, <c>an array</c>, <c>a string</c>, ...</summary>
    internal static string Kind(JsonElement e) => e.ValueKind switch
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
