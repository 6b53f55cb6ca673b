namespace Rellax.Rec;

/// <summary>
/// A <see cref="DinConfig"/>'s feature layout applied to one <see cref="RatingDataset"/>: for every field the table row of
/// each user (user-side fields) or each item (item-side fields), and the table row of each rating value. Creating it
/// checks that the config fits the dataset (the rules in <see cref="DinConfig"/>'s remarks).
/// </summary>
internal sealed class DinEncoding
{
    private readonly bool[] _userSide;          // [F] true: the field is read from the user, false: from the item
    private readonly int[][] _rows;             // [F][users or items] table row
    private readonly Dictionary<float, int> _ratingRow;

    private DinEncoding(DinConfig config, bool[] userSide, int[][] rows, Dictionary<float, int> ratingRow)
    {
        Config = config;
        _userSide = userSide;
        _rows = rows;
        _ratingRow = ratingRow;
        ItemOffset = config.FieldOffset(config.ItemFieldIndex);
    }

    /// <summary>The config whose layout this is.</summary>
    public DinConfig Config { get; }

    /// <summary>The table row of item index 0 (item i has row ItemOffset + i).</summary>
    public int ItemOffset { get; }

    /// <summary>Applies <paramref name="config"/>'s layout to <paramref name="dataset"/>, checking that it fits.</summary>
    /// <exception cref="ArgumentException">The config does not fit the dataset; the message names the field and value.</exception>
    public static DinEncoding Create(DinConfig config, RatingDataset dataset)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(dataset);
        config.Validate();
        int fieldCount = config.Fields.Count;
        var userSide = new bool[fieldCount];
        var rows = new int[fieldCount][];
        int users = dataset.UserKeys.Count, items = dataset.Items.Count;
        string Refused(string what) => $"the DIN checkpoint does not fit dataset '{dataset.Name}': {what}";
        for (int f = 0; f < fieldCount; f++)
        {
            var field = config.Fields[f];
            int offset = config.FieldOffset(f);
            switch (field.Name)
            {
                case "user":
                    if (field.VocabularySize != users)
                        throw new ArgumentException(Refused($"field 'user' has {field.VocabularySize} ids but the dataset has {users} users"));
                    userSide[f] = true;
                    rows[f] = [.. Enumerable.Range(offset, users)];
                    break;
                case "item":
                    if (field.VocabularySize != items)
                        throw new ArgumentException(Refused($"field 'item' has {field.VocabularySize} ids but the dataset has {items} items"));
                    rows[f] = [.. Enumerable.Range(offset, items)];
                    break;
                case "gender" or "age" or "job" or "location":
                {
                    var profiles = dataset.Profiles
                        ?? throw new ArgumentException(Refused($"field '{field.Name}' needs user profiles, and the dataset has none"));
                    userSide[f] = true;
                    var ids = ValueIds(field);
                    rows[f] = new int[users];
                    for (int u = 0; u < users; u++)
                    {
                        var p = profiles[u];
                        string? value = field.Name switch
                        {
                            "gender" => p?.Gender,
                            "age" => p?.Age,
                            "job" => p?.Job,
                            _ => p?.Location,
                        };
                        rows[f][u] = offset + ValueId(field, ids, value, () => Refused($"user '{dataset.UserKeys[u]}'"));
                    }
                    break;
                }
                case "genre" or "author":
                {
                    var ids = ValueIds(field);
                    rows[f] = new int[items];
                    for (int i = 0; i < items; i++)
                    {
                        var item = dataset.Items[i];
                        string? value = field.Name == "genre" ? DinConfig.FirstGenre(item) : item.Author;
                        rows[f][i] = offset + ValueId(field, ids, value, () => Refused($"item '{item.Key}'"));
                    }
                    break;
                }
                default:
                    throw new ArgumentException(Refused(
                        $"field '{field.Name}' is not one the feature layout can fill from a dataset (known: {string.Join(", ", DinConfig.KnownFields)})"));
            }
        }
        var ratingRow = new Dictionary<float, int>();
        int ratingOffset = config.RatingOffset;
        for (int r = 0; r < config.RatingValues.Count; r++) ratingRow[config.RatingValues[r]] = ratingOffset + r;
        var ratings = dataset.Ratings.Span;
        for (int e = 0; e < ratings.Length; e++)
            if (!ratingRow.ContainsKey(ratings[e].Value))
                throw new ArgumentException(Refused(
                    $"rating value {ratings[e].Value} (rating {e}: user '{dataset.UserKeys[ratings[e].User]}', item '{dataset.Items[ratings[e].Item].Key}') " +
                    $"is not in the rating vocabulary [{string.Join(", ", config.RatingValues)}]"));
        return new DinEncoding(config, userSide, rows, ratingRow);
    }

    /// <summary>The id of <paramref name="value"/> in a value field (0 when missing); refuses a value not in the list.</summary>
    private static int ValueId(DinField field, Dictionary<string, int> ids, string? value, Func<string> where)
    {
        if (string.IsNullOrEmpty(value)) return 0;
        if (field.Values is null) throw new ArgumentException($"{where()}: field '{field.Name}' has no value list in the checkpoint");
        return ids.TryGetValue(value, out int id)
            ? id
            : throw new ArgumentException($"{where()}: {field.Name} '{value}' is not among the field's {field.Values.Count} values in the checkpoint");
    }

    /// <summary>Value → id (1 + position in <see cref="DinField.Values"/>).</summary>
    private static Dictionary<string, int> ValueIds(DinField field)
    {
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        if (field.Values is { } values) for (int v = 0; v < values.Count; v++) ids[values[v]] = v + 1;
        return ids;
    }

    /// <summary>Writes the F field rows of a (user, item) pair into <paramref name="destination"/>.</summary>
    public void FieldRows(int user, int item, Span<int> destination)
    {
        for (int f = 0; f < _rows.Length; f++) destination[f] = _rows[f][_userSide[f] ? user : item];
    }

    /// <summary>The table row of a rating value that is in the vocabulary (checked at creation for every dataset rating).</summary>
    public int RatingRow(float value) => _ratingRow[value];
}

/// <summary>
/// Samples encoded as DIN inputs with a <see cref="DinEncoding"/>: the field rows, the ragged history windows (the most
/// recent events, oldest first) and the labels; what <see cref="DinModel.Forward"/> and the trainer take.
/// </summary>
/// <param name="Count">Number of samples S.</param>
/// <param name="FieldRows">[S, F] table rows of the fields.</param>
/// <param name="Starts">[S + 1] history offsets: sample s owns positions [Starts[s], Starts[s+1]).</param>
/// <param name="ItemRows">[P] table rows of the history items.</param>
/// <param name="RatingRows">[P] table rows of the history ratings.</param>
/// <param name="Labels">[S] 1 for a click (positive rating), else 0.</param>
/// <param name="SampleIds">[S] <see cref="ReLLaSample.Index"/> of each sample.</param>
internal sealed record DinEncodedSamples(int Count, int[] FieldRows, int[] Starts, int[] ItemRows, int[] RatingRows, float[] Labels, int[] SampleIds)
{
    /// <summary>Encodes <paramref name="samples"/> of <paramref name="set"/>, each with its <paramref name="maxHistory"/> most
    /// recent events.</summary>
    /// <exception cref="ArgumentException">The history windows hold more positions than one array can.</exception>
    public static DinEncodedSamples Encode(DinEncoding encoding, SampleSet set, IReadOnlyList<ReLLaSample> samples, int maxHistory)
    {
        int fields = encoding.Config.Fields.Count, count = samples.Count;
        var starts = new int[count + 1];
        long total = 0;
        for (int s = 0; s < count; s++)
        {
            total += Math.Min(maxHistory, samples[s].HistoryLength);
            if (total > Array.MaxLength) throw new ArgumentException($"the history windows hold more than {Array.MaxLength} events", nameof(samples));
            starts[s + 1] = (int)total;
        }
        var fieldRows = new int[(long)count * fields];
        var items = new int[total];
        var ratings = new int[total];
        var labels = new float[count];
        var ids = new int[count];
        for (int s = 0; s < count; s++)
        {
            var x = samples[s];
            encoding.FieldRows(x.User, x.Item, fieldRows.AsSpan(s * fields, fields));
            var history = set.History(x);
            if (history.Length > maxHistory) history = history[^maxHistory..];
            int p = starts[s];
            foreach (var ev in history)
            {
                items[p] = encoding.ItemOffset + ev.Item;
                ratings[p++] = encoding.RatingRow(ev.Value);
            }
            labels[s] = x.Label ? 1 : 0;
            ids[s] = x.Index;
        }
        return new DinEncodedSamples(count, fieldRows, starts, items, ratings, labels, ids);
    }

    /// <summary>Number of positive labels.</summary>
    public int Positives => Labels.Count(l => l > 0);
}
