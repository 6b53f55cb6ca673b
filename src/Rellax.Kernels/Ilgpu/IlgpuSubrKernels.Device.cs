using ILGPU;
using ILGPU.Algorithms;

namespace Rellax.Kernels.Ilgpu;

// Device code of the ILGPU SUBR top-K kernel (SPEC §2, contract in ISubrKernels): one group per sample, fused
// gather + dot + select, the B × L score matrix never leaves registers.
//
// Per sample b (grid-stride over samples when B exceeds the grid):
//   1. The target row E[t] is staged in shared memory (as float bits, or as ints for i8), TargetCache elements at a
//      time; for d ≤ TargetCache (all realistic d) it is loaded once per sample.
//   2. The history is walked in tiles of G rows (G = group size). The group is split into G / R teams of R lanes
//      (R = lanesPerRow, a power of two ≤ the warp size, so a team is a slice of one warp); a tile is R rounds in which
//      each team scores one row: lane j sums the columns c ≡ j (mod R) in increasing c (four interleaved
//      accumulators, see DotF32), then the R partial sums are combined by an xor butterfly of warp shuffles (log2 R
//      steps, every lane ends with the same value). This order depends only on (d, R), never on where the row sits in
//      the tile, so equal rows get bitwise-equal scores and ties are decided by position alone. i8 rows sum exact
//      int32 products and score (float)dot · (scale[t] · scale[h]), bitwise what every backend computes.
//   3. Selection keeps 64-bit keys in one shared buffer of SortCapacity = 2048 keys (16 KiB): key = (order-preserving
//      bits of the score) << 32 | (position + 1) << 1 (see ScoreKey), so "larger key" is exactly (score desc, then
//      position desc) and key 0 is an empty slot. keys[0, k) is the kept set (sorted, best first) and keys[k, 2048)
//      the candidate queue. A row whose key beats the threshold (the kept set's k-th best key, 0 until k rows were
//      kept) is appended to the queue by lane 0 of its team through a shared atomic counter. After a tile, if the
//      queue could overflow during the next one (count > 2048 - k - G), kept set and queue are merged: a bitonic sort
//      (descending) of the next power of two ≥ k + count keys, after which keys[k - 1] is the new threshold and the
//      queue is empty. After the last tile, one more merge; then, for chronological output, keys[0, n) are re-keyed
//      by position ((MaxValue - p) << 32 | the score's float bits) and sorted again. Slots n..k-1 get position -1 and score NaN.
//
// Launch: grid min(B, device limit), group G = min(256, device limit) (a power of two); shared 16 KiB keys + 8 KiB
// target + 12 bytes.
// Roofline per sample: reads L·d·bytes(storage) of table rows (plus 4·L bytes of ids and d target values), 2·L·d FLOPs
// (i8: L·d integer MACs), writes 8·k bytes. At d = 512 that is 4 (f32), 2 (f16) or 1 (i8) FLOP per byte: bound by the
// gather bandwidth on any GPU. A merge is a bitonic sort of m ≤ 2048 keys in shared memory, (m/2)·log₂m·(log₂m + 1)/2
// compare-exchanges (67,584 at m = 2048: 264 per thread of 256); merges are frequent only until the threshold settles (for random
// scores about k·ln(L/k) rows ever enter the queue), so for L ≫ k the selection is a small fraction of the row reads.
// With R = 32 on a GPU the row reads are coalesced (a warp reads 128 B of f32, 64 B of f16, 32 B of i8 per load) and
// each lane keeps four loads in flight; an H100 SM holds 8 such groups (its 2048-thread limit; shared memory would
// allow 9), i.e. 64 warps.
// For short histories (L ≲ G) the sample's group is mostly idle and the launch and the final sort dominate.
// Not yet run on a GPU (checked on ILGPU's CPU emulator only). On the emulator R = 1 (one thread per row, no shuffles)
// is far faster than R = 32, whose shuffles each cost a warp barrier there.
internal partial class IlgpuSubrKernels
{
    /// <summary>Table storage code: f32 (float view).</summary>
    internal const int StorageF32 = 0;

    /// <summary>Table storage code: IEEE f16 bits (ushort view).</summary>
    internal const int StorageF16 = 1;

    /// <summary>Table storage code: i8 with an f32 scale per row (sbyte view + scales).</summary>
    internal const int StorageI8 = 2;

    /// <summary>Keys in the shared selection buffer: the kept set (k ≤ 1024) plus the candidate queue.</summary>
    internal const int SortCapacity = 2048;

    /// <summary>Target-row elements staged in shared memory at a time (a multiple of every lanes-per-row).</summary>
    internal const int TargetCache = 2048;

    /// <summary>The largest group the kernel is launched with (so that the queue always has room for a whole tile).</summary>
    internal const int MaxGroupSize = 256;

    /// <summary>
    /// Order-preserving 64-bit key of (score, position): larger key = higher score, then later position. The upper word
    /// is the score's order code (NaN, possible only when a raw-dot score overflows to inf - inf, ranks below every
    /// number; -0 and +0 share one code, so they tie), the lower word is (position + 1) · 2 plus one bit that remembers a
    /// -0 (it never decides an order: positions differ in the bits above). 0 is never a key; it marks an empty slot.
    /// Positions are below 2^31 - 1, so (position + 1) · 2 + 1 fits in 32 bits.
    /// </summary>
    internal static ulong ScoreKey(float score, int position)
    {
        uint bits = ILGPU.Interop.FloatAsInt(score);
        uint magnitude = bits & 0x7FFFFFFFu;
        uint ordered, negativeZero = 0u;
        if (magnitude > 0x7F800000u) ordered = 0u;
        else if (magnitude == 0u)
        {
            ordered = 0x80000000u;
            negativeZero = bits >> 31;
        }
        else ordered = (bits & 0x80000000u) != 0u ? ~bits : bits | 0x80000000u;
        return ((ulong)ordered << 32) | ((uint)(position + 1) << 1) | negativeZero;
    }

    /// <summary>The position of a <see cref="ScoreKey"/>.</summary>
    internal static int PositionOf(ulong key) => (int)((uint)key >> 1) - 1;

    /// <summary>The score of a <see cref="ScoreKey"/>, bitwise what was keyed (NaN canonical).</summary>
    internal static float ScoreOf(ulong key)
    {
        uint ordered = (uint)(key >> 32);
        return ordered == 0u ? float.NaN
            : ordered >= 0x80000000u ? ILGPU.Interop.IntAsFloat((ordered & 0x7FFFFFFFu) | ((uint)key & 1u) << 31)
            : ILGPU.Interop.IntAsFloat(~ordered);
    }

    /// <summary>The smallest power of two ≥ <paramref name="n"/> (n ≥ 1).</summary>
    private static int CeilPow2(int n)
    {
        int p = 1;
        while (p < n) p <<= 1;
        return p;
    }

    // Bitonic sort of keys[0, m) into descending order (m a power of two ≤ SortCapacity) by the whole group: for each
    // (size, stride) stage, every thread compare-exchanges pairs (lo, lo + stride), i = tid, tid + G, ... < m / 2.
    // log2(m)·(log2(m) + 1)/2 stages, one barrier each (66 for m = 2048). Ends with a barrier.
    private static void SortDescending(ArrayView<ulong> keys, int m, int tid, int groupSize)
    {
        for (int size = 2; size <= m; size <<= 1)
        {
            for (int stride = size >> 1; stride > 0; stride >>= 1)
            {
                for (int i = tid; i < (m >> 1); i += groupSize)
                {
                    int lo = ((i & ~(stride - 1)) << 1) | (i & (stride - 1));
                    int hi = lo + stride;
                    ulong a = keys[lo], c = keys[hi];
                    bool descending = (lo & size) == 0;
                    if (descending ? a < c : a > c)
                    {
                        keys[lo] = c;
                        keys[hi] = a;
                    }
                }
                Group.Barrier();
            }
        }
    }

    // Merges the queue keys[k, k + queued) into the kept set keys[0, k): pads to the next power of two with empty keys,
    // sorts, then publishes the new threshold keys[k - 1] and empties the queue. Called by the whole group; ends with a
    // barrier.
    private static void Merge(ArrayView<ulong> keys, ArrayView<ulong> threshold, ArrayView<int> count, int k, int queued,
        int tid, int groupSize)
    {
        int m = CeilPow2(k + queued);
        for (int i = k + queued + tid; i < m; i += groupSize) keys[i] = 0ul;
        Group.Barrier();
        SortDescending(keys, m, tid, groupSize);
        if (tid == 0)
        {
            threshold[0] = keys[k - 1];
            count[0] = 0;
        }
        Group.Barrier();
    }

    // Stages target elements [c0, c0 + TargetCache) ∩ [0, d) in shared memory: float bits for f32/f16, ints for i8.
    private static void LoadTarget(ArrayView<float> tableF32, ArrayView<ushort> table16, ArrayView<sbyte> tableI8,
        ArrayView<int> target, int code, long targetBase, int c0, int dim, int tid, int groupSize)
    {
        int len = XMath.Min(TargetCache, dim - c0);
        for (int c = tid; c < len; c += groupSize)
        {
            long at = targetBase + c0 + c;
            target[c] = code == StorageF32 ? (int)ILGPU.Interop.FloatAsInt(tableF32[at])
                : code == StorageF16 ? (int)ILGPU.Interop.FloatAsInt(IlgpuCfloraKernels.HalfBitsToFloat(table16[at]))
                : tableI8[at];
        }
    }

    // One lane's share of a row's dot product over columns [c0, c1) of the staged target chunk: columns c0 + lane,
    // c0 + lane + R, ... (R = lanes), four independent accumulators a0..a3 (four loads in flight per lane) over groups
    // of four consecutive strides, the remainder into a0, summed as (a0 + a1) + (a2 + a3). The order depends only on
    // (c0, c1, lane, R): the same for every row.
    private static float DotF32(ArrayView<int> target, ArrayView<float> row, long rowBase, int c0, int c1, int lane, int lanes)
    {
        float a0 = 0f, a1 = 0f, a2 = 0f, a3 = 0f;
        int c = c0 + lane;
        for (; c + 3 * lanes < c1; c += 4 * lanes)
        {
            a0 += ILGPU.Interop.IntAsFloat((uint)target[c - c0]) * row[rowBase + c];
            a1 += ILGPU.Interop.IntAsFloat((uint)target[c + lanes - c0]) * row[rowBase + c + lanes];
            a2 += ILGPU.Interop.IntAsFloat((uint)target[c + 2 * lanes - c0]) * row[rowBase + c + 2 * lanes];
            a3 += ILGPU.Interop.IntAsFloat((uint)target[c + 3 * lanes - c0]) * row[rowBase + c + 3 * lanes];
        }
        for (; c < c1; c += lanes) a0 += ILGPU.Interop.IntAsFloat((uint)target[c - c0]) * row[rowBase + c];
        return (a0 + a1) + (a2 + a3);
    }

    // As DotF32, for f16 rows (widened exactly).
    private static float DotF16(ArrayView<int> target, ArrayView<ushort> row, long rowBase, int c0, int c1, int lane, int lanes)
    {
        float a0 = 0f, a1 = 0f, a2 = 0f, a3 = 0f;
        int c = c0 + lane;
        for (; c + 3 * lanes < c1; c += 4 * lanes)
        {
            a0 += ILGPU.Interop.IntAsFloat((uint)target[c - c0]) * IlgpuCfloraKernels.HalfBitsToFloat(row[rowBase + c]);
            a1 += ILGPU.Interop.IntAsFloat((uint)target[c + lanes - c0]) * IlgpuCfloraKernels.HalfBitsToFloat(row[rowBase + c + lanes]);
            a2 += ILGPU.Interop.IntAsFloat((uint)target[c + 2 * lanes - c0]) * IlgpuCfloraKernels.HalfBitsToFloat(row[rowBase + c + 2 * lanes]);
            a3 += ILGPU.Interop.IntAsFloat((uint)target[c + 3 * lanes - c0]) * IlgpuCfloraKernels.HalfBitsToFloat(row[rowBase + c + 3 * lanes]);
        }
        for (; c < c1; c += lanes) a0 += ILGPU.Interop.IntAsFloat((uint)target[c - c0]) * IlgpuCfloraKernels.HalfBitsToFloat(row[rowBase + c]);
        return (a0 + a1) + (a2 + a3);
    }

    // As DotF32, for i8 rows: exact int32 products and sums (|sum| ≤ 127² · d < 2^31 for d ≤ SubrTable.MaxInt8Dim).
    private static int DotI8(ArrayView<int> target, ArrayView<sbyte> row, long rowBase, int c0, int c1, int lane, int lanes)
    {
        int a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int c = c0 + lane;
        for (; c + 3 * lanes < c1; c += 4 * lanes)
        {
            a0 += target[c - c0] * row[rowBase + c];
            a1 += target[c + lanes - c0] * row[rowBase + c + lanes];
            a2 += target[c + 2 * lanes - c0] * row[rowBase + c + 2 * lanes];
            a3 += target[c + 3 * lanes - c0] * row[rowBase + c + 3 * lanes];
        }
        for (; c < c1; c += lanes) a0 += target[c - c0] * row[rowBase + c];
        return (a0 + a1) + (a2 + a3);
    }

    // The top-K kernel; see the file header. One group per sample (grid-stride), group size G ≤ MaxGroupSize.
    // tableF32 / table16 / tableI8: E [N, d] in the view that matches the storage code (the others are 1-element dummies);
    // scales f32 [N] (i8 only); history i32 [total]; offsets i32 [B + 1]; targets i32 [B];
    // positions i32 [B, k] and scores f32 [B, k], outputs.
    // flags = storage code | byScore << 4 | lanesPerRow << 8 (packed: ILGPU delegates take at most 16 arguments).
    private static void TopKKernel(ArrayView<float> tableF32, ArrayView<ushort> table16, ArrayView<sbyte> tableI8,
        ArrayView<float> scales, ArrayView<int> history, ArrayView<int> offsets, ArrayView<int> targets,
        ArrayView<int> positions, ArrayView<float> scores, int flags, int dim, int k)
    {
        var keys = SharedMemory.Allocate<ulong>(SortCapacity);
        var target = SharedMemory.Allocate<int>(TargetCache);
        var threshold = SharedMemory.Allocate<ulong>(1);
        var count = SharedMemory.Allocate<int>(1);

        int code = flags & 0xF;
        bool byScore = ((flags >> 4) & 1) != 0;
        int lanes = (flags >> 8) & 0xFF;
        int tid = Group.IdxX, groupSize = Group.DimX;
        int teams = groupSize / lanes, team = tid / lanes, lane = tid % lanes;
        int chunks = (dim + TargetCache - 1) / TargetCache;
        int mergeAbove = SortCapacity - k - groupSize; // merge when the next tile could overflow the queue
        int samples = targets.IntLength;

        for (int b = Grid.IdxX; b < samples; b += Grid.DimX)
        {
            int start = offsets[b], length = offsets[b + 1] - start, t = targets[b];
            long targetBase = (long)t * dim;
            float scaleT = code == StorageI8 ? scales[t] : 0f;

            Group.Barrier(); // the previous sample's outputs have been read from keys
            for (int i = tid; i < k; i += groupSize) keys[i] = 0ul;
            if (tid == 0)
            {
                threshold[0] = 0ul;
                count[0] = 0;
            }
            if (chunks == 1) LoadTarget(tableF32, table16, tableI8, target, code, targetBase, 0, dim, tid, groupSize);
            Group.Barrier();

            for (int p0 = 0; p0 < length; p0 += groupSize)
            {
                for (int round = 0; round < lanes; round++)
                {
                    int p = p0 + round * teams + team;
                    bool valid = p < length;
                    int h = valid ? history[start + p] : 0;
                    long rowBase = (long)h * dim;
                    float acc = 0f;
                    int iacc = 0;
                    for (int chunk = 0; chunk < chunks; chunk++)
                    {
                        int c0 = chunk * TargetCache, c1 = XMath.Min(dim, c0 + TargetCache);
                        if (chunks > 1)
                        {
                            Group.Barrier(); // every team is done with the previous chunk
                            LoadTarget(tableF32, table16, tableI8, target, code, targetBase, c0, dim, tid, groupSize);
                            Group.Barrier();
                        }
                        if (!valid) continue;
                        if (code == StorageF32) acc += DotF32(target, tableF32, rowBase, c0, c1, lane, lanes);
                        else if (code == StorageF16) acc += DotF16(target, table16, rowBase, c0, c1, lane, lanes);
                        else iacc += DotI8(target, tableI8, rowBase, c0, c1, lane, lanes);
                    }
                    // xor butterfly over the team's lanes: the same additions, in the same order, for every row
                    if (code == StorageI8)
                    {
                        for (int s = 1; s < lanes; s <<= 1) iacc += Warp.ShuffleXor(iacc, s);
                    }
                    else
                    {
                        for (int s = 1; s < lanes; s <<= 1) acc += Warp.ShuffleXor(acc, s);
                    }
                    if (valid && lane == 0)
                    {
                        float score = code == StorageI8 ? (float)iacc * (scaleT * scales[h]) : acc;
                        ulong key = ScoreKey(score, p);
                        if (key > threshold[0])
                        {
                            int slot = Atomic.Add(ref count[0], 1);
                            keys[k + slot] = key;
                        }
                    }
                }
                Group.Barrier(); // the tile's appends are done
                int queued = count[0];
                Group.Barrier(); // everyone has read the count before the next tile appends
                if (queued > mergeAbove) Merge(keys, threshold, count, k, queued, tid, groupSize);
            }
            // count is stable here: the last tile ended with barriers, and nothing appends until the next sample
            int remaining = count[0];
            if (remaining > 0) Merge(keys, threshold, count, k, remaining, tid, groupSize);

            int n = XMath.Min(length, k);
            if (!byScore && n > 1)
            {
                // re-key the kept rows by position ascending: (MaxValue - p) << 32 | score bits; empty slots are 0
                int m = CeilPow2(n);
                for (int i = tid; i < m; i += groupSize)
                {
                    ulong key = keys[i];
                    keys[i] = i < n
                        ? ((ulong)(uint)(int.MaxValue - PositionOf(key)) << 32) | ILGPU.Interop.FloatAsInt(ScoreOf(key))
                        : 0ul;
                }
                Group.Barrier();
                SortDescending(keys, m, tid, groupSize);
            }
            bool chronological = !byScore && n > 1;
            for (int i = tid; i < k; i += groupSize)
            {
                long o = (long)b * k + i;
                if (i < n)
                {
                    ulong key = keys[i];
                    positions[o] = chronological ? int.MaxValue - (int)(uint)(key >> 32) : PositionOf(key);
                    scores[o] = chronological ? ILGPU.Interop.IntAsFloat((uint)key) : ScoreOf(key);
                }
                else
                {
                    positions[o] = -1;
                    scores[o] = float.NaN;
                }
            }
        }
    }
}
