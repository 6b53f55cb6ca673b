using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>How <see cref="SubrIndex.Build"/> turns item vectors into a retrieval table.</summary>
public sealed record SubrIndexOptions
{
    /// <summary>Reduce the vectors to this many principal components first (SPEC §2 uses 512); null keeps them as they are.</summary>
    public int? PcaComponents { get; init; }

    /// <summary>Seed of the PCA's random projection (the fit is deterministic for a given seed).</summary>
    public int PcaSeed { get; init; }

    /// <summary>How the table is stored: f32 (default), f16, or i8 with a scale per row.</summary>
    public DType Storage { get; init; } = DType.F32;

    /// <summary>Cosine (rows normalised at build time, the default) or raw dot product.</summary>
    public SubrSimilarity Similarity { get; init; } = SubrSimilarity.Cosine;

    /// <summary>
    /// For a cosine index without PCA: subtract the mean vector from every row before normalising (PCA centres too). Raw
    /// LLM item vectors share a large common component, so their cosines crowd near 1 and an f16 or i8 table then loses
    /// much of its top-K agreement with f32; centred, the scores spread out (measured in <c>SubrIndexTests</c>). The mean
    /// is kept (<see cref="SubrIndex.Mean"/>) and saved. Off by default here (the cosine of the vectors as given);
    /// <c>rellax index</c> turns it on unless <c>--no-center</c>.
    /// </summary>
    public bool Center { get; init; }
}

/// <summary>One SUBR query in item ids: a sample's history (oldest first) and its target item.</summary>
/// <param name="Id">The sample's id, used in error messages and output.</param>
/// <param name="History">Item ids in time order; duplicates are separate events.</param>
/// <param name="Target">The target item id.</param>
public sealed record SubrSample(string Id, long[] History, long Target);

/// <summary>
/// A SUBR retrieval index: an item-embedding table on a backend plus the map from item ids to table rows. Built
/// from item vectors (optionally PCA-reduced first), saved as safetensors (<c>embeddings</c> [N, d] in its storage
/// type, <c>scales</c> f32 [N] for i8, <c>item_ids</c> i64 [N] when ids are not 0..N-1), and loaded from a
/// memory-mapped file straight into the backend's memory.
/// </summary>
public sealed class SubrIndex : IDisposable
{
    /// <summary>The <c>format</c> value in the file's metadata.</summary>
    public const string FormatName = "rellax-subr-index";

    private readonly long[]? _itemIds;
    private readonly Dictionary<long, int>? _rowOf;

    private SubrIndex(SubrTable table, long[]? itemIds, double[]? explainedVarianceRatio, float[]? mean = null)
    {
        Table = table;
        _itemIds = itemIds;
        ExplainedVarianceRatio = explainedVarianceRatio;
        Mean = mean;
        if (itemIds is not null)
        {
            _rowOf = new Dictionary<long, int>(itemIds.Length);
            for (int r = 0; r < itemIds.Length; r++)
                if (!_rowOf.TryAdd(itemIds[r], r))
                    throw new ArgumentException($"item id {itemIds[r]} appears twice (rows {_rowOf[itemIds[r]]} and {r})", nameof(itemIds));
        }
    }

    /// <summary>The table on its backend.</summary>
    public SubrTable Table { get; }

    /// <summary>Number of items N.</summary>
    public int Count => Table.Rows;

    /// <summary>Embedding width d (after PCA when it was applied).</summary>
    public int Dim => Table.Dim;

    /// <summary>Explained-variance ratio of each kept principal component, when the index was PCA-reduced; else null.</summary>
    public IReadOnlyList<double>? ExplainedVarianceRatio { get; }

    /// <summary>The mean vector [d] subtracted from every row before normalising (<see cref="SubrIndexOptions.Center"/>);
    /// null when the rows were not centred.</summary>
    public IReadOnlyList<float>? Mean { get; }

    /// <summary>
    /// True when <see cref="Load"/> found raw item vectors (a file <c>rellax index</c> did not write, such as the output of
    /// <c>rellax embed</c>) and built the index in memory: cosine, centred, f32, as <c>rellax index</c> builds by default.
    /// </summary>
    public bool BuiltOnLoad { get; private set; }

    /// <summary>The item id of table row <paramref name="row"/>.</summary>
    public long ItemIdOf(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Count);
        return _itemIds is null ? row : _itemIds[row];
    }

    /// <summary>The table row of item <paramref name="itemId"/>, if the index has it.</summary>
    public bool TryGetRow(long itemId, out int row)
    {
        if (_rowOf is not null) return _rowOf.TryGetValue(itemId, out row);
        row = (int)itemId;
        return itemId >= 0 && itemId < Count;
    }

    /// <summary>
    /// Builds an index from item vectors: optional PCA to <see cref="SubrIndexOptions.PcaComponents"/>, then a
    /// <see cref="SubrTable"/> (validated, normalised for cosine, stored as asked).
    /// </summary>
    /// <param name="backend">Where the table lives (and where the PCA's products run).</param>
    /// <param name="vectors">Row-major f32 [rows, dim].</param>
    /// <param name="rows">N.</param>
    /// <param name="dim">D.</param>
    /// <param name="itemIds">The item id of each row, [N], all distinct; empty means ids 0..N-1.</param>
    /// <param name="options">PCA, storage and similarity; defaults: no PCA, f32, cosine.</param>
    /// <param name="cancellationToken">Checked before each pass of the PCA and before the table is built.</param>
    /// <exception cref="ArgumentException">A non-finite value (named by row and column), duplicate item ids, or bad shapes.</exception>
    public static SubrIndex Build(ComputeBackend backend, ReadOnlySpan<float> vectors, int rows, int dim,
        ReadOnlySpan<long> itemIds = default, SubrIndexOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        cancellationToken.ThrowIfCancellationRequested();
        options ??= new SubrIndexOptions();
        if (!itemIds.IsEmpty && itemIds.Length != rows)
            throw new ArgumentException($"itemIds has {itemIds.Length} entries for {rows} rows", nameof(itemIds));
        long[]? ids = itemIds.IsEmpty || IsIdentity(itemIds) ? null : itemIds.ToArray();
        double[]? ratio = null;
        float[]? reduced = null, mean = null;
        int width = dim;
        if (options.Center && options.PcaComponents is null && options.Similarity == SubrSimilarity.Cosine)
        {
            if (vectors.Length != (long)rows * dim)
                throw new ArgumentException($"vectors has {vectors.Length} values, but [rows, dim] = [{rows}, {dim}] needs {(long)rows * dim}", nameof(vectors));
            // A non-finite value is left uncentred, for the table to name its row and column.
            if (System.Numerics.Tensors.TensorPrimitives.IsFiniteAll(vectors)) (reduced, mean) = Centred(vectors, rows, dim);
        }
        else if (options.PcaComponents is int k)
        {
            if (vectors.Length != (long)rows * dim)
                throw new ArgumentException($"vectors has {vectors.Length} values, but [rows, dim] = [{rows}, {dim}] needs {(long)rows * dim}", nameof(vectors));
            var pca = Pca.Fit(backend, vectors, rows, dim, new PcaOptions { Components = k, Seed = options.PcaSeed }, cancellationToken);
            reduced = new float[(long)rows * pca.Components];
            pca.Transform(vectors, rows, reduced);
            ratio = pca.ExplainedVarianceRatio.ToArray();
            width = pca.Components;
        }
        cancellationToken.ThrowIfCancellationRequested();
        var table = SubrTable.Create(backend, reduced ?? vectors, rows, width, options.Storage, options.Similarity);
        try
        {
            return new SubrIndex(table, ids, ratio, mean);
        }
        catch
        {
            table.Dispose();
            throw;
        }
    }

    /// <summary>The rows minus their mean (accumulated in double), and the mean.</summary>
    private static (float[] Rows, float[] Mean) Centred(ReadOnlySpan<float> vectors, int rows, int dim)
    {
        var sum = new double[dim];
        for (int r = 0; r < rows; r++)
        {
            var row = vectors.Slice(r * dim, dim);
            for (int c = 0; c < dim; c++) sum[c] += row[c];
        }
        var mean = new float[dim];
        for (int c = 0; c < dim; c++) mean[c] = (float)(sum[c] / rows);
        var centred = new float[(long)rows * dim];
        for (int r = 0; r < rows; r++)
            System.Numerics.Tensors.TensorPrimitives.Subtract(vectors.Slice(r * dim, dim), mean, centred.AsSpan(r * dim, dim));
        return (centred, mean);
    }

    /// <summary>Wraps an existing table (the index takes ownership of it).</summary>
    /// <param name="table">The table.</param>
    /// <param name="itemIds">The item id of each row, all distinct; empty means ids 0..N-1.</param>
    public static SubrIndex FromTable(SubrTable table, ReadOnlySpan<long> itemIds = default)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (!itemIds.IsEmpty && itemIds.Length != table.Rows)
            throw new ArgumentException($"itemIds has {itemIds.Length} entries for a table of {table.Rows} rows", nameof(itemIds));
        return new SubrIndex(table, itemIds.IsEmpty || IsIdentity(itemIds) ? null : itemIds.ToArray(), null);
    }

    /// <summary>
    /// Retrieves, for every sample, the <paramref name="k"/> history events most similar to its target
    /// (see <see cref="SubrTopK"/>). Positions in the result index the sample's <see cref="SubrSample.History"/>.
    /// </summary>
    /// <param name="samples">The queries, in item ids.</param>
    /// <param name="k">Items to keep per sample, 1 to <see cref="SubrTopK.MaxK"/>.</param>
    /// <param name="order">Chronological (default) or best first.</param>
    /// <exception cref="RecordException">An item id the index does not have: <see cref="RecordException.Record"/> is the
    /// sample's index in <paramref name="samples"/>, and the message names the sample, the position and the id.</exception>
    public SubrResult Retrieve(IReadOnlyList<SubrSample> samples, int k, SubrOrder order = SubrOrder.Chronological)
    {
        ArgumentNullException.ThrowIfNull(samples);
        using var queries = ToQueries(samples);
        return Table.Backend.Subr.Retrieve(Table, queries, k, order);
    }

    /// <summary>Maps item ids to table rows; throws a <see cref="RecordException"/> naming the sample, position and id of
    /// the first unknown item.</summary>
    public SubrQueries ToQueries(IReadOnlyList<SubrSample> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        var offsets = new int[samples.Count + 1];
        var targets = new int[samples.Count];
        long total = 0;
        for (int b = 0; b < samples.Count; b++)
        {
            var s = samples[b] ?? throw new ArgumentNullException(nameof(samples), $"sample {b} is null");
            total += s.History.Length;
            if (total > int.MaxValue) throw new ArgumentException("the histories hold more than int.MaxValue events in all", nameof(samples));
            offsets[b + 1] = (int)total;
        }
        var history = new int[total];
        for (int b = 0; b < samples.Count; b++)
        {
            var s = samples[b];
            if (!TryGetRow(s.Target, out targets[b]))
                throw new RecordException("sample", b, s.Id, $"target item {s.Target} is not in the index ({Count} items)");
            for (int p = 0; p < s.History.Length; p++)
                if (!TryGetRow(s.History[p], out history[offsets[b] + p]))
                    throw new RecordException("sample", b, s.Id, $"history item {s.History[p]} (position {p}) is not in the index ({Count} items)");
        }
        return SubrQueries.Create(history, offsets, targets);
    }

    /// <summary>Saves the index as safetensors through <see cref="OutputFile.Write"/> (atomically: a temporary file renamed into place).</summary>
    /// <param name="path">Destination file.</param>
    /// <param name="cancellationToken">Checked before the file is renamed into place (<see cref="OutputFile.Write"/>).</param>
    public void Save(string path, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var writer = new SafeTensorsWriter();
        long bytes = (long)Count * Dim * Table.Storage.SizeInBytes();
        if (bytes > Array.MaxLength) throw new NotSupportedException($"the table is {bytes} bytes; saving supports up to {Array.MaxLength}");
        var rowBytes = new byte[bytes];
        var scales = new float[Table.Storage == DType.I8 ? Count : 0];
        Table.CopyStoredTo(rowBytes, scales);
        int[] shape = [Count, Dim];
        switch (Table.Storage)
        {
            case DType.F32: writer.Add<float>("embeddings", SafeTensorDType.F32, shape, MemoryMarshal.Cast<byte, float>(rowBytes)); break;
            case DType.F16: writer.Add<Half>("embeddings", SafeTensorDType.F16, shape, MemoryMarshal.Cast<byte, Half>(rowBytes)); break;
            default:
                writer.Add<sbyte>("embeddings", SafeTensorDType.I8, shape, MemoryMarshal.Cast<byte, sbyte>(rowBytes));
                writer.Add<float>("scales", SafeTensorDType.F32, [Count], scales);
                break;
        }
        if (_itemIds is not null) writer.Add<long>("item_ids", SafeTensorDType.I64, [Count], _itemIds);
        writer.Metadata["format"] = FormatName;
        writer.Metadata["similarity"] = Table.Similarity == SubrSimilarity.Cosine ? "cosine" : "dot";
        if (ExplainedVarianceRatio is { } ratio)
            writer.Metadata["pca_explained_variance_ratio"] = JsonSerializer.Serialize(ratio);
        if (Mean is { } mean)
        {
            writer.Add<float>("mean", SafeTensorDType.F32, [Dim], [.. mean]);
            writer.Metadata["centered"] = "true";
        }
        writer.Save(path, cancellationToken);
    }

    /// <summary>
    /// Loads an index saved by <see cref="Save"/> (metadata <c>format</c> = <see cref="FormatName"/>; <c>embeddings</c>
    /// [N, d] F32, F16, or I8 with <c>scales</c>; <c>item_ids</c> and <c>mean</c> optional). The file is memory-mapped and
    /// copied once into the backend's memory. Any other file with an F32 or F16 <c>embeddings</c> [N, d] tensor (the output
    /// of <c>rellax embed</c>, say) holds raw vectors, which are never ranked as if they were normalised: the index is
    /// built in memory as <c>rellax index</c> builds it by default (cosine, centred, f32) and <see cref="BuiltOnLoad"/> is
    /// set. An I8 table that is not an index is refused.
    /// </summary>
    /// <param name="path">The safetensors file.</param>
    /// <param name="backend">Where the table goes.</param>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">A missing or malformed tensor; the message names the file and the tensor.</exception>
    public static SubrIndex Load(string path, ComputeBackend backend)
    {
        ArgumentNullException.ThrowIfNull(backend);
        InputPaths.RequireFile(path, "SUBR index file");
        using var file = SafeTensorsFile.Open(path);
        if (!file.Contains("embeddings"))
            throw new InvalidDataException($"'{path}' has no 'embeddings' tensor (found: {string.Join(", ", file.Tensors.Keys.Order())})");
        var e = file.Info("embeddings");
        if (e.Shape.Length != 2 || e.Shape[0] < 1 || e.Shape[1] < 1)
            throw new InvalidDataException($"'{path}': 'embeddings' must be [N, d] with N, d >= 1, got [{string.Join(", ", e.Shape)}]");
        int n = e.Shape[0], d = e.Shape[1];
        DType storage = e.DType switch
        {
            SafeTensorDType.F32 => DType.F32,
            SafeTensorDType.F16 => DType.F16,
            SafeTensorDType.I8 => DType.I8,
            _ => throw new InvalidDataException($"'{path}': 'embeddings' is {e.DType.ToFormatString()}; an index is F32, F16 or I8"),
        };
        float[] scales = [];
        if (storage == DType.I8)
        {
            if (!file.Contains("scales")) throw new InvalidDataException($"'{path}': an I8 'embeddings' tensor needs a 'scales' F32 [N] tensor");
            var s = file.Info("scales");
            if (s.DType != SafeTensorDType.F32 || s.Shape.Length != 1 || s.Shape[0] != n)
                throw new InvalidDataException($"'{path}': 'scales' must be F32 [{n}], got {s.DType.ToFormatString()} [{string.Join(", ", s.Shape)}]");
            scales = file.ReadFloat32("scales");
        }
        long[] ids = [];
        if (file.Contains("item_ids"))
        {
            var i = file.Info("item_ids");
            if (i.DType != SafeTensorDType.I64 || i.Shape.Length != 1 || i.Shape[0] != n)
                throw new InvalidDataException($"'{path}': 'item_ids' must be I64 [{n}], got {i.DType.ToFormatString()} [{string.Join(", ", i.Shape)}]");
            ids = MemoryMarshal.Cast<byte, long>(file.GetBytes("item_ids")).ToArray();
        }
        var similarity = file.Metadata.TryGetValue("similarity", out var sim) ? sim switch
        {
            "cosine" => SubrSimilarity.Cosine,
            "dot" => SubrSimilarity.Dot,
            _ => throw new InvalidDataException($"'{path}': metadata similarity '{sim}' is neither 'cosine' nor 'dot'"),
        } : SubrSimilarity.Cosine;
        if (!(file.Metadata.TryGetValue("format", out var format) && format == FormatName))
        {
            if (storage == DType.I8)
                throw new InvalidDataException($"'{path}' holds an I8 table but is not an index written by `rellax index` (no metadata format = {FormatName}); " +
                    "build one with `rellax index --vectors VECTORS --storage i8`");
            // Raw item vectors: build the index the way `rellax index` does by default, never rank them as they are.
            float[] raw = file.ReadFloat32("embeddings");
            try
            {
                var built = Build(backend, raw, n, d, ids, new SubrIndexOptions { Center = true });
                built.BuiltOnLoad = true;
                return built;
            }
            catch (ArgumentException ex)
            {
                throw new InvalidDataException($"'{path}': {ex.Message}", ex);
            }
        }
        float[]? mean = null;
        if (file.Contains("mean"))
        {
            var m = file.Info("mean");
            if (m.DType != SafeTensorDType.F32 || m.Shape.Length != 1 || m.Shape[0] != d)
                throw new InvalidDataException($"'{path}': 'mean' must be F32 [{d}], got {m.DType.ToFormatString()} [{string.Join(", ", m.Shape)}]");
            mean = file.ReadFloat32("mean");
        }
        double[]? ratio = null;
        if (file.Metadata.TryGetValue("pca_explained_variance_ratio", out var r))
        {
            try { ratio = JsonSerializer.Deserialize<double[]>(r); }
            catch (JsonException ex) { throw new InvalidDataException($"'{path}': metadata pca_explained_variance_ratio is not a JSON array of numbers", ex); }
        }
        SubrTable table;
        try
        {
            table = SubrTable.FromStored(backend, storage, file.GetBytes("embeddings"), scales, n, d, similarity);
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"'{path}': {ex.Message}", ex);
        }
        try
        {
            return new SubrIndex(table, ids.Length == 0 || IsIdentity(ids) ? null : ids, ratio, mean);
        }
        catch (ArgumentException ex)
        {
            table.Dispose();
            throw new InvalidDataException($"'{path}': 'item_ids': {ex.Message}", ex);
        }
    }

    private static bool IsIdentity(ReadOnlySpan<long> ids)
    {
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] != i) return false;
        return true;
    }

    /// <summary>Frees the table.</summary>
    public void Dispose() => Table.Dispose();

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"SubrIndex({Count} items × {Dim}, {Table.Storage.ToString().ToLowerInvariant()}, {Table.Similarity.ToString().ToLowerInvariant()}{(Mean is null ? "" : ", centred")})");
}
