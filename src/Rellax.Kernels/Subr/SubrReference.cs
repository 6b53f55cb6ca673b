namespace Rellax.Kernels;

/// <summary>
/// The SUBR ground truth, written for clarity: score every history item (in double, or exactly for i8), sort all of
/// them by (score descending, position descending), keep K, re-sort. Tests compare every backend with it; never used
/// on a hot path.
/// </summary>
public static class SubrReference
{
    /// <summary>
    /// Scores of every history position of one sample, in double: f32/f16 tables as dequantised floats, i8 tables as
    /// <c>(float)dot · (scale[t] · scale[h])</c> exactly as the kernels compute it.
    /// </summary>
    /// <param name="table">Table rows on the host, dequantised per <see cref="SubrTable.ReadRow"/> for f32/f16: f32 [N, d].</param>
    /// <param name="dim">d.</param>
    /// <param name="history">The sample's rows, in time order.</param>
    /// <param name="target">The target row.</param>
    public static double[] Scores(ReadOnlySpan<float> table, int dim, ReadOnlySpan<int> history, int target)
    {
        var scores = new double[history.Length];
        var t = table.Slice(target * dim, dim);
        for (int p = 0; p < history.Length; p++)
        {
            var h = table.Slice(history[p] * dim, dim);
            double acc = 0;
            for (int c = 0; c < dim; c++) acc += (double)t[c] * h[c];
            scores[p] = acc;
        }
        return scores;
    }

    /// <summary>Scores of an i8 table, computed exactly as the kernels do (exact i32 dot, then two fp32 products).</summary>
    /// <param name="q">Quantised rows, i8 [N, d].</param>
    /// <param name="scales">Row scales, f32 [N].</param>
    /// <param name="dim">d.</param>
    /// <param name="history">The sample's rows, in time order.</param>
    /// <param name="target">The target row.</param>
    public static double[] ScoresInt8(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int dim, ReadOnlySpan<int> history, int target)
    {
        var scores = new double[history.Length];
        var t = q.Slice(target * dim, dim);
        for (int p = 0; p < history.Length; p++)
        {
            var h = q.Slice(history[p] * dim, dim);
            int acc = 0;
            for (int c = 0; c < dim; c++) acc += t[c] * h[c];
            scores[p] = (float)acc * (scales[target] * scales[history[p]]);
        }
        return scores;
    }

    /// <summary>
    /// The positions SUBR keeps for one sample given its scores: the min(L, k) best by (score descending, position
    /// descending), returned chronologically or best first.
    /// </summary>
    /// <param name="scores">One score per history position.</param>
    /// <param name="k">Items to keep.</param>
    /// <param name="order">Output order.</param>
    public static int[] Select(ReadOnlySpan<double> scores, int k, SubrOrder order)
    {
        var positions = new int[scores.Length];
        for (int p = 0; p < positions.Length; p++) positions[p] = p;
        var s = scores.ToArray();
        Array.Sort(positions, (a, b) => s[a] != s[b] ? s[b].CompareTo(s[a]) : b.CompareTo(a));
        var kept = positions.AsSpan(0, Math.Min(k, positions.Length)).ToArray();
        if (order == SubrOrder.Chronological) Array.Sort(kept);
        return kept;
    }
}
