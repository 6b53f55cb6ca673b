using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// One categorical input field of a <see cref="DinModel"/>: a block of <see cref="VocabularySize"/> consecutive rows of the
/// model's single embedding table.
/// </summary>
/// <param name="Name">The field's name. <see cref="DinConfig.For"/> and <see cref="DinModel.Featurize"/> know
/// <c>user</c>, <c>item</c> (dense dataset indices), <c>gender</c>, <c>age</c>, <c>job</c>, <c>location</c> (from
/// <see cref="UserProfile"/>), <c>genre</c> (an item's first genre) and <c>author</c>; a checkpoint may name other fields,
/// which then only run through <see cref="DinModel.Forward"/> with ids the caller encodes.</param>
/// <param name="VocabularySize">Rows of the table the field owns (at least 1).</param>
/// <param name="Values">For value fields: the category of each id after the first, i.e. id 0 = missing (null or empty),
/// id 1 + i = <c>Values[i]</c>, so <c>VocabularySize = Values.Count + 1</c>. Null for index fields (<c>user</c>,
/// <c>item</c>), whose id is the dataset's dense index.</param>
public sealed record DinField(string Name, int VocabularySize, IReadOnlyList<string>? Values = null);

/// <summary>
/// The shape of a <see cref="DinModel"/>, and the feature layout that maps a dataset onto its one embedding table.
/// </summary>
/// <remarks>
/// <para><b>One table.</b> As in the reference code (<c>ctr_base</c>: one <c>nn.Embedding(num_features, embed_size)</c>),
/// every field and the ratings share one table of <see cref="NumFeatures"/> rows of E floats. Field f owns rows
/// [<see cref="FieldOffset"/>(f), FieldOffset(f) + VocabularySize); the rating vocabulary follows all fields, from
/// <see cref="RatingOffset"/>: rating value <c>RatingValues[i]</c> has id <c>RatingOffset + i</c> (the reference's
/// <c>hist_ratings + rating_offset</c>). A history item's id is its id in the item field (the reference's
/// <c>hist_ids + item_id_offset</c>). The reference's <c>num_fields</c> is <see cref="Fields"/>.Count + 2 (the fields,
/// plus the history and the rating pseudo-fields) and its <c>item_field_idx</c> is <see cref="ItemFieldIndex"/>.</para>
/// <para><b>Our feature layout</b> (<see cref="For"/>; ours, not the reference's preprocessing, whose h5 files hold
/// fields such as zip codes and titles that our datasets do not keep), in this order, a field only when the dataset has
/// it:</para>
/// <list type="number">
/// <item><c>user</c>: the dense user index (<see cref="Rating.User"/>), vocabulary = number of users;</item>
/// <item><c>item</c>: the dense item index (<see cref="Rating.Item"/>), vocabulary = number of items
/// (so <see cref="ItemFieldIndex"/> = 1);</item>
/// <item><c>gender</c>, <c>age</c>, <c>job</c>, <c>location</c>: the profile strings, when the dataset has profiles and at
/// least one user has the field;</item>
/// <item><c>genre</c>: the item's first genre, when at least one item has a genre;</item>
/// <item><c>author</c>: the item's author, when at least one item has one.</item>
/// </list>
/// <para>Value fields list their distinct values in ordinal order, after id 0 = missing. Ratings: the dataset's distinct
/// rating values in increasing order (MovieLens 1..5; ML-25M's half stars 0.5..5; Book-Crossing 0..10).</para>
/// <para><b>Fit.</b> A checkpoint runs on a dataset (<see cref="CheckFits"/>) when every field is one the layout knows,
/// the <c>user</c> and <c>item</c> vocabularies equal the dataset's user and item counts (the dense indices come from
/// reading the same files), every value a value field meets is in its list, and every rating value of the dataset is in
/// <see cref="RatingValues"/>; otherwise it is refused with a message naming the field and the value. A checkpoint
/// trained on this encoding comes from the reference DIN trained in Python on <see cref="DinInputs.Write"/>'s tensors.</para>
/// <para><b><c>config.json</c></b> (written by <see cref="DinModel.Save"/>): <c>model_type</c> = <c>din</c>,
/// <c>embed_size</c>, <c>fields</c> (array of <c>{"name", "vocab_size", "values"?}</c>), <c>rating_values</c>,
/// <c>attention_hidden_sizes</c>, <c>hidden_sizes</c> (the tower), <c>hidden_act</c> = <c>relu</c>, <c>output_dim</c> = 1,
/// and, for readers of the reference code, <c>num_features</c>, <c>num_fields</c>, <c>item_field_idx</c> and
/// <c>hidden_size</c> (= d_h, the reference's <c>ctr_config.hidden_size</c>); these four are checked on reading when
/// present.</para>
/// </remarks>
public sealed record DinConfig
{
    /// <summary>The value of <c>model_type</c> in <c>config.json</c>.</summary>
    public const string ModelType = "din";

    /// <summary>The field names <see cref="DinModel.Featurize"/> can fill from a <see cref="RatingDataset"/>.</summary>
    public static IReadOnlyList<string> KnownFields { get; } = ["user", "item", "gender", "age", "job", "location", "genre", "author"];

    /// <summary>E: the size of every field embedding.</summary>
    public int EmbedDim { get; init; } = 32;

    /// <summary>The input fields, in table order (see the remarks); exactly one is named <c>item</c>.</summary>
    public IReadOnlyList<DinField> Fields { get; init; } = [];

    /// <summary>The rating vocabulary: the rating values, each once; value i has table row <see cref="RatingOffset"/> + i.</summary>
    public IReadOnlyList<float> RatingValues { get; init; } = [1, 2, 3, 4, 5];

    /// <summary>Hidden sizes of the attention MLP over <c>[t, h, t - h, t * h]</c> (ReLU after each; then a linear layer
    /// to one score). The reference uses <c>num_attn_layers</c> layers of <c>hidden_size</c>.</summary>
    public IReadOnlyList<int> AttentionSizes { get; init; } = [64];

    /// <summary>Hidden sizes of the MLP tower (ReLU after each); the last one is d_h, the user state h_u. SPEC §5: three
    /// layers. The reference uses <c>num_hidden_layers</c> layers of <c>hidden_size</c>.</summary>
    public IReadOnlyList<int> TowerSizes { get; init; } = [128, 128, 128];

    /// <summary>Index in <see cref="Fields"/> of the <c>item</c> field (the target item, whose embedding the attention
    /// queries with); -1 when there is none (an invalid config).</summary>
    public int ItemFieldIndex
    {
        get
        {
            for (int f = 0; f < Fields.Count; f++) if (Fields[f].Name == "item") return f;
            return -1;
        }
    }

    /// <summary>d_h: the user state size (the tower's last hidden layer).</summary>
    public int StateDim => TowerSizes.Count > 0 ? TowerSizes[^1] : 0;

    /// <summary>The first table row of field <paramref name="field"/>.</summary>
    public int FieldOffset(int field)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(field);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(field, Fields.Count);
        long offset = 0;
        for (int f = 0; f < field; f++) offset += Fields[f].VocabularySize;
        return checked((int)offset);
    }

    /// <summary>The table row of the first rating value (after every field).</summary>
    public int RatingOffset => checked((int)Fields.Sum(f => (long)f.VocabularySize));

    /// <summary>Rows of the embedding table: every field's vocabulary plus the rating vocabulary (the reference's
    /// <c>num_features</c>).</summary>
    public int NumFeatures => checked(RatingOffset + RatingValues.Count);

    /// <summary>Width of the tower's input: every field embedding and the attention output, (F + 1) E.</summary>
    public int TowerInputDim => (Fields.Count + 1) * EmbedDim;

    /// <summary>Checks the config: sizes at least 1, unique field names with exactly one <c>item</c>, value lists that
    /// match their vocabularies, finite distinct rating values, and a table that fits in one array.</summary>
    /// <exception cref="ArgumentException">What is wrong, naming the field or list.</exception>
    public void Validate()
    {
        if (EmbedDim < 1) throw new ArgumentException($"embed size {EmbedDim} must be at least 1");
        ArgumentNullException.ThrowIfNull(Fields);
        ArgumentNullException.ThrowIfNull(RatingValues);
        ArgumentNullException.ThrowIfNull(AttentionSizes);
        ArgumentNullException.ThrowIfNull(TowerSizes);
        if (Fields.Count == 0) throw new ArgumentException("a DIN needs at least the 'item' field");
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int f = 0; f < Fields.Count; f++)
        {
            var field = Fields[f] ?? throw new ArgumentException($"field {f} is null");
            if (string.IsNullOrEmpty(field.Name)) throw new ArgumentException($"field {f} has no name");
            if (!names.Add(field.Name)) throw new ArgumentException($"field '{field.Name}' appears twice");
            if (field.VocabularySize < 1) throw new ArgumentException($"field '{field.Name}': vocabulary size {field.VocabularySize} must be at least 1");
            if (field.Values is { } values)
            {
                if (values.Count + 1 != field.VocabularySize)
                    throw new ArgumentException($"field '{field.Name}': {values.Count} values need a vocabulary of {values.Count + 1} (id 0 = missing), not {field.VocabularySize}");
                var seen = new HashSet<string>(StringComparer.Ordinal);
                foreach (string v in values)
                {
                    if (string.IsNullOrEmpty(v)) throw new ArgumentException($"field '{field.Name}': a value is empty (id 0 already stands for a missing value)");
                    if (!seen.Add(v)) throw new ArgumentException($"field '{field.Name}': value '{v}' appears twice");
                }
            }
        }
        if (ItemFieldIndex < 0) throw new ArgumentException($"no field is named 'item' (fields: {string.Join(", ", Fields.Select(f => f.Name))})");
        if (RatingValues.Count == 0) throw new ArgumentException("the rating vocabulary is empty");
        var ratings = new HashSet<float>();
        foreach (float r in RatingValues)
        {
            if (!float.IsFinite(r)) throw new ArgumentException($"rating value {r} is not finite");
            if (!ratings.Add(r)) throw new ArgumentException($"rating value {r} appears twice");
        }
        CheckSizes(AttentionSizes, "attention hidden sizes");
        CheckSizes(TowerSizes, "tower hidden sizes");
        long rows = Fields.Sum(f => (long)f.VocabularySize) + RatingValues.Count;
        if (rows * EmbedDim > System.Array.MaxLength)
            throw new ArgumentException($"the embedding table [{rows}, {EmbedDim}] is larger than one array can hold");
    }

    private static void CheckSizes(IReadOnlyList<int> sizes, string what)
    {
        if (sizes.Count == 0) throw new ArgumentException($"{what}: at least one layer is needed");
        foreach (int s in sizes) if (s < 1) throw new ArgumentException($"{what}: size {s} must be at least 1");
    }

    /// <summary>The config whose feature layout fits <paramref name="dataset"/> (see the layout in the class remarks), with
    /// the default attention and tower sizes.</summary>
    /// <param name="dataset">The dataset whose users, items, profiles, item attributes and ratings define the vocabularies.</param>
    /// <param name="embedDim">E (SPEC: 8 to 64).</param>
    /// <param name="dropFields">Field names to leave out of the layout (e.g. <c>location</c>, whose hundreds of zip-code
    /// values memorise; or <c>user</c>). Each must be a field the layout would have for this dataset, and <c>item</c> cannot
    /// be dropped. The config lists only the kept fields, so <see cref="DinModel"/> and <c>eval --din</c> read it as is.
    /// Null or empty: every field.</param>
    /// <exception cref="ArgumentException">A name in <paramref name="dropFields"/> is <c>item</c> or not one of this
    /// dataset's fields (the message lists them).</exception>
    public static DinConfig For(RatingDataset dataset, int embedDim = 32, IReadOnlyCollection<string>? dropFields = null)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentOutOfRangeException.ThrowIfLessThan(embedDim, 1);
        var config = AllFields(dataset, embedDim);
        if (dropFields is null || dropFields.Count == 0) return config;
        var names = config.Fields.Select(f => f.Name).ToList();
        foreach (string name in dropFields)
        {
            if (name == "item") throw new ArgumentException("cannot drop field 'item': the attention queries with it");
            if (!names.Contains(name))
                throw new ArgumentException($"cannot drop field '{name}': it is not a field of dataset '{dataset.Name}' (fields: {string.Join(", ", names)})");
        }
        config = config with { Fields = [.. config.Fields.Where(f => !dropFields.Contains(f.Name))] };
        config.Validate();
        return config;
    }

    private static DinConfig AllFields(RatingDataset dataset, int embedDim)
    {
        var fields = new List<DinField>
        {
            new("user", Math.Max(1, dataset.UserKeys.Count)),
            new("item", Math.Max(1, dataset.Items.Count)),
        };
        if (dataset.Profiles is { } profiles)
        {
            AddValueField(fields, "gender", profiles.Select(p => p?.Gender));
            AddValueField(fields, "age", profiles.Select(p => p?.Age));
            AddValueField(fields, "job", profiles.Select(p => p?.Job));
            AddValueField(fields, "location", profiles.Select(p => p?.Location));
        }
        AddValueField(fields, "genre", dataset.Items.Select(FirstGenre));
        AddValueField(fields, "author", dataset.Items.Select(i => i.Author));
        var ratings = new SortedSet<float>();
        foreach (var r in dataset.Ratings.Span) ratings.Add(r.Value);
        var config = new DinConfig { EmbedDim = embedDim, Fields = fields, RatingValues = ratings.Count > 0 ? [.. ratings] : [1f] };
        config.Validate();
        return config;
    }

    private static void AddValueField(List<DinField> fields, string name, IEnumerable<string?> values)
    {
        var distinct = new SortedSet<string>(values.Where(v => !string.IsNullOrEmpty(v))!, StringComparer.Ordinal);
        if (distinct.Count > 0) fields.Add(new DinField(name, distinct.Count + 1, [.. distinct]));
    }

    /// <summary>The item's first genre (the <c>genre</c> field's value), or null when it has none.</summary>
    internal static string? FirstGenre(Item item) => item.Genres.Count > 0 ? item.Genres[0] : null;

    /// <summary>Throws unless this config's feature layout fits <paramref name="dataset"/> (the rules in the class
    /// remarks).</summary>
    /// <exception cref="ArgumentException">The first mismatch, naming the field (or rating) and the value.</exception>
    public void CheckFits(RatingDataset dataset) => _ = DinEncoding.Create(this, dataset);

    /// <summary>The JSON object of <c>config.json</c> (see the class remarks).</summary>
    public string ToJson()
    {
        var fields = new JsonArray();
        foreach (var f in Fields)
        {
            var o = new JsonObject { ["name"] = f.Name, ["vocab_size"] = f.VocabularySize };
            if (f.Values is { } values) o["values"] = new JsonArray([.. values.Select(v => (JsonNode)JsonValue.Create(v))]);
            fields.Add(o);
        }
        var root = new JsonObject
        {
            ["model_type"] = ModelType,
            ["embed_size"] = EmbedDim,
            ["fields"] = fields,
            ["rating_values"] = new JsonArray([.. RatingValues.Select(r => (JsonNode)JsonValue.Create(r))]),
            ["attention_hidden_sizes"] = new JsonArray([.. AttentionSizes.Select(s => (JsonNode)JsonValue.Create(s))]),
            ["hidden_sizes"] = new JsonArray([.. TowerSizes.Select(s => (JsonNode)JsonValue.Create(s))]),
            ["hidden_act"] = "relu",
            ["output_dim"] = 1,
            ["num_features"] = NumFeatures,
            ["num_fields"] = Fields.Count + 2,
            ["item_field_idx"] = ItemFieldIndex,
            ["hidden_size"] = StateDim,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Reads <c>config.json</c> (see the class remarks) and validates it.</summary>
    /// <param name="path">The file.</param>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">Malformed JSON, a missing or mistyped key, or an invalid config; the message
    /// names the file and the key.</exception>
    public static DinConfig Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new FileNotFoundException($"DIN config '{full}' does not exist", full);
        JsonNode? root;
        try { root = JsonNode.Parse(InputPaths.ReadAllText(full, "DIN config", InputPaths.MaxConfigBytes)); }
        catch (JsonException e) { throw new InvalidDataException($"'{full}': not valid JSON ({e.Message})", e); }
        if (root is not JsonObject o) throw new InvalidDataException($"'{full}': the config must be a JSON object");
        try
        {
            if (o["model_type"] is { } mt && mt.GetValueKind() == JsonValueKind.String && mt.GetValue<string>() != ModelType)
                throw new InvalidDataException($"'{full}': model_type is '{mt.GetValue<string>()}', expected '{ModelType}'");
            if (o["hidden_act"] is { } act && !string.Equals(act.GetValue<string>(), "relu", StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"'{full}': hidden_act '{act.GetValue<string>()}' is not supported (only relu; Dice is not implemented)");
            if (o["output_dim"] is { } od && od.GetValue<int>() != 1)
                throw new InvalidDataException($"'{full}': output_dim {od.GetValue<int>()} is not supported (only 1)");
            var fieldsNode = Required(o, "fields", full) as JsonArray ?? throw new InvalidDataException($"'{full}': 'fields' must be an array");
            var fields = new List<DinField>();
            for (int i = 0; i < fieldsNode.Count; i++)
            {
                if (fieldsNode[i] is not JsonObject fo) throw new InvalidDataException($"'{full}': fields[{i}] must be an object");
                string name = Required(fo, "name", full, $"fields[{i}].").GetValue<string>();
                int vocab = Required(fo, "vocab_size", full, $"fields[{i}].").GetValue<int>();
                List<string>? values = fo["values"] is JsonArray va ? [.. va.Select(v => v!.GetValue<string>())] : null;
                fields.Add(new DinField(name, vocab, values));
            }
            var config = new DinConfig
            {
                EmbedDim = Required(o, "embed_size", full).GetValue<int>(),
                Fields = fields,
                RatingValues = [.. ArrayOf(o, "rating_values", full).Select(v => v!.GetValue<float>())],
                AttentionSizes = [.. ArrayOf(o, "attention_hidden_sizes", full).Select(v => v!.GetValue<int>())],
                TowerSizes = [.. ArrayOf(o, "hidden_sizes", full).Select(v => v!.GetValue<int>())],
            };
            try { config.Validate(); }
            catch (ArgumentException e) { throw new InvalidDataException($"'{full}': {e.Message}", e); }
            CheckInfo(o, "num_features", config.NumFeatures, full);
            CheckInfo(o, "num_fields", config.Fields.Count + 2, full);
            CheckInfo(o, "item_field_idx", config.ItemFieldIndex, full);
            CheckInfo(o, "hidden_size", config.StateDim, full);
            return config;
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new InvalidDataException($"'{full}': a value has the wrong type ({e.Message})", e);
        }
    }

    private static JsonNode Required(JsonObject o, string key, string path, string prefix = "") =>
        o[key] ?? throw new InvalidDataException($"'{path}': '{prefix}{key}' is missing");

    private static JsonArray ArrayOf(JsonObject o, string key, string path) =>
        Required(o, key, path) as JsonArray ?? throw new InvalidDataException($"'{path}': '{key}' must be an array");

    private static void CheckInfo(JsonObject o, string key, int expected, string path)
    {
        if (o[key] is { } node && node.GetValue<int>() != expected)
            throw new InvalidDataException(
                $"'{path}': '{key}' is {node.GetValue<int>()} but the fields and sizes give {expected.ToString(CultureInfo.InvariantCulture)}");
    }
}
