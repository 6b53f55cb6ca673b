using System.Text.Json;
using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// How an adapter's training prompts were built, as <c>rellax train</c> and <c>rellax demo</c> record them in the
/// adapter folder's <see cref="FileName"/>: so that <c>rellax eval</c> and <c>score</c> build the same prompts by default
/// (an adapter trained on <c>--template none</c>, K = 4 prompts scores badly on vicuna, K = 30 ones).
/// </summary>
/// <param name="K">History items per prompt (null: trained on ready-made prompts, <c>rellax train --input</c>).</param>
/// <param name="Retrieval">recent, subr or mixed (ReiT); null with ready-made prompts.</param>
/// <param name="Template">The chat template's name (<see cref="PromptTemplate.Names"/>).</param>
public sealed record TrainedPromptSettings(int? K, string? Retrieval, string? Template)
{
    /// <summary>The summary file in an adapter folder written by training.</summary>
    public const string FileName = "training.json";

    /// <summary>The retrieval an evaluation of this adapter uses: ReiT's adapter is tested on SUBR-K prompts, as ReLLa does.</summary>
    public HistoryRetrieval? EvaluationRetrieval => Retrieval switch
    {
        "recent" => HistoryRetrieval.Recent,
        "subr" or "mixed" => HistoryRetrieval.Subr,
        _ => null,
    };

    /// <summary>Reads <see cref="FileName"/> in <paramref name="adapterDirectory"/>, or returns null when there is none (an
    /// adapter trained elsewhere).</summary>
    /// <exception cref="InvalidDataException">The file is not JSON, or a field has the wrong type or an unknown value (the
    /// message names the file and the field).</exception>
    public static TrainedPromptSettings? Read(string adapterDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(adapterDirectory);
        string path = Path.Combine(adapterDirectory, FileName);
        if (!File.Exists(path)) return null;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}': not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"'{path}': expected a JSON object");
            int? k = null;
            if (root.TryGetProperty("k", out var kv) && kv.ValueKind != JsonValueKind.Null)
                k = kv.ValueKind == JsonValueKind.Number && kv.TryGetInt32(out int value) && value >= 1 ? value : throw new InvalidDataException($"'{path}': \"k\" must be an integer >= 1, got {kv.GetRawText()}");
            string? Text(string name, IReadOnlyList<string> allowed)
            {
                if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
                string? s = v.ValueKind == JsonValueKind.String ? v.GetString() : null;
                return s is not null && allowed.Contains(s) ? s
                    : throw new InvalidDataException($"'{path}': \"{name}\" must be one of {string.Join(", ", allowed)}, got {v.GetRawText()}");
            }
            return new TrainedPromptSettings(k, Text("retrieval", ["recent", "subr", "mixed"]), Text("template", PromptTemplate.Names));
        }
    }
}
