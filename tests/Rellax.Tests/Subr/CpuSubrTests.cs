using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Subr;

/// <summary>
/// The CPU SUBR kernel (<c>CpuSubr</c>) against <see cref="SubrReference"/> on seeded random tables: every storage type
/// (f32, f16, i8), both output orders, odd widths (d = 1, 7, 100, 513), K = 1, 2, 31, 1024, histories of length 0,
/// &lt; K, = K, &gt; K, at block boundaries (64) ± 1 and of 100,000 events; the Vector512 and Vector256 paths, the three
/// i8 paths (AVX-VNNI, AVX-512BW, AVX2), 1 vs 2 threads (including the split of one long history across threads),
/// and ties (duplicate events, identical rows: the more recent event must win).
/// <para>
/// <b>How results are compared.</b> i8 scores are exact integers times two fp32 products, so positions and scores must
/// equal the reference's exactly. f32/f16 scores are fp32 dot products (the reference uses double): each returned score
/// must be within <see cref="Tol"/> of the reference score of its position, and an item may differ from the
/// reference's selection only if its reference score is within <see cref="Tol"/> of the reference's K-th best score.
/// Rows are unit vectors (cosine), so |score| ≤ 1 and the fp32 error of a d ≤ 513 dot product is ~1e-7 · √d ≈ 3e-6 at
/// most; Tol = 2e-5 is well above that and far below the typical gap between random scores (~1/L).
/// </para>
/// </summary>
[TestFixture]
[NonParallelizable] // toggles the process-wide CpuGemm.UseVector512 switch
public sealed class CpuSubrTests
{
    private const double Tol = 2e-5;

    private static readonly DType[] Storages = [DType.F32, DType.F16, DType.I8];

    /// <summary>The table as the kernel sees it, on the host: dequantised f32 rows, plus the raw i8 rows and scales.</summary>
    private sealed record HostTable(float[] Rows, sbyte[]? Q, float[]? Scales, int N, int Dim, DType Storage);

    private static HostTable ReadBack(SubrTable table)
    {
        int n = table.Rows, d = table.Dim;
        switch (table.Storage)
        {
            case DType.F32:
                return new HostTable(table.Embeddings.ToArray<float>(), null, null, n, d, DType.F32);
            case DType.F16:
                return new HostTable(table.Embeddings.ToArray<Half>().Select(h => (float)h).ToArray(), null, null, n, d, DType.F16);
            default:
                var q = table.Embeddings.ToArray<sbyte>();
                var s = table.Scales!.Value.ToArray<float>();
                var rows = new float[q.Length];
                for (int i = 0; i < q.Length; i++) rows[i] = q[i] * s[i / d];
                return new HostTable(rows, q, s, n, d, DType.I8);
        }
    }

    private static SubrTable RandomTable(CpuBackend backend, int n, int d, DType storage, int seed, SubrSimilarity similarity = SubrSimilarity.Cosine) =>
        SubrTable.Create(backend, RandomData.Uniform(n * d, seed), n, d, storage, similarity);

    private static int[][] Histories(int[] lengths, int n, int seed)
    {
        var rng = new Random(seed);
        return lengths.Select(l => Enumerable.Range(0, l).Select(_ => rng.Next(n)).ToArray()).ToArray();
    }

    private static double[] ReferenceScores(HostTable t, ReadOnlySpan<int> history, int target) =>
        t.Storage == DType.I8
            ? SubrReference.ScoresInt8(t.Q, t.Scales, t.Dim, history, target)
            : SubrReference.Scores(t.Rows, t.Dim, history, target);

    /// <summary>Checks one result against the reference (exactly for i8, with the near-tie rule for f32/f16).</summary>
    private static void CheckAgainstReference(SubrResult result, SubrQueries queries, HostTable t, int k, SubrOrder order, string what)
    {
        Assert.That(result.Samples, Is.EqualTo(queries.Samples), what);
        for (int b = 0; b < queries.Samples; b++)
        {
            var history = queries.HistoryOf(b);
            int l = history.Length, n = Math.Min(l, k);
            string at = $"{what}, sample {b} (L = {l}, k = {k}, {order})";
            Assert.That(result.CountOf(b), Is.EqualTo(n), at);
            var ref_ = ReferenceScores(t, history, queries.Targets[b]);
            var expected = SubrReference.Select(ref_, k, order);
            var pos = result.PositionsOf(b).ToArray();
            var sc = result.ScoresOf(b).ToArray();
            if (t.Storage == DType.I8)
            {
                Assert.That(pos, Is.EqualTo(expected), $"{at}: positions");
                for (int i = 0; i < n; i++)
                    Assert.That(sc[i], Is.EqualTo((float)ref_[pos[i]]), $"{at}: score of position {pos[i]}");
                continue;
            }
            // Distinct, in range, ordered as asked (by the kernel's own scores for the score order).
            Assert.That(pos.Distinct().Count(), Is.EqualTo(n), $"{at}: positions are not distinct: {string.Join(",", pos)}");
            for (int i = 0; i < n; i++)
            {
                Assert.That(pos[i], Is.InRange(0, l - 1), at);
                Assert.That(Math.Abs(sc[i] - ref_[pos[i]]), Is.LessThanOrEqualTo(Tol), $"{at}: score of position {pos[i]} is {sc[i]}, reference {ref_[pos[i]]}");
                if (i == 0) continue;
                if (order == SubrOrder.Chronological)
                    Assert.That(pos[i], Is.GreaterThan(pos[i - 1]), $"{at}: not chronological at {i}");
                else
                    Assert.That(sc[i] < sc[i - 1] || (sc[i] == sc[i - 1] && pos[i] < pos[i - 1]), $"{at}: not best-first at {i}: ({sc[i - 1]}, {pos[i - 1]}) then ({sc[i]}, {pos[i]})");
            }
            if (l <= k) continue;
            double kth = ref_.OrderByDescending(v => v).ElementAt(k - 1);
            var got = pos.ToHashSet();
            foreach (int p in pos)
                Assert.That(ref_[p], Is.GreaterThanOrEqualTo(kth - Tol), $"{at}: position {p} (reference score {ref_[p]}) is below the K-th best {kth}");
            foreach (int p in expected)
                if (!got.Contains(p))
                    Assert.That(ref_[p], Is.LessThanOrEqualTo(kth + Tol), $"{at}: position {p} (reference score {ref_[p]}) is missing; K-th best {kth}");
        }
    }

    private static SubrResult RunOn(SubrTable table, SubrQueries queries, int k, SubrOrder order) =>
        table.Backend.Subr.Retrieve(table, queries, k, order);

    /// <summary>Runs <paramref name="body"/> with the Vector512 kernels on or off (process-wide) and a backend of 2 threads
    /// whose options cap the i8 scorer at <paramref name="set"/>.</summary>
    private static void WithPaths(bool vector512, CpuInstructionSet set, Action<CpuBackend> body)
    {
        bool saved512 = CpuGemm.UseVector512;
        CpuGemm.UseVector512 = vector512 && System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
        try
        {
            using var backend = new CpuBackend(new CpuBackendOptions { Threads = 2, InstructionSet = set });
            body(backend);
        }
        finally
        {
            CpuGemm.UseVector512 = saved512;
        }
    }

    private static IEnumerable<TestCaseData> ShapeCases()
    {
        foreach (var storage in Storages)
            foreach (int d in new[] { 1, 7, 100, 513 })
                foreach (int k in new[] { 1, 2, 31, 1024 })
                    yield return new TestCaseData(storage, d, k).SetArgDisplayNames(storage.ToString(), $"d{d}", $"k{k}");
    }

    /// <summary>Random tables and histories of every length class (0, &lt; K, = K, K + 1, several blocks), both orders, vs the reference.</summary>
    [TestCaseSource(nameof(ShapeCases))]
    public void MatchesReference(DType storage, int d, int k)
    {
        const int N = 257;
        using var backend = new CpuBackend(2);
        using var table = RandomTable(backend, N, d, storage, seed: d * 31 + k);
        var host = ReadBack(table);
        int[] lengths = [0, 1, Math.Max(0, k - 1), k, k + 1, 2 * k + 63, 130, 0, 3 * k + 7];
        var histories = Histories(lengths, N, seed: k + d);
        var targets = RandomData.Ints(lengths.Length, N, seed: k * d + 5);
        using var queries = SubrQueries.FromHistories(histories, targets);
        foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
        {
            var r = RunOn(table, queries, k, order);
            CheckAgainstReference(r, queries, host, k, order, $"{storage} d{d} k{k}");
            // Padding: slots past min(L, k) hold -1 / NaN.
            var pos = new int[(long)queries.Samples * k];
            var sc = new float[pos.Length];
            using var pb = backend.Allocate(DType.I32, pos.Length);
            using var sb = backend.Allocate(DType.F32, sc.Length);
            backend.Subr.Run(table, queries, k, order, pb.AsTensor(queries.Samples, k), sb.AsTensor(queries.Samples, k));
            pb.CopyTo<int>(pos);
            sb.CopyTo<float>(sc);
            for (int b = 0; b < queries.Samples; b++)
                for (int i = Math.Min(lengths[b], k); i < k; i++)
                {
                    Assert.That(pos[b * k + i], Is.EqualTo(-1), $"sample {b} slot {i}");
                    Assert.That(float.IsNaN(sc[b * k + i]), $"sample {b} slot {i}: score {sc[b * k + i]} should be NaN");
                }
        }
    }

    /// <summary>Lengths at the block size (64) ± 1 and its multiples, with K below, at and above them.</summary>
    [Test]
    public void BlockBoundaries([Values(DType.F32, DType.I8)] DType storage, [Values(1, 31, 63, 64, 65, 128)] int k)
    {
        const int N = 500, D = 48;
        using var backend = new CpuBackend(1);
        using var table = RandomTable(backend, N, D, storage, seed: 11 + k);
        var host = ReadBack(table);
        int[] lengths = [63, 64, 65, 127, 128, 129, 191, 192, 193, k - 1, k, k + 1, k + 63, k + 64, k + 65];
        lengths = lengths.Where(l => l >= 0).ToArray();
        using var queries = SubrQueries.FromHistories(Histories(lengths, N, seed: k), RandomData.Ints(lengths.Length, N, seed: 3 * k));
        foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
            CheckAgainstReference(RunOn(table, queries, k, order), queries, host, k, order, $"{storage} k{k}");
    }

    /// <summary>One history of 100,000 events with a small K, on 1 and 2 threads (the 2-thread run splits the history).</summary>
    [Test]
    public void HugeHistory([Values(DType.F32, DType.F16, DType.I8)] DType storage, [Values(1, 2)] int threads)
    {
        const int N = 20_000, D = 64, L = 100_000, K = 7;
        using var backend = new CpuBackend(threads);
        using var table = RandomTable(backend, N, D, storage, seed: 5);
        var host = ReadBack(table);
        var histories = Histories([L, 3, L / 3], N, seed: 9);
        using var queries = SubrQueries.FromHistories(histories, [17, 4, 19_999]);
        using var single = SubrQueries.FromHistories([histories[0]], [17]); // B = 1 < threads: the history is split
        foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
        {
            CheckAgainstReference(RunOn(table, queries, K, order), queries, host, K, order, $"{storage} threads{threads}");
            CheckAgainstReference(RunOn(table, single, K, order), single, host, K, order, $"{storage} threads{threads} single sample");
        }
    }

    /// <summary>K = 1024 over histories of a few thousand events (heap depth 10, many replacements).</summary>
    [Test]
    public void LargestK([Values(DType.F32, DType.F16, DType.I8)] DType storage)
    {
        const int N = 3000, D = 32, K = SubrTopK.MaxK;
        using var backend = new CpuBackend(2);
        using var table = RandomTable(backend, N, D, storage, seed: 8);
        var host = ReadBack(table);
        int[] lengths = [5000, 1024, 1023, 1025, 2048 + 1, 77];
        using var queries = SubrQueries.FromHistories(Histories(lengths, N, seed: 2), RandomData.Ints(lengths.Length, N, seed: 6));
        foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
            CheckAgainstReference(RunOn(table, queries, K, order), queries, host, K, order, $"{storage} k1024");
    }

    /// <summary>Results are bitwise identical on 1 and 2 threads, with many samples and with one split history.</summary>
    [Test]
    public void OneAndTwoThreadsIdentical([Values(DType.F32, DType.F16, DType.I8)] DType storage, [Values(1, 40)] int samples)
    {
        const int N = 5000, D = 100, K = 31;
        var rng = new Random(samples);
        int[] lengths = samples == 1 ? [60_001] : Enumerable.Range(0, samples).Select(_ => rng.Next(3) switch { 0 => rng.Next(40), 1 => rng.Next(2000), _ => rng.Next(20_000) }).ToArray();
        var histories = Histories(lengths, N, seed: 4);
        var targets = RandomData.Ints(samples, N, seed: 7);
        var vectors = RandomData.Uniform(N * D, 12);
        (int[], float[]) Run(int threads, SubrOrder order)
        {
            using var backend = new CpuBackend(threads);
            using var table = SubrTable.Create(backend, vectors, N, D, storage);
            using var queries = SubrQueries.FromHistories(histories, targets);
            var r = RunOn(table, queries, K, order);
            var pos = new List<int>();
            var sc = new List<float>();
            for (int b = 0; b < samples; b++) { pos.AddRange(r.PositionsOf(b).ToArray()); sc.AddRange(r.ScoresOf(b).ToArray()); }
            return (pos.ToArray(), sc.ToArray());
        }
        foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
        {
            var (p1, s1) = Run(1, order);
            var (p2, s2) = Run(2, order);
            Assert.That(p2, Is.EqualTo(p1), $"{storage} {order}: positions differ between 1 and 2 threads");
            Assert.That(s2.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(s1.Select(BitConverter.SingleToInt32Bits)), $"{storage} {order}: scores differ");
        }
    }

    /// <summary>
    /// The Vector256 path (and, for i8, the AVX-512BW and AVX2 paths without VNNI) against the reference; i8 results must
    /// be bitwise identical on every path.
    /// </summary>
    [Test]
    public void SimdPaths([Values(DType.F32, DType.F16, DType.I8)] DType storage, [Values(1, 7, 100, 513)] int d)
    {
        const int N = 400, K = 31;
        int[] lengths = [0, 5, 31, 32, 64, 65, 1000, 129];
        var histories = Histories(lengths, N, seed: d);
        var targets = RandomData.Ints(lengths.Length, N, seed: d + 1);
        var results = new List<(string Path, int[] Pos, float[] Scores)>();
        foreach (var (v512, set) in new[]
                 {
                     (true, CpuInstructionSet.AvxVnni), (true, CpuInstructionSet.Avx512), (false, CpuInstructionSet.AvxVnni),
                     (false, CpuInstructionSet.Avx512), (true, CpuInstructionSet.Avx2), (true, CpuInstructionSet.Scalar),
                 })
            WithPaths(v512, set, backend =>
            {
                using var table = RandomTable(backend, N, d, storage, seed: 77);
                using var queries = SubrQueries.FromHistories(histories, targets);
                var host = ReadBack(table);
                foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
                {
                    var r = RunOn(table, queries, K, order);
                    string path = $"v512={CpuGemm.UseVector512} set={backend.InstructionSet} {order}";
                    CheckAgainstReference(r, queries, host, K, order, $"{storage} d{d} {path}");
                    if (order == SubrOrder.Score)
                        results.Add((path, Enumerable.Range(0, lengths.Length).SelectMany(b => r.PositionsOf(b).ToArray()).ToArray(),
                            Enumerable.Range(0, lengths.Length).SelectMany(b => r.ScoresOf(b).ToArray()).ToArray()));
                }
            });
        if (storage != DType.I8) return;
        foreach (var (path, pos, sc) in results.Skip(1))
        {
            Assert.That(pos, Is.EqualTo(results[0].Pos), $"i8 positions on {path} differ from {results[0].Path}");
            Assert.That(sc, Is.EqualTo(results[0].Scores), $"i8 scores on {path} differ from {results[0].Path}");
        }
    }

    /// <summary>A history of one item repeated: every score ties, so the K most recent events win (both orders, every SIMD path).</summary>
    [Test]
    public void RepeatedItemMostRecentWins([Values(DType.F32, DType.F16, DType.I8)] DType storage, [Values(false, true)] bool vector512)
    {
        const int N = 50, D = 100, L = 501, K = 31;
        WithPaths(vector512, CpuInstructionSet.AvxVnni, backend =>
        {
            using var table = RandomTable(backend, N, D, storage, seed: 3);
            // Sample 0: one item 500 times. Sample 1: the same, then one other item at the very start.
            var h0 = Enumerable.Repeat(7, L).ToArray(); // L = 501: blocks of 64, Score4 groups and a single-row tail
            var h1 = new[] { 7 }.Concat(Enumerable.Repeat(12, L - 1)).ToArray();
            using var queries = SubrQueries.FromHistories([h0, h1], [9, 9]);
            var chrono = RunOn(table, queries, K, SubrOrder.Chronological);
            var best = RunOn(table, queries, K, SubrOrder.Score);
            var last = Enumerable.Range(L - K, K).ToArray();
            Assert.That(chrono.PositionsOf(0).ToArray(), Is.EqualTo(last), "repeated item, chronological");
            Assert.That(best.PositionsOf(0).ToArray(), Is.EqualTo(last.Reverse().ToArray()), "repeated item, by score: most recent first");
            Assert.That(chrono.ScoresOf(0).ToArray().Distinct().Count(), Is.EqualTo(1), "duplicate events must score bitwise equal");
            var s1 = ReferenceScores(ReadBack(table), h1, 9);
            var expected1 = s1[0] > s1[1] ? new[] { 0 }.Concat(Enumerable.Range(L - K + 1, K - 1)).ToArray() : last;
            Assert.That(chrono.PositionsOf(1).ToArray(), Is.EqualTo(expected1), "sample 1");
        });
    }

    /// <summary>Distinct rows with identical vectors tie exactly: the more recent events win among them.</summary>
    [Test]
    public void IdenticalRowsMostRecentWins([Values(DType.F32, DType.F16, DType.I8)] DType storage)
    {
        const int N = 40, D = 513, K = 5;
        var vectors = RandomData.Uniform(N * D, 21);
        // Rows 0..9 are copies of one vector, the best match for the target (row 20 is that vector too).
        for (int r = 1; r < 10; r++) Array.Copy(vectors, 0, vectors, r * D, D);
        Array.Copy(vectors, 0, vectors, 20 * D, D);
        using var backend = new CpuBackend(1);
        using var table = SubrTable.Create(backend, vectors, N, D, storage);
        var rng = new Random(1);
        var history = Enumerable.Range(0, 300).Select(i => i % 7 == 3 ? rng.Next(10) : 10 + rng.Next(10)).ToArray();
        using var queries = SubrQueries.FromHistories([history], [20]);
        var copies = Enumerable.Range(0, history.Length).Where(p => history[p] < 10).ToArray();
        var result = RunOn(table, queries, K, SubrOrder.Score);
        Assert.That(result.PositionsOf(0).ToArray(), Is.EqualTo(copies.Reverse().Take(K).ToArray()), "identical rows: most recent first");
        Assert.That(result.ScoresOf(0).ToArray().Distinct().Count(), Is.EqualTo(1), "identical rows must score bitwise equal");
    }

    /// <summary>
    /// Threshold logic: the best items sit at the start of a long history (every later row is filtered out), or the
    /// history is in ascending score order (every row replaces the root).
    /// </summary>
    [Test]
    public void SortedHistories([Values(DType.F32, DType.I8)] DType storage, [Values(true, false)] bool bestFirst)
    {
        const int N = 2000, D = 64, K = 31;
        using var backend = new CpuBackend(2);
        using var table = RandomTable(backend, N, D, storage, seed: 13);
        var host = ReadBack(table);
        var all = Enumerable.Range(0, N).ToArray();
        var s = ReferenceScores(host, all, 0);
        var sorted = all.OrderBy(r => bestFirst ? -s[r] : s[r]).ToArray();
        var history = sorted.Concat(sorted.Skip(K)).Concat(sorted.Skip(K)).ToArray(); // 3 passes; bestFirst: only the first K rows of pass one win
        if (!bestFirst) history = sorted.Concat(sorted).ToArray();
        using var queries = SubrQueries.FromHistories([history], [0]);
        foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
            CheckAgainstReference(RunOn(table, queries, K, order), queries, host, K, order, $"{storage} bestFirst={bestFirst}");
        if (bestFirst && storage == DType.I8)
            Assert.That(RunOn(table, queries, K, SubrOrder.Chronological).PositionsOf(0).ToArray(), Is.EqualTo(Enumerable.Range(0, K).ToArray()));
    }

    /// <summary>The raw dot-product mode (rows not normalised) selects the reference's items too.</summary>
    [Test]
    public void DotProductMode([Values(DType.F32, DType.I8)] DType storage)
    {
        const int N = 300, D = 100, K = 10;
        using var backend = new CpuBackend(2);
        using var table = RandomTable(backend, N, D, storage, seed: 31, SubrSimilarity.Dot);
        var host = ReadBack(table);
        int[] lengths = [500, 9, 10, 11];
        using var queries = SubrQueries.FromHistories(Histories(lengths, N, seed: 1), [1, 2, 3, 4]);
        // Unnormalised rows: |score| up to ~d/3, so scale the tolerance (the check is exact for i8 anyway).
        foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
        {
            var r = RunOn(table, queries, K, order);
            if (storage == DType.I8) CheckAgainstReference(r, queries, host, K, order, "dot i8");
            else
                for (int b = 0; b < lengths.Length; b++)
                {
                    var rs = ReferenceScores(host, queries.HistoryOf(b), queries.Targets[b]);
                    var pos = r.PositionsOf(b).ToArray();
                    var exp = SubrReference.Select(rs, K, order);
                    Assert.That(pos, Is.EqualTo(exp), $"dot f32 sample {b}");
                }
        }
    }
}
