using Rellax.Kernels;

using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// Which history events each sample's prompt lists: recent-K, or SUBR-K through a <see cref="SubrIndex"/> over the
/// dataset's items (SPEC §2). Positions index <see cref="SampleSet.History"/> and come in prompt order, ready for
/// <see cref="ReLLaPromptBuilder.Build"/>.
/// </summary>
public static class SampleRetrieval
{
    /// <summary>Recent-K for each sample: its last <paramref name="k"/> history events, oldest first.</summary>
    public static int[][] Recent(SampleSet set, IReadOnlyList<ReLLaSample> samples, int k)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        var result = new int[samples.Count][];
        for (int i = 0; i < samples.Count; i++) result[i] = ReLLaPromptBuilder.RecentPositions(samples[i].HistoryLength, k);
        return result;
    }

    /// <summary>
    /// SUBR-K for each sample: the <paramref name="k"/> history events most similar to its target (ties: the more recent
    /// wins), in time order (<see cref="SubrOrder.Chronological"/>, the reference's <c>sequential</c>) or best first
    /// (<see cref="SubrOrder.Score"/>). The index's item ids must be the dataset's item rows.
    /// </summary>
    /// <param name="index">The retrieval table over the dataset's items.</param>
    /// <param name="set">The samples' set (for their histories).</param>
    /// <param name="samples">The samples to retrieve for.</param>
    /// <param name="k">Items per sample, 1 to <see cref="SubrTopK.MaxK"/>.</param>
    /// <param name="order">Order of each sample's positions.</param>
    /// <param name="batchSize">Samples per kernel call.</param>
    /// <param name="progress">Receives <c>("retrieve", samples done, samples.Count)</c> after each batch.</param>
    /// <param name="cancellationToken">Checked between batches.</param>
    /// <exception cref="RecordException">An item the index does not have (named by sample and id).</exception>
    public static int[][] Subr(SubrIndex index, SampleSet set, IReadOnlyList<ReLLaSample> samples, int k, SubrOrder order = SubrOrder.Chronological,
        int batchSize = 1024, IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(index);
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(k, SubrTopK.MaxK);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        cancellationToken.ThrowIfCancellationRequested();
        var result = new int[samples.Count][];
        for (int start = 0; start < samples.Count; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int end = Math.Min(samples.Count, start + batchSize);
            // The batch's queries in table rows, straight from the timelines (no per-sample id arrays).
            var offsets = new int[end - start + 1];
            for (int i = start; i < end; i++) offsets[i - start + 1] = checked(offsets[i - start] + samples[i].HistoryLength);
            var history = new int[offsets[^1]];
            var targets = new int[end - start];
            for (int i = start; i < end; i++)
            {
                var s = samples[i];
                targets[i - start] = RowOf(index, s.Item, s, position: -1);
                var events = set.History(s);
                for (int j = 0; j < events.Length; j++) history[offsets[i - start] + j] = RowOf(index, events[j].Item, s, j);
            }
            SubrResult found;
            using (var queries = SubrQueries.Create(history, offsets, targets))
                found = index.Table.Backend.Subr.Retrieve(index.Table, queries, k, order);
            for (int i = start; i < end; i++) result[i] = found.PositionsOf(i - start).ToArray();
            progress?.Report(new WorkProgress("retrieve", end, samples.Count));
        }
        return result;
    }

    /// <summary>The table row of <paramref name="item"/>; the message (built only on failure) names the sample and the
    /// history position (-1: the target).</summary>
    private static int RowOf(SubrIndex index, int item, in ReLLaSample sample, int position) =>
        index.TryGetRow(item, out int row) ? row
            : throw new RecordException("sample", sample.Index, null, $"{(position < 0 ? "target" : $"history position {position}")}: item {item} is not in the index ({index.Count} items)");

    /// <summary>
    /// Retrieval quality a user can see: the share of the listed history events whose item's category (first genre)
    /// equals the target's. Events or targets without a genre are left out; NaN when nothing is left.
    /// </summary>
    /// <param name="set">The samples' set.</param>
    /// <param name="samples">The samples.</param>
    /// <param name="positions">Per sample, the listed history positions (null: the whole history).</param>
    public static double CategoryAgreement(SampleSet set, IReadOnlyList<ReLLaSample> samples, IReadOnlyList<int[]>? positions)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(samples);
        if (positions is not null && positions.Count != samples.Count)
            throw new ArgumentException($"{positions.Count} position lists for {samples.Count} samples", nameof(positions));
        var items = set.Dataset.Items;
        long same = 0, total = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            var target = items[samples[i].Item].Genres;
            if (target.Count == 0) continue;
            var history = set.History(samples[i]);
            int n = positions is null ? history.Length : positions[i].Length;
            for (int j = 0; j < n; j++)
            {
                var genres = items[history[positions is null ? j : positions[i][j]].Item].Genres;
                if (genres.Count == 0) continue;
                total++;
                if (genres[0] == target[0]) same++;
            }
        }
        return total == 0 ? double.NaN : (double)same / total;
    }
}
