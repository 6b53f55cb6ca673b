using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Tests.Subr;

/// <summary>
/// The ILGPU SUBR top-K kernel against <see cref="SubrReference"/>: always on the CPU-emulator backend at small shapes
/// (the emulator is slow: B ≤ 8, L ≤ a few thousand, d ≤ 130 except one d = 2100 case for the chunked target), on a GPU
/// machine also on ILGPU's CUDA accelerator. Every case runs with one lane per row (the emulator's default), and the
/// warp-shuffle paths (4 and 32 lanes per row, the GPU default) are forced on the emulator too.
/// <para>
/// i8 tables are checked exactly: the same positions as the reference, and bitwise the reference's
/// <c>(float)dot · (scale[t] · scale[h])</c> scores. f32/f16 tables are checked with a near-tie tolerance: an item may
/// be kept or dropped against the reference's choice only if its reference score is within <c>tol</c> of the n-th best
/// reference score, where <c>tol = 2·d·2⁻²⁴·max_p Σ_c |t_c·h_c|</c> (twice the worst-case fp32 summation error of a
/// length-d dot product), and returned scores must be within <c>tol</c> of the reference. Ties that are exact in every
/// summation order (the same row twice, or two identical rows) are checked strictly: the more recent event must win,
/// and equal rows must get bitwise-equal scores.
/// </para>
/// </summary>
[TestFixtureSource(nameof(Backends))]
public sealed class IlgpuSubrTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;

    /// <summary>The emulator, and ILGPU's CUDA accelerator where a device is present.</summary>
    public static IEnumerable<TestFixtureData> Backends() => TestBackends.Factories()
        .Where(f => f.Name is "ilgpu-emulator" or "ilgpu-cuda")
        .Select(f => new TestFixtureData(f).SetArgDisplayNames(f.Name));

    [OneTimeSetUp]
    public void CreateBackend() => _backend = factory.Create();

    [OneTimeTearDown]
    public void DisposeBackend() => _backend.Dispose();

    private IlgpuSubrKernels Kernels => (IlgpuSubrKernels)((IlgpuBackend)_backend).SubrKernels;

    private int _defaultLanes;

    [SetUp]
    public void RememberLanes() => _defaultLanes = Kernels.LanesPerRow;

    [TearDown]
    public void RestoreLanes()
    {
        Kernels.LanesPerRow = _defaultLanes;
        Kernels.GridLimit = 0;
    }

    /// <summary>Sets the lanes per row for this test (restored afterwards).</summary>
    private void UseLanes(int lanes) => Kernels.LanesPerRow = lanes;

    /// <summary>The table's stored rows on the host: dequantised f32 [N, d], plus q and scales for i8.</summary>
    private sealed record HostTable(float[] Values, sbyte[]? Q, float[]? Scales, int Rows, int Dim);

    private static HostTable ReadBack(SubrTable table)
    {
        int n = table.Rows, d = table.Dim;
        switch (table.Storage)
        {
            case DType.F32:
                return new HostTable(table.Embeddings.ToArray<float>(), null, null, n, d);
            case DType.F16:
                return new HostTable(table.Embeddings.ToArray<Half>().Select(h => (float)h).ToArray(), null, null, n, d);
            default:
                var q = table.Embeddings.ToArray<sbyte>();
                var s = table.Scales!.Value.ToArray<float>();
                var v = new float[q.Length];
                for (int i = 0; i < q.Length; i++) v[i] = q[i] * s[i / d];
                return new HostTable(v, q, s, n, d);
        }
    }

    /// <summary>A random table of <paramref name="rows"/> × <paramref name="dim"/> stored as <paramref name="storage"/>.</summary>
    private SubrTable RandomTable(int rows, int dim, DType storage, int seed, SubrSimilarity similarity = SubrSimilarity.Cosine,
        float scale = 1f)
    {
        var v = RandomData.Uniform(rows * dim, seed, -scale, scale);
        return SubrTable.Create(_backend, v, rows, dim, storage, similarity);
    }

    /// <summary>Runs the kernel through the checked front and returns the raw [B, k] outputs.</summary>
    private (int[] Positions, float[] Scores) Run(SubrTable table, SubrQueries queries, int k, SubrOrder order)
    {
        int b = queries.Samples;
        using var p = _backend.Allocate(DType.I32, Math.Max(1, b * k));
        using var s = _backend.Allocate(DType.F32, Math.Max(1, b * k));
        // poison the outputs so that a slot the kernel forgets to write shows up
        p.CopyFrom<int>(Enumerable.Repeat(-7, Math.Max(1, b * k)).ToArray());
        s.CopyFrom<float>(Enumerable.Repeat(1234.5f, Math.Max(1, b * k)).ToArray());
        _backend.Subr.Run(table, queries, k, order, new Tensor(p, 0, b, k), new Tensor(s, 0, b, k));
        return (new Tensor(p, 0, b * k).ToArray<int>(), new Tensor(s, 0, b * k).ToArray<float>());
    }

    /// <summary>
    /// Checks every sample of a call against the reference (see the class remarks). <paramref name="canonical"/> maps a
    /// table row to the smallest row with bitwise-identical contents (for the strict tie checks; null = rows are distinct).
    /// </summary>
    private void CheckAll(SubrTable table, SubrQueries queries, int k, SubrOrder order, int[]? canonical = null)
    {
        var host = ReadBack(table);
        var (positions, scores) = Run(table, queries, k, order);
        for (int b = 0; b < queries.Samples; b++)
            CheckSample(host, table.Storage, queries.HistoryOf(b), queries.Targets[b], k, order,
                positions.AsSpan(b * k, k), scores.AsSpan(b * k, k), canonical, $"sample {b}");
    }

    private static void CheckSample(HostTable host, DType storage, ReadOnlySpan<int> history, int target, int k, SubrOrder order,
        ReadOnlySpan<int> gotPositions, ReadOnlySpan<float> gotScores, int[]? canonical, string what)
    {
        int l = history.Length, n = Math.Min(l, k), d = host.Dim;
        what += $" (L = {l}, k = {k}, d = {d}, {storage}, {order})";
        bool exact = storage == DType.I8;
        var want = exact
            ? SubrReference.ScoresInt8(host.Q, host.Scales, d, history, target)
            : SubrReference.Scores(host.Values, d, history, target);

        // empty slots
        for (int i = n; i < k; i++)
        {
            Assert.That(gotPositions[i], Is.EqualTo(-1), $"{what}: slot {i} of {k} should be empty (position -1)");
            Assert.That(float.IsNaN(gotScores[i]), Is.True, $"{what}: slot {i} of {k} should have score NaN, got {gotScores[i]}");
        }
        if (n == 0) return;

        var got = gotPositions[..n].ToArray();
        var gotS = gotScores[..n].ToArray();
        foreach (int p in got) Assert.That(p, Is.InRange(0, l - 1), $"{what}: position out of range: [{string.Join(", ", got)}]");
        Assert.That(got.Distinct().Count(), Is.EqualTo(n), $"{what}: repeated positions: [{string.Join(", ", got)}]");

        // order of the output
        for (int i = 1; i < n; i++)
        {
            if (order == SubrOrder.Chronological)
                Assert.That(got[i], Is.GreaterThan(got[i - 1]), $"{what}: not chronological at slot {i}: [{string.Join(", ", got)}]");
            else
                Assert.That(gotS[i] < gotS[i - 1] || (gotS[i] == gotS[i - 1] && got[i] < got[i - 1]), Is.True,
                    $"{what}: not best-first at slot {i}: ({gotS[i - 1]}, {got[i - 1]}) then ({gotS[i]}, {got[i]})");
        }

        var reference = SubrReference.Select(want, k, SubrOrder.Score); // best first
        if (exact)
        {
            var wantOrdered = order == SubrOrder.Score ? reference : reference.Order().ToArray();
            Assert.That(got, Is.EqualTo(wantOrdered), $"{what}: positions differ from the reference");
            for (int i = 0; i < n; i++)
                Assert.That(BitConverter.SingleToInt32Bits(gotS[i]), Is.EqualTo(BitConverter.SingleToInt32Bits((float)want[got[i]])),
                    $"{what}: slot {i} (position {got[i]}) score {gotS[i]:R}, reference {(float)want[got[i]]:R}");
        }
        else
        {
            var t = host.Values.AsSpan(target * d, d);
            double magnitude = 0;
            foreach (int h in history)
            {
                var r = host.Values.AsSpan(h * d, d);
                double s = 0;
                for (int c = 0; c < d; c++) s += Math.Abs((double)t[c] * r[c]);
                magnitude = Math.Max(magnitude, s);
            }
            double tol = 2 * d * Math.Pow(2, -24) * magnitude + 1e-30;
            double kth = want[reference[n - 1]];
            var inRef = new HashSet<int>(reference);
            var inGot = new HashSet<int>(got);
            for (int i = 0; i < n; i++)
                Assert.That(Math.Abs(gotS[i] - want[got[i]]), Is.LessThanOrEqualTo(tol),
                    $"{what}: slot {i} (position {got[i]}) score {gotS[i]:R}, reference {want[got[i]]:R}, tol {tol:E2}");
            foreach (int p in got.Where(p => !inRef.Contains(p)))
                Assert.That(Math.Abs(want[p] - kth), Is.LessThanOrEqualTo(tol),
                    $"{what}: kept position {p} (score {want[p]:R}) that the reference drops, and it is not a near-tie with the n-th best {kth:R} (tol {tol:E2})");
            foreach (int p in reference.Where(p => !inGot.Contains(p)))
                Assert.That(Math.Abs(want[p] - kth), Is.LessThanOrEqualTo(tol),
                    $"{what}: dropped position {p} (score {want[p]:R}) that the reference keeps, and it is not a near-tie with the n-th best {kth:R} (tol {tol:E2})");
        }

        // exact ties: equal rows get bitwise-equal scores, and the more recent of two equal rows wins
        var canon = new int[l];
        for (int p = 0; p < l; p++) canon[p] = canonical is null ? history[p] : canonical[history[p]];
        var kept = new HashSet<int>(got);
        var scoreOf = new Dictionary<int, float>();
        for (int i = 0; i < n; i++)
        {
            if (scoreOf.TryGetValue(canon[got[i]], out float other))
                Assert.That(BitConverter.SingleToInt32Bits(gotS[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(other)),
                    $"{what}: two events of equal rows got different scores {gotS[i]:R} and {other:R}");
            else scoreOf[canon[got[i]]] = gotS[i];
        }
        var latestDropped = new Dictionary<int, int>();
        for (int p = 0; p < l; p++)
            if (!kept.Contains(p)) latestDropped[canon[p]] = p;
        foreach (int p in got)
            if (latestDropped.TryGetValue(canon[p], out int q) && q > p)
                Assert.Fail($"{what}: kept position {p} but dropped the later position {q} of an equal row");
    }

    /// <summary>Histories of the given lengths over rows [0, rows), targets random; seeded.</summary>
    private static SubrQueries RandomQueries(int rows, int seed, params int[] lengths)
    {
        var rng = new Random(seed);
        var histories = lengths.Select(l => Enumerable.Range(0, l).Select(_ => rng.Next(rows)).ToArray()).ToArray();
        var targets = lengths.Select(_ => rng.Next(rows)).ToArray();
        return SubrQueries.FromHistories(histories, targets);
    }

    private static readonly DType[] Storages = [DType.F32, DType.F16, DType.I8];

    // L = 0, L < k, L = k, L = k + 1, and two longer histories (several tiles; merges for the larger k), in one batch of
    // very different lengths.
    [Test]
    public void MatchesReference(
        [ValueSource(nameof(Storages))] DType storage,
        [Values] SubrOrder order,
        [Values(1, 31, 1024)] int k)
    {
        const int rows = 3000, dim = 37;
        using var table = RandomTable(rows, dim, storage, seed: 10 + k);
        int[] lengths = k == 1024 ? [0, 700, 1024, 1025, 2600] : [0, k / 2, k, k + 1, 900, 2500];
        using var queries = RandomQueries(rows, seed: 20 + k, lengths);
        CheckAll(table, queries, k, order);
    }

    // Teams of 4 and 32 lanes per row (the GPU path: lane-strided partial sums, xor-shuffle butterfly) on the emulator,
    // where shuffles are slow: short histories (one tile per sample), L = 0, L < k, L > k, d = 7 (fewer columns than
    // lanes) and d = 100 (not a multiple of 32).
    [Test]
    public void WarpTeams(
        [ValueSource(nameof(Storages))] DType storage,
        [Values(4, 32)] int lanes,
        [Values(7, 100)] int dim)
    {
        UseLanes(lanes);
        const int rows = 400;
        using var table = RandomTable(rows, dim, storage, seed: 300 + dim);
        using var queries = RandomQueries(rows, seed: 301 + dim, 0, 5, 40, 250);
        CheckAll(table, queries, 31, dim == 7 ? SubrOrder.Score : SubrOrder.Chronological);
    }

    // Odd widths: d = 1 (scores are products, heavy near-ties), 7, 100, 130 (not multiples of 32).
    [Test]
    public void OddWidths(
        [ValueSource(nameof(Storages))] DType storage,
        [Values(1, 7, 100, 130)] int dim)
    {
        const int rows = 500;
        using var table = RandomTable(rows, dim, storage, seed: dim, similarity: SubrSimilarity.Dot);
        using var queries = RandomQueries(rows, seed: 3 * dim, 0, 1, 2, 40, 300);
        CheckAll(table, queries, 2, SubrOrder.Score);
        CheckAll(table, queries, 31, SubrOrder.Chronological);
    }

    // d = 513 and d = 2100 (larger than the 2048-element shared target cache: the target is staged in two chunks per row);
    // with 32 lanes on one short history.
    [Test]
    public void WideRows([ValueSource(nameof(Storages))] DType storage, [Values(513, 2100)] int dim, [Values(1, 32)] int lanes)
    {
        UseLanes(lanes);
        const int rows = 200;
        using var table = RandomTable(rows, dim, storage, seed: dim + 1);
        using var queries = lanes == 32 && factory.Emulated ? RandomQueries(rows, seed: dim + 2, 40) : RandomQueries(rows, seed: dim + 2, 5, 300, 0);
        CheckAll(table, queries, 30, SubrOrder.Chronological);
        CheckAll(table, queries, 7, SubrOrder.Score);
    }

    // Every history row better than all before it: every row beats the threshold, so the queue fills each tile and is
    // merged many times (about L / (2048 - k - 256) merges).
    [Test]
    public void IncreasingScoresForceManyMerges([ValueSource(nameof(Storages))] DType storage, [Values(1, 60, 1024)] int k,
        [Values] SubrOrder order)
    {
        const int rows = 4000, dim = 16, length = 3500;
        using var table = RandomTable(rows, dim, storage, seed: 5);
        var host = ReadBack(table);
        const int target = 17;
        var all = Enumerable.Range(0, rows).ToArray();
        var s = storage == DType.I8
            ? SubrReference.ScoresInt8(host.Q, host.Scales, dim, all, target)
            : SubrReference.Scores(host.Values, dim, all, target);
        var history = all.OrderBy(r => s[r]).ThenBy(r => r).Skip(rows - length).ToArray(); // ascending scores
        using var queries = SubrQueries.FromHistories([history, history.Reverse().ToArray()], [target, target]);
        CheckAll(table, queries, k, order);
    }

    // A history made of a few items repeated many times: the cut falls inside a run of equal scores, and the most
    // recent events of the cut item must win. Checked in every storage and with shuffles.
    [Test]
    public void RepeatedItemsMostRecentWins([ValueSource(nameof(Storages))] DType storage, [Values(1, 32)] int lanes)
    {
        UseLanes(lanes);
        const int rows = 50, dim = 24;
        using var table = RandomTable(rows, dim, storage, seed: 77);
        var rng = new Random(78);
        var items = new[] { 3, 9, 14, 40 };
        bool slow = lanes == 32 && factory.Emulated; // shuffles are slow on the emulator: one tile per sample
        var h1 = Enumerable.Range(0, slow ? 250 : 1500).Select(_ => items[rng.Next(items.Length)]).ToArray();
        var h2 = Enumerable.Range(0, slow ? 200 : 300).Select(_ => items[rng.Next(2)]).ToArray();
        var h3 = Enumerable.Repeat(9, 70).ToArray(); // one item only: the k latest positions
        using var queries = SubrQueries.FromHistories([h1, h2, h3], [5, 9, 9]);
        // both orders, alternating over k (each call is slow on the emulator)
        foreach (int k in slow ? new[] { 10, 61 } : [1, 10, 61, 400])
            CheckAll(table, queries, k, k % 2 == 0 ? SubrOrder.Score : SubrOrder.Chronological);
    }

    // Distinct rows with identical contents (so equal scores in every summation order): the more recent wins.
    [Test]
    public void IdenticalRowsMostRecentWins([ValueSource(nameof(Storages))] DType storage, [Values(1, 32)] int lanes)
    {
        UseLanes(lanes);
        const int distinct = 40, copies = 5, dim = 33;
        var v = RandomData.Uniform(distinct * dim, 91);
        var vectors = new float[distinct * copies * dim];
        var canonical = new int[distinct * copies];
        for (int r = 0; r < distinct * copies; r++)
        {
            v.AsSpan(r % distinct * dim, dim).CopyTo(vectors.AsSpan(r * dim, dim));
            canonical[r] = r % distinct;
        }
        using var table = SubrTable.Create(_backend, vectors, distinct * copies, dim, storage);
        var rng = new Random(92);
        bool slow = lanes == 32 && factory.Emulated;
        var h = Enumerable.Range(0, slow ? 250 : 1000).Select(_ => rng.Next(distinct * copies)).ToArray();
        using var queries = SubrQueries.FromHistories([h, h[..200]], [0, 7]);
        foreach (int k in slow ? new[] { 30, 31 } : [2, 31, 251])
            CheckAll(table, queries, k, k % 2 == 0 ? SubrOrder.Score : SubrOrder.Chronological, canonical);
    }

    // More samples than groups: the kernel strides over samples (grid limited to 3 groups here), with the shared state
    // reset between samples of one group.
    [Test]
    public void GridStrideOverSamples([ValueSource(nameof(Storages))] DType storage)
    {
        Kernels.GridLimit = 3;
        const int rows = 400, dim = 20;
        using var table = RandomTable(rows, dim, storage, seed: 31);
        using var queries = RandomQueries(rows, seed: 32, 600, 0, 3, 1100, 50, 50, 7, 400);
        CheckAll(table, queries, 45, storage == DType.F16 ? SubrOrder.Score : SubrOrder.Chronological);
    }

    // All histories empty, and a batch of one sample whose history is a single event.
    [Test]
    public void EmptyAndSingleHistories([ValueSource(nameof(Storages))] DType storage, [Values] SubrOrder order)
    {
        const int rows = 10, dim = 9;
        using var table = RandomTable(rows, dim, storage, seed: 41);
        using (var empty = SubrQueries.FromHistories([[], [], []], [1, 2, 3])) CheckAll(table, empty, 5, order);
        using var single = SubrQueries.FromHistories([[4]], [4]);
        CheckAll(table, single, 1, order);
        CheckAll(table, single, 1024, order);
    }

    // Raw dot products of large vectors (|score| up to ~10^4): ordering is by value, including negatives.
    [Test]
    public void RawDotProductsWithLargeValues([ValueSource(nameof(Storages))] DType storage)
    {
        const int rows = 300, dim = 50;
        using var table = RandomTable(rows, dim, storage, seed: 51, similarity: SubrSimilarity.Dot, scale: 20f);
        using var queries = RandomQueries(rows, seed: 52, 280, 64, 1);
        CheckAll(table, queries, 64, SubrOrder.Score);
        CheckAll(table, queries, 5, SubrOrder.Chronological);
    }

    // The i8 scores are bitwise (float)(int dot) · (scale[t] · scale[h]) for a table given as stored q and scales,
    // including q = ±127 everywhere (the largest exact products) and zero-scale rows.
    [Test]
    public void Int8StoredExactScores()
    {
        const int rows = 120, dim = 129;
        var rng = new Random(61);
        var q = new sbyte[rows * dim];
        for (int i = 0; i < q.Length; i++) q[i] = (sbyte)rng.Next(-127, 128);
        for (int c = 0; c < dim; c++) { q[c] = 127; q[dim + c] = -127; q[2 * dim + c] = 127; }
        var scales = Enumerable.Range(0, rows).Select(r => r == 5 ? 0f : 1e-3f + rng.NextSingle() * 0.02f).ToArray();
        using var table = SubrTable.FromStored(_backend, DType.I8, System.Runtime.InteropServices.MemoryMarshal.AsBytes(q.AsSpan()),
            scales, rows, dim, SubrSimilarity.Dot);
        var h = Enumerable.Range(0, 700).Select(_ => rng.Next(rows)).ToArray();
        using var queries = SubrQueries.FromHistories([h, h[..90], [0, 1, 2, 5, 0, 2]], [0, 5, 2]);
        CheckAll(table, queries, 40, SubrOrder.Score);
        CheckAll(table, queries, 3, SubrOrder.Chronological);
    }

    // The kernel writes exactly [B, k] of an output that is a slice of a larger buffer, nothing around it.
    [Test]
    public void WritesOnlyItsOutputSlice()
    {
        const int rows = 30, dim = 8, k = 4;
        using var table = RandomTable(rows, dim, DType.F32, seed: 71);
        using var queries = RandomQueries(rows, seed: 72, 10, 2);
        using var p = _backend.Allocate(DType.I32, 3 * 2 * k);
        using var s = _backend.Allocate(DType.F32, 3 * 2 * k);
        p.CopyFrom<int>(Enumerable.Repeat(-9, 6 * k).ToArray());
        s.CopyFrom<float>(Enumerable.Repeat(9f, 6 * k).ToArray());
        _backend.Subr.Run(table, queries, k, SubrOrder.Chronological, new Tensor(p, 2 * k, 2, k), new Tensor(s, 2 * k, 2, k));
        var pos = p.AsTensor(6 * k).ToArray<int>();
        var sc = s.AsTensor(6 * k).ToArray<float>();
        Assert.That(pos[..(2 * k)], Is.All.EqualTo(-9));
        Assert.That(pos[(4 * k)..], Is.All.EqualTo(-9));
        Assert.That(sc[..(2 * k)], Is.All.EqualTo(9f));
        Assert.That(sc[(4 * k)..], Is.All.EqualTo(9f));
        var first = pos[(2 * k)..(3 * k)];
        Assert.That(first, Is.Ordered.Ascending.And.All.InRange(0, 9), "sample 0 has 10 events: 4 positions, chronological");
        Assert.That(pos[(3 * k)..(4 * k)], Is.EqualTo(new[] { 0, 1, -1, -1 }), "sample 1 has 2 events: both, then empty slots");
    }

    // The lanes-per-row setting refuses what the shuffles cannot do.
    [Test]
    public void LanesPerRowIsValidated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Kernels.LanesPerRow = 3);
        Assert.Throws<ArgumentOutOfRangeException>(() => Kernels.LanesPerRow = 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => Kernels.LanesPerRow = 2 * Kernels.WarpSize);
    }
}

/// <summary>
/// The 64-bit selection keys of the ILGPU kernel, on the host (they are plain static methods): larger key exactly when
/// (score descending, then position descending) is better, with -0 = +0 and NaN below every number, and the score and
/// position come back bitwise.
/// </summary>
public sealed class IlgpuSubrKeyTests
{
    private static readonly float[] Specials =
    [
        0f, -0f, float.Epsilon, -float.Epsilon, 1e-38f, -1e-38f, 1f, -1f, 0.5f, -0.5f, float.MaxValue, float.MinValue,
        float.PositiveInfinity, float.NegativeInfinity, 3.14159f, -2.71828f, 1.0000001f, 0.99999994f,
    ];

    [Test]
    public void KeysOrderLikeScoreThenPosition()
    {
        var rng = new Random(5);
        var scores = Specials.Concat(Enumerable.Range(0, 200).Select(_ => (rng.NextSingle() - 0.5f) * MathF.Pow(10, rng.Next(-40, 39))))
            .ToArray();
        int[] positions = [0, 1, 2, 1000, int.MaxValue - 2];
        var items = (from s in scores from p in positions select (Score: s, Position: p)).ToArray();
        foreach (var (s, p) in items)
        {
            ulong key = IlgpuSubrKernels.ScoreKey(s, p);
            Assert.That(key, Is.Not.Zero);
            Assert.That(IlgpuSubrKernels.PositionOf(key), Is.EqualTo(p));
            Assert.That(BitConverter.SingleToInt32Bits(IlgpuSubrKernels.ScoreOf(key)), Is.EqualTo(BitConverter.SingleToInt32Bits(s)),
                $"score {s:R} at position {p}");
        }
        for (int i = 0; i < items.Length; i += 7)
            foreach (var b in items)
            {
                var a = items[i];
                bool better = a.Score != b.Score ? a.Score > b.Score : a.Position > b.Position;
                bool same = a.Score == b.Score && a.Position == b.Position;
                ulong ka = IlgpuSubrKernels.ScoreKey(a.Score, a.Position), kb = IlgpuSubrKernels.ScoreKey(b.Score, b.Position);
                if (same) Assert.That(ka >> 1, Is.EqualTo(kb >> 1), $"({a}) vs ({b})");
                else Assert.That(ka > kb, Is.EqualTo(better), $"({a}) vs ({b})");
            }
    }

    [Test]
    public void NaNRanksBelowEveryNumber()
    {
        ulong nan = IlgpuSubrKernels.ScoreKey(float.NaN, 5);
        Assert.That(nan, Is.LessThan(IlgpuSubrKernels.ScoreKey(float.NegativeInfinity, 0)));
        Assert.That(nan, Is.GreaterThan(0ul));
        Assert.That(float.IsNaN(IlgpuSubrKernels.ScoreOf(nan)), Is.True);
        Assert.That(IlgpuSubrKernels.PositionOf(nan), Is.EqualTo(5));
    }
}
