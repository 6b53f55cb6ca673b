using System.Runtime.InteropServices;
using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>
/// <c>kernels/subr_topk.cu</c> through <see cref="CudaBackend"/>'s SUBR front, against <see cref="SubrReference"/>:
/// random tables stored as f32, f16 and i8 (vectorised and scalar dot paths), odd d, k from 1 to 1024, empty, short
/// (L &lt; k, L = k) and long histories, duplicate events and identical rows (exact ties: the later event must win),
/// both orders, and the -1 / NaN padding. i8 must match the reference exactly; f32 and f16 may differ only in items
/// whose reference score is within the fp32 error bound of the k-th best. GPU-only: ignored without a CUDA device
/// (the kernel's logic is checked without one by <c>kernels/tests/sim/subr_sim.cpp</c>, and its compilation by
/// <see cref="NvrtcCompileTests"/>).
/// </summary>
[TestFixture]
public sealed class CudaSubrTests : CudaDeviceFixture
{
    /// <summary>A table on the GPU and the exact values it holds on the host (q and scales for i8).</summary>
    private sealed class HostTable(SubrTable table, float[] values, sbyte[]? q, float[]? scales) : IDisposable
    {
        public SubrTable Table { get; } = table;
        public float[] Values { get; } = values;
        public sbyte[]? Q { get; } = q;
        public float[]? Scales { get; } = scales;
        public void Dispose() => Table.Dispose();
    }

    /// <summary>Random rows in [-1, 1) (rows repeat with period <paramref name="distinct"/> when it is positive), stored as <paramref name="storage"/>.</summary>
    private static HostTable MakeTable(ComputeBackend backend, DType storage, int rows, int dim, int distinct, int seed)
    {
        var raw = RandomData.Uniform(rows * dim, seed);
        if (distinct > 0)
            for (int r = distinct; r < rows; r++) Array.Copy(raw, (r % distinct) * dim, raw, r * dim, dim);
        var values = new float[raw.Length];
        switch (storage)
        {
            case DType.F32:
                raw.CopyTo(values, 0);
                return new HostTable(SubrTable.FromStored(backend, storage, MemoryMarshal.AsBytes(raw.AsSpan()), [], rows, dim, SubrSimilarity.Dot),
                    values, null, null);
            case DType.F16:
                var h = new Half[raw.Length];
                for (int i = 0; i < raw.Length; i++) values[i] = (float)(h[i] = (Half)raw[i]);
                return new HostTable(SubrTable.FromStored(backend, storage, MemoryMarshal.AsBytes(h.AsSpan()), [], rows, dim, SubrSimilarity.Dot),
                    values, null, null);
            default:
                var q = new sbyte[raw.Length];
                var scales = new float[rows];
                for (int r = 0; r < rows; r++)
                {
                    scales[r] = SubrTable.Quantize(raw.AsSpan(r * dim, dim), q.AsSpan(r * dim, dim));
                    for (int c = 0; c < dim; c++) values[r * dim + c] = q[r * dim + c] * scales[r];
                }
                return new HostTable(SubrTable.FromStored(backend, storage, MemoryMarshal.AsBytes(q.AsSpan()), scales, rows, dim, SubrSimilarity.Dot),
                    values, q, scales);
        }
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var storage in new[] { DType.F32, DType.F16, DType.I8 })
        {
            foreach (var order in new[] { SubrOrder.Chronological, SubrOrder.Score })
            {
                string s = storage.ToString().ToLowerInvariant();
                yield return new TestCaseData(storage, 1, 2, new[] { 0, 1, 5, 37 }, 0, false, order).SetName($"Subr_{s}_d1_k2_{order}");
                yield return new TestCaseData(storage, 7, 31, new[] { 30, 31, 32, 100 }, 0, false, order).SetName($"Subr_{s}_d7_k31_{order}");
                yield return new TestCaseData(storage, 100, 31, new[] { 3, 200, 2000 }, 0, false, order).SetName($"Subr_{s}_d100_k31_{order}");
                yield return new TestCaseData(storage, 513, 30, new[] { 29, 3000 }, 0, false, order).SetName($"Subr_{s}_d513_k30_{order}");
                yield return new TestCaseData(storage, 512, 60, new[] { 2000, 0, 60, 20_000 }, 0, false, order).SetName($"Subr_{s}_d512_k60_{order}");
                yield return new TestCaseData(storage, 512, 1024, new[] { 1023, 1024, 1025, 5000 }, 0, false, order).SetName($"Subr_{s}_d512_k1024_{order}");
                yield return new TestCaseData(storage, 64, 1, new[] { 100_000, 7 }, 0, false, order).SetName($"Subr_{s}_d64_k1_huge_{order}");
                yield return new TestCaseData(storage, 32, 31, new[] { 3000, 400 }, 0, true, order).SetName($"Subr_{s}_d32_k31_duplicates_{order}");
                yield return new TestCaseData(storage, 48, 31, new[] { 3000, 400 }, 9, false, order).SetName($"Subr_{s}_d48_k31_identicalRows_{order}");
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesTheReference(DType storage, int dim, int k, int[] lengths, int distinctRows, bool fewItems, SubrOrder order)
    {
        var backend = Backend;
        const int Rows = 5000;
        int seed = dim * 7919 + k * 31 + lengths.Length + (int)storage * 3 + distinctRows;
        using var table = MakeTable(backend, storage, Rows, dim, distinctRows, seed);
        var rng = new Random(seed);
        var histories = lengths.Select(L => Enumerable.Range(0, L).Select(_ => fewItems ? rng.Next(6) * 17 : rng.Next(Rows)).ToArray()).ToArray();
        var targets = lengths.Select(_ => rng.Next(Rows)).ToArray();
        using var queries = SubrQueries.FromHistories(histories, targets);
        int b = lengths.Length;
        using var positionsBuffer = backend.Allocate(DType.I32, (long)b * k);
        using var scoresBuffer = backend.Allocate(DType.F32, (long)b * k);

        backend.Subr.Run(table.Table, queries, k, order, positionsBuffer.AsTensor(b, k), scoresBuffer.AsTensor(b, k));
        var positions = new int[b * k];
        var scores = new float[b * k];
        positionsBuffer.CopyTo<int>(positions);
        scoresBuffer.CopyTo<float>(scores);

        for (int s = 0; s < b; s++)
        {
            var history = histories[s];
            double[] reference = storage == DType.I8
                ? SubrReference.ScoresInt8(table.Q, table.Scales, dim, history, targets[s])
                : SubrReference.Scores(table.Values, dim, history, targets[s]);
            var got = positions.AsSpan(s * k, k);
            var gotScores = scores.AsSpan(s * k, k);
            int n = Math.Min(history.Length, k);
            string where = $"sample {s} (L = {history.Length})";
            for (int i = n; i < k; i++)
            {
                Assert.That(got[i], Is.EqualTo(-1), $"{where}: slot {i} past n = {n}");
                Assert.That(float.IsNaN(gotScores[i]), Is.True, $"{where}: score slot {i} past n = {n} is {gotScores[i]}");
            }
            var expected = SubrReference.Select(reference, k, order);
            if (storage == DType.I8)
            {
                // Exact: the integer dot and the two fp32 products are the same on every backend.
                Assert.That(got[..n].ToArray(), Is.EqualTo(expected), $"{where}: positions");
                for (int i = 0; i < n; i++) Assert.That(gotScores[i], Is.EqualTo((float)reference[expected[i]]), $"{where}: score {i}");
                continue;
            }
            CheckNearTies(table.Values, dim, history, targets[s], reference, got[..n], gotScores[..n], expected, order, where);
        }
    }

    /// <summary>
    /// f32/f16: every returned score within the fp32 error bound of its reference, the returned set equal to the
    /// reference's except for items within twice that bound of the k-th best, the requested order, and exact ties
    /// (the same row twice scores bitwise-equal, so the later event must be kept whenever the earlier one is).
    /// </summary>
    private static void CheckNearTies(float[] values, int dim, int[] history, int target, double[] reference,
        ReadOnlySpan<int> got, ReadOnlySpan<float> gotScores, int[] expected, SubrOrder order, string where)
    {
        int n = got.Length;
        var bound = new double[history.Length];
        double maxBound = 0;
        for (int p = 0; p < history.Length; p++)
        {
            double mag = 0;
            for (int c = 0; c < dim; c++) mag += Math.Abs((double)values[target * dim + c] * values[history[p] * dim + c]);
            bound[p] = (dim + 2) * 1.2e-7 * mag + 1e-30;
            maxBound = Math.Max(maxBound, bound[p]);
        }
        var byScore = SubrReference.Select(reference, n, SubrOrder.Score);
        double kth = n > 0 ? reference[byScore[^1]] : 0;
        var selected = new HashSet<int>();
        for (int i = 0; i < n; i++)
        {
            int p = got[i];
            Assert.That(p, Is.InRange(0, history.Length - 1), $"{where}: position {i}");
            Assert.That(selected.Add(p), Is.True, $"{where}: position {p} returned twice");
            Assert.That(gotScores[i], Is.EqualTo(reference[p]).Within(bound[p]), $"{where}: score of position {p}");
        }
        var wanted = expected.ToHashSet();
        foreach (int p in selected.Union(wanted))
        {
            if (selected.Contains(p) == wanted.Contains(p)) continue;
            Assert.That(Math.Abs(reference[p] - kth), Is.LessThanOrEqualTo(2 * maxBound),
                $"{where}: position {p} (score {reference[p]}) {(selected.Contains(p) ? "returned" : "missing")}, but not a near tie of the k-th best {kth}");
        }
        for (int i = 1; i < n; i++)
        {
            bool ok = order == SubrOrder.Chronological
                ? got[i - 1] < got[i]
                : gotScores[i - 1] > gotScores[i] || (gotScores[i - 1] == gotScores[i] && got[i - 1] > got[i]);
            Assert.That(ok, Is.True, $"{where}: slots {i - 1}, {i} ({got[i - 1]}: {gotScores[i - 1]}, {got[i]}: {gotScores[i]}) are not in {order} order");
        }
        var lastOfRow = new Dictionary<int, int>();
        for (int p = 0; p < history.Length; p++) lastOfRow[history[p]] = p;
        foreach (int p in selected)
        {
            // Later occurrences of the same row tie exactly and are more recent, so they must all be selected too.
            for (int q = p + 1; q < history.Length; q++)
                if (history[q] == history[p])
                    Assert.That(selected, Does.Contain(q), $"{where}: row {history[p]} kept at position {p} but not at the later position {q}");
        }
    }

    [Test]
    public void UnknownRowsAreRefusedBeforeTheKernelRuns()
    {
        var backend = Backend;
        using var table = MakeTable(backend, DType.F32, 10, 8, 0, 1);
        using var queries = SubrQueries.FromHistories([[1, 2], [3, 10]], [0, 1]);
        Assert.That(() => backend.Subr.Retrieve(table.Table, queries, 5),
            Throws.ArgumentException.With.Message.Contains("sample 1").And.Message.Contains("row 10"));
    }

    [Test]
    public void TheLauncherMatchesTheKernelSource()
    {
        Assert.Multiple(() =>
        {
            foreach (var dtype in new[] { DType.F32, DType.F16, DType.I8 })
                Assert.That(CudaKernelSources.FindSourceOf(CudaSubr.EntryPointFor(dtype)), Is.EqualTo("subr_topk.cu"), dtype.ToString());
            Assert.That(CudaKernelSources.FindEntryPoints(CudaKernelSources.Read("subr_topk.cu")),
                Is.EquivalentTo(new[] { CudaSubr.EntryPointF32, CudaSubr.EntryPointF16, CudaSubr.EntryPointI8 }));
            Assert.That(CudaSubr.MaxK, Is.EqualTo(SubrTopK.MaxK));
            var source = CudaKernelSources.Read("subr_topk.cu");
            Assert.That(source, Does.Contain($"#define RELLAX_SUBR_MAX_K {CudaSubr.MaxK}"));
            Assert.That(source, Does.Contain($"__launch_bounds__({CudaSubr.Block})"));
            Assert.That(() => CudaSubr.EntryPointFor(DType.BF16), Throws.TypeOf<NotSupportedException>());
        });
    }
}
