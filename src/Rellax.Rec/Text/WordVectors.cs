using System.Globalization;
using System.Text.RegularExpressions;

using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// A word-embedding table in GloVe's text format (<c>word v1 … vD</c>, one word per line), and the cheapest item
/// text embedding there is: the mean of the vectors of a text's known words. It stands in for the LLM item vectors
/// of SPEC §2 where no model is at hand (tests, quick experiments).
/// </summary>
public sealed partial class WordVectors
{
    private readonly Dictionary<string, int> _index;
    private readonly float[] _vectors;

    private WordVectors(Dictionary<string, int> index, float[] vectors, int dim)
    {
        _index = index;
        _vectors = vectors;
        Dim = dim;
    }

    /// <summary>Vector width D.</summary>
    public int Dim { get; }

    /// <summary>Number of words.</summary>
    public int Count => _index.Count;

    /// <summary>Reads a GloVe text file. Later duplicates of a word are ignored (GloVe files list words by frequency).</summary>
    /// <param name="path">The file.</param>
    /// <exception cref="InvalidDataException">A line with a different number of values than the first, or a value
    /// that is not a finite number; the message is <c>FILE:LINE: what is wrong</c>.</exception>
    public static WordVectors Load(string path)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        var values = new List<float>();
        int dim = -1;
        using var reader = LineReader.Open(path, "word-vector file");
        while (reader.TryReadLine(out var bytes))
        {
            long lineNumber = reader.LineNumber;
            if (bytes.IsEmpty) continue;
            string line = System.Text.Encoding.UTF8.GetString(bytes.Span);
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (dim < 0) dim = parts.Length - 1;
            if (dim < 1 || parts.Length - 1 != dim)
                throw new RecordException(path, lineNumber, $"expected a word and {Math.Max(dim, 1)} values, found {parts.Length - 1} values");
            if (!index.TryAdd(parts[0], index.Count)) continue;
            for (int i = 1; i < parts.Length; i++)
            {
                if (!float.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out float v) || !float.IsFinite(v))
                    throw new RecordException(path, lineNumber, $"value {i} of '{parts[0]}' ('{parts[i]}') is not a finite number");
                values.Add(v);
            }
        }
        if (dim < 1) throw new RecordException(path, null, "no word vectors found");
        return new WordVectors(index, values.ToArray(), dim);
    }

    /// <summary>The vector of <paramref name="word"/> (exact, case-sensitive match), if present.</summary>
    public bool TryGet(string word, out ReadOnlySpan<float> vector)
    {
        if (_index.TryGetValue(word, out int i))
        {
            vector = _vectors.AsSpan(i * Dim, Dim);
            return true;
        }
        vector = default;
        return false;
    }

    /// <summary>Lower-cases <paramref name="text"/> and splits it into words, apostrophe suffixes (<c>'s</c>) and single punctuation marks.</summary>
    public static IEnumerable<string> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        foreach (Match m in Token().Matches(text.ToLowerInvariant())) yield return m.Value;
    }

    /// <summary>Writes the mean of the known words' vectors of <paramref name="text"/> into <paramref name="destination"/> (zeros when none is known).</summary>
    /// <param name="text">Any text, e.g. a title.</param>
    /// <param name="destination">[D] output.</param>
    /// <returns>How many of the text's words were known.</returns>
    public int Embed(string text, Span<float> destination)
    {
        if (destination.Length != Dim) throw new ArgumentException($"destination must have {Dim} values, got {destination.Length}", nameof(destination));
        var sum = new double[Dim];
        int known = 0;
        foreach (string word in Tokenize(text))
        {
            if (!TryGet(word, out var v)) continue;
            for (int c = 0; c < Dim; c++) sum[c] += v[c];
            known++;
        }
        for (int c = 0; c < Dim; c++) destination[c] = known == 0 ? 0 : (float)(sum[c] / known);
        return known;
    }

    [GeneratedRegex(@"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", RegexOptions.CultureInvariant)]
    private static partial Regex Token();
}
