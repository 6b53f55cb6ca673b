using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// Flash-style attention on the CPU backend (contract: <see cref="IAttentionKernels"/>, ground truth
/// <see cref="AttentionReference"/>): int8 (SageAttention-style, SPEC §7) or fp32 scores, online softmax in fp32 with
/// exp2, P·V in fp32; one tile engine shared by prefill (both precisions) and decode against the int8 KV cache.
/// <para>
/// <b>Work items.</b> One item is (sequence b, KV head, block of query tokens); its rows are the <c>group</c> query
/// heads of that KV head for each token of the block, token-major (row r = token·group + g), at most
/// <see cref="Block"/> rows (a single token when group &gt; 64), so every K/V block is read once for all the heads that
/// share it (GQA); when there are fewer such items than threads (decoding with few KV heads), the group's query heads
/// are split over up to threads / items items. Query and key blocks both start at the sequence's first real token (its left padding), so padding
/// keys are never read, and each row's visible keys are a prefix <c>[first, hi_r)</c> of the key range with hi_r
/// non-decreasing in r (causal: hi = position + 1). Only the key blocks below the item's largest hi are visited. Items
/// are ordered head by head ((b, KV head): its K/V, up to 2·T·D·4 bytes, stay in L2/L3 while its items run; ordering
/// all items by cost alone made fp32 at Hkv = 32, T ≥ 2048 up to 1.8x slower by streaming every head's K/V from DRAM),
/// within a head by cost (rows × visible keys, largest first), and handed out from a shared counter, one worker per
/// backend thread (dynamic scheduling: causal items differ up to T/64 times in cost); every row is computed by exactly
/// one item in a fixed order, so the output does not depend on the thread count (bitwise).
/// </para>
/// <para>
/// <b>Per key block</b> (Nk = 64 keys): (1) scores S = Q·Kᵀ for the tile, 4 rows × 32 keys per register tile: int8 with
/// AVX-VNNI (<c>vpdpbusd</c> ymm: q as u8 = x̂ + 128 broadcast 4 channels at a time, keys packed [D/4][64][4] s8 so
/// one instruction does 8 keys × 4 channels, then the exact correction <c>- 128·Σ_c k̂_c</c>), or AVX-512BW
/// (<c>vpmovsxbw</c> + <c>vpmaddwd</c> zmm on signed q̂ pairs, measured ~7% slower), or scalar loops; all give the
/// same int32 dots, so the output is bitwise the same whichever runs; logit =
/// <c>((float)dot · s_q) · s_k</c>; or fp32 FMA on keys packed [D][64] (4 rows × 64 keys, 16 zmm accumulators), times
/// scale·log2 e. (2) Online softmax per row over its visible keys only (masked keys are never touched, so NaN or ∞ in a
/// masked key's value cannot leak through 0·NaN): running max m, sum l, α = exp2(m_old − m_new) rescaling the row's
/// output accumulator, p = exp2(s − m) with a degree-6 polynomial (relative error ≈ 2e-7). (3) O += P·V: 4 rows × 64
/// channels of zmm accumulators (16 FMAs per 4 V loads + 4 broadcasts), V rows read in place with the layout's token
/// stride (prefill) or dequantized once per block into fp32 with the per-token scale (decode); the keys only some of
/// the 4 rows see (the diagonal) go through a 1-row kernel. At the end o = O / l.
/// </para>
/// <para>
/// <b>Prep.</b> Int8 prefill: K smoothed (mean over each sequence's valid tokens per (b, KV head), fp64 sum, fp32
/// mean), quantized per token (<see cref="AttentionReference.QuantizeRow"/>: vectorized max, round-half-even, clamp)
/// and packed per block with key sums; Q quantized per token with multiplier scale·log2 e. Fp32 prefill: K transposed
/// per block. Decode: Q quantized; tiles of at least <see cref="RepackRows"/> rows (Tq &gt; 1 chunks) repack each cache
/// key block into the [D/4][64][4] layout (a 4-byte transpose, D·64 bytes, amortized over the rows) for the
/// register-tiled kernel; smaller tiles (Tq = 1: the group's heads) take row-major <c>vpdpbusd</c> dot products
/// straight from the cache (one horizontal sum per key and row); values are dequantized once per block into fp32
/// with their per-token scale. Scratch O(B·H·T·D) bytes per call, per-thread tiles allocated once per call per worker.
/// </para>
/// <para>
/// <b>Roofline</b> (B = 1, Hq = 32, D = 128, T = 4096, causal): Q·Kᵀ ≈ T²/2·D·Hq = 34 G MACs, P·V the same in fp32,
/// exp2 T²/2·Hq = 268 M. On 2 Zen 5 cores (2 × 512-bit FMA, 32 fp32 MAC/cycle/core ≈ 250 GFLOP/s/core at ~4 GHz)
/// P·V alone is ≈ 0.13 s at peak and fp32 Q·Kᵀ the same; ymm <c>vpdpbusd</c> does 32 int8 MACs per instruction
/// against 16 for a zmm FMA, so int8 Q·Kᵀ can be at most ~2x the fp32 one (.NET 10 exposes no 512-bit VNNI).
/// Measured (Hkv = 8, T = 4096, 2 threads, quiet machine, by switching phases off): fp32 0.40 s = 340 GFLOP/s =
/// ~68% of the 2-core peak, of which P·V 0.16 s (~82% of peak), fp32 Q·Kᵀ 0.175 s (~77%), softmax 0.06 s; int8
/// 0.32 s: Q·Kᵀ 0.086 s (2.0x the fp32 one, the instruction-rate bound above), the same P·V and softmax, prep
/// (quantizing Q and K) 0.01 s. Hence int8/fp32 ≈ 1.2-1.25x: P·V and the softmax, shared by both, are ~70% of the
/// int8 time. Decode (Tq = 1) is memory-bound: 2·D bytes per key per KV head (+ 12 bytes of scales and sums).
/// </para>
/// </summary>
internal sealed unsafe partial class CpuAttention(CpuBackend backend) : IAttentionKernels
{
    private readonly CpuBackend _backend = backend;

    /// <summary>Keys per key block (Nk) and the most rows of a tile (Mq = tokens × group).</summary>
    internal const int Block = 64;

    /// <summary>How int8 dot products are computed; every strategy gives the same exact int32.</summary>
    internal enum DotStrategy
    {
        /// <summary>Plain C# loops (any CPU; the check for the SIMD strategies).</summary>
        Scalar,

        /// <summary>AVX-VNNI <c>vpdpbusd</c> on ymm registers (u8 × s8 → s32, 32 MACs per instruction).</summary>
        AvxVnni,

        /// <summary>
        /// AVX-512BW: keys sign-extended to s16 (<c>vpmovsxbw</c>, shared by the tile's rows), signed q̂ pairs, <c>vpmaddwd</c>
        /// zmm (32 MACs per instruction, like ymm <c>vpdpbusd</c>, plus an add and the extension), pairs summed at the end.
        /// </summary>
        Avx512BW,
    }

    // The int8 dot strategy is the backend's (CpuBackend.AttentionDots, from CpuBackendOptions.InstructionSet; default:
    // AVX-VNNI when the CPU has it, else AVX-512BW, else scalar). Measured (Zen 5, Hkv = 8, T = 2048, int8 prefill):
    // AVX-VNNI 86–89 ms, AVX-512BW 93–95 ms (more instructions for the same 32 MACs), hence VNNI first.

    // ------------------------------------------------------------------------------------------------------------
    // Call description

    /// <summary>Everything one call's workers read (host pointers; shapes in the field comments).</summary>
    private sealed class Job
    {
        public int D, Group, QueryHeads, KvHeads, Batch, QueryTokens;
        public bool Int8, Causal, Decode;
        public DotStrategy Dots;                 // the backend's int8 dot strategy
        public float LogitScale;                 // fp32: scale·log2 e (int8: folded into q's scale)
        public int[] First = [];                 // per b: first visible key (left padding)
        public int KeyEnd;                       // keys per sequence: T (prefill) or cache Count (decode)
        public int QueryOffset;                  // query t is key position t + QueryOffset (decode: Count - Tq)
        public AttentionShape Shape;
        public float* Q, K, V, O;                // tensors (prefill K, V; decode K, V come from the cache)
        public bool RowMajorKeys;                // fp32 prefill with small tiles (Tq·group < RepackRows): K read in place, not packed
        public float* Lse;                       // fp32 prefill for training: [B, Hq, T] natural log-sum-exp, or null
        public byte* QHat; public float* QScale; // int8: u8 q̂ + 128 [B, Hq, Tq, D], scales [B, Hq, Tq]
        public sbyte* KPack; public float* KScale; public int* KSum; // prefill int8: per (b, kvh) [Blocks][D/4][64][4], [Blocks·64]
        public float* KPackF;                    // prefill fp32: per (b, kvh) [Blocks][D][64]
        public int Blocks;                       // key blocks per (b, kvh) in the packs
        public sbyte* CacheK, CacheV; public float* CacheKScale, CacheVScale; public int* CacheKSum; public int Capacity;
        public Item[] Items = [];
    }

    /// <summary>
    /// One work item: sequence, KV head, first query token and token count, and the query heads of the KV head's group
    /// it takes (<see cref="Head0"/>, <see cref="Heads"/>: the whole group unless there are fewer items than threads).
    /// </summary>
    private readonly record struct Item(int B, int KvHead, int T0, int Tokens, long Cost, int Head0, int Heads);

    // ------------------------------------------------------------------------------------------------------------
    // Entry points

    public void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, AttentionShape shape, int[] lengths, float scale, bool causal,
        AttentionPrecision precision, bool smoothKeys) =>
        Prefill(q, k, v, o, null, shape, lengths, scale, causal, precision, smoothKeys);

    public void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape, int[] lengths, float scale, bool causal) =>
        Prefill(q, k, v, o, CpuBackend.Ptr<float>(lse), shape, lengths, scale, causal, AttentionPrecision.Fp32, smoothKeys: false);

    private void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, float* lse, AttentionShape shape, int[] lengths, float scale, bool causal,
        AttentionPrecision precision, bool smoothKeys)
    {
        int d = shape.HeadDim, tq = shape.Tokens, tk = shape.KeyTokens;
        var job = new Job
        {
            D = d, Group = shape.Group, QueryHeads = shape.QueryHeads, KvHeads = shape.KvHeads, Batch = shape.Batch, QueryTokens = tq,
            Int8 = precision == AttentionPrecision.Int8, Dots = _backend.AttentionDots, Causal = causal, LogitScale = scale * AttentionReference.Log2E,
            KeyEnd = tk, QueryOffset = shape.QueryStart, Shape = shape,
            Q = CpuBackend.Ptr<float>(q), K = CpuBackend.Ptr<float>(k), V = CpuBackend.Ptr<float>(v), O = CpuBackend.Ptr<float>(o), Lse = lse,
            Blocks = (tk + Block - 1) / Block,
        };
        // Queries that are the last few of many keys (decoding: Tq = 1, tiles of the group's heads, fewer than RepackRows
        // rows) score keys straight from k: packing would cost a read and a write of all of K for one pass over it.
        // Tq = Tk always packs (the prefill path as it was).
        job.RowMajorKeys = !job.Int8 && tq < tk && Math.Min(tq, Math.Max(1, Block / shape.Group)) * shape.Group < RepackRows;
        job.First = new int[shape.Batch];
        for (int b = 0; b < shape.Batch; b++) job.First[b] = tk - lengths[b];
        float* kp = job.K;
        long kvRows = (long)shape.Batch * shape.KvHeads;
        long packElems = kvRows * job.Blocks * Block * d;
        using (var buffers = new Buffers(this))
        {
            if (job.Int8)
            {
                job.QHat = (byte*)buffers.Get(0, (long)shape.Batch * shape.QueryHeads * tq * d);
                job.QScale = (float*)buffers.Get(1, (long)shape.Batch * shape.QueryHeads * tq * 4);
                job.KPack = (sbyte*)buffers.Get(2, packElems);
                job.KScale = (float*)buffers.Get(3, kvRows * job.Blocks * Block * 4);
                job.KSum = (int*)buffers.Get(4, kvRows * job.Blocks * Block * 4);
                PrepareInt8(job, kp, smoothKeys);
            }
            else if (!job.RowMajorKeys)
            {
                job.KPackF = (float*)buffers.Get(2, packElems * 4);
                PrepareFp32(job, kp);
            }
            job.Items = MakeItems(job, _backend.Threads);
            Run(job);
            ZeroPaddingRows(job);
        }
    }

    public void Append(Int8KvCache cache, Tensor k, Tensor v, AttentionShape shape, int start)
    {
        int d = shape.HeadDim, hkv = shape.KvHeads, cap = cache.Capacity;
        float* kp = CpuBackend.Ptr<float>(k), vp = CpuBackend.Ptr<float>(v);
        sbyte* keys = CpuBuffer(cache.Keys), values = CpuBuffer(cache.Values);
        float* kScales = (float*)CpuBuffer(cache.KeyScales), vScales = (float*)CpuBuffer(cache.ValueScales);
        int* kSums = (int*)CpuBuffer(cache.KeySums);
        float* mean = (float*)CpuBuffer(cache.KeyMean);
        var padding = cache.PaddingArray;
        ParallelFor(shape.Batch * hkv, (long)shape.Tokens * d, pair =>
        {
            int b = pair / hkv, h = pair % hkv;
            float* m = mean + (long)pair * d;
            if (start == 0) KeyMean(kp, shape, b, h, padding[b], shape.Tokens, m);
            float* row = stackalloc float[d];
            for (int tt = 0; tt < shape.Tokens; tt++)
            {
                int j = start + tt;
                long r = (long)pair * cap + j;
                sbyte* kh = keys + r * d, vh = values + r * d;
                if (j < padding[b])
                {
                    new Span<sbyte>(kh, d).Clear(); new Span<sbyte>(vh, d).Clear();
                    kScales[r] = 0; kSums[r] = 0; vScales[r] = 0;
                    continue;
                }
                long src = shape.KeyOffset(b, h, tt);
                Subtract(kp + src, m, row, d);
                kScales[r] = QuantizeRow(row, kh, d, 1f);
                kSums[r] = SumBytes(kh, d);
                vScales[r] = QuantizeRow(vp + src, vh, d, 1f);
            }
        });
    }

    public void Decode(Tensor q, Int8KvCache cache, Tensor o, AttentionShape shape, float scale, bool causal)
    {
        int d = shape.HeadDim, tq = shape.Tokens;
        var job = new Job
        {
            D = d, Group = shape.Group, QueryHeads = shape.QueryHeads, KvHeads = shape.KvHeads, Batch = shape.Batch, QueryTokens = tq,
            Int8 = true, Dots = _backend.AttentionDots, Decode = true, Causal = causal, LogitScale = scale * AttentionReference.Log2E, KeyEnd = cache.Count, QueryOffset = cache.Count - tq, Shape = shape,
            Q = CpuBackend.Ptr<float>(q), O = CpuBackend.Ptr<float>(o),
            First = (int[])cache.PaddingArray.Clone(),
            CacheK = CpuBuffer(cache.Keys), CacheV = CpuBuffer(cache.Values),
            CacheKScale = (float*)CpuBuffer(cache.KeyScales), CacheVScale = (float*)CpuBuffer(cache.ValueScales),
            CacheKSum = (int*)CpuBuffer(cache.KeySums), Capacity = cache.Capacity,
        };
        using var buffers = new Buffers(this);
        job.QHat = (byte*)buffers.Get(0, (long)shape.Batch * shape.QueryHeads * tq * d);
        job.QScale = (float*)buffers.Get(1, (long)shape.Batch * shape.QueryHeads * tq * 4);
        QuantizeQueries(job);
        job.Items = MakeItems(job, _backend.Threads);
        Run(job);
        ZeroPaddingRows(job);
    }

    private static sbyte* CpuBuffer(DeviceBuffer buffer) => (sbyte*)((CpuBuffer)buffer).Pointer;

    // Per-call scratch (quantized or packed Q/K, O(B·H·T·D) bytes) is kept between calls in grow-only pinned arrays,
    // one per slot: fresh memory for every call cost a page fault per 4 KiB (measured: fp32 at Hkv = 32, T = 4096 spent
    // ~25% of its time faulting in its 64 MiB of packed keys). A call that finds the pool in use allocates its own.
    private readonly byte[]?[] _pool = new byte[]?[5];
    private int _poolBusy;

    /// <summary>The scratch buffers of one call: pooled when the pool is free, else native and freed on dispose.</summary>
    private sealed class Buffers : IDisposable
    {
        private readonly CpuAttention _owner;
        private readonly bool _pooled;
        private readonly List<nint> _native = [];

        public Buffers(CpuAttention owner)
        {
            _owner = owner;
            _pooled = Interlocked.Exchange(ref owner._poolBusy, 1) == 0;
        }

        /// <summary>A 64-byte aligned buffer of at least <paramref name="bytes"/> bytes (contents undefined).</summary>
        public void* Get(int slot, long bytes)
        {
            bytes = Math.Max(bytes, 64) + 64;
            if (_pooled && bytes <= Array.MaxLength)
            {
                var array = _owner._pool[slot];
                if (array is null || array.LongLength < bytes)
                    _owner._pool[slot] = array = GC.AllocateUninitializedArray<byte>((int)bytes, pinned: true);
                nint p = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
                return (void*)((p + 63) & ~(nint)63);
            }
            void* native = NativeMemory.AlignedAlloc((nuint)bytes, 64);
            _native.Add((nint)native);
            return native;
        }

        public void Dispose()
        {
            foreach (var p in _native) NativeMemory.AlignedFree((void*)p);
            if (_pooled) Volatile.Write(ref _owner._poolBusy, 0);
        }
    }

    /// <summary>Runs body(i) for i in [0, n), dynamically over the backend's threads when the work is large enough.</summary>
    private void ParallelFor(int n, long costPerItem, Action<int> body)
    {
        int threads = Math.Min(_backend.Threads, n);
        if (threads <= 1 || (long)n * costPerItem < (1 << 15))
        {
            for (int i = 0; i < n; i++) body(i);
            return;
        }
        int next = -1;
        Parallel.For(0, threads, _backend.ParallelOptions, _ =>
        {
            for (int i; (i = Interlocked.Increment(ref next)) < n;) body(i);
        });
    }

    // ------------------------------------------------------------------------------------------------------------
    // Prep

    private void PrepareInt8(Job job, float* k, bool smoothKeys)
    {
        QuantizeQueries(job);
        var s = job.Shape;
        int d = job.D, hkv = job.KvHeads, blocks = job.Blocks;
        ParallelFor(job.Batch * hkv, (long)s.KeyTokens * d, pair =>
        {
            int b = pair / hkv, h = pair % hkv, first = job.First[b];
            float* mean = stackalloc float[d];
            float* row = stackalloc float[d];
            sbyte* hat = stackalloc sbyte[d];
            if (smoothKeys) KeyMean(k, s, b, h, first, s.KeyTokens, mean);
            else new Span<float>(mean, d).Clear();
            long rowBase = (long)pair * blocks * Block;
            sbyte* pack = job.KPack + rowBase * d;
            int used = (s.KeyTokens - first + Block - 1) / Block; // blocks this sequence fills; only they are read
            new Span<sbyte>(pack, used * Block * d).Clear();
            new Span<float>(job.KScale + rowBase, used * Block).Clear();
            new Span<int>(job.KSum + rowBase, used * Block).Clear();
            for (int j = first; j < s.KeyTokens; j++)
            {
                int local = j - first, blk = local / Block, jj = local % Block;
                Subtract(k + s.KeyOffset(b, h, j), mean, row, d);
                job.KScale[rowBase + local] = QuantizeRow(row, hat, d, 1f);
                job.KSum[rowBase + local] = SumBytes(hat, d);
                int* dst = (int*)(pack + (long)blk * Block * d) + jj;
                for (int c4 = 0; c4 < d / 4; c4++) dst[c4 * Block] = ((int*)hat)[c4];
            }
        });
    }

    private void PrepareFp32(Job job, float* k)
    {
        var s = job.Shape;
        int d = job.D, hkv = job.KvHeads, blocks = job.Blocks;
        ParallelFor(job.Batch * hkv, (long)s.KeyTokens * d, pair =>
        {
            int b = pair / hkv, h = pair % hkv, first = job.First[b];
            float* pack = job.KPackF + (long)pair * blocks * Block * d;
            int used = (s.KeyTokens - first + Block - 1) / Block; // blocks this sequence fills; only they are read
            new Span<float>(pack, used * Block * d).Clear();
            for (int j = first; j < s.KeyTokens; j++)
            {
                int local = j - first;
                float* src = k + s.KeyOffset(b, h, j);
                float* dst = pack + (long)(local / Block) * Block * d + local % Block;
                for (int c = 0; c < d; c++) dst[c * Block] = src[c];
            }
        });
    }

    /// <summary>Quantizes every query row (b, h, t) into <see cref="Job.QHat"/> (u8 = x̂ + 128) with multiplier scale·log2 e.</summary>
    private void QuantizeQueries(Job job)
    {
        var s = job.Shape;
        int d = job.D, hq = job.QueryHeads, tq = job.QueryTokens;
        float multiplier = job.LogitScale;
        ParallelFor(job.Batch * hq, (long)tq * d, pair =>
        {
            int b = pair / hq, h = pair % hq;
            for (int t = 0; t < tq; t++)
            {
                long r = (long)pair * tq + t;
                byte* dst = job.QHat + r * d;
                job.QScale[r] = QuantizeRow(job.Q + s.QueryOffset(b, h, t), (sbyte*)dst, d, multiplier, 0x80);
            }
        });
    }

    /// <summary>
    /// <see cref="AttentionReference.QuantizeRow"/> exactly: m = max|x| (NaN if any x is NaN); when 0 &lt; m &lt; ∞,
    /// x̂ = round_half_even(x · (127f / m)) clamped to ±127, else 0; returns m / 127f · multiplier.
    /// </summary>
    internal static float QuantizeRow(float* x, sbyte* hat, int d, float multiplier) => QuantizeRow(x, hat, d, multiplier, 0);

    /// <summary><see cref="QuantizeRow(float*, sbyte*, int, float)"/> with every byte xor-ed with <paramref name="flip"/>
    /// (0x80: stores x̂ + 128 as u8, for the u8 × s8 dot products).</summary>
    internal static float QuantizeRow(float* x, sbyte* hat, int d, float multiplier, byte flip)
    {
        long flip8 = flip * 0x0101010101010101L;
        int c = 0;
        var vmax = Vector256<float>.Zero;
        var nan = Vector256<float>.Zero;
        for (; c + 8 <= d; c += 8)
        {
            var v = Vector256.Load(x + c);
            vmax = Vector256.Max(vmax, Vector256.Abs(v));
            nan |= ~Vector256.Equals(v, v);
        }
        float m = MaxLanes(vmax);
        bool isNaN = nan != Vector256<float>.Zero;
        for (; c < d; c++)
        {
            if (float.IsNaN(x[c])) isNaN = true;
            else m = MathF.Max(m, MathF.Abs(x[c]));
        }
        if (isNaN) m = float.NaN;
        if (m > 0 && float.IsFinite(m))
        {
            float inv = 127f / m;
            var vinv = Vector256.Create(inv);
            var lo = Vector256.Create(-127f);
            var hi = Vector256.Create(127f);
            c = 0;
            for (; c + 8 <= d; c += 8)
            {
                var y = Vector256.Min(Vector256.Max(Vector256.Round(Vector256.Load(x + c) * vinv), lo), hi);
                var n = Vector256.ConvertToInt32(y);
                var s16 = Vector256.Narrow(n, n);
                var s8 = Vector256.Narrow(s16, s16);
                *(long*)(hat + c) = s8.AsInt64().ToScalar() ^ flip8;
            }
            for (; c < d; c++) hat[c] = (sbyte)((sbyte)Math.Clamp(MathF.Round(x[c] * inv, MidpointRounding.ToEven), -127f, 127f) ^ (sbyte)flip);
        }
        else new Span<sbyte>(hat, d).Fill((sbyte)flip);
        return m / 127f * multiplier;
    }

    private static int SumBytes(sbyte* x, int d)
    {
        int sum = 0;
        for (int c = 0; c < d; c++) sum += x[c];
        return sum;
    }

    private static void Subtract(float* x, float* mean, float* y, int d)
    {
        int c = 0;
        for (; c + 8 <= d; c += 8) (Vector256.Load(x + c) - Vector256.Load(mean + c)).Store(y + c);
        for (; c < d; c++) y[c] = x[c] - mean[c];
    }

    /// <summary>The fp32 mean (fp64 sum) of key rows [first, end) of (b, head), into mean[0..d).</summary>
    private static void KeyMean(float* k, AttentionShape s, int b, int head, int first, int end, float* mean)
    {
        int d = s.HeadDim;
        double* sum = stackalloc double[d];
        new Span<double>(sum, d).Clear();
        for (int j = first; j < end; j++)
        {
            float* row = k + s.KeyOffset(b, head, j);
            int c = 0;
            for (; c + 8 <= d; c += 8)
            {
                var v = Vector256.Load(row + c);
                (Vector256.Load(sum + c) + Vector256.WidenLower(v)).Store(sum + c);
                (Vector256.Load(sum + c + 4) + Vector256.WidenUpper(v)).Store(sum + c + 4);
            }
            for (; c < d; c++) sum[c] += row[c];
        }
        for (int c = 0; c < d; c++) mean[c] = end > first ? (float)(sum[c] / (end - first)) : 0f;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Scheduling

    /// <summary>
    /// The work items of a call. When there are fewer (sequence, KV head, token block) items than
    /// <paramref name="threads"/> (decoding with few KV heads: MQA has one), each item's query heads are split into up to
    /// threads / items parts, so every thread gets rows; each row is still computed by exactly one item with the same
    /// arithmetic (rows never interact), so the output stays bitwise independent of the thread count.
    /// </summary>
    private static Item[] MakeItems(Job job, int threads)
    {
        int group = job.Group, tokensPerItem = Math.Max(1, Block / group);
        var items = new List<Item>();
        for (int b = 0; b < job.Batch; b++)
        {
            // Queries whose position is inside the padding output 0 and are not items.
            int firstQuery = Math.Max(0, job.First[b] - job.QueryOffset);
            for (int h = 0; h < job.KvHeads; h++)
                for (int t0 = firstQuery; t0 < job.QueryTokens; t0 += tokensPerItem)
                {
                    int n = Math.Min(tokensPerItem, job.QueryTokens - t0);
                    int hi = job.Causal ? t0 + n + job.QueryOffset : job.KeyEnd;
                    long keys = Math.Max(1, hi - job.First[b]);
                    items.Add(new Item(b, h, t0, n, keys * n * group, 0, group));
                }
        }
        // Head by head (its K/V stay in the caches while its items run), the costliest (causal: last) query blocks of
        // each head first, so the cheap ones fill the end of the run and the threads finish together.
        items.Sort((a, c) => a.B != c.B ? a.B.CompareTo(c.B) : a.KvHead != c.KvHead ? a.KvHead.CompareTo(c.KvHead) : c.Cost.CompareTo(a.Cost));
        int parts = items.Count == 0 ? 1 : Math.Min(group, (threads + items.Count - 1) / items.Count);
        if (parts <= 1) return items.ToArray();
        var split = new List<Item>(items.Count * parts);
        foreach (var it in items)
            for (int p = 0; p < parts; p++)
            {
                int g0 = group * p / parts, g1 = group * (p + 1) / parts;
                split.Add(it with { Head0 = g0, Heads = g1 - g0, Cost = it.Cost / group * (g1 - g0) });
            }
        return split.ToArray();
    }

    private void Run(Job job)
    {
        var items = job.Items;
        long total = 0;
        foreach (var it in items) total += it.Cost;
        int threads = Math.Min(_backend.Threads, items.Length);
        if (threads <= 1 || total * job.D < (1 << 18))
        {
            using var scratch = new Scratch(job);
            foreach (var it in items) RunItem(job, it, scratch);
            return;
        }
        int next = -1;
        Parallel.For(0, threads, _backend.ParallelOptions, _ =>
        {
            using var scratch = new Scratch(job);
            for (int i; (i = Interlocked.Increment(ref next)) < items.Length;) RunItem(job, items[i], scratch);
        });
    }

    private void ZeroPaddingRows(Job job)
    {
        var s = job.Shape;
        for (int b = 0; b < job.Batch; b++)
        {
            int zeroUntil = Math.Min(job.QueryTokens, Math.Max(0, job.First[b] - job.QueryOffset));
            for (int h = 0; h < job.QueryHeads; h++)
                for (int t = 0; t < zeroUntil; t++)
                {
                    new Span<float>(job.O + s.QueryOffset(b, h, t), job.D).Clear();
                    if (job.Lse != null) job.Lse[((long)b * job.QueryHeads + h) * job.QueryTokens + t] = float.NegativeInfinity;
                }
        }
    }

    /// <summary>One worker's tiles (64-byte aligned native memory).</summary>
    private sealed class Scratch : IDisposable
    {
        public readonly int RowCapacity;
        public readonly float* S;        // [rows][Block] scores, then probabilities
        public readonly float* O;        // [rows][D] output accumulators
        public readonly float* M, L;     // [rows] running max and sum
        public readonly int* Hi;         // [rows] visible keys (exclusive end, absolute position)
        public readonly sbyte* KBlock;   // decode: [D/4][Block][4] repacked keys
        public readonly float* VBlock;   // decode: [Block][D] dequantized values
        public readonly void** QRows;    // [rows] q row pointers (u8 or f32)
        public readonly float* QScales;  // [rows]
        public readonly short* Q16;      // [rows][D]: signed q̂ as s16 (AVX-512BW dots)
        public readonly float** ORows;   // [rows] output row pointers
        public readonly bool UseVnni;    // the job's strategy is AVX-VNNI (and the CPU has it)
        public readonly bool UseAvx512BW; // the job's strategy is AVX-512BW (and the CPU has it)
        private readonly void* _memory;

        public Scratch(Job job)
        {
            UseVnni = job.Dots == DotStrategy.AvxVnni && AvxVnni.IsSupported;
            UseAvx512BW = job.Dots == DotStrategy.Avx512BW && Avx512BW.IsSupported;
            RowCapacity = Math.Max(1, Block / job.Group) * job.Group;
            int d = job.D, r = RowCapacity;
            long bytes = (long)r * Block * 4 + (long)r * d * 4 + r * 4 * 3 + (long)Block * d + (long)Block * d * 4 + r * 8 * 2 + r * 4 + 64 * 8 + (long)r * d * 2 + 64;
            byte* p = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            _memory = p;
            S = (float*)p; p += (long)r * Block * 4;
            O = (float*)p; p += (long)r * d * 4;
            VBlock = (float*)p; p += (long)Block * d * 4;
            KBlock = (sbyte*)p; p += (long)Block * d;
            p = (byte*)(((nint)p + 63) & ~63);
            QRows = (void**)p; p += r * 8;
            ORows = (float**)p; p += r * 8;
            M = (float*)p; p += r * 4;
            L = (float*)p; p += r * 4;
            Hi = (int*)p; p += r * 4;
            QScales = (float*)p; p += r * 4;
            p = (byte*)(((nint)p + 63) & ~63);
            Q16 = (short*)p;
        }

        public void Dispose() => NativeMemory.AlignedFree(_memory);
    }

    // ------------------------------------------------------------------------------------------------------------
    // The tile engine

    private static void RunItem(Job job, Item item, Scratch sc)
    {
        var s = job.Shape;
        int d = job.D, group = job.Group, heads = item.Heads, rows = item.Tokens * heads, b = item.B, first = job.First[b];
        for (int r = 0; r < rows; r++)
        {
            int t = item.T0 + r / heads, h = item.KvHead * group + item.Head0 + r % heads;
            long qRow = ((long)b * job.QueryHeads + h) * job.QueryTokens + t;
            if (job.Int8)
            {
                sc.QRows[r] = job.QHat + qRow * d;
                sc.QScales[r] = job.QScale[qRow];
            }
            else sc.QRows[r] = job.Q + s.QueryOffset(b, h, t);
            sc.ORows[r] = job.O + s.QueryOffset(b, h, t);
            sc.Hi[r] = job.Causal ? t + job.QueryOffset + 1 : job.KeyEnd;
            sc.M[r] = float.NegativeInfinity;
            sc.L[r] = 0;
        }
        new Span<float>(sc.O, rows * d).Clear();
        if (job.Int8 && sc.UseAvx512BW)
            for (int r = 0; r < rows; r++)
            {
                byte* q = (byte*)sc.QRows[r];
                short* q16 = sc.Q16 + (long)r * d;
                for (int c = 0; c < d; c++) q16[c] = (short)(q[c] - 128);
            }
        int maxHi = sc.Hi[rows - 1];
        long pair = (long)b * job.KvHeads + item.KvHead;
        int rStart = 0;
        for (int j0 = first; j0 < maxHi; j0 += Block)
        {
            int nk = Math.Min(Block, job.KeyEnd - j0), blk = (j0 - first) / Block;
            while (sc.Hi[rStart] <= j0) rStart++;
            float* v; long vStride;
            if (job.Decode)
            {
                long r0 = pair * job.Capacity + j0;
                if (rows - rStart >= RepackRows || !sc.UseVnni)
                {
                    RepackKeys(job.CacheK + r0 * d, sc.KBlock, nk, d);
                    ScoresInt8(sc, rStart, rows, sc.KBlock, job.CacheKScale + r0, job.CacheKSum + r0, nk, d);
                }
                else ScoresInt8RowMajor(sc, rStart, rows, job.CacheK + r0 * d, job.CacheKScale + r0, job.CacheKSum + r0, nk, d);
                DequantizeValues(job.CacheV + r0 * d, job.CacheVScale + r0, sc.VBlock, nk, d);
                v = sc.VBlock; vStride = d;
            }
            else
            {
                long kRow = pair * job.Blocks * Block + (long)blk * Block;
                vStride = s.KeyStrides.Token;
                if (job.Int8) ScoresInt8(sc, rStart, rows, job.KPack + kRow * d, job.KScale + kRow, job.KSum + kRow, Block, d);
                else if (job.RowMajorKeys) ScoresFp32RowMajor(sc, rStart, rows, job.K + s.KeyOffset(b, item.KvHead, j0), vStride, nk, d, job.LogitScale);
                else ScoresFp32(sc, rStart, rows, job.KPackF + kRow * d, d, job.LogitScale);
                v = job.V + s.KeyOffset(b, item.KvHead, j0);
            }
            Softmax(sc, rStart, rows, j0, nk, d);
            ProbabilitiesTimesValues(sc, rStart, rows, j0, nk, v, vStride, d);
        }
        for (int r = 0; r < rows; r++)
        {
            float inv = 1f / sc.L[r];
            float* src = sc.O + (long)r * d, dst = sc.ORows[r];
            int c = 0;
            for (; c + 8 <= d; c += 8) (Vector256.Load(src + c) * inv).Store(dst + c);
            for (; c < d; c++) dst[c] = src[c] * inv;
        }
        if (job.Lse != null)
            // ln Σ_j exp(scale·q·k_j) = ln 2 · log2 Σ_j exp2(S_j) with S in base-2 units: M + log2 L.
            for (int r = 0; r < rows; r++)
            {
                int t = item.T0 + r / heads, h = item.KvHead * group + item.Head0 + r % heads;
                job.Lse[((long)b * job.QueryHeads + h) * job.QueryTokens + t] = (float)((sc.M[r] + Math.Log2(sc.L[r])) * Math.Log(2));
            }
    }

    /// <summary>Decode tiles with at least this many rows repack each key block for the register-tiled kernel; smaller
    /// ones (one token: the group's heads) take row-major VNNI dot products straight from the cache (other strategies
    /// always repack).</summary>
    internal const int RepackRows = 8;

    /// <summary>
    /// Decode with few rows: S[r][j] = ((float)(q̂_r · k̂_j) · s_q) · s_k for keys [0, nk) read row-major [nk][D] from the
    /// cache: one ymm <c>vpdpbusd</c> per 32 channels (u8 q̂ + 128 against s8 k̂), a horizontal sum, then the exact
    /// correction <c>- 128·Σ k̂</c>; or a scalar loop. The same integers as the packed kernel.
    /// </summary>
    private static void ScoresInt8RowMajor(Scratch sc, int r0, int rows, sbyte* keys, float* kScale, int* kSum, int nk, int d)
    {
        bool vnni = sc.UseVnni;
        for (int r = r0; r < rows; r++)
        {
            byte* q = (byte*)sc.QRows[r];
            float qs = sc.QScales[r];
            float* srow = sc.S + (long)r * Block;
            for (int jj = 0; jj < nk; jj++)
            {
                sbyte* k = keys + (long)jj * d;
                int dot = 0, c = 0;
                if (vnni)
                {
                    var acc = Vector256<int>.Zero;
                    for (; c + 32 <= d; c += 32) acc = AvxVnni.MultiplyWideningAndAdd(acc, Vector256.Load(q + c), Vector256.Load(k + c));
                    dot = Vector256.Sum(acc);
                }
                for (; c < d; c++) dot += q[c] * k[c];
                dot -= kSum[jj] << 7;
                srow[jj] = (float)dot * qs * kScale[jj];
            }
        }
    }

    /// <summary>Decode: cache keys [nk][D] s8 into [D/4][Block][4], zeros beyond nk.</summary>
    private static void RepackKeys(sbyte* src, sbyte* dst, int nk, int d)
    {
        int groups = d / 4;
        int* s = (int*)src, o = (int*)dst;
        for (int jj = 0; jj < nk; jj++)
            for (int c4 = 0; c4 < groups; c4++) o[c4 * Block + jj] = s[jj * groups + c4];
        if (nk < Block)
            for (int c4 = 0; c4 < groups; c4++) new Span<int>(o + c4 * Block + nk, Block - nk).Clear();
    }

    /// <summary>Decode: v[j][c] = v̂[j][c] · scale[j] in fp32 (the reference's dequantization).</summary>
    private static void DequantizeValues(sbyte* src, float* scales, float* dst, int nk, int d)
    {
        for (int jj = 0; jj < nk; jj++)
        {
            sbyte* x = src + (long)jj * d;
            float* y = dst + (long)jj * d;
            var sv = Vector256.Create(scales[jj]);
            int c = 0;
            for (; c + 8 <= d; c += 8)
            {
                var shorts = Vector128.WidenLower(Vector128.CreateScalar(*(long*)(x + c)).AsSByte());
                var wide = Vector128.WidenLower(shorts);
                var hi = Vector128.WidenUpper(shorts);
                (Vector256.ConvertToSingle(Vector256.Create(wide, hi)) * sv).Store(y + c);
            }
            for (; c < d; c++) y[c] = x[c] * scales[jj];
        }
    }

    // ---- scores ----

    /// <summary>S[r][j] = ((float)(q̂_r · k̂_j) · s_q) · s_k for rows [r0, rows), keys [0, Block) of a packed block.</summary>
    private static void ScoresInt8(Scratch sc, int r0, int rows, sbyte* kp, float* kScale, int* kSum, int nk, int d)
    {
        int r = r0;
        if (sc.UseAvx512BW)
        {
            for (; r + 4 <= rows; r += 4)
                for (int half = 0; half < Block; half += 32) Bw4x32(sc, r, kp, kScale, half, d);
            for (; r < rows; r++)
                for (int half = 0; half < Block; half += 32) Bw1x32(sc, r, kp, kScale, half, d);
        }
        else if (sc.UseVnni)
        {
            for (; r + 4 <= rows; r += 4)
                for (int half = 0; half < Block; half += 32) Vnni4x32(sc, r, kp, kScale, kSum, half, d);
            for (; r < rows; r++)
                for (int half = 0; half < Block; half += 32) Vnni1x32(sc, r, kp, kScale, kSum, half, d);
        }
        else
        {
            for (; r < rows; r++)
            {
                byte* q = (byte*)sc.QRows[r];
                float qs = sc.QScales[r];
                float* srow = sc.S + (long)r * Block;
                for (int j = 0; j < Block; j++)
                {
                    int dot = 0;
                    for (int c = 0; c < d; c++) dot += (q[c] - 128) * kp[(c >> 2) * (Block * 4) + j * 4 + (c & 3)];
                    srow[j] = (float)dot * qs * kScale[j];
                }
            }
        }
        _ = nk;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Broadcast4(byte* q, int c4) => Vector256.Create(*(int*)(q + c4 * 4)).AsByte();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Vnni4x32(Scratch sc, int r, sbyte* kp, float* kScale, int* kSum, int half, int d)
    {
        byte* q0 = (byte*)sc.QRows[r], q1 = (byte*)sc.QRows[r + 1], q2 = (byte*)sc.QRows[r + 2], q3 = (byte*)sc.QRows[r + 3];
        Vector256<int> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<int> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<int> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector256<int> a30 = default, a31 = default, a32 = default, a33 = default;
        sbyte* k = kp + half * 4;
        for (int c4 = 0; c4 < d / 4; c4++, k += Block * 4)
        {
            var k0 = Vector256.Load(k); var k1 = Vector256.Load(k + 32); var k2 = Vector256.Load(k + 64); var k3 = Vector256.Load(k + 96);
            var b = Broadcast4(q0, c4);
            a00 = AvxVnni.MultiplyWideningAndAdd(a00, b, k0); a01 = AvxVnni.MultiplyWideningAndAdd(a01, b, k1);
            a02 = AvxVnni.MultiplyWideningAndAdd(a02, b, k2); a03 = AvxVnni.MultiplyWideningAndAdd(a03, b, k3);
            b = Broadcast4(q1, c4);
            a10 = AvxVnni.MultiplyWideningAndAdd(a10, b, k0); a11 = AvxVnni.MultiplyWideningAndAdd(a11, b, k1);
            a12 = AvxVnni.MultiplyWideningAndAdd(a12, b, k2); a13 = AvxVnni.MultiplyWideningAndAdd(a13, b, k3);
            b = Broadcast4(q2, c4);
            a20 = AvxVnni.MultiplyWideningAndAdd(a20, b, k0); a21 = AvxVnni.MultiplyWideningAndAdd(a21, b, k1);
            a22 = AvxVnni.MultiplyWideningAndAdd(a22, b, k2); a23 = AvxVnni.MultiplyWideningAndAdd(a23, b, k3);
            b = Broadcast4(q3, c4);
            a30 = AvxVnni.MultiplyWideningAndAdd(a30, b, k0); a31 = AvxVnni.MultiplyWideningAndAdd(a31, b, k1);
            a32 = AvxVnni.MultiplyWideningAndAdd(a32, b, k2); a33 = AvxVnni.MultiplyWideningAndAdd(a33, b, k3);
        }
        // Epilogue: dot = acc - 128·Σk̂, logit = ((float)dot · s_q) · s_k.
        var c0 = Vector256.Load(kSum + half) << 7; var c1 = Vector256.Load(kSum + half + 8) << 7;
        var c2 = Vector256.Load(kSum + half + 16) << 7; var c3 = Vector256.Load(kSum + half + 24) << 7;
        var k0s = Vector256.Load(kScale + half); var k1s = Vector256.Load(kScale + half + 8);
        var k2s = Vector256.Load(kScale + half + 16); var k3s = Vector256.Load(kScale + half + 24);
        float* s0 = sc.S + (long)r * Block + half;
        Logits(s0, sc.QScales[r], a00, a01, a02, a03, c0, c1, c2, c3, k0s, k1s, k2s, k3s);
        Logits(s0 + Block, sc.QScales[r + 1], a10, a11, a12, a13, c0, c1, c2, c3, k0s, k1s, k2s, k3s);
        Logits(s0 + 2 * Block, sc.QScales[r + 2], a20, a21, a22, a23, c0, c1, c2, c3, k0s, k1s, k2s, k3s);
        Logits(s0 + 3 * Block, sc.QScales[r + 3], a30, a31, a32, a33, c0, c1, c2, c3, k0s, k1s, k2s, k3s);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Logits(float* s, float qs, Vector256<int> a0, Vector256<int> a1, Vector256<int> a2, Vector256<int> a3,
        Vector256<int> c0, Vector256<int> c1, Vector256<int> c2, Vector256<int> c3,
        Vector256<float> k0, Vector256<float> k1, Vector256<float> k2, Vector256<float> k3)
    {
        (Vector256.ConvertToSingle(a0 - c0) * qs * k0).Store(s);
        (Vector256.ConvertToSingle(a1 - c1) * qs * k1).Store(s + 8);
        (Vector256.ConvertToSingle(a2 - c2) * qs * k2).Store(s + 16);
        (Vector256.ConvertToSingle(a3 - c3) * qs * k3).Store(s + 24);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Vnni1x32(Scratch sc, int r, sbyte* kp, float* kScale, int* kSum, int half, int d)
    {
        byte* q0 = (byte*)sc.QRows[r];
        Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default;
        sbyte* k = kp + half * 4;
        for (int c4 = 0; c4 < d / 4; c4++, k += Block * 4)
        {
            var b = Broadcast4(q0, c4);
            a0 = AvxVnni.MultiplyWideningAndAdd(a0, b, Vector256.Load(k)); a1 = AvxVnni.MultiplyWideningAndAdd(a1, b, Vector256.Load(k + 32));
            a2 = AvxVnni.MultiplyWideningAndAdd(a2, b, Vector256.Load(k + 64)); a3 = AvxVnni.MultiplyWideningAndAdd(a3, b, Vector256.Load(k + 96));
        }
        Logits(sc.S + (long)r * Block + half, sc.QScales[r], a0, a1, a2, a3,
            Vector256.Load(kSum + half) << 7, Vector256.Load(kSum + half + 8) << 7, Vector256.Load(kSum + half + 16) << 7, Vector256.Load(kSum + half + 24) << 7,
            Vector256.Load(kScale + half), Vector256.Load(kScale + half + 8), Vector256.Load(kScale + half + 16), Vector256.Load(kScale + half + 24));
    }

    /// <summary>Sums adjacent int32 pairs (key k's two partial dots in lanes 2k, 2k+1): 8 exact (wrapping) dots.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairSums(Vector512<int> acc)
    {
        var wide = acc.AsInt64();
        return Avx512F.ConvertToVector256Int32(wide + Vector512.ShiftRightLogical(wide, 32));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> Widen(sbyte* k) => Avx512BW.ConvertToVector512Int16(Vector256.Load(k));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> Q4(short* q16, int c4) => Vector512.Create(*(long*)(q16 + c4 * 4)).AsInt16();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Bw4x32(Scratch sc, int r, sbyte* kp, float* kScale, int half, int d)
    {
        long dl = d;
        short* q0 = sc.Q16 + r * dl, q1 = q0 + dl, q2 = q1 + dl, q3 = q2 + dl;
        Vector512<int> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<int> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<int> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<int> a30 = default, a31 = default, a32 = default, a33 = default;
        sbyte* k = kp + half * 4;
        for (int c4 = 0; c4 < d / 4; c4++, k += Block * 4)
        {
            var k0 = Widen(k); var k1 = Widen(k + 32); var k2 = Widen(k + 64); var k3 = Widen(k + 96);
            var b = Q4(q0, c4);
            a00 += Avx512BW.MultiplyAddAdjacent(k0, b); a01 += Avx512BW.MultiplyAddAdjacent(k1, b);
            a02 += Avx512BW.MultiplyAddAdjacent(k2, b); a03 += Avx512BW.MultiplyAddAdjacent(k3, b);
            b = Q4(q1, c4);
            a10 += Avx512BW.MultiplyAddAdjacent(k0, b); a11 += Avx512BW.MultiplyAddAdjacent(k1, b);
            a12 += Avx512BW.MultiplyAddAdjacent(k2, b); a13 += Avx512BW.MultiplyAddAdjacent(k3, b);
            b = Q4(q2, c4);
            a20 += Avx512BW.MultiplyAddAdjacent(k0, b); a21 += Avx512BW.MultiplyAddAdjacent(k1, b);
            a22 += Avx512BW.MultiplyAddAdjacent(k2, b); a23 += Avx512BW.MultiplyAddAdjacent(k3, b);
            b = Q4(q3, c4);
            a30 += Avx512BW.MultiplyAddAdjacent(k0, b); a31 += Avx512BW.MultiplyAddAdjacent(k1, b);
            a32 += Avx512BW.MultiplyAddAdjacent(k2, b); a33 += Avx512BW.MultiplyAddAdjacent(k3, b);
        }
        var z = Vector256<int>.Zero;
        var k0s = Vector256.Load(kScale + half); var k1s = Vector256.Load(kScale + half + 8);
        var k2s = Vector256.Load(kScale + half + 16); var k3s = Vector256.Load(kScale + half + 24);
        float* s0 = sc.S + (long)r * Block + half;
        Logits(s0, sc.QScales[r], PairSums(a00), PairSums(a01), PairSums(a02), PairSums(a03), z, z, z, z, k0s, k1s, k2s, k3s);
        Logits(s0 + Block, sc.QScales[r + 1], PairSums(a10), PairSums(a11), PairSums(a12), PairSums(a13), z, z, z, z, k0s, k1s, k2s, k3s);
        Logits(s0 + 2 * Block, sc.QScales[r + 2], PairSums(a20), PairSums(a21), PairSums(a22), PairSums(a23), z, z, z, z, k0s, k1s, k2s, k3s);
        Logits(s0 + 3 * Block, sc.QScales[r + 3], PairSums(a30), PairSums(a31), PairSums(a32), PairSums(a33), z, z, z, z, k0s, k1s, k2s, k3s);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Bw1x32(Scratch sc, int r, sbyte* kp, float* kScale, int half, int d)
    {
        short* q0 = sc.Q16 + (long)r * d;
        Vector512<int> a0 = default, a1 = default, a2 = default, a3 = default;
        sbyte* k = kp + half * 4;
        for (int c4 = 0; c4 < d / 4; c4++, k += Block * 4)
        {
            var b = Q4(q0, c4);
            a0 += Avx512BW.MultiplyAddAdjacent(Widen(k), b); a1 += Avx512BW.MultiplyAddAdjacent(Widen(k + 32), b);
            a2 += Avx512BW.MultiplyAddAdjacent(Widen(k + 64), b); a3 += Avx512BW.MultiplyAddAdjacent(Widen(k + 96), b);
        }
        var z = Vector256<int>.Zero;
        Logits(sc.S + (long)r * Block + half, sc.QScales[r], PairSums(a0), PairSums(a1), PairSums(a2), PairSums(a3), z, z, z, z,
            Vector256.Load(kScale + half), Vector256.Load(kScale + half + 8), Vector256.Load(kScale + half + 16), Vector256.Load(kScale + half + 24));
    }

    /// <summary>
    /// Small tiles (decoding): S[r][j] = (q_r · k_j) · scale·log2 e for rows [r0, rows) and keys [0, nk) read in place
    /// (key j at <c>k + j·kStride</c>), each key row loaded once for all the rows (they share it in L1); any D.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoresFp32RowMajor(Scratch sc, int r0, int rows, float* k, long kStride, int nk, int d, float logitScale)
    {
        bool v512 = CpuGemm.UseVector512;
        for (int jj = 0; jj < nk; jj++)
        {
            float* kr = k + jj * kStride;
            for (int r = r0; r < rows; r++)
            {
                float* q = (float*)sc.QRows[r];
                int c = 0;
                float dot = 0;
                if (v512 && d >= 16)
                {
                    var a0 = Vector512<float>.Zero; var a1 = Vector512<float>.Zero;
                    for (; c + 32 <= d; c += 32)
                    {
                        a0 = Vector512.FusedMultiplyAdd(Vector512.Load(q + c), Vector512.Load(kr + c), a0);
                        a1 = Vector512.FusedMultiplyAdd(Vector512.Load(q + c + 16), Vector512.Load(kr + c + 16), a1);
                    }
                    for (; c + 16 <= d; c += 16) a0 = Vector512.FusedMultiplyAdd(Vector512.Load(q + c), Vector512.Load(kr + c), a0);
                    dot = Vector512.Sum(a0 + a1);
                }
                else if (d >= 8)
                {
                    var a0 = Vector256<float>.Zero;
                    for (; c + 8 <= d; c += 8) a0 = Vector256.FusedMultiplyAdd(Vector256.Load(q + c), Vector256.Load(kr + c), a0);
                    dot = Vector256.Sum(a0);
                }
                for (; c < d; c++) dot = MathF.FusedMultiplyAdd(q[c], kr[c], dot);
                sc.S[(long)r * Block + jj] = dot * logitScale;
            }
        }
    }

    /// <summary>S[r][j] = (q_r · k_j) · scale·log2 e for rows [r0, rows) against a block packed [D][Block].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoresFp32(Scratch sc, int r0, int rows, float* kp, int d, float logitScale)
    {
        int r = r0;
        if (CpuGemm.UseVector512)
        {
            for (; r + 4 <= rows; r += 4)
            {
                float* q0 = (float*)sc.QRows[r], q1 = (float*)sc.QRows[r + 1], q2 = (float*)sc.QRows[r + 2], q3 = (float*)sc.QRows[r + 3];
                Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
                Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
                Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
                Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
                float* k = kp;
                for (int c = 0; c < d; c++, k += Block)
                {
                    var k0 = Vector512.Load(k); var k1 = Vector512.Load(k + 16); var k2 = Vector512.Load(k + 32); var k3 = Vector512.Load(k + 48);
                    var b = Vector512.Create(q0[c]);
                    a00 = Vector512.FusedMultiplyAdd(b, k0, a00); a01 = Vector512.FusedMultiplyAdd(b, k1, a01);
                    a02 = Vector512.FusedMultiplyAdd(b, k2, a02); a03 = Vector512.FusedMultiplyAdd(b, k3, a03);
                    b = Vector512.Create(q1[c]);
                    a10 = Vector512.FusedMultiplyAdd(b, k0, a10); a11 = Vector512.FusedMultiplyAdd(b, k1, a11);
                    a12 = Vector512.FusedMultiplyAdd(b, k2, a12); a13 = Vector512.FusedMultiplyAdd(b, k3, a13);
                    b = Vector512.Create(q2[c]);
                    a20 = Vector512.FusedMultiplyAdd(b, k0, a20); a21 = Vector512.FusedMultiplyAdd(b, k1, a21);
                    a22 = Vector512.FusedMultiplyAdd(b, k2, a22); a23 = Vector512.FusedMultiplyAdd(b, k3, a23);
                    b = Vector512.Create(q3[c]);
                    a30 = Vector512.FusedMultiplyAdd(b, k0, a30); a31 = Vector512.FusedMultiplyAdd(b, k1, a31);
                    a32 = Vector512.FusedMultiplyAdd(b, k2, a32); a33 = Vector512.FusedMultiplyAdd(b, k3, a33);
                }
                float* s0 = sc.S + (long)r * Block, s1 = s0 + Block, s2 = s1 + Block, s3 = s2 + Block;
                (a00 * logitScale).Store(s0); (a01 * logitScale).Store(s0 + 16); (a02 * logitScale).Store(s0 + 32); (a03 * logitScale).Store(s0 + 48);
                (a10 * logitScale).Store(s1); (a11 * logitScale).Store(s1 + 16); (a12 * logitScale).Store(s1 + 32); (a13 * logitScale).Store(s1 + 48);
                (a20 * logitScale).Store(s2); (a21 * logitScale).Store(s2 + 16); (a22 * logitScale).Store(s2 + 32); (a23 * logitScale).Store(s2 + 48);
                (a30 * logitScale).Store(s3); (a31 * logitScale).Store(s3 + 16); (a32 * logitScale).Store(s3 + 32); (a33 * logitScale).Store(s3 + 48);
            }
        }
        else
        {
            // Vector256: 4 rows × 32 keys (16 ymm accumulators), two passes per block.
            for (; r + 4 <= rows; r += 4)
            {
                float* q0 = (float*)sc.QRows[r], q1 = (float*)sc.QRows[r + 1], q2 = (float*)sc.QRows[r + 2], q3 = (float*)sc.QRows[r + 3];
                for (int j0 = 0; j0 < Block; j0 += 32)
                {
                    Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
                    Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
                    Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
                    Vector256<float> a30 = default, a31 = default, a32 = default, a33 = default;
                    float* k = kp + j0;
                    for (int c = 0; c < d; c++, k += Block)
                    {
                        var k0 = Vector256.Load(k); var k1 = Vector256.Load(k + 8); var k2 = Vector256.Load(k + 16); var k3 = Vector256.Load(k + 24);
                        var b = Vector256.Create(q0[c]);
                        a00 = Vector256.FusedMultiplyAdd(b, k0, a00); a01 = Vector256.FusedMultiplyAdd(b, k1, a01);
                        a02 = Vector256.FusedMultiplyAdd(b, k2, a02); a03 = Vector256.FusedMultiplyAdd(b, k3, a03);
                        b = Vector256.Create(q1[c]);
                        a10 = Vector256.FusedMultiplyAdd(b, k0, a10); a11 = Vector256.FusedMultiplyAdd(b, k1, a11);
                        a12 = Vector256.FusedMultiplyAdd(b, k2, a12); a13 = Vector256.FusedMultiplyAdd(b, k3, a13);
                        b = Vector256.Create(q2[c]);
                        a20 = Vector256.FusedMultiplyAdd(b, k0, a20); a21 = Vector256.FusedMultiplyAdd(b, k1, a21);
                        a22 = Vector256.FusedMultiplyAdd(b, k2, a22); a23 = Vector256.FusedMultiplyAdd(b, k3, a23);
                        b = Vector256.Create(q3[c]);
                        a30 = Vector256.FusedMultiplyAdd(b, k0, a30); a31 = Vector256.FusedMultiplyAdd(b, k1, a31);
                        a32 = Vector256.FusedMultiplyAdd(b, k2, a32); a33 = Vector256.FusedMultiplyAdd(b, k3, a33);
                    }
                    float* s0 = sc.S + (long)r * Block + j0, s1 = s0 + Block, s2 = s1 + Block, s3 = s2 + Block;
                    (a00 * logitScale).Store(s0); (a01 * logitScale).Store(s0 + 8); (a02 * logitScale).Store(s0 + 16); (a03 * logitScale).Store(s0 + 24);
                    (a10 * logitScale).Store(s1); (a11 * logitScale).Store(s1 + 8); (a12 * logitScale).Store(s1 + 16); (a13 * logitScale).Store(s1 + 24);
                    (a20 * logitScale).Store(s2); (a21 * logitScale).Store(s2 + 8); (a22 * logitScale).Store(s2 + 16); (a23 * logitScale).Store(s2 + 24);
                    (a30 * logitScale).Store(s3); (a31 * logitScale).Store(s3 + 8); (a32 * logitScale).Store(s3 + 16); (a33 * logitScale).Store(s3 + 24);
                }
            }
        }
        for (; r < rows; r++)
        {
            float* q0 = (float*)sc.QRows[r];
            float* s0 = sc.S + (long)r * Block;
            for (int j0 = 0; j0 < Block; j0 += 32)
            {
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                float* k = kp + j0;
                for (int c = 0; c < d; c++, k += Block)
                {
                    var b = Vector256.Create(q0[c]);
                    a0 = Vector256.FusedMultiplyAdd(b, Vector256.Load(k), a0); a1 = Vector256.FusedMultiplyAdd(b, Vector256.Load(k + 8), a1);
                    a2 = Vector256.FusedMultiplyAdd(b, Vector256.Load(k + 16), a2); a3 = Vector256.FusedMultiplyAdd(b, Vector256.Load(k + 24), a3);
                }
                (a0 * logitScale).Store(s0 + j0); (a1 * logitScale).Store(s0 + j0 + 8);
                (a2 * logitScale).Store(s0 + j0 + 16); (a3 * logitScale).Store(s0 + j0 + 24);
            }
        }
    }

    // ---- softmax ----

    /// <summary>
    /// Online softmax step for rows [r0, rows) over their visible keys [0, vis_r) of the block at j0: new max, rescale of
    /// the row's accumulator and sum by α = exp2(m_old − m_new), S[r][j] = exp2(S[r][j] − m_new).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Softmax(Scratch sc, int r0, int rows, int j0, int nk, int d)
    {
        bool v512 = CpuGemm.UseVector512;
        for (int r = r0; r < rows; r++)
        {
            int vis = Math.Min(nk, sc.Hi[r] - j0);
            float* s = sc.S + (long)r * Block;
            float mOld = sc.M[r], mNew, sum;
            if (v512 && vis == Block)
            {
                // A fully visible block (all but the diagonal and the last): the row's 64 scores in four registers.
                var x0 = Vector512.Load(s); var x1 = Vector512.Load(s + 16); var x2 = Vector512.Load(s + 32); var x3 = Vector512.Load(s + 48);
                var m = Vector512.Max(Vector512.Max(x0, x1), Vector512.Max(x2, x3));
                mNew = MathF.Max(mOld, MaxLanes(Vector256.Max(m.GetLower(), m.GetUpper())));
                var vm = Vector512.Create(mNew);
                var p0 = Exp2(x0 - vm); var p1 = Exp2(x1 - vm); var p2 = Exp2(x2 - vm); var p3 = Exp2(x3 - vm);
                p0.Store(s); p1.Store(s + 16); p2.Store(s + 32); p3.Store(s + 48);
                sum = Vector512.Sum(p0 + p1 + p2 + p3);
            }
            else
            {
                mNew = MathF.Max(mOld, RowMax(s, vis));
                sum = ExpRow(s, vis, mNew);
            }
            float alpha = Exp2Scalar(mOld - mNew);
            sc.L[r] = sc.L[r] * alpha + sum;
            sc.M[r] = mNew;
            if (alpha != 1f) ScaleRow(sc.O + (long)r * d, d, alpha);
        }
    }

    private static float RowMax(float* s, int n)
    {
        int j = 0;
        float max = float.NegativeInfinity;
        if (CpuGemm.UseVector512 && n >= 16)
        {
            var m = Vector512.Create(float.NegativeInfinity);
            for (; j + 16 <= n; j += 16) m = Vector512.Max(m, Vector512.Load(s + j));
            max = MaxLanes(Vector256.Max(m.GetLower(), m.GetUpper()));
        }
        else if (n >= 8)
        {
            var m = Vector256.Create(float.NegativeInfinity);
            for (; j + 8 <= n; j += 8) m = Vector256.Max(m, Vector256.Load(s + j));
            max = MaxLanes(m);
        }
        for (; j < n; j++) max = MathF.Max(max, s[j]);
        return max;
    }

    private static float MaxLanes(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        return MathF.Max(MathF.Max(m[0], m[1]), MathF.Max(m[2], m[3]));
    }

    /// <summary>s[j] = exp2(s[j] − m) for j &lt; n; returns Σ.</summary>
    private static float ExpRow(float* s, int n, float m)
    {
        int j = 0;
        float sum = 0;
        if (CpuGemm.UseVector512)
        {
            var vm = Vector512.Create(m);
            var acc = Vector512<float>.Zero;
            for (; j + 16 <= n; j += 16)
            {
                var p = Exp2(Vector512.Load(s + j) - vm);
                p.Store(s + j);
                acc += p;
            }
            sum = Vector512.Sum(acc);
        }
        else
        {
            var vm = Vector256.Create(m);
            var acc = Vector256<float>.Zero;
            for (; j + 8 <= n; j += 8)
            {
                var p = Exp2(Vector256.Load(s + j) - vm);
                p.Store(s + j);
                acc += p;
            }
            sum = Vector256.Sum(acc);
        }
        for (; j < n; j++)
        {
            float p = Exp2Scalar(s[j] - m);
            s[j] = p;
            sum += p;
        }
        return sum;
    }

    private static void ScaleRow(float* o, int d, float alpha)
    {
        int c = 0;
        if (CpuGemm.UseVector512)
            for (; c + 16 <= d; c += 16) (Vector512.Load(o + c) * alpha).Store(o + c);
        for (; c + 8 <= d; c += 8) (Vector256.Load(o + c) * alpha).Store(o + c);
        for (; c < d; c++) o[c] *= alpha;
    }

    // exp2(x) for x ≤ 0 (or NaN): x = k + f with k = round(x), f ∈ [-0.5, 0.5]; 2^f by its Taylor polynomial of degree 6
    // (relative error < 2e-7), times 2^k built from the exponent bits; x < -126 gives 0 (−∞ included), NaN stays NaN.
    private const float C1 = 0.693147181f, C2 = 0.240226507f, C3 = 0.0555041087f, C4 = 0.00961812911f, C5 = 0.00133335581f, C6 = 0.000154035304f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Exp2(Vector512<float> x)
    {
        var k = Vector512.Round(x);
        var f = x - k;
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(C6), f, Vector512.Create(C5));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(C4));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(C3));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(C2));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(C1));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512<float>.One);
        var ki = Vector512.ConvertToInt32(Vector512.Max(k, Vector512.Create(-126f)));
        var scale = ((ki + Vector512.Create(127)) << 23).AsSingle();
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(-126f)), Vector512<float>.Zero, p * scale);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Exp2(Vector256<float> x)
    {
        var k = Vector256.Round(x);
        var f = x - k;
        var p = Vector256.FusedMultiplyAdd(Vector256.Create(C6), f, Vector256.Create(C5));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(C4));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(C3));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(C2));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(C1));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256<float>.One);
        var ki = Vector256.ConvertToInt32(Vector256.Max(k, Vector256.Create(-126f)));
        var scale = ((ki + Vector256.Create(127)) << 23).AsSingle();
        return Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(-126f)), Vector256<float>.Zero, p * scale);
    }

    /// <summary>The scalar form of <see cref="Exp2(Vector256{float})"/> (same polynomial).</summary>
    internal static float Exp2Scalar(float x)
    {
        if (float.IsNaN(x)) return float.NaN;
        if (x < -126f) return 0f;
        float k = MathF.Round(x), f = x - k;
        float p = MathF.FusedMultiplyAdd(C6, f, C5);
        p = MathF.FusedMultiplyAdd(p, f, C4); p = MathF.FusedMultiplyAdd(p, f, C3);
        p = MathF.FusedMultiplyAdd(p, f, C2); p = MathF.FusedMultiplyAdd(p, f, C1);
        p = MathF.FusedMultiplyAdd(p, f, 1f);
        return p * BitConverter.Int32BitsToSingle(((int)MathF.Min(k, 127f) + 127) << 23);
    }

    // ---- P·V ----

    /// <summary>
    /// O[r] += Σ_{j &lt; vis_r} P[r][j] · v_j for rows [r0, rows): rows four at a time over the keys all four see (vis of
    /// the first, the smallest), then each row alone over its remaining keys.
    /// </summary>
    private static void ProbabilitiesTimesValues(Scratch sc, int r0, int rows, int j0, int nk, float* v, long vStride, int d)
    {
        int r = r0;
        for (; r + 4 <= rows; r += 4)
        {
            int common = Math.Min(nk, sc.Hi[r] - j0);
            Pv4(sc.S + (long)r * Block, sc.O + (long)r * d, common, v, vStride, d);
            for (int i = 1; i < 4; i++)
            {
                int vis = Math.Min(nk, sc.Hi[r + i] - j0);
                if (vis > common) Pv1(sc.S + (long)(r + i) * Block, sc.O + (long)(r + i) * d, common, vis, v, vStride, d);
            }
        }
        for (; r < rows; r++)
            Pv1(sc.S + (long)r * Block, sc.O + (long)r * d, 0, Math.Min(nk, sc.Hi[r] - j0), v, vStride, d);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Pv4(float* p, float* o, int n, float* v, long vStride, int d)
    {
        float* p0 = p, p1 = p + Block, p2 = p1 + Block, p3 = p2 + Block;
        float* o0 = o, o1 = o + d, o2 = o1 + d, o3 = o2 + d;
        int c = 0;
        if (CpuGemm.UseVector512)
        {
            for (; c + 64 <= d; c += 64)
            {
                var a00 = Vector512.Load(o0 + c); var a01 = Vector512.Load(o0 + c + 16); var a02 = Vector512.Load(o0 + c + 32); var a03 = Vector512.Load(o0 + c + 48);
                var a10 = Vector512.Load(o1 + c); var a11 = Vector512.Load(o1 + c + 16); var a12 = Vector512.Load(o1 + c + 32); var a13 = Vector512.Load(o1 + c + 48);
                var a20 = Vector512.Load(o2 + c); var a21 = Vector512.Load(o2 + c + 16); var a22 = Vector512.Load(o2 + c + 32); var a23 = Vector512.Load(o2 + c + 48);
                var a30 = Vector512.Load(o3 + c); var a31 = Vector512.Load(o3 + c + 16); var a32 = Vector512.Load(o3 + c + 32); var a33 = Vector512.Load(o3 + c + 48);
                float* vr = v + c;
                for (int j = 0; j < n; j++, vr += vStride)
                {
                    var v0 = Vector512.Load(vr); var v1 = Vector512.Load(vr + 16); var v2 = Vector512.Load(vr + 32); var v3 = Vector512.Load(vr + 48);
                    var b = Vector512.Create(p0[j]);
                    a00 = Vector512.FusedMultiplyAdd(b, v0, a00); a01 = Vector512.FusedMultiplyAdd(b, v1, a01);
                    a02 = Vector512.FusedMultiplyAdd(b, v2, a02); a03 = Vector512.FusedMultiplyAdd(b, v3, a03);
                    b = Vector512.Create(p1[j]);
                    a10 = Vector512.FusedMultiplyAdd(b, v0, a10); a11 = Vector512.FusedMultiplyAdd(b, v1, a11);
                    a12 = Vector512.FusedMultiplyAdd(b, v2, a12); a13 = Vector512.FusedMultiplyAdd(b, v3, a13);
                    b = Vector512.Create(p2[j]);
                    a20 = Vector512.FusedMultiplyAdd(b, v0, a20); a21 = Vector512.FusedMultiplyAdd(b, v1, a21);
                    a22 = Vector512.FusedMultiplyAdd(b, v2, a22); a23 = Vector512.FusedMultiplyAdd(b, v3, a23);
                    b = Vector512.Create(p3[j]);
                    a30 = Vector512.FusedMultiplyAdd(b, v0, a30); a31 = Vector512.FusedMultiplyAdd(b, v1, a31);
                    a32 = Vector512.FusedMultiplyAdd(b, v2, a32); a33 = Vector512.FusedMultiplyAdd(b, v3, a33);
                }
                a00.Store(o0 + c); a01.Store(o0 + c + 16); a02.Store(o0 + c + 32); a03.Store(o0 + c + 48);
                a10.Store(o1 + c); a11.Store(o1 + c + 16); a12.Store(o1 + c + 32); a13.Store(o1 + c + 48);
                a20.Store(o2 + c); a21.Store(o2 + c + 16); a22.Store(o2 + c + 32); a23.Store(o2 + c + 48);
                a30.Store(o3 + c); a31.Store(o3 + c + 16); a32.Store(o3 + c + 32); a33.Store(o3 + c + 48);
            }
        }
        for (; c + 32 <= d; c += 32)
        {
            var a00 = Vector256.Load(o0 + c); var a01 = Vector256.Load(o0 + c + 8); var a02 = Vector256.Load(o0 + c + 16); var a03 = Vector256.Load(o0 + c + 24);
            var a10 = Vector256.Load(o1 + c); var a11 = Vector256.Load(o1 + c + 8); var a12 = Vector256.Load(o1 + c + 16); var a13 = Vector256.Load(o1 + c + 24);
            var a20 = Vector256.Load(o2 + c); var a21 = Vector256.Load(o2 + c + 8); var a22 = Vector256.Load(o2 + c + 16); var a23 = Vector256.Load(o2 + c + 24);
            var a30 = Vector256.Load(o3 + c); var a31 = Vector256.Load(o3 + c + 8); var a32 = Vector256.Load(o3 + c + 16); var a33 = Vector256.Load(o3 + c + 24);
            float* vr = v + c;
            for (int j = 0; j < n; j++, vr += vStride)
            {
                var v0 = Vector256.Load(vr); var v1 = Vector256.Load(vr + 8); var v2 = Vector256.Load(vr + 16); var v3 = Vector256.Load(vr + 24);
                var b = Vector256.Create(p0[j]);
                a00 = Vector256.FusedMultiplyAdd(b, v0, a00); a01 = Vector256.FusedMultiplyAdd(b, v1, a01);
                a02 = Vector256.FusedMultiplyAdd(b, v2, a02); a03 = Vector256.FusedMultiplyAdd(b, v3, a03);
                b = Vector256.Create(p1[j]);
                a10 = Vector256.FusedMultiplyAdd(b, v0, a10); a11 = Vector256.FusedMultiplyAdd(b, v1, a11);
                a12 = Vector256.FusedMultiplyAdd(b, v2, a12); a13 = Vector256.FusedMultiplyAdd(b, v3, a13);
                b = Vector256.Create(p2[j]);
                a20 = Vector256.FusedMultiplyAdd(b, v0, a20); a21 = Vector256.FusedMultiplyAdd(b, v1, a21);
                a22 = Vector256.FusedMultiplyAdd(b, v2, a22); a23 = Vector256.FusedMultiplyAdd(b, v3, a23);
                b = Vector256.Create(p3[j]);
                a30 = Vector256.FusedMultiplyAdd(b, v0, a30); a31 = Vector256.FusedMultiplyAdd(b, v1, a31);
                a32 = Vector256.FusedMultiplyAdd(b, v2, a32); a33 = Vector256.FusedMultiplyAdd(b, v3, a33);
            }
            a00.Store(o0 + c); a01.Store(o0 + c + 8); a02.Store(o0 + c + 16); a03.Store(o0 + c + 24);
            a10.Store(o1 + c); a11.Store(o1 + c + 8); a12.Store(o1 + c + 16); a13.Store(o1 + c + 24);
            a20.Store(o2 + c); a21.Store(o2 + c + 8); a22.Store(o2 + c + 16); a23.Store(o2 + c + 24);
            a30.Store(o3 + c); a31.Store(o3 + c + 8); a32.Store(o3 + c + 16); a33.Store(o3 + c + 24);
        }
        for (; c + 8 <= d; c += 8)
        {
            var a0 = Vector256.Load(o0 + c); var a1 = Vector256.Load(o1 + c); var a2 = Vector256.Load(o2 + c); var a3 = Vector256.Load(o3 + c);
            float* vr = v + c;
            for (int j = 0; j < n; j++, vr += vStride)
            {
                var v0 = Vector256.Load(vr);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Create(p0[j]), v0, a0); a1 = Vector256.FusedMultiplyAdd(Vector256.Create(p1[j]), v0, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Create(p2[j]), v0, a2); a3 = Vector256.FusedMultiplyAdd(Vector256.Create(p3[j]), v0, a3);
            }
            a0.Store(o0 + c); a1.Store(o1 + c); a2.Store(o2 + c); a3.Store(o3 + c);
        }
        for (; c < d; c++) // fp32 head dimensions that are not a multiple of 8
        {
            float a0 = o0[c], a1 = o1[c], a2 = o2[c], a3 = o3[c];
            float* vr = v + c;
            for (int j = 0; j < n; j++, vr += vStride)
            {
                a0 = MathF.FusedMultiplyAdd(p0[j], *vr, a0); a1 = MathF.FusedMultiplyAdd(p1[j], *vr, a1);
                a2 = MathF.FusedMultiplyAdd(p2[j], *vr, a2); a3 = MathF.FusedMultiplyAdd(p3[j], *vr, a3);
            }
            o0[c] = a0; o1[c] = a1; o2[c] = a2; o3[c] = a3;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Pv1(float* p, float* o, int from, int to, float* v, long vStride, int d)
    {
        int c = 0;
        if (CpuGemm.UseVector512)
            for (; c + 64 <= d; c += 64)
            {
                var a0 = Vector512.Load(o + c); var a1 = Vector512.Load(o + c + 16); var a2 = Vector512.Load(o + c + 32); var a3 = Vector512.Load(o + c + 48);
                float* vr = v + from * vStride + c;
                for (int j = from; j < to; j++, vr += vStride)
                {
                    var b = Vector512.Create(p[j]);
                    a0 = Vector512.FusedMultiplyAdd(b, Vector512.Load(vr), a0); a1 = Vector512.FusedMultiplyAdd(b, Vector512.Load(vr + 16), a1);
                    a2 = Vector512.FusedMultiplyAdd(b, Vector512.Load(vr + 32), a2); a3 = Vector512.FusedMultiplyAdd(b, Vector512.Load(vr + 48), a3);
                }
                a0.Store(o + c); a1.Store(o + c + 16); a2.Store(o + c + 32); a3.Store(o + c + 48);
            }
        for (; c + 8 <= d; c += 8)
        {
            var a0 = Vector256.Load(o + c);
            float* vr = v + from * vStride + c;
            for (int j = from; j < to; j++, vr += vStride) a0 = Vector256.FusedMultiplyAdd(Vector256.Create(p[j]), Vector256.Load(vr), a0);
            a0.Store(o + c);
        }
        for (; c < d; c++)
        {
            float a0 = o[c];
            float* vr = v + from * vStride + c;
            for (int j = from; j < to; j++, vr += vStride) a0 = MathF.FusedMultiplyAdd(p[j], *vr, a0);
            o[c] = a0;
        }
    }
}
