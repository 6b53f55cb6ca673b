using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using static TorchSharp.torch;

namespace Rellax.Tests.Subr;

/// <summary>
/// SUBR top-K on every backend of <see cref="TestBackends"/>, against <see cref="SubrReference"/> (sort-based, double)
/// and TorchSharp (<c>index_select</c>, <c>bmm</c>, <c>topk</c>, re-sorted by position): random tables in all three
/// storage types, both orders, empty and short histories, L = K, long histories, ties, padding slots, and bitwise
/// agreement of i8 results with the CPU backend. The ILGPU emulator gets smaller problems (it is very slow).
/// </summary>
[TestFixtureSource(typeof(TestBackends), nameof(TestBackends.All))]
public sealed class SubrTopKTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;

    [OneTimeSetUp] public void CreateBackend() => _backend = factory.Create();
    [OneTimeTearDown] public void DisposeBackend() => _backend.Dispose();

    private int Scale(int full, int emulated) => factory.Emulated ? emulated : full;

    private static readonly DType[] Storages = [DType.F32, DType.F16, DType.I8];

    [Test]
    public void RandomTablesMatchTheReference(
        [ValueSource(nameof(Storages))] DType storage,
        [Values] SubrOrder order,
        [Values(1, 7, 100, 513)] int dim,
        [Values(1, 5, 64)] int k)
    {
        int rows = Scale(3000, 300);
        int[] lengths = [0, 1, k - 1 < 0 ? 0 : k - 1, k, k + 1, Scale(1000, 150), Scale(4099, 300), 3, 2 * k + 7];
        using var table = SubrTable.Create(_backend, SubrCheck.Vectors(rows, dim, dim * 31 + k), rows, dim, storage,
            dim == 7 ? SubrSimilarity.Dot : SubrSimilarity.Cosine);
        using var queries = SubrCheck.Queries(rows, lengths, dim + k);
        var result = _backend.Subr.Retrieve(table, queries, k, order);
        SubrCheck.AssertMatchesReference(table, queries, k, order, result, SubrCheck.Tolerance(dim, dim == 7 ? 1 : 1));
    }

    [TestCase(1)]
    [TestCase(31)]
    [TestCase(1024)]
    public void LargeKMatchesTheReference(int k)
    {
        int rows = Scale(5000, 600), dim = Scale(96, 33);
        foreach (var storage in Storages)
            foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
            {
                using var table = SubrTable.Create(_backend, SubrCheck.Vectors(rows, dim, k), rows, dim, storage);
                using var queries = SubrCheck.Queries(rows, [Scale(3000, 1500), k, k + 1, Math.Max(0, k - 1), 10], k + 1);
                SubrCheck.AssertMatchesReference(table, queries, k, order, _backend.Subr.Retrieve(table, queries, k, order), SubrCheck.Tolerance(dim, 1));
            }
    }

    [Test]
    public void HugeHistoryWithSmallK([ValueSource(nameof(Storages))] DType storage)
    {
        int rows = Scale(20_000, 2000), dim = Scale(64, 17), length = Scale(100_000, 6000);
        using var table = SubrTable.Create(_backend, SubrCheck.Vectors(rows, dim, 5), rows, dim, storage);
        using var queries = SubrCheck.Queries(rows, [length, 17, length / 3], 6);
        SubrCheck.AssertMatchesReference(table, queries, 30, SubrOrder.Score, _backend.Subr.Retrieve(table, queries, 30, SubrOrder.Score), SubrCheck.Tolerance(dim, 1));
    }

    [Test]
    public void HistoriesOfKOrFewerItemsAreReturnedWholeInTimeOrder([ValueSource(nameof(Storages))] DType storage)
    {
        const int rows = 50, dim = 24, k = 8;
        using var table = SubrTable.Create(_backend, SubrCheck.Vectors(rows, dim, 2), rows, dim, storage);
        using var queries = SubrQueries.FromHistories([[], [4], [9, 3, 9], [1, 2, 3, 4, 5, 6, 7, 8]], [0, 1, 2, 3]);
        var result = _backend.Subr.Retrieve(table, queries, k);
        Assert.Multiple(() =>
        {
            Assert.That(result.CountOf(0), Is.Zero);
            Assert.That(result.PositionsOf(1).ToArray(), Is.EqualTo(new[] { 0 }));
            Assert.That(result.PositionsOf(2).ToArray(), Is.EqualTo(new[] { 0, 1, 2 }));
            Assert.That(result.RowsOf(2).ToArray(), Is.EqualTo(new[] { 9, 3, 9 }), "duplicates are separate events");
            Assert.That(result.PositionsOf(3).ToArray(), Is.EqualTo(Enumerable.Range(0, 8).ToArray()), "L = K");
        });
    }

    [Test]
    public void UnusedSlotsHoldMinusOneAndNaN()
    {
        const int rows = 20, dim = 9, k = 6;
        using var table = SubrTable.Create(_backend, SubrCheck.Vectors(rows, dim, 3), rows, dim);
        using var queries = SubrQueries.FromHistories([[], [1, 2], [3, 4, 5, 6, 7, 8, 9, 10]], [0, 0, 0]);
        using var p = _backend.Allocate(DType.I32, 3 * k);
        using var s = _backend.Allocate(DType.F32, 3 * k);
        // Poison the outputs first, so a kernel that skips the padding cannot pass by accident.
        p.CopyFrom<int>(Enumerable.Repeat(12345, 3 * k).ToArray());
        s.CopyFrom<float>(Enumerable.Repeat(7f, 3 * k).ToArray());
        _backend.Subr.Run(table, queries, k, SubrOrder.Score, p.AsTensor(3, k), s.AsTensor(3, k));
        var positions = new int[3 * k];
        var scores = new float[3 * k];
        p.CopyTo<int>(positions);
        s.CopyTo<float>(scores);
        for (int b = 0, n; b < 3; b++)
            for (int i = n = Math.Min(queries.HistoryOf(b).Length, k); i < k; i++)
            {
                Assert.That(positions[b * k + i], Is.EqualTo(-1), $"sample {b} slot {i}");
                Assert.That(float.IsNaN(scores[b * k + i]), Is.True, $"sample {b} slot {i} score {scores[b * k + i]}");
            }
        Assert.That(positions[k..(k + 2)], Is.EquivalentTo(new[] { 0, 1 }));
        Assert.That(positions[(2 * k)..(3 * k)].Count(x => x >= 0), Is.EqualTo(k));
    }

    [Test]
    public void TiesGoToTheMoreRecentEvent([ValueSource(nameof(Storages))] DType storage, [Values] SubrOrder order)
    {
        const int rows = 40, dim = 33, k = 5;
        var vectors = SubrCheck.Vectors(rows, dim, 9);
        // Rows 10..14 are copies of row 3: different items, identical vectors, identical scores.
        for (int r = 10; r < 15; r++) Array.Copy(vectors, 3 * dim, vectors, r * dim, dim);
        using var table = SubrTable.Create(_backend, vectors, rows, dim, storage);
        int length = Scale(300, 120);
        var repeated = Enumerable.Repeat(7, length).ToArray();                              // one item, L events
        var twins = Enumerable.Range(0, length).Select(i => i % 3 == 0 ? 10 + i % 5 : 20 + i % 17).ToArray();
        twins[^1] = 20; twins[^2] = 21;
        using var queries = SubrQueries.FromHistories([repeated, twins], [7, 3]);
        var result = _backend.Subr.Retrieve(table, queries, k, order);
        var latest = Enumerable.Range(length - k, k).ToArray();
        Assert.That(result.PositionsOf(0).ToArray(), Is.EqualTo(order == SubrOrder.Chronological ? latest : latest.Reverse().ToArray()),
            "of L identical events the K most recent win");
        // The twins of row 3 score highest against target 3 (they are the target's own vector); the most recent five win.
        var twinPositions = Enumerable.Range(0, length).Where(i => twins[i] is >= 10 and < 15).TakeLast(k).ToArray();
        Assert.That(result.PositionsOf(1).ToArray(), Is.EqualTo(order == SubrOrder.Chronological ? twinPositions : twinPositions.Reverse().ToArray()));
    }

    [Test]
    public void BestItemsAtTheStartOfALongHistoryAreKept()
    {
        // The threshold must never discard an early winner: the best rows come first, then a long tail of worse ones.
        int rows = 1000, dim = 16, length = Scale(20_000, 2000);
        var vectors = SubrCheck.Vectors(rows, dim, 4);
        using var table = SubrTable.Create(_backend, vectors, rows, dim);
        var host = SubrCheck.HostCopy(table);
        var all = Enumerable.Range(0, rows).Select(r => (r, s: SubrReference.Scores(host.Rows, dim, [r], 0)[0])).OrderByDescending(x => x.s).ToArray();
        var best = all.Take(10).Select(x => x.r).ToArray();
        var rest = all.Skip(50).Select(x => x.r).ToArray();
        var rng = new Random(1);
        var history = best.Concat(Enumerable.Range(0, length).Select(_ => rest[rng.Next(rest.Length)])).ToArray();
        using var queries = SubrQueries.FromHistories([history], [0]);
        var result = _backend.Subr.Retrieve(table, queries, 10);
        Assert.That(result.PositionsOf(0).ToArray(), Is.EqualTo(Enumerable.Range(0, 10).ToArray()));
    }

    [Test]
    public void Int8ScoresAreBitwiseEqualToTheCpuBackend()
    {
        int rows = Scale(4000, 400), dim = 130, k = 20;
        var vectors = SubrCheck.Vectors(rows, dim, 77);
        using var cpu = new CpuBackend(1);
        using var table = SubrTable.Create(_backend, vectors, rows, dim, DType.I8);
        using var cpuTable = SubrTable.Create(cpu, vectors, rows, dim, DType.I8);
        using var queries = SubrCheck.Queries(rows, [Scale(2000, 300), 5, 0, 64], 78);
        var a = _backend.Subr.Retrieve(table, queries, k, SubrOrder.Score);
        var b = cpu.Subr.Retrieve(cpuTable, queries, k, SubrOrder.Score);
        for (int s = 0; s < queries.Samples; s++)
        {
            Assert.That(a.PositionsOf(s).ToArray(), Is.EqualTo(b.PositionsOf(s).ToArray()), $"sample {s}");
            Assert.That(a.ScoresOf(s).ToArray(), Is.EqualTo(b.ScoresOf(s).ToArray()), $"sample {s}");
        }
    }

    [Test]
    public void MatchesTorchSharp([Values(DType.F32, DType.I8)] DType storage)
    {
        int rows = Scale(2000, 300), dim = 72, k = 25;
        int[] lengths = [Scale(900, 200), 3, k, 0, Scale(400, 100), 60];
        using var table = SubrTable.Create(_backend, SubrCheck.Vectors(rows, dim, 12), rows, dim, storage);
        using var queries = SubrCheck.Queries(rows, lengths, 13);
        var result = _backend.Subr.Retrieve(table, queries, k, SubrOrder.Chronological);
        var host = SubrCheck.HostCopy(table);
        var torchPositions = TorchTopK(host.Rows, rows, dim, queries, k, out var torchScores);
        double tol = SubrCheck.Tolerance(dim, 1);
        for (int b = 0; b < queries.Samples; b++)
        {
            var mine = result.PositionsOf(b).ToArray();
            var theirs = torchPositions[b];
            Assert.That(mine, Has.Length.EqualTo(theirs.Length), $"sample {b}");
            if (theirs.Length == 0) continue;
            float kth = theirs.Min(p => torchScores[b][p]);
            foreach (int p in mine.Except(theirs).Concat(theirs.Except(mine)))
                Assert.That(Math.Abs(torchScores[b][p] - kth), Is.LessThanOrEqualTo(2 * tol), $"sample {b}: position {p} differs from torch, not a near-tie");
        }
    }

    /// <summary>TorchSharp's SUBR: pad histories, gather rows with index_select, bmm with the targets, topk, re-sort by position.</summary>
    private static int[][] TorchTopK(float[] tableRows, int rows, int dim, SubrQueries queries, int k, out float[][] scores)
    {
        using var scope = NewDisposeScope();
        int b = queries.Samples, lmax = Math.Max(1, queries.LongestHistory);
        var e = tensor(tableRows, [rows, dim]);
        var padded = new long[b * lmax];
        for (int s = 0; s < b; s++)
        {
            var h = queries.HistoryOf(s);
            for (int i = 0; i < lmax; i++) padded[s * lmax + i] = i < h.Length ? h[i] : 0;
        }
        var gathered = e.index_select(0, tensor(padded)).reshape(b, lmax, dim);
        var targets = e.index_select(0, tensor(queries.Targets.ToArray().Select(x => (long)x).ToArray())).reshape(b, dim, 1);
        var all = bmm(gathered, targets).reshape(b, lmax);
        var mask = new bool[b * lmax];
        for (int s = 0; s < b; s++)
            for (int i = queries.HistoryOf(s).Length; i < lmax; i++) mask[s * lmax + i] = true;
        all = all.masked_fill(tensor(mask, [b, lmax]), float.NegativeInfinity);
        var (_, indices) = all.topk(Math.Min(k, lmax), dim: 1);
        var idx = indices.data<long>().ToArray();
        var flat = all.data<float>().ToArray();
        int kk = Math.Min(k, lmax);
        scores = new float[b][];
        var result = new int[b][];
        for (int s = 0; s < b; s++)
        {
            int n = Math.Min(k, queries.HistoryOf(s).Length);
            result[s] = idx.Skip(s * kk).Take(n).Select(x => (int)x).Order().ToArray();
            scores[s] = flat.Skip(s * lmax).Take(lmax).ToArray();
        }
        return result;
    }
}
