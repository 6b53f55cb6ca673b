using System.Runtime.InteropServices;
using System.Text;
using Rellax.Kernels;
using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// DIN (SPEC §5), from a safetensors checkpoint whose tensor names follow the reference code's <c>ctr_base</c> DIN. It
/// produces what SPA and CFLoRA take: item embeddings and the user state h_u (the last hidden layer of the MLP tower).
/// The model holds its weights on the host; <see cref="Forward"/> and <see cref="Featurize"/> run on the
/// <see cref="ComputeBackend"/> the caller passes (its matrix products; the gathers and elementwise steps run on the
/// calling thread), as <see cref="Pca"/> and <see cref="SubrIndex.Build"/> do: on a <see cref="Kernels.Cpu.CpuBackend"/>
/// its <see cref="Kernels.Cpu.CpuBackend.Threads"/> bound the work. The backend stays the caller's (never disposed).
/// </summary>
/// <remarks>
/// <para><b>Architecture</b> (the reference's <c>ctr_base/models.py</c> <c>DIN</c> with <c>enable_hist_embed</c> and
/// <c>enable_rating_embed</c> on, <c>hidden_act = relu</c>, in evaluation mode so dropout is the identity). For a sample with
/// field rows x [F], history item rows and rating rows [L] (L may be 0) and the one table T [V, E]:</para>
/// <code>
/// e_f   = T[x_f]                                   field embeddings, f = 0..F-1      [F, E]
/// t     = e_item                                   the target item's embedding        [E]
/// h_j   = ReLU(W_m [T[item_j]; T[rating_j]] + b_m) history item j                     [L, E]
/// a_j   = MLP_att([t; h_j; t - h_j; t * h_j])      ReLU after every hidden layer      [L, A_last]
/// s_j   = w_s · a_j + b_s                          score, no softmax (masked out when padded)
/// u     = Σ_j s_j h_j                              interest                           [E]
/// h_u   = MLP_tower([e_0; ...; e_{F-1}; u])        ReLU after every layer: the user state [d_h]
/// logit = w_o · h_u + b_o                          p(click) = sigmoid(logit)
/// </code>
/// <para>SPA's item embedding of item i is the table row of i in the item field (the reference's
/// <c>CTR_model.embed(item ids)</c>); CFLoRA's h_u is the tower output (the reference's <c>out_layer = 'final'</c>).
/// The feature layout (which row each field, value and rating uses) is <see cref="DinConfig"/>'s.</para>
/// <para><b>Weight names</b> (the one mapping table; the names are the <c>state_dict</c> keys of the reference's
/// <c>DIN(BaseModel)</c> in <c>ctr_base/models.py</c> and <c>ctr_base/layers.py</c>, read from the same authors' RecLoRA
/// repository, which ships that <c>ctr_base</c>; ReLLaX's own repository does not include it). Shapes are PyTorch's
/// <c>[out, in]</c>; A_i are <see cref="DinConfig.AttentionSizes"/>, T_i are <see cref="DinConfig.TowerSizes"/>, F the
/// number of fields, V = <see cref="DinConfig.NumFeatures"/>:</para>
/// <list type="table">
/// <listheader><term>tensor</term><description>shape: role</description></listheader>
/// <item><term><c>embed.embedding.weight</c></term><description>[V, E]: the table T (<c>Embeddings.embedding</c>)</description></item>
/// <item><term><c>hist_mapping.0.weight</c>, <c>.bias</c></term><description>[E, 2E], [E]: W_m, b_m over
/// [item; rating] (<c>nn.Sequential(Linear, ReLU)</c>)</description></item>
/// <item><term><c>attention_layer.attention_layer.0.dnn.{3i}.weight</c>, <c>.bias</c></term><description>[A_i, A_{i-1}],
/// [A_i] with A_{-1} = 4E: hidden layer i of the attention MLP (<c>DIN_Attention</c>'s <c>MLPBlock</c>, whose
/// <c>Sequential</c> holds Linear, ReLU, Dropout per layer; its input columns are [t | h | t - h | t * h])</description></item>
/// <item><term><c>attention_layer.attention_layer.1.weight</c>, <c>.bias</c></term><description>[1, A_last], [1]: w_s,
/// b_s</description></item>
/// <item><term><c>dnn.dnn.{3i}.weight</c>, <c>.bias</c></term><description>[T_i, T_{i-1}], [T_i] with T_{-1} = (F + 1) E:
/// tower layer i (<c>MLPBlock</c>); the input is the F field embeddings in field order, then u</description></item>
/// <item><term><c>fc_out.weight</c>, <c>.bias</c></term><description>[1, d_h], [1]: w_o, b_o</description></item>
/// </list>
/// <para>The reference's MLP blocks use one <c>hidden_size</c> for every layer (of both MLPs); our sizes may differ per
/// layer, which changes only the shapes above. Its <c>Dice</c> activation and <c>output_dim</c> &gt; 1 are not
/// supported. A reference checkpoint runs after <c>safetensors.torch.save_file(torch.load(p), "model.safetensors")</c>
/// with a <c>config.json</c> in our form written for it (its fields named, the one at <c>item_field_idx</c> named
/// <c>item</c>, vocabularies and rating values that add up to its <c>num_features</c>; the reference's own
/// <c>ctr_config</c> dict is not read as is), provided its inputs are encoded with its own preprocessing and passed to
/// <see cref="Forward"/>; <see cref="Featurize"/> encodes with our layout.</para>
/// <para><b>Files</b>: a directory with <c>config.json</c> (<see cref="DinConfig"/>'s remarks) and
/// <c>model.safetensors</c> (the tensors above; F32, or F16/BF16 widened on load).</para>
/// </remarks>
public sealed class DinModel
{
    /// <summary>The weights file name in a model directory.</summary>
    public const string WeightsFile = "model.safetensors";

    /// <summary>The config file name in a model directory.</summary>
    public const string ConfigFile = "config.json";

    // Tensor names: the mapping table in the class remarks, written once here.

    /// <summary>The embedding table T [V, E].</summary>
    internal const string TableName = "embed.embedding.weight";
    /// <summary>W_m [E, 2E] of the history mapping.</summary>
    internal const string MapWeight = "hist_mapping.0.weight";
    /// <summary>b_m [E] of the history mapping.</summary>
    internal const string MapBias = "hist_mapping.0.bias";
    /// <summary>w_s [1, A_last]: the attention score layer.</summary>
    internal const string ScoreWeight = "attention_layer.attention_layer.1.weight";
    /// <summary>b_s [1].</summary>
    internal const string ScoreBias = "attention_layer.attention_layer.1.bias";
    /// <summary>w_o [1, d_h]: the logit layer.</summary>
    internal const string OutWeight = "fc_out.weight";
    /// <summary>b_o [1].</summary>
    internal const string OutBias = "fc_out.bias";

    /// <summary>Weight [A_i, A_{i-1}] of attention hidden layer <paramref name="layer"/> (A_{-1} = 4E).</summary>
    internal static string AttentionWeight(int layer) => $"attention_layer.attention_layer.0.dnn.{3 * layer}.weight";
    /// <summary>Bias [A_i] of attention hidden layer <paramref name="layer"/>.</summary>
    internal static string AttentionBias(int layer) => $"attention_layer.attention_layer.0.dnn.{3 * layer}.bias";
    /// <summary>Weight [T_i, T_{i-1}] of tower layer <paramref name="layer"/> (T_{-1} = (F + 1) E).</summary>
    internal static string TowerWeight(int layer) => $"dnn.dnn.{3 * layer}.weight";
    /// <summary>Bias [T_i] of tower layer <paramref name="layer"/>.</summary>
    internal static string TowerBias(int layer) => $"dnn.dnn.{3 * layer}.bias";

    private readonly Dictionary<string, float[]> _weights;

    private DinModel(DinConfig config, Dictionary<string, float[]> weights)
    {
        Config = config;
        _weights = weights;
    }

    /// <summary>A model over the given weight arrays (not copied: a trainer's live parameters), one per tensor of
    /// <see cref="TensorShapes"/>, each of the right length.</summary>
    internal static DinModel FromWeights(DinConfig config, IReadOnlyDictionary<string, float[]> weights)
    {
        config.Validate();
        var map = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in TensorShapes(config))
        {
            long length = shape.Aggregate(1L, (a, b) => a * b);
            if (!weights.TryGetValue(name, out var data) || data.Length != length)
                throw new ArgumentException($"tensor '{name}' [{string.Join(", ", shape)}] is missing or has the wrong length", nameof(weights));
            map[name] = data;
        }
        return new DinModel(config, map);
    }

    /// <summary>The model's shape.</summary>
    public DinConfig Config { get; }

    /// <summary>E: the item embedding size.</summary>
    public int EmbedDim => Config.EmbedDim;

    /// <summary>d_h: the user state size (the tower's last hidden layer).</summary>
    public int StateDim => Config.StateDim;

    /// <summary>The row-major f32 data of tensor <paramref name="name"/> (shape from <see cref="TensorShapes"/>).</summary>
    internal float[] Weight(string name) => _weights[name];

    /// <summary>Every tensor a model of <paramref name="config"/> has, with its shape, in the order of the mapping table.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> TensorShapes(DinConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int e = config.EmbedDim;
        var list = new List<(string, int[])>
        {
            (TableName, [config.NumFeatures, e]),
            (MapWeight, [e, 2 * e]),
            (MapBias, [e]),
        };
        int input = 4 * e;
        for (int i = 0; i < config.AttentionSizes.Count; i++)
        {
            list.Add((AttentionWeight(i), [config.AttentionSizes[i], input]));
            list.Add((AttentionBias(i), [config.AttentionSizes[i]]));
            input = config.AttentionSizes[i];
        }
        list.Add((ScoreWeight, [1, input]));
        list.Add((ScoreBias, [1]));
        input = config.TowerInputDim;
        for (int i = 0; i < config.TowerSizes.Count; i++)
        {
            list.Add((TowerWeight(i), [config.TowerSizes[i], input]));
            list.Add((TowerBias(i), [config.TowerSizes[i]]));
            input = config.TowerSizes[i];
        }
        list.Add((OutWeight, [1, input]));
        list.Add((OutBias, [1]));
        return list;
    }

    /// <summary>Loads <c>config.json</c> and <c>model.safetensors</c> from <paramref name="directory"/>, checking every
    /// tensor's name, dtype, shape and values against the config.</summary>
    /// <exception cref="DirectoryNotFoundException">No such directory.</exception>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="InvalidDataException">A bad config, a missing or unknown tensor, a wrong shape, or a non-finite
    /// value; the message names the file and the tensor, with expected and actual shapes.</exception>
    public static DinModel Load(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string dir = Path.GetFullPath(directory);
        InputPaths.RequireDirectory(dir, "DIN model directory");
        var config = DinConfig.Load(Path.Combine(dir, ConfigFile));
        string path = Path.Combine(dir, WeightsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"DIN weights '{path}' do not exist", path);
        SafeTensorsFile file;
        try { file = SafeTensorsFile.Open(path); }
        catch (SafeTensorsFormatException e) { throw new InvalidDataException(e.Message, e); }
        using (file)
        {
            var expected = TensorShapes(config);
            var known = expected.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
            var unknown = file.Tensors.Keys.Where(n => !known.Contains(n)).Order(StringComparer.Ordinal).ToList();
            if (unknown.Count > 0)
                throw new InvalidDataException($"'{path}': unknown tensor(s) {string.Join(", ", unknown.Select(n => $"'{n}'"))} (a DIN has: {string.Join(", ", known)})");
            var weights = new Dictionary<string, float[]>(StringComparer.Ordinal);
            foreach (var (name, shape) in expected)
            {
                if (!file.Contains(name))
                    throw new InvalidDataException($"'{path}': tensor '{name}' [{string.Join(", ", shape)}] is missing");
                var info = file.Info(name);
                if (!info.Shape.SequenceEqual(shape))
                    throw new InvalidDataException(
                        $"'{path}', tensor '{name}': shape [{string.Join(", ", info.Shape)}] does not match the config, which needs [{string.Join(", ", shape)}]");
                if (info.DType is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16))
                    throw new InvalidDataException($"'{path}', tensor '{name}': dtype {info.DType.ToFormatString()} is not F32, F16 or BF16");
                float[] data = file.ReadFloat32(name);
                for (int i = 0; i < data.Length; i++)
                    if (!float.IsFinite(data[i]))
                        throw new InvalidDataException($"'{path}', tensor '{name}': element {i} is {data[i]}");
                weights[name] = data;
            }
            return new DinModel(config, weights);
        }
    }

    /// <summary>Loads a model (<see cref="Load(string)"/>) and checks that its feature layout fits
    /// <paramref name="dataset"/> (<see cref="DinConfig.CheckFits"/>).</summary>
    /// <exception cref="InvalidDataException">Also when the vocabulary does not fit; the message names the config file,
    /// the field and the value.</exception>
    public static DinModel Load(string directory, RatingDataset dataset)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        var model = Load(directory);
        try { model.Config.CheckFits(dataset); }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{Path.Combine(Path.GetFullPath(directory), ConfigFile)}': {e.Message}", e);
        }
        return model;
    }

    /// <summary>
    /// A model with seeded random weights (for demos and tests): the same config and seed give the same weights on every
    /// run. Tensors are filled in mapping-table order from one <see cref="Random"/>(seed): linear weights uniform in
    /// ±sqrt(6 / (in + out)) (Xavier), biases uniform in ±0.1, the table uniform in ±0.5.
    /// </summary>
    public static DinModel CreateRandom(DinConfig config, int seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var random = new Random(seed);
        var weights = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in TensorShapes(config))
        {
            var data = new float[shape.Aggregate(1L, (a, b) => a * b)];
            double bound = name == TableName ? 0.5 : shape.Length == 1 ? 0.1 : Math.Sqrt(6.0 / (shape[0] + shape[1]));
            for (int i = 0; i < data.Length; i++) data[i] = (float)((2 * random.NextDouble() - 1) * bound);
            weights[name] = data;
        }
        return new DinModel(config, weights);
    }

    /// <summary>Writes the model in the format <see cref="Load(string)"/> reads: <c>model.safetensors</c> (F32, atomically)
    /// first, then <c>config.json</c> (atomically: a temporary file renamed into place). The directory is created when
    /// missing. The pair is not replaced atomically as a whole.</summary>
    public void Save(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string dir = Path.GetFullPath(directory);
        Directory.CreateDirectory(dir);
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = "pt";
        foreach (var (name, shape) in TensorShapes(Config))
            writer.Add<float>(name, SafeTensorDType.F32, shape, _weights[name]);
        writer.Save(Path.Combine(dir, WeightsFile));
        OutputFile.Write(Path.Combine(dir, ConfigFile), stream => stream.Write(new UTF8Encoding(false).GetBytes(Config.ToJson() + "\n")));
    }

    /// <summary>Row <paramref name="row"/> of the embedding table [E] (an item's SPA embedding is the row of its id in the
    /// item field: <c>FieldOffset(ItemFieldIndex) + item</c>).</summary>
    public ReadOnlySpan<float> EmbeddingRow(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Config.NumFeatures);
        return _weights[TableName].AsSpan(row * EmbedDim, EmbedDim);
    }

    /// <summary>
    /// Runs the model on inputs already encoded as table rows: the reference's <c>X</c> (offsets added),
    /// <c>hist_ids</c>/<c>hist_ratings</c> (offsets added) and <c>hist_mask</c>, with the padding dropped (the histories are
    /// ragged). Batched over the samples, in chunks of 512 samples.
    /// </summary>
    /// <param name="backend">Runs the matrix products (any backend; the caller's, not disposed).</param>
    /// <param name="fieldRows">[B, F] row-major: the table row of each field of each sample.</param>
    /// <param name="historyStarts">[B + 1]: sample b's history is positions [historyStarts[b], historyStarts[b + 1]) of the
    /// two history arrays; starts at 0, non-decreasing, ends at P.</param>
    /// <param name="historyItemRows">[P]: the table row of each history item (its row in the item field).</param>
    /// <param name="historyRatingRows">[P]: the table row of each history rating.</param>
    /// <param name="states">[B, d_h] output: h_u per sample.</param>
    /// <param name="logits">[B] output: the click logit per sample.</param>
    /// <exception cref="ArgumentException">Lengths that disagree, or a row outside the table (naming the input and
    /// position).</exception>
    public void Forward(ComputeBackend backend, ReadOnlySpan<int> fieldRows, ReadOnlySpan<int> historyStarts, ReadOnlySpan<int> historyItemRows,
        ReadOnlySpan<int> historyRatingRows, Span<float> states, Span<float> logits)
    {
        ArgumentNullException.ThrowIfNull(backend);
        int fields = Config.Fields.Count;
        if (historyStarts.Length < 1) throw new ArgumentException("historyStarts needs B + 1 entries", nameof(historyStarts));
        int batch = historyStarts.Length - 1;
        if (fieldRows.Length != (long)batch * fields)
            throw new ArgumentException($"fieldRows has {fieldRows.Length} entries, but [B, F] = [{batch}, {fields}] needs {(long)batch * fields}", nameof(fieldRows));
        if (historyStarts[0] != 0) throw new ArgumentException($"historyStarts[0] is {historyStarts[0]}, not 0", nameof(historyStarts));
        for (int b = 0; b < batch; b++)
            if (historyStarts[b + 1] < historyStarts[b])
                throw new ArgumentException($"historyStarts decreases at sample {b}: {historyStarts[b]} then {historyStarts[b + 1]}", nameof(historyStarts));
        int positions = historyStarts[batch];
        if (historyItemRows.Length != positions || historyRatingRows.Length != positions)
            throw new ArgumentException(
                $"the histories hold {positions} positions, but historyItemRows has {historyItemRows.Length} and historyRatingRows {historyRatingRows.Length}",
                nameof(historyItemRows));
        if (states.Length != (long)batch * StateDim)
            throw new ArgumentException($"states has {states.Length} floats, but [B, d_h] = [{batch}, {StateDim}] needs {(long)batch * StateDim}", nameof(states));
        if (logits.Length != batch) throw new ArgumentException($"logits has {logits.Length} floats for {batch} samples", nameof(logits));
        CheckRows(fieldRows, nameof(fieldRows));
        CheckRows(historyItemRows, nameof(historyItemRows));
        CheckRows(historyRatingRows, nameof(historyRatingRows));

        int dh = StateDim;
        using var runner = new DinRunner(this, backend);
        var localStarts = new int[Math.Min(batch, DinRunner.ChunkSamples) + 1];
        for (int first = 0; first < batch; first += DinRunner.ChunkSamples)
        {
            int count = Math.Min(DinRunner.ChunkSamples, batch - first);
            int p0 = historyStarts[first], p1 = historyStarts[first + count];
            for (int b = 0; b <= count; b++) localStarts[b] = historyStarts[first + b] - p0;
            runner.Run(fieldRows.Slice(first * fields, count * fields), localStarts.AsSpan(0, count + 1), historyItemRows[p0..p1], historyRatingRows[p0..p1],
                states.Slice(first * dh, count * dh), logits.Slice(first, count));
        }
    }

    private void CheckRows(ReadOnlySpan<int> rows, string name)
    {
        int v = Config.NumFeatures;
        for (int i = 0; i < rows.Length; i++)
            if ((uint)rows[i] >= (uint)v)
                throw new ArgumentException($"{name}[{i}] = {rows[i]} is outside the embedding table [0, {v})", name);
    }

    /// <summary>
    /// Runs the model on <paramref name="samples"/> of <paramref name="set"/> (each with its most recent
    /// <paramref name="maxHistory"/> history events, oldest first), encoded with <see cref="DinConfig"/>'s feature layout,
    /// and returns their user states (sample id = <see cref="ReLLaSample.Index"/>), with the embeddings of every item of
    /// the dataset (item id = dataset item index, embedding = its table row in the item field).
    /// </summary>
    /// <param name="backend">Runs the matrix products (any backend; the caller's, not disposed).</param>
    /// <param name="set">The sample set; its dataset must fit the config (<see cref="DinConfig.CheckFits"/>).</param>
    /// <param name="samples">Samples of <paramref name="set"/>, each once.</param>
    /// <param name="maxHistory">History events per sample, at least 0 (the reference trains with its K, e.g. 30).</param>
    /// <exception cref="ArgumentException">The vocabulary does not fit the dataset, a sample is not one of the set's, or a
    /// sample appears twice.</exception>
    /// <param name="progress">Receives <c>("featurize", samples done, samples.Count)</c> after each chunk of samples.</param>
    /// <param name="cancellationToken">Checked between the passes, before each block of history pairs and each chunk of
    /// samples.</param>
    public CrmFeatures Featurize(ComputeBackend backend, SampleSet set, IReadOnlyList<ReLLaSample> samples, int maxHistory = 30,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentOutOfRangeException.ThrowIfNegative(maxHistory);
        cancellationToken.ThrowIfCancellationRequested();
        var encoding = DinEncoding.Create(Config, set.Dataset);
        int fields = Config.Fields.Count, e = EmbedDim, dh = StateDim;
        var sampleIds = new long[samples.Count];
        var position = new int[set.Samples.Count];   // 1 + position in samples, 0 = not seen
        for (int s = 0; s < samples.Count; s++)
        {
            var x = samples[s];
            if ((uint)x.Index >= (uint)set.Samples.Count || set.Samples[x.Index] != x)
                throw new ArgumentException($"samples[{s}] (index {x.Index}) is not a sample of this set", nameof(samples));
            if (position[x.Index] != 0)
                throw new ArgumentException($"sample id {x.Index} appears twice (samples[{position[x.Index] - 1}] and samples[{s}])", nameof(samples));
            position[x.Index] = s + 1;
            sampleIds[s] = x.Index;
        }
        // Pass 1: every sample's field rows and history window, each history event as a distinct (item, rating) pair.
        var fieldRows = new int[(long)samples.Count * fields];
        var starts = new long[samples.Count + 1];
        for (int s = 0; s < samples.Count; s++)
            starts[s + 1] = starts[s] + Math.Min(maxHistory, samples[s].HistoryLength);
        if (starts[^1] > Array.MaxLength) throw new ArgumentException($"the history windows hold {starts[^1]} events, more than one array can", nameof(samples));
        var pairOf = new int[starts[^1]];
        var pairId = new Dictionary<long, int>();
        var pairItems = new List<int>();
        var pairRatings = new List<int>();
        long rows = Config.NumFeatures;
        for (int s = 0; s < samples.Count; s++)
        {
            var x = samples[s];
            encoding.FieldRows(x.User, x.Item, fieldRows.AsSpan(s * fields, fields));
            var history = set.History(x);
            if (history.Length > maxHistory) history = history[^maxHistory..];
            long p = starts[s];
            foreach (var ev in history)
            {
                int item = encoding.ItemOffset + ev.Item, rating = encoding.RatingRow(ev.Value);
                long key = item * rows + rating;
                if (!pairId.TryGetValue(key, out int id))
                {
                    id = pairItems.Count;
                    pairId.Add(key, id);
                    pairItems.Add(item);
                    pairRatings.Add(rating);
                }
                pairOf[p++] = id;
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
        // Pass 2: the history embedding h of each distinct pair, once ([Q, E]); one runner (the weights on the backend) for
        // passes 2 and 3.
        using var runner = new DinRunner(this, backend);
        var pairTable = new float[(long)pairItems.Count * e];
        const int block = 16384;
        for (int first = 0; first < pairItems.Count; first += block)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(block, pairItems.Count - first);
            runner.MapHistory(CollectionsMarshal.AsSpan(pairItems).Slice(first, count), CollectionsMarshal.AsSpan(pairRatings).Slice(first, count),
                pairTable.AsSpan(first * e, count * e));
        }

        // Pass 3: attention and tower, chunk by chunk.
        var states = new float[(long)samples.Count * dh];
        var local = new int[Math.Min(samples.Count, DinRunner.ChunkSamples) + 1];
        var logits = new float[Math.Min(samples.Count, DinRunner.ChunkSamples)];
        for (int first = 0; first < samples.Count; first += DinRunner.ChunkSamples)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(DinRunner.ChunkSamples, samples.Count - first);
            long p0 = starts[first];
            for (int b = 0; b <= count; b++) local[b] = (int)(starts[first + b] - p0);
            runner.RunWithPairs(fieldRows.AsSpan(first * fields, count * fields), local.AsSpan(0, count + 1), pairOf.AsSpan((int)p0, local[count]), pairTable,
                states.AsSpan(first * dh, count * dh), logits.AsSpan(0, count));
            progress?.Report(new WorkProgress("featurize", first + count, samples.Count));
        }
        int items = set.Dataset.Items.Count;
        var itemIds = new long[items];
        var embeddings = new float[(long)items * e];
        for (int i = 0; i < items; i++) itemIds[i] = i;
        _weights[TableName].AsSpan(encoding.ItemOffset * e, items * e).CopyTo(embeddings);
        return new CrmFeatures(itemIds, embeddings, e, sampleIds, states, dh);
    }
}
