using System.Runtime.InteropServices;
using NUnit.Framework;
using Rellax.Kernels;

namespace Rellax.Tests.Subr;

/// <summary>
/// Shared SUBR test support: random problems, the host copy of a table's stored values, and the comparison of a
/// backend's result with <see cref="SubrReference"/> that tolerates only genuine near-ties.
/// </summary>
internal static class SubrCheck
{
    /// <summary>A random table of vectors in [-1, 1) (not normalised), f32 [rows, dim].</summary>
    public static float[] Vectors(int rows, int dim, int seed) => RandomData.Uniform(rows * dim, seed);

    /// <summary>Random histories of lengths drawn from <paramref name="lengths"/>, rows in [0, rows), and random targets.</summary>
    public static SubrQueries Queries(int rows, int[] lengths, int seed)
    {
        var rng = new Random(seed);
        var histories = lengths.Select(l => Enumerable.Range(0, l).Select(_ => rng.Next(rows)).ToArray()).ToList();
        var targets = lengths.Select(_ => rng.Next(rows)).ToArray();
        return SubrQueries.FromHistories(histories, targets);
    }

    /// <summary>The table's stored values as the kernels see them: f32 rows (f16 widened) or i8 rows with scales.</summary>
    public static (float[] Rows, sbyte[]? Q, float[]? Scales) HostCopy(SubrTable table)
    {
        var bytes = new byte[(long)table.Rows * table.Dim * table.Storage.SizeInBytes()];
        var scales = new float[table.Storage == DType.I8 ? table.Rows : 0];
        table.CopyStoredTo(bytes, scales);
        switch (table.Storage)
        {
            case DType.F32:
                return (MemoryMarshal.Cast<byte, float>(bytes).ToArray(), null, null);
            case DType.F16:
                return (MemoryMarshal.Cast<byte, Half>(bytes).ToArray().Select(h => (float)h).ToArray(), null, null);
            default:
                var q = MemoryMarshal.Cast<byte, sbyte>(bytes).ToArray();
                var rows = new float[q.Length];
                for (int i = 0; i < q.Length; i++) rows[i] = q[i] * scales[i / table.Dim];
                return (rows, q, scales);
        }
    }

    /// <summary>Reference scores of every history position of sample <paramref name="b"/>.</summary>
    public static double[] ReferenceScores(SubrTable table, (float[] Rows, sbyte[]? Q, float[]? Scales) host, SubrQueries queries, int b) =>
        host.Q is null
            ? SubrReference.Scores(host.Rows, table.Dim, queries.HistoryOf(b), queries.Targets[b])
            : SubrReference.ScoresInt8(host.Q, host.Scales!, table.Dim, queries.HistoryOf(b), queries.Targets[b]);

    /// <summary>
    /// Checks <paramref name="actual"/> against the reference for every sample. i8 tables must match exactly
    /// (positions and bitwise scores). f32/f16 tables: every returned score is within <paramref name="tolerance"/> of
    /// the reference score of its position, and a position may differ from the reference's selection only if its
    /// reference score is within 2·tolerance of the reference's k-th best score (a genuine near-tie). The order is
    /// checked against the returned scores.
    /// </summary>
    public static void AssertMatchesReference(SubrTable table, SubrQueries queries, int k, SubrOrder order, SubrResult actual, double tolerance)
    {
        var host = HostCopy(table);
        bool exact = table.Storage == DType.I8;
        Assert.That(actual.Samples, Is.EqualTo(queries.Samples));
        for (int b = 0; b < queries.Samples; b++)
        {
            var scores = ReferenceScores(table, host, queries, b);
            int[] expected = SubrReference.Select(scores, k, order);
            var positions = actual.PositionsOf(b).ToArray();
            var got = actual.ScoresOf(b).ToArray();
            string where = $"sample {b} (L = {scores.Length}, k = {k}, {table.Storage}, {order})";
            Assert.That(positions, Has.Length.EqualTo(expected.Length), $"{where}: count");
            if (positions.Length == 0) continue;
            Assert.That(positions.Distinct().Count(), Is.EqualTo(positions.Length), $"{where}: a position was returned twice");
            for (int i = 0; i < positions.Length; i++)
            {
                Assert.That(positions[i], Is.InRange(0, scores.Length - 1), $"{where}: slot {i}");
                if (exact)
                    Assert.That(got[i], Is.EqualTo((float)scores[positions[i]]), $"{where}: slot {i} score (i8 scores are exact)");
                else
                    Assert.That(Math.Abs(got[i] - scores[positions[i]]), Is.LessThanOrEqualTo(tolerance),
                        $"{where}: slot {i} (position {positions[i]}) score {got[i]:R} vs reference {scores[positions[i]]:R}");
            }
            if (order == SubrOrder.Chronological)
                for (int i = 1; i < positions.Length; i++)
                    Assert.That(positions[i], Is.GreaterThan(positions[i - 1]), $"{where}: chronological order broken at slot {i}");
            else
                for (int i = 1; i < positions.Length; i++)
                    Assert.That(got[i] < got[i - 1] || (got[i] == got[i - 1] && positions[i] < positions[i - 1]), Is.True,
                        $"{where}: best-first order broken at slot {i}: ({got[i - 1]:R}, {positions[i - 1]}) then ({got[i]:R}, {positions[i]})");
            if (exact)
            {
                Assert.That(positions, Is.EqualTo(expected), $"{where}: i8 selections must equal the reference exactly");
                continue;
            }
            double kth = expected.Min(p => scores[p]);
            foreach (int p in positions.Except(expected))
                Assert.That(Math.Abs(scores[p] - kth), Is.LessThanOrEqualTo(2 * tolerance),
                    $"{where}: position {p} (reference score {scores[p]:R}) was selected, but the reference's k-th best is {kth:R}");
            foreach (int p in expected.Except(positions))
                Assert.That(Math.Abs(scores[p] - kth), Is.LessThanOrEqualTo(2 * tolerance),
                    $"{where}: position {p} (reference score {scores[p]:R}) was missed, but the reference's k-th best is {kth:R}");
        }
    }

    /// <summary>A safe fp32 tolerance for scores of d-dimensional rows with |values| ≤ <paramref name="maxAbs"/>.</summary>
    public static double Tolerance(int dim, double maxAbs) => 1e-5 * Math.Sqrt(dim) * maxAbs * maxAbs + 1e-6;
}

/// <summary>Agreement of a quantised table's selections with the f32 table's.</summary>
internal static class SubrQuantization
{
    /// <summary>
    /// Retrieves with both tables, and asserts that every item on which the selections differ is a near-tie within the
    /// quantisation error: its f32 score is within 2·maxErr (+ fp32 tolerance) of the f32 k-th best score, where
    /// maxErr is the largest |f32 score − quantised score| over the sample's history. Returns the overlap: the fraction
    /// of f32-selected items that the quantised table also selected.
    /// </summary>
    public static double AssertSameUpToQuantization(ComputeBackend backend, SubrTable f32, SubrTable quantised, SubrQueries queries, int k)
    {
        var a = backend.Subr.Retrieve(f32, queries, k);
        var b = backend.Subr.Retrieve(quantised, queries, k);
        var hostF = SubrCheck.HostCopy(f32);
        var hostQ = SubrCheck.HostCopy(quantised);
        long same = 0, total = 0;
        double tol = SubrCheck.Tolerance(f32.Dim, 1);
        for (int s = 0; s < queries.Samples; s++)
        {
            var sf = SubrCheck.ReferenceScores(f32, hostF, queries, s);
            var sq = SubrCheck.ReferenceScores(quantised, hostQ, queries, s);
            double maxErr = 0;
            for (int p = 0; p < sf.Length; p++) maxErr = Math.Max(maxErr, Math.Abs(sf[p] - sq[p]));
            var pa = a.PositionsOf(s).ToArray();
            var pb = b.PositionsOf(s).ToArray();
            total += pa.Length;
            same += pa.Intersect(pb).Count();
            if (pa.Length == 0) continue;
            double kth = pa.Min(p => sf[p]);
            foreach (int p in pa.Except(pb).Concat(pb.Except(pa)))
                Assert.That(Math.Abs(sf[p] - kth), Is.LessThanOrEqualTo(2 * maxErr + 2 * tol),
                    $"sample {s}: position {p} (f32 score {sf[p]:R}, {quantised.Storage} score {sq[p]:R}) differs between the tables, " +
                    $"but it is {Math.Abs(sf[p] - kth):E3} from the k-th best f32 score and the quantisation error is only {maxErr:E3}");
        }
        return total == 0 ? 1 : (double)same / total;
    }
}
