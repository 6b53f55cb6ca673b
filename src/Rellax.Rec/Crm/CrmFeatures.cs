using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// What a conventional recommender (CRM, SPEC §5) gives the LLM side: an item embedding (E floats, for SPA's soft tokens)
/// per item and a user state h_u (d_h floats, for CFLoRA's generators) per sample. Item ids are the rows of
/// <see cref="RatingDataset.Items"/> (the <c>id</c> of a prepared <c>items.jsonl</c>); sample ids are
/// <see cref="ReLLaSample.Index"/>. Either part may be absent (dimension 0, no ids).
/// </summary>
/// <remarks>
/// File form (safetensors, written by <see cref="Save"/>, read by <see cref="Load"/>):
/// <list type="table">
/// <listheader><term>tensor</term><description>dtype and shape</description></listheader>
/// <item><term><c>item_ids</c></term><description>I64 [N] (I32 also read), all distinct</description></item>
/// <item><term><c>item_embeddings</c></term><description>F32 [N, E] row-major, row i belongs to <c>item_ids[i]</c> (F16 and BF16 also read)</description></item>
/// <item><term><c>sample_ids</c></term><description>I64 [S] (I32 also read), all distinct</description></item>
/// <item><term><c>user_states</c></term><description>F32 [S, d_h], row i belongs to <c>sample_ids[i]</c> (F16 and BF16 also read)</description></item>
/// </list>
/// Metadata <c>format</c> = <c>rellax-crm-features</c> (optional when reading; another value is refused). An absent part
/// is written as no tensors; reading accepts both tensors of a part or neither (or both with zero rows). Any other tensor
/// is refused, so a misspelt name cannot silently drop a part. A file from Python:
/// <c>safetensors.torch.save_file({"item_ids": ids.long(), "item_embeddings": emb.float(), ...}, path)</c>.
/// </remarks>
public sealed class CrmFeatures
{
    /// <summary>The <c>format</c> metadata value.</summary>
    public const string FormatName = "rellax-crm-features";

    /// <summary>Tensor name of the item ids.</summary>
    public const string ItemIdsTensor = "item_ids";

    /// <summary>Tensor name of the item embeddings.</summary>
    public const string ItemEmbeddingsTensor = "item_embeddings";

    /// <summary>Tensor name of the sample ids.</summary>
    public const string SampleIdsTensor = "sample_ids";

    /// <summary>Tensor name of the user states.</summary>
    public const string UserStatesTensor = "user_states";

    private readonly long[] _itemIds;
    private readonly float[] _itemEmbeddings;
    private readonly long[] _sampleIds;
    private readonly float[] _userStates;
    private readonly Dictionary<long, int> _itemRow;
    private readonly Dictionary<long, int> _sampleRow;

    /// <summary>Creates features from arrays (kept, not copied).</summary>
    /// <param name="itemIds">[N] item ids, unique.</param>
    /// <param name="itemEmbeddings">[N, <paramref name="embedDim"/>] row-major.</param>
    /// <param name="embedDim">E (0 when there are no item embeddings; then <paramref name="itemIds"/> must be empty).</param>
    /// <param name="sampleIds">[S] sample ids, unique.</param>
    /// <param name="userStates">[S, <paramref name="stateDim"/>] row-major.</param>
    /// <param name="stateDim">d_h (0 when there are no user states; then <paramref name="sampleIds"/> must be empty).</param>
    /// <exception cref="ArgumentException">Sizes that disagree, a duplicate id, or a non-finite value (named).</exception>
    public CrmFeatures(long[] itemIds, float[] itemEmbeddings, int embedDim, long[] sampleIds, float[] userStates, int stateDim)
    {
        ArgumentNullException.ThrowIfNull(itemIds);
        ArgumentNullException.ThrowIfNull(itemEmbeddings);
        ArgumentNullException.ThrowIfNull(sampleIds);
        ArgumentNullException.ThrowIfNull(userStates);
        _itemRow = Index(itemIds, itemEmbeddings, embedDim, "item", nameof(itemIds), nameof(itemEmbeddings), nameof(embedDim));
        _sampleRow = Index(sampleIds, userStates, stateDim, "sample", nameof(sampleIds), nameof(userStates), nameof(stateDim));
        _itemIds = itemIds;
        _itemEmbeddings = itemEmbeddings;
        _sampleIds = sampleIds;
        _userStates = userStates;
        EmbedDim = embedDim;
        StateDim = stateDim;
    }

    private static Dictionary<long, int> Index(long[] ids, float[] rows, int dim, string what, string idsName, string rowsName, string dimName)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(dim, dimName);
        if (dim == 0 && ids.Length > 0)
            throw new ArgumentException($"{ids.Length} {what} ids are given but the {what} vector size is 0", dimName);
        if ((long)ids.Length * dim != rows.Length)
            throw new ArgumentException($"{rowsName} has {rows.Length} values, but [{ids.Length}, {dim}] needs {(long)ids.Length * dim}", rowsName);
        var map = new Dictionary<long, int>(ids.Length);
        for (int r = 0; r < ids.Length; r++)
            if (!map.TryAdd(ids[r], r))
                throw new ArgumentException($"{what} id {ids[r]} appears twice (rows {map[ids[r]]} and {r})", idsName);
        for (int i = 0; i < rows.Length; i++)
            if (!float.IsFinite(rows[i]))
                throw new ArgumentException($"{what} {ids[i / dim]} (row {i / dim}), column {i % dim}: value {rows[i]} is not finite", rowsName);
        return map;
    }

    /// <summary>E, the item embedding size (0 when absent).</summary>
    public int EmbedDim { get; }

    /// <summary>d_h, the user state size (0 when absent).</summary>
    public int StateDim { get; }

    /// <summary>The item ids, in row order [N].</summary>
    public IReadOnlyList<long> ItemIds => _itemIds;

    /// <summary>The sample ids, in row order [S].</summary>
    public IReadOnlyList<long> SampleIds => _sampleIds;

    /// <summary>All item embeddings, row-major [N, E] in the order of <see cref="ItemIds"/>.</summary>
    public ReadOnlySpan<float> ItemEmbeddings => _itemEmbeddings;

    /// <summary>All user states, row-major [S, d_h] in the order of <see cref="SampleIds"/>.</summary>
    public ReadOnlySpan<float> UserStates => _userStates;

    /// <summary>Whether item <paramref name="itemId"/> has an embedding.</summary>
    public bool HasItem(long itemId) => _itemRow.ContainsKey(itemId);

    /// <summary>Whether sample <paramref name="sampleId"/> has a user state.</summary>
    public bool HasSample(long sampleId) => _sampleRow.ContainsKey(sampleId);

    /// <summary>The embedding of item <paramref name="itemId"/> [E].</summary>
    /// <exception cref="KeyNotFoundException">The item is not in the file (the message names it).</exception>
    public ReadOnlySpan<float> ItemEmbedding(long itemId) =>
        _itemRow.TryGetValue(itemId, out int row)
            ? _itemEmbeddings.AsSpan(row * EmbedDim, EmbedDim)
            : throw new KeyNotFoundException($"item {itemId} has no CRM embedding (the features hold {_itemIds.Length} items)");

    /// <summary>The user state of sample <paramref name="sampleId"/> [d_h].</summary>
    /// <exception cref="KeyNotFoundException">The sample is not in the file (the message names it).</exception>
    public ReadOnlySpan<float> UserState(long sampleId) =>
        _sampleRow.TryGetValue(sampleId, out int row)
            ? _userStates.AsSpan(row * StateDim, StateDim)
            : throw new KeyNotFoundException($"sample {sampleId} has no CRM user state (the features hold {_sampleIds.Length} samples)");

    /// <summary>Reads a features file (the format in the class remarks).</summary>
    /// <param name="path">A <c>.safetensors</c> file.</param>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">A malformed file; the message names the file and the tensor.</exception>
    public static CrmFeatures Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        InputPaths.RequireFile(full, "CRM features file");
        SafeTensorsFile file;
        try { file = SafeTensorsFile.Open(full); }
        catch (SafeTensorsFormatException e) { throw new InvalidDataException(e.Message, e); }
        using (file)
        {
            if (file.Metadata.TryGetValue("format", out string? format) && format != FormatName)
                throw new InvalidDataException($"'{full}': metadata format is '{format}', expected '{FormatName}'");
            foreach (string name in file.Tensors.Keys)
                if (name is not (ItemIdsTensor or ItemEmbeddingsTensor or SampleIdsTensor or UserStatesTensor))
                    throw new InvalidDataException(
                        $"'{full}': unknown tensor '{name}' (a CRM features file holds {ItemIdsTensor}, {ItemEmbeddingsTensor}, {SampleIdsTensor}, {UserStatesTensor})");
            var (itemIds, itemRows, e) = ReadPart(file, full, ItemIdsTensor, ItemEmbeddingsTensor);
            var (sampleIds, stateRows, h) = ReadPart(file, full, SampleIdsTensor, UserStatesTensor);
            try
            {
                return new CrmFeatures(itemIds, itemRows, e, sampleIds, stateRows, h);
            }
            catch (ArgumentException ex)
            {
                string tensor = ex.ParamName switch
                {
                    "itemIds" => ItemIdsTensor,
                    "itemEmbeddings" or "embedDim" => ItemEmbeddingsTensor,
                    "sampleIds" => SampleIdsTensor,
                    _ => UserStatesTensor,
                };
                throw new InvalidDataException($"'{full}', tensor '{tensor}': {ExceptionText.OneLine(ex)}", ex);
            }
        }
    }

    private static (long[] Ids, float[] Rows, int Dim) ReadPart(SafeTensorsFile file, string path, string idsName, string rowsName)
    {
        bool hasIds = file.Contains(idsName), hasRows = file.Contains(rowsName);
        if (!hasIds && !hasRows) return ([], [], 0);
        if (!hasIds) throw new InvalidDataException($"'{path}': tensor '{rowsName}' is present but '{idsName}' is missing");
        if (!hasRows) throw new InvalidDataException($"'{path}': tensor '{idsName}' is present but '{rowsName}' is missing");
        var idInfo = file.Info(idsName);
        if (idInfo.Shape.Length != 1)
            throw new InvalidDataException($"'{path}', tensor '{idsName}': expected shape [N], got [{string.Join(", ", idInfo.Shape)}]");
        int n = idInfo.Shape[0];
        var ids = new long[n];
        var bytes = file.GetBytes(idsName);
        switch (idInfo.DType)
        {
            case SafeTensorDType.I64:
                for (int i = 0; i < n; i++) ids[i] = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(bytes[(8 * i)..]);
                break;
            case SafeTensorDType.I32:
                for (int i = 0; i < n; i++) ids[i] = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(bytes[(4 * i)..]);
                break;
            default:
                throw new InvalidDataException($"'{path}', tensor '{idsName}': dtype is {idInfo.DType.ToFormatString()}, expected I64 (or I32)");
        }
        var rowInfo = file.Info(rowsName);
        if (rowInfo.Shape.Length != 2 || rowInfo.Shape[0] != n)
            throw new InvalidDataException(
                $"'{path}', tensor '{rowsName}': expected shape [{n}, dim] (one row per {idsName} entry), got [{string.Join(", ", rowInfo.Shape)}]");
        if (rowInfo.DType is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16))
            throw new InvalidDataException($"'{path}', tensor '{rowsName}': dtype is {rowInfo.DType.ToFormatString()}, expected F32 (or F16, BF16)");
        int dim = rowInfo.Shape[1];
        if (n == 0) return ([], [], 0);
        if (dim == 0) throw new InvalidDataException($"'{path}', tensor '{rowsName}': {n} rows of width 0");
        return (ids, file.ReadFloat32(rowsName), dim);
    }

    /// <summary>Writes the features to <paramref name="path"/> atomically (a temporary file renamed into place).</summary>
    /// <param name="path">Destination <c>.safetensors</c> file; its directory must exist.</param>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = FormatName;
        if (_itemIds.Length > 0)
        {
            writer.Add<long>(ItemIdsTensor, SafeTensorDType.I64, [_itemIds.Length], _itemIds);
            writer.Add<float>(ItemEmbeddingsTensor, SafeTensorDType.F32, [_itemIds.Length, EmbedDim], _itemEmbeddings);
        }
        if (_sampleIds.Length > 0)
        {
            writer.Add<long>(SampleIdsTensor, SafeTensorDType.I64, [_sampleIds.Length], _sampleIds);
            writer.Add<float>(UserStatesTensor, SafeTensorDType.F32, [_sampleIds.Length, StateDim], _userStates);
        }
        writer.Save(path);
    }
}
