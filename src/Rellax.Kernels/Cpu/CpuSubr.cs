using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// SUBR top-K on the CPU backend (SPEC §2, contract in <see cref="ISubrKernels.TopK"/>): for every sample, gather its
/// history rows, score each against the target row, and keep the K best by (score desc, position desc), in one pass
/// that never writes the B × L score matrix.
/// <para>
/// <b>Roofline.</b> Per history event the kernel reads one table row (d·4 bytes f32, d·2 f16, d i8 + a 4-byte scale)
/// plus its 4-byte id, and does d multiply-adds: 2·d FLOPs per d·4 bytes for f32 (0.5 FLOP/byte), so it is bound by
/// memory, never by arithmetic (d = 512: 32 FMAs of 16 lanes per 2 KiB row). The floor is
/// <c>Σ_b L_b · rowBytes / read bandwidth</c>: B = 1024, L = 2000, d = 512, f32 reads 4.2 GB, ≈ 51 ms at 82 GB/s; i8
/// reads a quarter of that. The rows are gathered at random from a table far beyond the caches (100k × 512 f32 = 205
/// MB), so every row is a fresh DRAM access: bandwidth is only reached with many rows in flight (Little's law: ~80 GB/s
/// × ~100 ns ≈ 8 KB outstanding, i.e. several 2 KiB rows per core at once). The ids are known in advance, so each row
/// is software-prefetched (<c>prefetcht0</c>) <see cref="CpuBackendOptions.SubrPrefetchBytes"/> bytes of rows ahead of the row being scored:
/// rows under 2 KiB line by line, 16 KiB ahead (32 rows of 512 B i8); rows of 2 KiB or more only their first line,
/// 8 KiB ahead (4 rows of 2 KiB f32), which lets the hardware prefetchers stream the rest and measured 10–15% faster
/// than prefetching every line. The first rows of a sample are prefetched before its loop starts. Measured on 2 Zen 5
/// cores (benchmarks/results/subr-cpu.md): 40–48 GB/s, about half of the 85 GB/s sequential read bandwidth; the
/// distance (4–64 KiB) hardly matters, so the limit is the number of random DRAM accesses in flight (4 KiB pages: a
/// DTLB miss per row). Selection costs one SIMD compare per row (below).
/// </para>
/// <para>
/// <b>Per sample.</b> The target row is prepared once (f16 widened to f32; i8 kept, or widened to i16 for the
/// AVX-512BW path, and Σ q_t precomputed). The history runs in blocks of <see cref="Block"/> = 64 rows: the block's
/// scores go to a stack buffer; while the first K positions are taken, they fill a binary min-heap of (score,
/// position) directly; after that, 16 scores at a time are compared with the heap's root (the current K-th best) in
/// one vector compare, and only the survivors (score ≥ root: a later position wins a tie, and every position of the
/// block is later than all kept ones) replace the root and sift down. With random scores only ~K·ln(L/K) rows ever
/// reach the heap. At the end the kept items are sorted for the requested order (by position; or by a 64-bit key
/// (score, position) descending). L ≤ K keeps the whole history.
/// </para>
/// <para>
/// <b>Scores.</b> f32 and f16: an fp32 dot product with a fixed summation order per row (4 vector accumulators over
/// 64-element steps, a 16-element step into the first, <c>(a0 + a1) + (a2 + a3)</c> summed, then a scalar FMA tail),
/// the same for every row of a call wherever it sits, so duplicate events and identical rows score bitwise equal and
/// the tie rule is honoured. Rows are scored four at a time (<c>Dot4</c>: 16 accumulators, each target vector loaded
/// once for the four rows), each row in exactly that order; a block's last L mod 4 rows go through <c>Dot1</c>. <see cref="CpuGemm.UseVector512"/> off switches the whole call to the Vector256 order.
/// i8: the exact i32 dot product, then <c>(float)dot · (scale[t] · scale[h])</c> as the contract says; every
/// integer path gives the same integer (wrapping i32 arithmetic is associative), so every path and backend selects
/// the same items. With AVX-VNNI (256-bit <c>vpdpbusd</c>, u8 × s8) the history byte is made unsigned as
/// <c>q_h ⊕ 0x80 = q_h + 128</c> and <c>128 · Σ q_t</c> (per sample) is subtracted; without it, AVX-512BW widens
/// both to i16 and uses <c>vpmaddwd</c> (AVX2 the same at 256 bits), else a scalar loop.
/// </para>
/// <para>
/// <b>Threads.</b> Samples are handed out one at a time from a shared counter (dynamic scheduling: histories differ
/// wildly in length), one worker per backend thread, each with its own scratch (target row, heap, block scores)
/// allocated once per call. When the batch has fewer samples than threads, each long history (≥ 2 ×
/// <see cref="MinSplitRows"/>) is split into contiguous ranges, one per thread; each range keeps its own top K and
/// the calling thread merges them (exactly the same result: scores do not depend on where a row is computed).
/// </para>
/// </summary>
internal sealed unsafe class CpuSubr(CpuBackend backend) : ISubrKernels
{
    private readonly CpuBackend _backend = backend;

    /// <summary>Rows scored per block before the block is filtered against the threshold.</summary>
    internal const int Block = 64;

    /// <summary>A history is split across threads (when B &lt; threads) only if every part gets at least this many rows.</summary>
    internal const int MinSplitRows = 4096;

    /// <summary>Below this many row elements in the whole batch the call runs on the calling thread only.</summary>
    private const long SingleThreadElements = 1L << 16;

    // The i8 scorer follows the backend's CpuBackendOptions.InstructionSet (AVX-VNNI, else AVX-512BW with Vector512, else
    // AVX2, else scalar); the prefetch tuning (distance, hint, bytes per row) is the backend's too (internal options).

    public void TopK(Tensor table, Tensor scales, Tensor history, Tensor offsets, Tensor targets, int k, bool byScore,
        Tensor positions, Tensor scores)
    {
        int dim = table.Dim(1);
        var job = new Job
        {
            History = CpuBackend.Ptr<int>(history),
            Offsets = CpuBackend.Ptr<int>(offsets),
            Targets = CpuBackend.Ptr<int>(targets),
            Samples = targets.Dim(0),
            K = k,
            ByScore = byScore,
            Positions = CpuBackend.Ptr<int>(positions),
            Scores = CpuBackend.Ptr<float>(scores),
            Dim = dim,
            PrefetchBytes = _backend.Options.SubrPrefetchBytes,
        };
        byte* data = CpuBackend.Ptr<byte>(table);
        bool v512 = CpuGemm.UseVector512;
        var pf = new Prefetcher(_backend.Options.SubrPrefetchHint, _backend.Options.SubrPrefetchMaxBytesPerRow);
        var set = _backend.InstructionSet;
        switch (table.DType)
        {
            case DType.F32:
                if (v512) Run(new F32Scorer<Wide512>(data, dim) { Prefetcher = pf }, job);
                else Run(new F32Scorer<Wide256>(data, dim) { Prefetcher = pf }, job);
                break;
            case DType.F16:
                if (v512) Run(new F16Scorer<Wide512>(data, dim) { Prefetcher = pf }, job);
                else Run(new F16Scorer<Wide256>(data, dim) { Prefetcher = pf }, job);
                break;
            case DType.I8:
                float* s = CpuBackend.Ptr<float>(scales);
                if (set >= CpuInstructionSet.AvxVnni && AvxVnni.IsSupported) Run(new I8Scorer<I8Vnni>(data, s, dim) { Prefetcher = pf }, job);
                else if (set >= CpuInstructionSet.Avx512 && v512 && Avx512BW.IsSupported) Run(new I8Scorer<I8Avx512>(data, s, dim) { Prefetcher = pf }, job);
                else if (set >= CpuInstructionSet.Avx2 && Avx2.IsSupported) Run(new I8Scorer<I8Avx2>(data, s, dim) { Prefetcher = pf }, job);
                else Run(new I8Scorer<I8Scalar>(data, s, dim) { Prefetcher = pf }, job);
                break;
            default:
                throw new NotSupportedException($"SUBR tables of dtype {table.DType}");
        }
    }

    /// <summary>Pointers and sizes of one call (all host memory; shapes as in <see cref="ISubrKernels.TopK"/>).</summary>
    private struct Job
    {
        public int* History;    // i32 [total]
        public int* Offsets;    // i32 [B + 1]
        public int* Targets;    // i32 [B]
        public int Samples;     // B
        public int K;
        public bool ByScore;
        public int* Positions;  // i32 [B, K], output
        public float* Scores;   // f32 [B, K], output
        public int Dim;         // d
        public int PrefetchBytes; // the backend's SubrPrefetchBytes (0: by row size)
    }

    // ---------------------------------------------------------------- scheduling

    private void Run<TS>(TS proto, Job job) where TS : struct, IScorer
    {
        int samples = job.Samples, threads = _backend.Threads;
        long total = job.Offsets[samples];
        if (threads == 1 || total * job.Dim < SingleThreadElements)
        {
            RunSamples(proto, job, null);
            return;
        }
        if (samples >= threads)
        {
            int next = 0;
            nint counter = (nint)(&next); // pinned: a local of this frame, which outlives the parallel loop
            Parallel.For(0, threads, _backend.ParallelOptions, _ => RunSamples(proto, job, (int*)counter));
            return;
        }
        // Fewer samples than threads: split each long history into per-thread ranges and merge their top Ks.
        using var scratch = new Scratch(job, proto.TargetScratchBytes, candidates: threads * job.K);
        for (int b = 0; b < samples; b++)
        {
            int start = job.Offsets[b], len = job.Offsets[b + 1] - start;
            int parts = Math.Min(threads, len / MinSplitRows);
            if (parts < 2)
            {
                var s = proto;
                SampleTopK(ref s, job, b, scratch);
                continue;
            }
            var candS = (float*)NativeMemory.Alloc((nuint)(parts * job.K), sizeof(float));
            var candP = (int*)NativeMemory.Alloc((nuint)(parts * job.K), sizeof(int));
            var counts = new int[parts];
            try
            {
                nint cs = (nint)candS, cp = (nint)candP;
                Parallel.For(0, parts, _backend.ParallelOptions, part =>
                {
                    using var local = new Scratch(job, proto.TargetScratchBytes, candidates: 0);
                    var s = proto;
                    s.SetTarget(job.Targets[b], local.Target);
                    int p0 = (int)((long)len * part / parts), p1 = (int)((long)len * (part + 1) / parts);
                    counts[part] = SelectRange(ref s, job.History + start, p0, p1, job.K, job.PrefetchBytes,
                        (float*)cs + part * job.K, (int*)cp + part * job.K, local.BlockScores);
                });
                int n = 0;
                for (int part = 0; part < parts; part++)
                {
                    // Compact the parts' candidates into one list (each part's list starts at part · K).
                    for (int i = 0; i < counts[part]; i++)
                    {
                        candS[n] = candS[part * job.K + i];
                        candP[n] = candP[part * job.K + i];
                        n++;
                    }
                }
                Finish(candS, candP, n, job, b, scratch.Keys);
            }
            finally
            {
                NativeMemory.Free(candS);
                NativeMemory.Free(candP);
            }
        }
    }

    /// <summary>Takes samples from <paramref name="counter"/> (all of them in order when it is null) until none is left.</summary>
    private static void RunSamples<TS>(TS scorer, Job job, int* counter) where TS : struct, IScorer
    {
        using var scratch = new Scratch(job, scorer.TargetScratchBytes, candidates: job.K);
        if (counter == null)
        {
            for (int b = 0; b < job.Samples; b++) SampleTopK(ref scorer, job, b, scratch);
            return;
        }
        int s;
        while ((s = Interlocked.Increment(ref *counter) - 1) < job.Samples) SampleTopK(ref scorer, job, s, scratch);
    }

    /// <summary>One worker's scratch, allocated once per call: target row, heap (K scores + K positions), sort keys, block scores.</summary>
    private readonly struct Scratch : IDisposable
    {
        public readonly byte* Target;
        public readonly float* HeapScores;
        public readonly int* HeapPositions;
        public readonly ulong* Keys;
        public readonly float* BlockScores;
        private readonly byte* _base;

        public Scratch(Job job, int targetBytes, int candidates)
        {
            long t = (targetBytes + 63) & ~63L, c = ((long)candidates * 4 + 63) & ~63L, keys = ((long)Math.Max(candidates, job.K) * 8 + 63) & ~63L;
            _base = (byte*)NativeMemory.AlignedAlloc((nuint)(t + 2 * c + keys + Block * sizeof(float)), 64);
            Target = _base;
            HeapScores = (float*)(_base + t);
            HeapPositions = (int*)(_base + t + c);
            Keys = (ulong*)(_base + t + 2 * c);
            BlockScores = (float*)(_base + t + 2 * c + keys);
        }

        public void Dispose() => NativeMemory.AlignedFree(_base);
    }

    // ---------------------------------------------------------------- one sample

    private static void SampleTopK<TS>(ref TS scorer, Job job, int b, in Scratch scratch) where TS : struct, IScorer
    {
        int start = job.Offsets[b], len = job.Offsets[b + 1] - start;
        int n = 0;
        if (len > 0)
        {
            scorer.SetTarget(job.Targets[b], scratch.Target);
            n = SelectRange(ref scorer, job.History + start, 0, len, job.K, job.PrefetchBytes, scratch.HeapScores, scratch.HeapPositions, scratch.BlockScores);
        }
        Finish(scratch.HeapScores, scratch.HeapPositions, n, job, b, scratch.Keys);
    }

    /// <summary>
    /// The best min(K, p1 - p0) positions of <c>hist[p0 .. p1)</c> (positions relative to <paramref name="hist"/>) by
    /// (score desc, position desc), unordered in heapS/heapP [K]; returns how many.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int SelectRange<TS>(ref TS scorer, int* hist, int p0, int p1, int k, int prefetchBytes, float* heapS, int* heapP, float* blk)
        where TS : struct, IScorer
    {
        int distance = prefetchBytes > 0 ? prefetchBytes : scorer.RowBytes >= 2048 ? 8192 : 16384;
        int ahead = Math.Max(1, distance / scorer.RowBytes);
        for (int i = p0; i < Math.Min(p1, p0 + ahead); i++) scorer.Prefetch(hist[i]);
        int count = 0;
        for (int p = p0; p < p1; p += Block)
        {
            int n = Math.Min(Block, p1 - p);
            int pf = p + ahead;
            int nPrefetch = Math.Clamp(p1 - pf, 0, n);
            int i = 0;
            for (; i + 4 <= n; i += 4)
            {
                for (int j = i; j < Math.Min(i + 4, nPrefetch); j++) scorer.Prefetch(hist[pf + j]);
                int* r = hist + p + i;
                scorer.Score4(r[0], r[1], r[2], r[3], blk + i);
            }
            for (; i < n; i++)
            {
                if (i < nPrefetch) scorer.Prefetch(hist[pf + i]);
                blk[i] = scorer.Score(hist[p + i]);
            }

            i = 0;
            if (count < k)
            {
                for (; i < n && count < k; i++, count++)
                {
                    heapS[count] = blk[i];
                    heapP[count] = p + i;
                }
                if (count < k) continue;
                for (int j = k / 2 - 1; j >= 0; j--) SiftDown(heapS, heapP, k, j);
            }
            // Filter: a later position with score ≥ the current K-th best (the heap root) replaces it.
            if (CpuGemm.UseVector512)
                for (; i + 16 <= n; i += 16)
                {
                    ulong mask = Vector512.GreaterThanOrEqual(Vector512.Load(blk + i), Vector512.Create(heapS[0])).ExtractMostSignificantBits();
                    while (mask != 0)
                    {
                        int j = BitOperations.TrailingZeroCount(mask);
                        mask &= mask - 1;
                        if (blk[i + j] >= heapS[0]) Replace(heapS, heapP, k, blk[i + j], p + i + j);
                    }
                }
            else
                for (; i + 8 <= n; i += 8)
                {
                    uint mask = Vector256.GreaterThanOrEqual(Vector256.Load(blk + i), Vector256.Create(heapS[0])).ExtractMostSignificantBits();
                    while (mask != 0)
                    {
                        int j = BitOperations.TrailingZeroCount(mask);
                        mask &= mask - 1;
                        if (blk[i + j] >= heapS[0]) Replace(heapS, heapP, k, blk[i + j], p + i + j);
                    }
                }
            for (; i < n; i++)
                if (blk[i] >= heapS[0]) Replace(heapS, heapP, k, blk[i], p + i);
        }
        return count;
    }

    /// <summary>a is worse than b: lower score, or the same score at an earlier position.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Worse(float sa, int pa, float sb, int pb) => sa < sb || (sa == sb && pa < pb);

    private static void Replace(float* hs, int* hp, int n, float s, int p)
    {
        hs[0] = s;
        hp[0] = p;
        SiftDown(hs, hp, n, 0);
    }

    /// <summary>Restores the min-heap (root = worst) below node i of an n-element heap.</summary>
    private static void SiftDown(float* hs, int* hp, int n, int i)
    {
        float s = hs[i];
        int p = hp[i];
        while (true)
        {
            int c = 2 * i + 1;
            if (c >= n) break;
            if (c + 1 < n && Worse(hs[c + 1], hp[c + 1], hs[c], hp[c])) c++;
            if (!Worse(hs[c], hp[c], s, p)) break;
            hs[i] = hs[c];
            hp[i] = hp[c];
            i = c;
        }
        hs[i] = s;
        hp[i] = p;
    }

    /// <summary>
    /// Writes the best min(K, n) of n candidates (distinct positions) to sample b's output rows in the requested order,
    /// and pads the rest with -1 / NaN. keys: scratch for max(n, K) entries.
    /// </summary>
    private static void Finish(float* cs, int* cp, int n, Job job, int b, ulong* keys)
    {
        int k = job.K;
        int* outP = job.Positions + (long)b * k;
        float* outS = job.Scores + (long)b * k;
        int kept = Math.Min(n, k);
        var scores = new Span<float>(cs, n);
        var positions = new Span<int>(cp, n);
        if (job.ByScore || n > k)
        {
            // Best first: ascending order of the complement of (orderable score bits, position).
            var keySpan = new Span<ulong>(keys, n);
            for (int i = 0; i < n; i++) keySpan[i] = ~(((ulong)OrderableBits(cs[i]) << 32) | (uint)cp[i]);
            keySpan.Sort(scores);
            for (int i = 0; i < n; i++) cp[i] = (int)(uint)~keySpan[i];
            if (!job.ByScore) positions[..kept].Sort(scores[..kept]);
        }
        else
            positions.Sort(scores);
        positions[..kept].CopyTo(new Span<int>(outP, k));
        scores[..kept].CopyTo(new Span<float>(outS, k));
        new Span<int>(outP + kept, k - kept).Fill(-1);
        new Span<float>(outS + kept, k - kept).Fill(float.NaN);
    }

    /// <summary>Maps a float to a uint with the same order (−0 and +0 equal; NaN never occurs for finite tables).</summary>
    private static uint OrderableBits(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f + 0f);
        return (u & 0x8000_0000u) != 0 ? ~u : u | 0x8000_0000u;
    }

    // ---------------------------------------------------------------- scorers

    /// <summary>Scores history rows against one target row. A struct per storage type and SIMD path; copied per worker.</summary>
    private interface IScorer
    {
        /// <summary>Bytes of one table row (for the prefetch distance).</summary>
        int RowBytes { get; }

        /// <summary>Bytes of per-worker scratch the prepared target row needs.</summary>
        int TargetScratchBytes { get; }

        /// <summary>Prepares target row <paramref name="row"/> in <paramref name="scratch"/> (64-byte aligned).</summary>
        void SetTarget(int row, byte* scratch);

        /// <summary>The score of table row <paramref name="row"/> against the target.</summary>
        float Score(int row);

        /// <summary>The scores of four rows, interleaved for ILP; bitwise the same as four <see cref="Score"/> calls.</summary>
        void Score4(int r0, int r1, int r2, int r3, float* dst);

        /// <summary>Software-prefetches every cache line of table row <paramref name="row"/>.</summary>
        void Prefetch(int row);
    }

    /// <summary>
    /// How a scorer prefetches a row: <paramref name="hint"/> 0 = prefetcht0, 1 = t1, 2 = t2, 3 = nta; at most
    /// <paramref name="maxBytesPerRow"/> bytes of it (0: the first line of rows of ≥ 2 KiB, whole rows otherwise).
    /// </summary>
    private readonly struct Prefetcher(int hint, int maxBytesPerRow)
    {
        private readonly int _hint = hint;
        private readonly int _maxBytesPerRow = maxBytesPerRow;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Lines(byte* start, int bytes)
        {
            if (!Sse.IsSupported) return;
            int limit = _maxBytesPerRow > 0 ? _maxBytesPerRow : bytes >= 2048 ? 64 : bytes;
            byte* end = start + Math.Min(bytes, limit);
            byte* a = (byte*)((nuint)start & ~(nuint)63);
            switch (_hint)
            {
                case 1: for (; a < end; a += 64) Sse.Prefetch1(a); break;
                case 2: for (; a < end; a += 64) Sse.Prefetch2(a); break;
                case 3: for (; a < end; a += 64) Sse.PrefetchNonTemporal(a); break;
                default: for (; a < end; a += 64) Sse.Prefetch0(a); break;
            }
        }
    }

    /// <summary>One vector width of the f32 dot product; the summation order is fixed per width (see the class remarks).</summary>
    private interface IWidth
    {
        /// <summary>Σ t[c] · h[c] over d elements of a row loaded (widened) by <typeparamref name="TL"/>, in the fixed order.</summary>
        static abstract float Dot1<TL>(float* t, void* h, int d) where TL : struct, ILoad;

        /// <summary>Four <see cref="Dot1"/>s interleaved, each in exactly its order (bitwise equal results).</summary>
        static abstract void Dot4<TL>(float* t, void* h0, void* h1, void* h2, void* h3, int d, float* dst) where TL : struct, ILoad;
    }

    /// <summary>Loads row elements widened to f32 (index in elements).</summary>
    private interface ILoad
    {
        static abstract Vector512<float> Load16(void* p, int i);
        static abstract Vector256<float> Load8(void* p, int i);
        static abstract float Load1(void* p, int i);
    }

    private readonly struct F32Load : ILoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(void* p, int i) => Vector512.Load((float*)p + i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(void* p, int i) => Vector256.Load((float*)p + i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(void* p, int i) => ((float*)p)[i];
    }

    private readonly struct F16Load : ILoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(void* p, int i) => Wide512.Half16((ushort*)p + i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(void* p, int i) => Wide256.Half8((ushort*)p + i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(void* p, int i) => (float)BitConverter.UInt16BitsToHalf(((ushort*)p)[i]);
    }

    private readonly struct Wide512 : IWidth
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Dot1<TL>(float* t, void* h, int d) where TL : struct, ILoad
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int c = 0;
            for (; c + 64 <= d; c += 64)
            {
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(t + c), TL.Load16(h, c), a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(t + c + 16), TL.Load16(h, c + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Load(t + c + 32), TL.Load16(h, c + 32), a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Load(t + c + 48), TL.Load16(h, c + 48), a3);
            }
            for (; c + 16 <= d; c += 16) a0 = Vector512.FusedMultiplyAdd(Vector512.Load(t + c), TL.Load16(h, c), a0);
            float s = Vector512.Sum((a0 + a1) + (a2 + a3));
            for (; c < d; c++) s = MathF.FusedMultiplyAdd(t[c], TL.Load1(h, c), s);
            return s;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Dot4<TL>(float* t, void* h0, void* h1, void* h2, void* h3, int d, float* dst) where TL : struct, ILoad
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, e0 = default, e1 = default, e2 = default, e3 = default;
            int c = 0;
            for (; c + 64 <= d; c += 64)
            {
                Vector512<float> t0 = Vector512.Load(t + c), t1 = Vector512.Load(t + c + 16), t2 = Vector512.Load(t + c + 32), t3 = Vector512.Load(t + c + 48);
                a0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h0, c), a0); a1 = Vector512.FusedMultiplyAdd(t1, TL.Load16(h0, c + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(t2, TL.Load16(h0, c + 32), a2); a3 = Vector512.FusedMultiplyAdd(t3, TL.Load16(h0, c + 48), a3);
                b0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h1, c), b0); b1 = Vector512.FusedMultiplyAdd(t1, TL.Load16(h1, c + 16), b1);
                b2 = Vector512.FusedMultiplyAdd(t2, TL.Load16(h1, c + 32), b2); b3 = Vector512.FusedMultiplyAdd(t3, TL.Load16(h1, c + 48), b3);
                c0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h2, c), c0); c1 = Vector512.FusedMultiplyAdd(t1, TL.Load16(h2, c + 16), c1);
                c2 = Vector512.FusedMultiplyAdd(t2, TL.Load16(h2, c + 32), c2); c3 = Vector512.FusedMultiplyAdd(t3, TL.Load16(h2, c + 48), c3);
                e0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h3, c), e0); e1 = Vector512.FusedMultiplyAdd(t1, TL.Load16(h3, c + 16), e1);
                e2 = Vector512.FusedMultiplyAdd(t2, TL.Load16(h3, c + 32), e2); e3 = Vector512.FusedMultiplyAdd(t3, TL.Load16(h3, c + 48), e3);
            }
            for (; c + 16 <= d; c += 16)
            {
                Vector512<float> t0 = Vector512.Load(t + c);
                a0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h0, c), a0);
                b0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h1, c), b0);
                c0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h2, c), c0);
                e0 = Vector512.FusedMultiplyAdd(t0, TL.Load16(h3, c), e0);
            }
            float s0 = Vector512.Sum((a0 + a1) + (a2 + a3)), s1 = Vector512.Sum((b0 + b1) + (b2 + b3));
            float s2 = Vector512.Sum((c0 + c1) + (c2 + c3)), s3 = Vector512.Sum((e0 + e1) + (e2 + e3));
            for (; c < d; c++)
            {
                s0 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h0, c), s0);
                s1 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h1, c), s1);
                s2 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h2, c), s2);
                s3 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h3, c), s3);
            }
            dst[0] = s0; dst[1] = s1; dst[2] = s2; dst[3] = s3;
        }

        /// <summary>
        /// 16 IEEE binary16 values → binary32 exactly (as <c>CpuCflora</c>'s loader; .NET has no F16C intrinsics): the
        /// 15 magnitude bits shifted into an f32's exponent/mantissa field and multiplied by 2^112 (exact for normals
        /// and subnormals), exponent forced to 255 for inf/NaN, sign OR-ed back.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        internal static Vector512<float> Half16(ushort* p)
        {
            Vector512<uint> h = Vector512.WidenLower(Vector256.Load(p).ToVector512Unsafe());
            Vector512<uint> em = h & Vector512.Create(0x7fffu);
            Vector512<uint> bits = (Vector512.ShiftLeft(em, 13).AsSingle() * Vector512.Create(0x77800000u).AsSingle()).AsUInt32();
            bits |= Vector512.GreaterThanOrEqual(em, Vector512.Create(0x7c00u)) & Vector512.Create(0x7f800000u);
            bits |= Vector512.ShiftLeft(h & Vector512.Create(0x8000u), 16);
            return bits.AsSingle();
        }
    }

    private readonly struct Wide256 : IWidth
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Dot1<TL>(float* t, void* h, int d) where TL : struct, ILoad
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int c = 0;
            for (; c + 32 <= d; c += 32)
            {
                a0 = Vector256.FusedMultiplyAdd(Vector256.Load(t + c), TL.Load8(h, c), a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Load(t + c + 8), TL.Load8(h, c + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Load(t + c + 16), TL.Load8(h, c + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Load(t + c + 24), TL.Load8(h, c + 24), a3);
            }
            for (; c + 8 <= d; c += 8) a0 = Vector256.FusedMultiplyAdd(Vector256.Load(t + c), TL.Load8(h, c), a0);
            float s = Vector256.Sum((a0 + a1) + (a2 + a3));
            for (; c < d; c++) s = MathF.FusedMultiplyAdd(t[c], TL.Load1(h, c), s);
            return s;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Dot4<TL>(float* t, void* h0, void* h1, void* h2, void* h3, int d, float* dst) where TL : struct, ILoad
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, e0 = default, e1 = default, e2 = default, e3 = default;
            int c = 0;
            for (; c + 32 <= d; c += 32)
            {
                Vector256<float> t0 = Vector256.Load(t + c), t1 = Vector256.Load(t + c + 8), t2 = Vector256.Load(t + c + 16), t3 = Vector256.Load(t + c + 24);
                a0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h0, c), a0); a1 = Vector256.FusedMultiplyAdd(t1, TL.Load8(h0, c + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(t2, TL.Load8(h0, c + 16), a2); a3 = Vector256.FusedMultiplyAdd(t3, TL.Load8(h0, c + 24), a3);
                b0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h1, c), b0); b1 = Vector256.FusedMultiplyAdd(t1, TL.Load8(h1, c + 8), b1);
                b2 = Vector256.FusedMultiplyAdd(t2, TL.Load8(h1, c + 16), b2); b3 = Vector256.FusedMultiplyAdd(t3, TL.Load8(h1, c + 24), b3);
                c0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h2, c), c0); c1 = Vector256.FusedMultiplyAdd(t1, TL.Load8(h2, c + 8), c1);
                c2 = Vector256.FusedMultiplyAdd(t2, TL.Load8(h2, c + 16), c2); c3 = Vector256.FusedMultiplyAdd(t3, TL.Load8(h2, c + 24), c3);
                e0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h3, c), e0); e1 = Vector256.FusedMultiplyAdd(t1, TL.Load8(h3, c + 8), e1);
                e2 = Vector256.FusedMultiplyAdd(t2, TL.Load8(h3, c + 16), e2); e3 = Vector256.FusedMultiplyAdd(t3, TL.Load8(h3, c + 24), e3);
            }
            for (; c + 8 <= d; c += 8)
            {
                Vector256<float> t0 = Vector256.Load(t + c);
                a0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h0, c), a0);
                b0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h1, c), b0);
                c0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h2, c), c0);
                e0 = Vector256.FusedMultiplyAdd(t0, TL.Load8(h3, c), e0);
            }
            float s0 = Vector256.Sum((a0 + a1) + (a2 + a3)), s1 = Vector256.Sum((b0 + b1) + (b2 + b3));
            float s2 = Vector256.Sum((c0 + c1) + (c2 + c3)), s3 = Vector256.Sum((e0 + e1) + (e2 + e3));
            for (; c < d; c++)
            {
                s0 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h0, c), s0);
                s1 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h1, c), s1);
                s2 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h2, c), s2);
                s3 = MathF.FusedMultiplyAdd(t[c], TL.Load1(h3, c), s3);
            }
            dst[0] = s0; dst[1] = s1; dst[2] = s2; dst[3] = s3;
        }

        /// <summary>8 binary16 → binary32 exactly; see <c>Wide512.Half16</c>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        internal static Vector256<float> Half8(ushort* p)
        {
            Vector256<uint> h = Vector256.WidenLower(Vector128.Load(p).ToVector256Unsafe());
            Vector256<uint> em = h & Vector256.Create(0x7fffu);
            Vector256<uint> bits = (Vector256.ShiftLeft(em, 13).AsSingle() * Vector256.Create(0x77800000u).AsSingle()).AsUInt32();
            bits |= Vector256.GreaterThanOrEqual(em, Vector256.Create(0x7c00u)) & Vector256.Create(0x7f800000u);
            bits |= Vector256.ShiftLeft(h & Vector256.Create(0x8000u), 16);
            return bits.AsSingle();
        }
    }

    /// <summary>f32 rows: the target is read in place (it stays in L1 for the whole sample).</summary>
    private struct F32Scorer<TW>(byte* data, int dim) : IScorer where TW : struct, IWidth
    {
        public Prefetcher Prefetcher { readonly get; init; }

        private readonly float* _data = (float*)data;
        private readonly int _dim = dim;
        private float* _target;

        public readonly int RowBytes => _dim * sizeof(float);
        public readonly int TargetScratchBytes => 0;
        public void SetTarget(int row, byte* scratch) => _target = _data + (long)row * _dim;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly float Score(int row) => TW.Dot1<F32Load>(_target, _data + (long)row * _dim, _dim);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Score4(int r0, int r1, int r2, int r3, float* dst) =>
            TW.Dot4<F32Load>(_target, _data + (long)r0 * _dim, _data + (long)r1 * _dim, _data + (long)r2 * _dim, _data + (long)r3 * _dim, _dim, dst);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Prefetch(int row) => Prefetcher.Lines((byte*)(_data + (long)row * _dim), _dim * sizeof(float));
    }

    /// <summary>f16 rows: the target is widened to f32 once per sample; history rows are widened in registers.</summary>
    private struct F16Scorer<TW>(byte* data, int dim) : IScorer where TW : struct, IWidth
    {
        public Prefetcher Prefetcher { readonly get; init; }

        private readonly ushort* _data = (ushort*)data;
        private readonly int _dim = dim;
        private float* _target;

        public readonly int RowBytes => _dim * sizeof(ushort);
        public readonly int TargetScratchBytes => _dim * sizeof(float);

        public void SetTarget(int row, byte* scratch)
        {
            _target = (float*)scratch;
            ushort* t = _data + (long)row * _dim;
            for (int c = 0; c < _dim; c++) _target[c] = (float)BitConverter.UInt16BitsToHalf(t[c]);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly float Score(int row) => TW.Dot1<F16Load>(_target, _data + (long)row * _dim, _dim);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Score4(int r0, int r1, int r2, int r3, float* dst) =>
            TW.Dot4<F16Load>(_target, _data + (long)r0 * _dim, _data + (long)r1 * _dim, _data + (long)r2 * _dim, _data + (long)r3 * _dim, _dim, dst);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Prefetch(int row) => Prefetcher.Lines((byte*)(_data + (long)row * _dim), _dim * sizeof(ushort));
    }

    /// <summary>
    /// i8 rows: the exact i32 dot product by <typeparamref name="TDot"/>, minus the bias its prepared target asks for,
    /// then <c>(float)dot · (scale[t] · scale[h])</c>. Every strategy gives the same integer (wrapping i32 arithmetic is
    /// associative), so every path selects the same items.
    /// </summary>
    private struct I8Scorer<TDot>(byte* data, float* scales, int dim) : IScorer where TDot : struct, II8Dot
    {
        public Prefetcher Prefetcher { readonly get; init; }

        private readonly sbyte* _data = (sbyte*)data;
        private readonly float* _scales = scales;
        private readonly int _dim = dim;
        private sbyte* _target;
        private byte* _prepared;
        private int _bias;
        private float _targetScale;

        public readonly int RowBytes => _dim;
        public readonly int TargetScratchBytes => TDot.ScratchBytes(_dim);

        public void SetTarget(int row, byte* scratch)
        {
            _target = _data + (long)row * _dim;
            _prepared = scratch;
            _targetScale = _scales[row];
            _bias = TDot.Prepare(_target, scratch, _dim);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly float Score(int row)
        {
            int dot = unchecked(TDot.Dot(_data + (long)row * _dim, _target, _prepared, _dim) - _bias);
            return (float)dot * (_targetScale * _scales[row]);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Score4(int r0, int r1, int r2, int r3, float* dst)
        {
            dst[0] = Score(r0); dst[1] = Score(r1); dst[2] = Score(r2); dst[3] = Score(r3);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Prefetch(int row)
        {
            Prefetcher.Lines((byte*)(_data + (long)row * _dim), _dim);
            if (Sse.IsSupported) Sse.Prefetch0(_scales + row);
        }
    }

    /// <summary>One way to compute the i32 dot product of an i8 history row with the target row.</summary>
    private interface II8Dot
    {
        /// <summary>Bytes of scratch the prepared target needs.</summary>
        static abstract int ScratchBytes(int dim);

        /// <summary>Prepares the target in <paramref name="scratch"/>; returns the bias to subtract from every <see cref="Dot"/>.</summary>
        static abstract int Prepare(sbyte* target, byte* scratch, int dim);

        /// <summary>Σ_c h[c] · t[c] plus the bias (wrapping i32).</summary>
        static abstract int Dot(sbyte* h, sbyte* target, byte* scratch, int dim);
    }

    /// <summary>
    /// AVX-VNNI: <c>vpdpbusd</c> on (q_h ⊕ 0x80) as u8 times q_t as s8, 32 bytes at a time; the bias is
    /// 128 · Σ q_t over the same columns (exact in wrapping i32 arithmetic); scalar tail for d mod 32.
    /// </summary>
    private struct I8Vnni : II8Dot
    {
        public static int ScratchBytes(int dim) => 0;

        public static int Prepare(sbyte* target, byte* scratch, int dim)
        {
            int main = dim & ~31, sum = 0;
            for (int c = 0; c < main; c++) sum += target[c];
            return unchecked(128 * sum);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static int Dot(sbyte* h, sbyte* t, byte* scratch, int dim)
        {
            Vector256<int> a0 = default, a1 = default;
            Vector256<sbyte> flip = Vector256.Create(unchecked((sbyte)0x80));
            int c = 0;
            for (; c + 64 <= dim; c += 64)
            {
                a0 = AvxVnni.MultiplyWideningAndAdd(a0, (Vector256.Load(h + c) ^ flip).AsByte(), Vector256.Load(t + c));
                a1 = AvxVnni.MultiplyWideningAndAdd(a1, (Vector256.Load(h + c + 32) ^ flip).AsByte(), Vector256.Load(t + c + 32));
            }
            for (; c + 32 <= dim; c += 32) a0 = AvxVnni.MultiplyWideningAndAdd(a0, (Vector256.Load(h + c) ^ flip).AsByte(), Vector256.Load(t + c));
            int dot = Vector256.Sum(a0 + a1);
            for (; c < dim; c++) dot = unchecked(dot + t[c] * h[c]);
            return dot;
        }
    }

    /// <summary>AVX-512BW: history bytes sign-extended to i16 (<c>vpmovsxbw</c>) times the target widened once into scratch, <c>vpmaddwd</c> into i32.</summary>
    private struct I8Avx512 : II8Dot
    {
        public static int ScratchBytes(int dim) => dim * sizeof(short);

        public static int Prepare(sbyte* target, byte* scratch, int dim)
        {
            for (int c = 0; c < dim; c++) ((short*)scratch)[c] = target[c];
            return 0;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static int Dot(sbyte* h, sbyte* t, byte* scratch, int dim)
        {
            short* wide = (short*)scratch;
            Vector512<int> a0 = default, a1 = default;
            int c = 0;
            for (; c + 64 <= dim; c += 64)
            {
                a0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(h + c)), Vector512.Load(wide + c));
                a1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(h + c + 32)), Vector512.Load(wide + c + 32));
            }
            for (; c + 32 <= dim; c += 32) a0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(h + c)), Vector512.Load(wide + c));
            int dot = Vector512.Sum(a0 + a1);
            for (; c < dim; c++) dot = unchecked(dot + t[c] * h[c]);
            return dot;
        }
    }

    /// <summary>AVX2: as <see cref="I8Avx512"/> at 256 bits (16 bytes per step).</summary>
    private struct I8Avx2 : II8Dot
    {
        public static int ScratchBytes(int dim) => dim * sizeof(short);

        public static int Prepare(sbyte* target, byte* scratch, int dim) => I8Avx512.Prepare(target, scratch, dim);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static int Dot(sbyte* h, sbyte* t, byte* scratch, int dim)
        {
            short* wide = (short*)scratch;
            Vector256<int> a0 = default, a1 = default;
            int c = 0;
            for (; c + 32 <= dim; c += 32)
            {
                a0 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.Load(h + c)), Vector256.Load(wide + c));
                a1 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.Load(h + c + 16)), Vector256.Load(wide + c + 16));
            }
            for (; c + 16 <= dim; c += 16) a0 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.Load(h + c)), Vector256.Load(wide + c));
            int dot = Vector256.Sum(a0 + a1);
            for (; c < dim; c++) dot = unchecked(dot + t[c] * h[c]);
            return dot;
        }
    }

    /// <summary>Without x86 SIMD: a plain integer loop (the same integer as every other path).</summary>
    private struct I8Scalar : II8Dot
    {
        public static int ScratchBytes(int dim) => 0;

        public static int Prepare(sbyte* target, byte* scratch, int dim) => 0;

        public static int Dot(sbyte* h, sbyte* t, byte* scratch, int dim)
        {
            int dot = 0;
            for (int c = 0; c < dim; c++) dot = unchecked(dot + t[c] * h[c]);
            return dot;
        }
    }
}
