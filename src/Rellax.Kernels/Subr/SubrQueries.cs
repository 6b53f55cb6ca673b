namespace Rellax.Kernels;

/// <summary>
/// A batch of SUBR queries: B samples, each with its own history (table rows in time order, any length, duplicates
/// allowed: each occurrence is a separate event) and one target row. Histories are one flat array plus offsets.
/// Built and validated once on the host; backends copy the arrays to the device on first use and keep them until the
/// batch is disposed.
/// </summary>
public sealed class SubrQueries : IDisposable
{
    private readonly int[] _history;
    private readonly int[] _offsets;
    private readonly int[] _targets;
    private readonly Dictionary<ComputeBackend, (DeviceBuffer History, DeviceBuffer Offsets, DeviceBuffer Targets)> _onDevice =
        new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    private SubrQueries(int[] history, int[] offsets, int[] targets)
    {
        _history = history;
        _offsets = offsets;
        _targets = targets;
        int max = -1, longest = 0;
        foreach (int r in history) max = Math.Max(max, r);
        foreach (int r in targets) max = Math.Max(max, r);
        for (int b = 0; b < targets.Length; b++) longest = Math.Max(longest, offsets[b + 1] - offsets[b]);
        MaxRow = max;
        LongestHistory = longest;
    }

    /// <summary>Builds a batch from flat arrays.</summary>
    /// <param name="history">Table rows of every history, concatenated; [total].</param>
    /// <param name="offsets">[B + 1]: history b is <c>history[offsets[b] .. offsets[b + 1])</c>; offsets[0] = 0,
    /// non-decreasing, offsets[B] = total.</param>
    /// <param name="targets">[B]: the target row of each sample.</param>
    /// <exception cref="ArgumentException">Inconsistent offsets, or a negative row (named by sample and position).</exception>
    public static SubrQueries Create(ReadOnlySpan<int> history, ReadOnlySpan<int> offsets, ReadOnlySpan<int> targets)
    {
        if (offsets.Length != targets.Length + 1)
            throw new ArgumentException($"offsets must have B + 1 = {targets.Length + 1} entries for {targets.Length} targets, got {offsets.Length}", nameof(offsets));
        if (offsets[0] != 0) throw new ArgumentException($"offsets[0] must be 0, got {offsets[0]}", nameof(offsets));
        for (int b = 0; b < targets.Length; b++)
        {
            if (offsets[b + 1] < offsets[b])
                throw new ArgumentException($"offsets must not decrease: offsets[{b + 1}] = {offsets[b + 1]} < offsets[{b}] = {offsets[b]}", nameof(offsets));
            if (targets[b] < 0) throw new ArgumentException($"sample {b}: target row {targets[b]} is negative", nameof(targets));
        }
        if (offsets[^1] != history.Length)
            throw new ArgumentException($"offsets[B] = {offsets[^1]} must equal the history length {history.Length}", nameof(offsets));
        for (int b = 0; b < targets.Length; b++)
            for (int i = offsets[b]; i < offsets[b + 1]; i++)
                if (history[i] < 0)
                    throw new ArgumentException($"sample {b}: history position {i - offsets[b]} has a negative row {history[i]}", nameof(history));
        return new SubrQueries(history.ToArray(), offsets.ToArray(), targets.ToArray());
    }

    /// <summary>Builds a batch from one history array per sample.</summary>
    /// <param name="histories">Table rows of each sample's history, in time order.</param>
    /// <param name="targets">The target row of each sample; as many as histories.</param>
    /// <exception cref="ArgumentException">Counts differ, a row is negative, or the histories hold more than int.MaxValue rows in all.</exception>
    public static SubrQueries FromHistories(IReadOnlyList<int[]> histories, ReadOnlySpan<int> targets)
    {
        ArgumentNullException.ThrowIfNull(histories);
        if (histories.Count != targets.Length)
            throw new ArgumentException($"{histories.Count} histories but {targets.Length} targets", nameof(targets));
        long total = 0;
        var offsets = new int[histories.Count + 1];
        for (int b = 0; b < histories.Count; b++)
        {
            total += (histories[b] ?? throw new ArgumentNullException(nameof(histories), $"history {b} is null")).Length;
            if (total > int.MaxValue) throw new ArgumentException($"the histories hold more than int.MaxValue rows in all", nameof(histories));
            offsets[b + 1] = (int)total;
        }
        var flat = new int[total];
        for (int b = 0; b < histories.Count; b++) histories[b].CopyTo(flat, offsets[b]);
        return Create(flat, offsets, targets);
    }

    /// <summary>Number of samples B.</summary>
    public int Samples => _targets.Length;

    /// <summary>Total history length over all samples.</summary>
    public int TotalHistory => _history.Length;

    /// <summary>The longest history in the batch.</summary>
    public int LongestHistory { get; }

    /// <summary>The largest table row named by any history or target (-1 for an empty batch).</summary>
    public int MaxRow { get; }

    /// <summary>All histories, concatenated; [total].</summary>
    public ReadOnlySpan<int> History => _history;

    /// <summary>[B + 1] offsets into <see cref="History"/>.</summary>
    public ReadOnlySpan<int> Offsets => _offsets;

    /// <summary>[B] target rows.</summary>
    public ReadOnlySpan<int> Targets => _targets;

    /// <summary>History of sample <paramref name="sample"/>, in time order.</summary>
    public ReadOnlySpan<int> HistoryOf(int sample) => _history.AsSpan(_offsets[sample], _offsets[sample + 1] - _offsets[sample]);

    /// <summary>Throws naming the first sample and row that is not in [0, <paramref name="rows"/>).</summary>
    internal void CheckRows(int rows)
    {
        if (MaxRow < rows) return;
        for (int b = 0; b < Samples; b++)
        {
            if (_targets[b] >= rows)
                throw new ArgumentException($"sample {b}: target row {_targets[b]} is not in the table (it has {rows} rows)", "queries");
            var h = HistoryOf(b);
            for (int i = 0; i < h.Length; i++)
                if (h[i] >= rows)
                    throw new ArgumentException($"sample {b}: history position {i} names row {h[i]}, which is not in the table (it has {rows} rows)", "queries");
        }
    }

    /// <summary>History, offsets and targets as i32 tensors on <paramref name="backend"/>, uploaded once per backend.</summary>
    internal (Tensor History, Tensor Offsets, Tensor Targets) On(ComputeBackend backend)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_onDevice.TryGetValue(backend, out var buffers))
        {
            DeviceBuffer? h = null, o = null;
            try
            {
                h = backend.Upload<int>(_history.Length == 0 ? [0] : _history);
                o = backend.Upload<int>(_offsets);
                var t = backend.Upload<int>(_targets.Length == 0 ? [0] : _targets);
                buffers = (h, o, t);
            }
            catch
            {
                h?.Dispose();
                o?.Dispose();
                throw;
            }
            _onDevice[backend] = buffers;
        }
        return (new Tensor(buffers.History, 0, _history.Length), new Tensor(buffers.Offsets, 0, _offsets.Length),
            new Tensor(buffers.Targets, 0, _targets.Length));
    }

    /// <summary>Frees the device copies.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (h, o, t) in _onDevice.Values)
        {
            h.Dispose();
            o.Dispose();
            t.Dispose();
        }
        _onDevice.Clear();
    }
}
