using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime.Cuda;

namespace Rellax.Kernels.Ilgpu;

// Device code of the ILGPU attention kernels (SPEC §7, contract in IAttentionKernels, ground truth AttentionReference).
//
// Three kernels:
//   MeanKernel      one thread per (b, KV head, channel c): the fp32 key-smoothing mean over the sequence's valid tokens,
//                   accumulated in fp64 in token order, exactly as AttentionReference.KeyMean (bitwise the same value).
//   QuantizeKernel  one thread per (b, head, token) row: optionally subtract the mean, m = max|x| (NaN sticky), then
//                   x̂ = round_half_even(x · (127f / m)) clamped to ±127 when 0 < m < ∞ (else 0), scale = m / 127f ·
//                   multiplier; optionally the int32 key sum Σ x̂. Exactly AttentionReference.QuantizeRow. Rows before the
//                   sequence's padding get zeros (scale 0, sum 0). Writes int8 rows of a [B, H, Capacity, D] buffer
//                   (the backend's scratch for prefill/decode queries and prefill keys, the cache for Append).
//   AttentionKernel a flash-style (online softmax, base 2) pass for one query row per *team* of R lanes (R = 1 or the
//                   warp size). Per tile of R keys: lane j scores key j0 + j (a full-D dot: int8 as packed ints through
//                   Dot4, four bytes per int; or fp32), the tile max is an xor butterfly of log2 R warp shuffles, the
//                   running max, the rescale α = 2^(m_old - m_new) and p_j = 2^(s_j - m_new) follow, each lane keeps a
//                   partial Σp (summed by one butterfly at the end, α is team-uniform), the p's go through shared memory
//                   (one warp barrier) and lane l accumulates channels c ≡ l (mod R) of Σ_j p_j v_j into the output row
//                   itself (o is rescaled by α once per tile), which is finally multiplied by 1 / Σp. int8 values fold
//                   their per-token scale into p. Masked keys are never read: the visible keys of a row are the contiguous
//                   range [padding[b], last], tiles start at padding[b], and only the tile's first n visible keys
//                   touch V, so a NaN value at a hidden position cannot leak. NaN scores make the running max NaN
//                   (MaxPropagatingNaN), so the whole row becomes NaN, as the contract requires.
//
// Dot4 is the int8 dot of four packed signed bytes: on the PTX backend (CudaAsm.IsSupported, folded at kernel compile
// time) and when the host allows it (flag bit 2), one dp4a.s32.s32 instruction (sm_61+); elsewhere (the CPU emulator,
// OpenCL) Dot4Fallback, which sign-extends the bytes and multiply-adds in int32. Both are exact, so they agree bitwise
// (IlgpuAttentionTests checks the fallback on the host against a scalar loop, and the two paths against each other on
// CUDA devices; the emulator can only run the fallback).
//
// Roofline (prefill, B·Hq·T query rows, keys K = T, causal halves the pairs): int8 scores cost D/4 dp4a per (query, key)
// pair and fp32 ones D FMAs; P·V is D FMAs per pair in both; softmax is 2 exp2 per pair per lane. Bytes: without
// shared-memory staging each team streams its visible K rows (D bytes int8, 4·D fp32) and V rows (4·D fp32, D int8 in
// decode) from L2/L1 (the R·D-byte K tile and the V tile are shared by the rows of a group and the heads of a KV head
// through the caches, not explicitly), plus one read-modify-write of the D-float output row per tile. Decode (Tq = 1)
// reads the cache once per query head: (2·D + 8) bytes per key, so it is bound by memory (an H100 streams a 4096-key,
// D = 128 KV head, 1 MiB, in ~0.4 µs at 3 TB/s). Not yet run on a GPU (only ILGPU's CPU emulator): the missing piece for
// GPU speed is staging K/V tiles in shared memory and keeping the output row in registers.
internal sealed partial class IlgpuAttentionKernels
{
    /// <summary>The largest group of the attention kernel (threads), also the size of its shared p buffer.</summary>
    internal const int MaxGroupSize = 256;

    /// <summary>Flag bit of <see cref="AttentionLaunch.Flags"/>: keys (and queries) are int8 packed in ints.</summary>
    internal const int FlagInt8Keys = 1;

    /// <summary>Flag bit: values are int8 [B, Hkv, Capacity, D] with per-token scales (the cache), not fp32 tensors.</summary>
    internal const int FlagInt8Values = 2;

    /// <summary>Flag bit: use dp4a where the PTX backend compiles the kernel.</summary>
    internal const int FlagDp4a = 4;

    /// <summary>Flag bit of <see cref="QuantizeLaunch.Flags"/>: subtract the mean [B, H, D] before quantizing.</summary>
    internal const int FlagSubtractMean = 1;

    /// <summary>Flag bit of <see cref="QuantizeLaunch.Flags"/>: write the int32 row sums.</summary>
    internal const int FlagWriteSums = 2;

    /// <summary>
    /// Geometry of one quantization (or mean) launch. Source rows (b, h, t), t in [0, Tokens), start at
    /// <c>b·SrcBatch + h·SrcHead + t·SrcToken</c> (elements); destination row index is
    /// <c>(b·Heads + h)·Capacity + DstStart + t</c> (times D for the int8 data). Row t is valid when
    /// <c>PositionStart + t ≥ padding[b]</c>.
    /// </summary>
    internal struct QuantizeLaunch
    {
        public int Batch, Heads, Tokens, HeadDim, Capacity, DstStart, PositionStart, Flags;
        public long SrcBatch, SrcHead, SrcToken;
        public float Multiplier;
    }

    /// <summary>
    /// Geometry of one attention launch. Query row (b, h, t), t in [0, QueryTokens), is key position
    /// <c>Keys - QueryTokens + t</c>; q (fp32) and o rows start at <c>b·QBatch + h·QHead + t·QToken</c>; fp32 k/v rows
    /// (b, kvh, j) at <c>b·KvBatch + kvh·KvHead + j·KvToken</c>; int8 query rows are row <c>(b·Hq + h)·QueryTokens + t</c>
    /// of the scratch and int8 key/value rows <c>(b·Hkv + kvh)·Capacity + j</c>. Scale multiplies fp32 dots
    /// (scale · log2 e; int8 query scales already hold it). Lanes per row: 1 or the warp size.
    /// </summary>
    internal struct AttentionLaunch
    {
        public int Batch, QueryHeads, KvHeads, QueryTokens, Keys, HeadDim, Capacity, Causal, Flags, Lanes;
        public long QBatch, QHead, QToken, KvBatch, KvHead, KvToken;
        public float Scale;
    }

    /// <summary>
    /// a·b over four packed signed bytes plus <paramref name="acc"/>, exact in int32: one <c>dp4a.s32.s32</c> on the
    /// PTX backend when <paramref name="useDp4a"/>, else <see cref="Dot4Fallback"/>.
    /// </summary>
    internal static int Dot4(int a, int b, int acc, bool useDp4a)
    {
        if (useDp4a && CudaAsm.IsSupported)
        {
            CudaAsm.Emit("dp4a.s32.s32 %0, %1, %2, %3;", out int result, a, b, acc);
            return result;
        }
        return Dot4Fallback(a, b, acc);
    }

    /// <summary>The plain-int Dot4: each byte sign-extended by shifts (byte 0 is the lowest, as dp4a), multiplied, summed.</summary>
    internal static int Dot4Fallback(int a, int b, int acc) =>
        acc + ((a << 24) >> 24) * ((b << 24) >> 24) + ((a << 16) >> 24) * ((b << 16) >> 24)
            + ((a << 8) >> 24) * ((b << 8) >> 24) + (a >> 24) * (b >> 24);

    /// <summary>max(a, b), NaN if either is NaN (XMath.Max would drop it).</summary>
    private static float MaxPropagatingNaN(float a, float b) =>
        float.IsNaN(a) || float.IsNaN(b) ? float.NaN : XMath.Max(a, b);

    // Mean of the valid key rows of (b, h) per channel: one thread per (b, h, c); fp64 sum in token order, then
    // (float)(sum / count), as AttentionReference.KeyMean. No valid token gives 0. Launch: auto-grouped over B·H·D.
    // Roofline: reads the valid key rows once (4 bytes per element, coalesced across c), one fp64 add per element.
    private static void MeanKernel(Index1D index, ArrayView<float> src, ArrayView<int> padding, ArrayView<float> mean, QuantizeLaunch p)
    {
        int i = index.X;
        int c = i % p.HeadDim, bh = i / p.HeadDim;
        int h = bh % p.Heads, b = bh / p.Heads;
        int firstToken = XMath.Max(0, padding[b] - p.PositionStart);
        long rowBase = b * p.SrcBatch + h * p.SrcHead + c;
        double sum = 0;
        for (int t = firstToken; t < p.Tokens; t++) sum += src[rowBase + t * p.SrcToken];
        int count = p.Tokens - firstToken;
        mean[i] = count > 0 ? (float)(sum / count) : 0f;
    }

    // Quantizes one row per thread (see the file header). Launch: auto-grouped over B·H·Tokens. Roofline: reads the
    // row twice (4·D bytes, the second time from L1), writes D bytes + 4 (+ 4 for sums); ~3·D FLOPs.
    private static void QuantizeKernel(Index1D index, ArrayView<float> src, ArrayView<float> mean, ArrayView<int> padding,
        ArrayView<sbyte> dst, ArrayView<float> scales, ArrayView<int> sums, QuantizeLaunch p)
    {
        int i = index.X;
        int t = i % p.Tokens, bh = i / p.Tokens;
        int h = bh % p.Heads, b = bh / p.Heads;
        int d = p.HeadDim;
        long row = (long)bh * p.Capacity + p.DstStart + t;
        long dstBase = row * d;
        bool writeSums = (p.Flags & FlagWriteSums) != 0;
        if (p.PositionStart + t < padding[b])
        {
            for (int c = 0; c < d; c++) dst[dstBase + c] = 0;
            scales[row] = 0f;
            if (writeSums) sums[row] = 0;
            return;
        }
        long srcBase = b * p.SrcBatch + h * p.SrcHead + t * p.SrcToken;
        bool subtract = (p.Flags & FlagSubtractMean) != 0;
        long meanBase = (long)bh * d;
        float m = 0f;
        for (int c = 0; c < d; c++)
        {
            float x = subtract ? src[srcBase + c] - mean[meanBase + c] : src[srcBase + c];
            m = float.IsNaN(x) || float.IsNaN(m) ? float.NaN : XMath.Max(m, XMath.Abs(x));
        }
        int sum = 0;
        if (m > 0f && m < float.PositiveInfinity)
        {
            float inv = 127f / m;
            for (int c = 0; c < d; c++)
            {
                float x = subtract ? src[srcBase + c] - mean[meanBase + c] : src[srcBase + c];
                float r = XMath.Clamp(XMath.RoundToEven(x * inv), -127f, 127f);
                int qv = (int)r;
                dst[dstBase + c] = (sbyte)qv;
                sum += qv;
            }
        }
        else
        {
            for (int c = 0; c < d; c++) dst[dstBase + c] = 0;
        }
        scales[row] = m / 127f * p.Multiplier;
        if (writeSums) sums[row] = sum;
    }

    // Exact int32 dot of two int8 rows of d4 packed ints.
    private static int DotI8(ArrayView<int> a, long aBase, ArrayView<int> b, long bBase, int d4, bool useDp4a)
    {
        int a0 = 0, a1 = 0;
        int i = 0;
        for (; i + 1 < d4; i += 2)
        {
            a0 = Dot4(a[aBase + i], b[bBase + i], a0, useDp4a);
            a1 = Dot4(a[aBase + i + 1], b[bBase + i + 1], a1, useDp4a);
        }
        if (i < d4) a0 = Dot4(a[aBase + i], b[bBase + i], a0, useDp4a);
        return a0 + a1;
    }

    // fp32 dot of two rows of d floats (any d): four interleaved accumulators, then the d % 4 last channels.
    private static float DotF32(ArrayView<float> a, long aBase, ArrayView<float> b, long bBase, int d)
    {
        float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
        int c = 0;
        for (; c + 4 <= d; c += 4)
        {
            s0 += a[aBase + c] * b[bBase + c];
            s1 += a[aBase + c + 1] * b[bBase + c + 1];
            s2 += a[aBase + c + 2] * b[bBase + c + 2];
            s3 += a[aBase + c + 3] * b[bBase + c + 3];
        }
        for (; c < d; c++) s0 += a[aBase + c] * b[bBase + c];
        return (s0 + s1) + (s2 + s3);
    }

    // The attention kernel; see the file header. One team of p.Lanes lanes per query row, Group.DimX / p.Lanes rows per
    // group (consecutive tokens of one (b, head), which share their keys in the caches). Views that a mode does not use
    // are 1-element dummies: qF (fp32 q, QBatch/QHead/QToken strides), qI/qS (int8 query rows [B·Hq·Tq, D/4] and their
    // scales), kF (fp32 keys) or kI/kS (int8 keys [B·Hkv·Capacity, D/4] and scales), vF (fp32 values) or vI/vS (int8
    // values and scales), o (output, same strides as qF), padding i32 [B].
    private static void AttentionKernel(ArrayView<float> qF, ArrayView<int> qI, ArrayView<float> qS,
        ArrayView<float> kF, ArrayView<int> kI, ArrayView<float> kS,
        ArrayView<float> vF, ArrayView<sbyte> vI, ArrayView<float> vS,
        ArrayView<float> o, ArrayView<int> padding, AttentionLaunch p)
    {
        var shared = SharedMemory.Allocate<float>(MaxGroupSize);
        int lanes = p.Lanes;
        int tid = Group.IdxX;
        int lane = tid % lanes, teamBase = tid - lane;
        long row = (long)Grid.IdxX * (Group.DimX / lanes) + tid / lanes;
        if (row >= (long)p.Batch * p.QueryHeads * p.QueryTokens) return; // team-uniform

        int t = (int)(row % p.QueryTokens);
        long bh = row / p.QueryTokens;
        int h = (int)(bh % p.QueryHeads), b = (int)(bh / p.QueryHeads);
        int kvh = h / (p.QueryHeads / p.KvHeads);
        int d = p.HeadDim, d4 = d / 4;
        long qo = b * p.QBatch + h * p.QHead + t * p.QToken;
        int position = p.Keys - p.QueryTokens + t;
        int first = padding[b];
        int last = p.Causal != 0 ? XMath.Min(position, p.Keys - 1) : p.Keys - 1;
        for (int c = lane; c < d; c += lanes) o[qo + c] = 0f;
        if (position < first) return; // a padding query row: output 0 (team-uniform)

        bool int8Keys = (p.Flags & FlagInt8Keys) != 0, int8Values = (p.Flags & FlagInt8Values) != 0;
        bool useDp4a = (p.Flags & FlagDp4a) != 0;
        float qScale = int8Keys ? qS[row] : p.Scale;
        long qRow = row * d4;
        long kvRow = ((long)b * p.KvHeads + kvh) * p.Capacity; // int8 rows
        long kvF = b * p.KvBatch + kvh * p.KvHead;             // fp32 rows

        float runMax = float.NegativeInfinity, partSum = 0f;
        for (int j0 = first; j0 <= last; j0 += lanes)
        {
            int n = XMath.Min(lanes, last - j0 + 1); // visible keys in this tile: j0 .. j0 + n - 1
            int j = j0 + lane;
            float s = float.NegativeInfinity;
            if (lane < n)
            {
                if (int8Keys)
                {
                    int dot = DotI8(qI, qRow, kI, (kvRow + j) * d4, d4, useDp4a);
                    s = (float)dot * qScale * kS[kvRow + j];
                }
                else s = DotF32(qF, qo, kF, kvF + j * p.KvToken, d) * qScale;
            }
            float tileMax = s;
            for (int step = 1; step < lanes; step <<= 1) tileMax = MaxPropagatingNaN(tileMax, Warp.ShuffleXor(tileMax, step));
            float newMax = MaxPropagatingNaN(runMax, tileMax);
            float alpha = runMax == float.NegativeInfinity ? 0f : XMath.Exp2(runMax - newMax);
            float pj = lane < n ? XMath.Exp2(s - newMax) : 0f;
            partSum = partSum * alpha + pj;
            runMax = newMax;
            if (int8Values && lane < n) pj *= vS[kvRow + j];
            shared[tid] = pj;
            if (lanes > 1) Warp.Barrier(); // publish the tile's p (the next tile's shuffles order the reuse)
            for (int c = lane; c < d; c += lanes)
            {
                float acc = o[qo + c] * alpha;
                if (int8Values)
                {
                    for (int jj = 0; jj < n; jj++) acc += shared[teamBase + jj] * vI[(kvRow + j0 + jj) * d + c];
                }
                else
                {
                    for (int jj = 0; jj < n; jj++) acc += shared[teamBase + jj] * vF[kvF + (j0 + jj) * p.KvToken + c];
                }
                o[qo + c] = acc;
            }
        }
        for (int step = 1; step < lanes; step <<= 1) partSum += Warp.ShuffleXor(partSum, step);
        float inv = 1f / partSum;
        for (int c = lane; c < d; c += lanes) o[qo + c] *= inv;
    }
}
