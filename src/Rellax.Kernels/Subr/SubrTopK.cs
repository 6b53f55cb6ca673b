namespace Rellax.Kernels;

/// <summary>The order in which <see cref="SubrTopK"/> returns each sample's retrieved items.</summary>
public enum SubrOrder
{
    /// <summary>Oldest first, as the items appear in the history (the ReLLa <c>sequential</c> prompt template).</summary>
    Chronological,

    /// <summary>Most similar first; among equal scores, the more recent item first.</summary>
    Score,
}

/// <summary>
/// SUBR semantic user-behaviour retrieval (SPEC §2) on one backend: for each sample of a batch, score every item of
/// its history against its target and keep the K best, in one fused pass (gather, dot, select) that never writes the
/// B × L score matrix. Ties go to the more recent event; a history of K items or fewer is returned whole.
/// </summary>
/// <remarks>
/// The score of history row h against target row t is, for an f32 or f16 table, the fp32 dot product
/// <c>Σ_c E[t, c] · E[h, c]</c> (f16 widened; summation order is the backend's, the same for every row of a call).
/// For an i8 table it is <c>(float)(Σ_c q[t, c] · q[h, c]) · (scale[t] · scale[h])</c>: an exact integer dot product,
/// so every backend selects exactly the same items.
/// </remarks>
public sealed class SubrTopK
{
    /// <summary>The largest K a call may ask for.</summary>
    public const int MaxK = 1024;

    private readonly ComputeBackend _backend;

    internal SubrTopK(ComputeBackend backend) => _backend = backend;

    /// <summary>
    /// Retrieves the K best history items of every sample and copies them to the host.
    /// </summary>
    /// <param name="table">Item embeddings on this backend.</param>
    /// <param name="queries">Histories and targets; every row must be in [0, table.Rows).</param>
    /// <param name="k">Items to keep per sample, 1 to <see cref="MaxK"/>.</param>
    /// <param name="order">Chronological (default) or best first.</param>
    /// <exception cref="ArgumentException">A row outside the table (the message names the sample and the row), a table on
    /// another backend, or K out of range.</exception>
    public SubrResult Retrieve(SubrTable table, SubrQueries queries, int k, SubrOrder order = SubrOrder.Chronological)
    {
        ArgumentNullException.ThrowIfNull(queries);
        CheckK(k);
        int b = queries.Samples;
        using var positions = _backend.Allocate(DType.I32, Math.Max(1L, (long)b * k));
        using var scores = _backend.Allocate(DType.F32, Math.Max(1L, (long)b * k));
        var p = new Tensor(positions, 0, b, k);
        var s = new Tensor(scores, 0, b, k);
        Run(table, queries, k, order, p, s);
        var hostPositions = new int[(long)b * k];
        var hostScores = new float[(long)b * k];
        positions.CopyTo<int>(hostPositions);
        scores.CopyTo<float>(hostScores);
        return new SubrResult(queries, k, order, hostPositions, hostScores);
    }

    /// <summary>
    /// Retrieves the K best history items of every sample into tensors on this backend (asynchronous on GPU backends).
    /// </summary>
    /// <param name="table">Item embeddings on this backend.</param>
    /// <param name="queries">Histories and targets; every row must be in [0, table.Rows).</param>
    /// <param name="k">Items to keep per sample, 1 to <see cref="MaxK"/>.</param>
    /// <param name="order">Chronological or best first.</param>
    /// <param name="positions">Output i32 [B, k]: positions in each history (0 = oldest); -1 in the slots past min(L, k).</param>
    /// <param name="scores">Output f32 [B, k]: their scores; NaN in the unused slots.</param>
    public void Run(SubrTable table, SubrQueries queries, int k, SubrOrder order, Tensor positions, Tensor scores)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(queries);
        CheckK(k);
        if (!Enum.IsDefined(order)) throw new ArgumentOutOfRangeException(nameof(order), order, "unknown order");
        if (!ReferenceEquals(table.Backend, _backend))
            throw new ArgumentException($"the table lives on backend '{table.Backend.Name}', not '{_backend.Name}'", nameof(table));
        var embeddings = table.Embeddings;
        Check.Of(_backend, positions, nameof(positions), DType.I32, 2);
        Check.F32(_backend, scores, nameof(scores), 2);
        int b = queries.Samples;
        if (positions.Dim(0) != b || positions.Dim(1) != k)
            throw new ArgumentException($"positions {positions} must be [B, k] = [{b}, {k}]", nameof(positions));
        Check.SameShape(positions, nameof(positions), scores, nameof(scores));
        Check.NoOverlap(positions, nameof(positions), scores, nameof(scores));
        queries.CheckRows(table.Rows);
        if (b == 0) return;
        var (history, offsets, targets) = queries.On(_backend);
        _backend.SubrKernels.TopK(embeddings, table.Scales ?? default, history, offsets, targets, k, order == SubrOrder.Score,
            positions, scores);
    }

    private static void CheckK(int k)
    {
        if (k < 1 || k > MaxK) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must be in [1, {MaxK}]");
    }
}

/// <summary>
/// What <see cref="SubrTopK.Retrieve"/> returns, on the host: for each sample, the positions (in its history) of
/// the retrieved items, their table rows, and their scores, in the requested order.
/// </summary>
public sealed class SubrResult
{
    private readonly int[] _positions;
    private readonly float[] _scores;
    private readonly int[] _rows;
    private readonly int[] _counts;

    internal SubrResult(SubrQueries queries, int k, SubrOrder order, int[] positions, float[] scores)
    {
        K = k;
        Order = order;
        _positions = positions;
        _scores = scores;
        _counts = new int[queries.Samples];
        _rows = new int[positions.Length];
        for (int b = 0; b < queries.Samples; b++)
        {
            var history = queries.HistoryOf(b);
            int n = Math.Min(history.Length, k);
            _counts[b] = n;
            for (int i = 0; i < n; i++)
            {
                int p = positions[b * k + i];
                if ((uint)p >= (uint)history.Length)
                    throw new InvalidOperationException($"internal error: the kernel returned position {p} for sample {b}, whose history has {history.Length} items");
                _rows[b * k + i] = history[p];
            }
        }
    }

    /// <summary>Number of samples B.</summary>
    public int Samples => _counts.Length;

    /// <summary>The K that was asked for.</summary>
    public int K { get; }

    /// <summary>The order of each sample's items.</summary>
    public SubrOrder Order { get; }

    /// <summary>How many items sample <paramref name="sample"/> got: min(L, K).</summary>
    public int CountOf(int sample) => _counts[sample];

    /// <summary>Positions of the retrieved items in the sample's history (0 = oldest), so ratings can travel with them.</summary>
    public ReadOnlySpan<int> PositionsOf(int sample) => _positions.AsSpan(sample * K, _counts[sample]);

    /// <summary>Table rows of the retrieved items.</summary>
    public ReadOnlySpan<int> RowsOf(int sample) => _rows.AsSpan(sample * K, _counts[sample]);

    /// <summary>Scores of the retrieved items.</summary>
    public ReadOnlySpan<float> ScoresOf(int sample) => _scores.AsSpan(sample * K, _counts[sample]);
}
