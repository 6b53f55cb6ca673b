using ILGPU.Runtime.Cuda;
using Rellax.Interop;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// Launches the int8 attention kernels of <c>kernels/int8_attention.cu</c> (SPEC §7; the kernel file's header gives
/// the algorithm and its roofline): <c>rellax_attn_key_mean</c> (fp64-accumulated key mean per sequence and head),
/// <c>rellax_attn_quantize_rows</c> (per-row int8 quantization exactly as <see cref="AttentionReference.QuantizeRow"/>,
/// optionally smoothed, into prefill scratch or an <see cref="Int8KvCache"/>), <c>rellax_attn_prefill_int8_d{64,128,256}</c>
/// (flash-style prefill: <c>mma.sync</c> s8·s8→s32 for Q·Kᵀ, online exp2 softmax in fp32, f16 tensor-core P·V) and
/// <c>rellax_attn_int8_decode</c> (queries against the int8 cache, dp4a). Tensors of any <see cref="AttentionLayout"/>
/// are addressed through element strides (batch, head, token) as <see cref="AttentionShape"/> defines them.
/// All launches are asynchronous on the given stream.
/// </summary>
internal sealed class CudaAttention
{
    /// <summary>Entry point of the key mean.</summary>
    public const string EntryPointKeyMean = "rellax_attn_key_mean";

    /// <summary>Entry point of the row quantizer.</summary>
    public const string EntryPointQuantize = "rellax_attn_quantize_rows";

    /// <summary>Entry point of the decode kernel.</summary>
    public const string EntryPointDecode = "rellax_attn_int8_decode";

    /// <summary>Prefill entry points by the largest head dimension they take (64, 128, 256).</summary>
    public static IReadOnlyList<(int MaxHeadDim, string Name)> EntryPointsPrefill { get; } =
        [(64, "rellax_attn_prefill_int8_d64"), (128, "rellax_attn_prefill_int8_d128"), (256, "rellax_attn_prefill_int8_d256")];

    /// <summary>Query rows per prefill block (4 warps of 16 rows; <c>RELLAX_ATTN_ROWS</c>).</summary>
    public const int PrefillRows = 64;

    /// <summary>Threads per prefill and decode block (<c>RELLAX_ATTN_WARPS</c> · 32).</summary>
    public const int Block = 128;

    /// <summary>Rows per quantize block (one warp each; <c>RELLAX_ATTN_QUANT_WARPS</c>).</summary>
    public const int QuantizeRowsPerBlock = 8;

    /// <summary>Head dimensions are padded to a multiple of this in the quantized prefill scratch (the mma k-step).</summary>
    public const int PaddedHeadDimMultiple = 32;

    private readonly CudaFunction _keyMean;
    private readonly CudaFunction _quantize;
    private readonly CudaFunction _decode;
    private readonly CudaFunction[] _prefill;

    /// <summary>Binds the launcher to the kernels in <paramref name="library"/>.</summary>
    /// <param name="library">The loaded kernels.</param>
    public CudaAttention(CudaKernelLibrary library)
    {
        ArgumentNullException.ThrowIfNull(library);
        _keyMean = library.GetFunction(EntryPointKeyMean);
        _quantize = library.GetFunction(EntryPointQuantize);
        _decode = library.GetFunction(EntryPointDecode);
        _prefill = EntryPointsPrefill.Select(e => library.GetFunction(e.Name)).ToArray();
    }

    /// <summary>D rounded up to <see cref="PaddedHeadDimMultiple"/>: the row length of the quantized prefill scratch.</summary>
    /// <param name="headDim">D.</param>
    public static int PaddedHeadDim(int headDim) => (headDim + PaddedHeadDimMultiple - 1) / PaddedHeadDimMultiple * PaddedHeadDimMultiple;

    /// <summary>
    /// Enqueues <c>rellax_attn_key_mean</c>: <c>mean[b, h, :]</c> = the mean of rows <c>[padding[b], T)</c> of (b, h),
    /// accumulated in fp64 in token order (0 where a sequence has no valid token).
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> of the kernels' context.</param>
    /// <param name="k">f32 (B, H, T, D) through <paramref name="strides"/> (elements between sequences, heads, tokens).</param>
    /// <param name="strides">Element strides of <paramref name="k"/>: batch, head, token.</param>
    /// <param name="padding">i32 (B): first valid token of each sequence.</param>
    /// <param name="batch">B (0 launches nothing).</param>
    /// <param name="heads">H.</param>
    /// <param name="tokens">T.</param>
    /// <param name="headDim">D, 1 to <see cref="FlashAttention.MaxHeadDim"/>.</param>
    /// <param name="mean">f32 (B, H, D), output.</param>
    public unsafe void LaunchKeyMean(IntPtr stream, CUdeviceptr k, (long Batch, long Head, long Token) strides, CUdeviceptr padding,
        int batch, int heads, int tokens, int headDim, CUdeviceptr mean)
    {
        CheckDims(batch, heads, tokens, headDim);
        if (batch == 0 || heads == 0) return;
        long bs = strides.Batch, hs = strides.Head, ts = strides.Token;
        var args = stackalloc IntPtr[9]
        {
            (IntPtr)(&k), (IntPtr)(&bs), (IntPtr)(&hs), (IntPtr)(&ts), (IntPtr)(&padding), (IntPtr)(&heads), (IntPtr)(&tokens),
            (IntPtr)(&headDim), (IntPtr)(&mean),
        };
        _keyMean.Launch(((uint)heads, (uint)batch, 1), (Block, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 9));
    }

    /// <summary>
    /// Enqueues <c>rellax_attn_quantize_rows</c>: row (b, h, t) of x (minus <c>mean[b, h, :]</c> when given) quantized as
    /// <see cref="AttentionReference.QuantizeRow"/> with <paramref name="multiplier"/> into destination position
    /// <c>p = dstStart + t</c> of (b, h); positions <c>p &lt; padding[b]</c> get zeros.
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> of the kernels' context.</param>
    /// <param name="x">f32 (B, H, T, D) through <paramref name="strides"/>.</param>
    /// <param name="strides">Element strides of <paramref name="x"/>: batch, head, token.</param>
    /// <param name="mean">f32 (B, H, D) subtracted first, or null for none.</param>
    /// <param name="padding">i32 (B), in destination positions.</param>
    /// <param name="batch">B (0 launches nothing).</param>
    /// <param name="heads">H.</param>
    /// <param name="tokens">T.</param>
    /// <param name="headDim">D, 1 to <see cref="FlashAttention.MaxHeadDim"/>.</param>
    /// <param name="multiplier">Folded into the scale (the softmax scale · log2 e for queries, 1 otherwise).</param>
    /// <param name="quantized">i8 (B, H, dstTokens, dstHeadDim), output; channels [D, dstHeadDim) are written as 0.</param>
    /// <param name="scales">f32 (B, H, dstTokens), output.</param>
    /// <param name="sums">i32 (B, H, dstTokens), output Σ_c x̂_c, or null.</param>
    /// <param name="dstTokens">Positions per (b, h) in the destination (T for scratch, the capacity for a cache).</param>
    /// <param name="dstHeadDim">Row length in the destination, at least D.</param>
    /// <param name="dstStart">First destination position (0 for scratch, the cache's count for an append).</param>
    public unsafe void LaunchQuantize(IntPtr stream, CUdeviceptr x, (long Batch, long Head, long Token) strides, CUdeviceptr mean,
        CUdeviceptr padding, int batch, int heads, int tokens, int headDim, float multiplier, CUdeviceptr quantized, CUdeviceptr scales,
        CUdeviceptr sums, int dstTokens, int dstHeadDim, int dstStart)
    {
        CheckDims(batch, heads, tokens, headDim);
        ArgumentOutOfRangeException.ThrowIfLessThan(dstHeadDim, headDim);
        ArgumentOutOfRangeException.ThrowIfNegative(dstStart);
        ArgumentOutOfRangeException.ThrowIfGreaterThan((long)dstStart + tokens, dstTokens, nameof(dstTokens));
        long rows = (long)batch * heads * tokens;
        if (rows == 0) return;
        long blocks = (rows + QuantizeRowsPerBlock - 1) / QuantizeRowsPerBlock;
        if (blocks > int.MaxValue) throw new NotSupportedException($"{rows} rows exceed one launch");
        long bs = strides.Batch, hs = strides.Head, ts = strides.Token;
        var args = stackalloc IntPtr[17]
        {
            (IntPtr)(&x), (IntPtr)(&bs), (IntPtr)(&hs), (IntPtr)(&ts), (IntPtr)(&mean), (IntPtr)(&padding), (IntPtr)(&batch),
            (IntPtr)(&heads), (IntPtr)(&tokens), (IntPtr)(&headDim), (IntPtr)(&multiplier), (IntPtr)(&quantized), (IntPtr)(&scales),
            (IntPtr)(&sums), (IntPtr)(&dstTokens), (IntPtr)(&dstHeadDim), (IntPtr)(&dstStart),
        };
        _quantize.Launch(((uint)blocks, 1, 1), ((uint)(32 * QuantizeRowsPerBlock), 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 17));
    }

    /// <summary>
    /// Enqueues the int8 prefill for D ≤ the chosen instantiation: <c>o</c> for every sequence, query head and token from
    /// quantized q and k (<see cref="LaunchQuantize"/> with <c>dstHeadDim = </c><see cref="PaddedHeadDim"/>) and f32 v.
    /// Query t sits at key position <c>Tk − T + t</c>; padding query rows (position &lt; padding[b]) get 0.
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> of the kernels' context.</param>
    /// <param name="qq">i8 (B, Hq, T, Dp) queries, Dp = <see cref="PaddedHeadDim"/>(D).</param>
    /// <param name="qs">f32 (B, Hq, T) query scales (softmax scale · log2 e folded in).</param>
    /// <param name="kq">i8 (B, Hkv, Tk, Dp) smoothed keys.</param>
    /// <param name="ks">f32 (B, Hkv, Tk) key scales.</param>
    /// <param name="v">f32 (B, Hkv, Tk, D) values through <paramref name="vStrides"/>.</param>
    /// <param name="vStrides">Element strides of v: batch, head, token.</param>
    /// <param name="o">f32 (B, Hq, T, D) output through <paramref name="oStrides"/>.</param>
    /// <param name="oStrides">Element strides of o: batch, head, token.</param>
    /// <param name="padding">i32 (B), left padding in key positions.</param>
    /// <param name="batch">B, at most 65535 (0 launches nothing).</param>
    /// <param name="queryHeads">Hq, a multiple of <paramref name="kvHeads"/>, at most 65535.</param>
    /// <param name="kvHeads">Hkv.</param>
    /// <param name="tokens">T, query tokens.</param>
    /// <param name="keyTokens">Tk ≥ T, key positions.</param>
    /// <param name="headDim">D, a multiple of 8 up to 256.</param>
    /// <param name="causal">Whether query t sees only keys up to its position Tk − T + t.</param>
    public unsafe void LaunchPrefill(IntPtr stream, CUdeviceptr qq, CUdeviceptr qs, CUdeviceptr kq, CUdeviceptr ks, CUdeviceptr v,
        (long Batch, long Head, long Token) vStrides, CUdeviceptr o, (long Batch, long Head, long Token) oStrides, CUdeviceptr padding,
        int batch, int queryHeads, int kvHeads, int tokens, int keyTokens, int headDim, bool causal)
    {
        CheckDims(batch, queryHeads, tokens, headDim);
        ArgumentOutOfRangeException.ThrowIfLessThan(keyTokens, tokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(kvHeads, 1);
        if (queryHeads % kvHeads != 0) throw new ArgumentException($"query heads ({queryHeads}) must be a multiple of KV heads ({kvHeads})", nameof(queryHeads));
        if (headDim % 8 != 0) throw new ArgumentException($"D = {headDim} must be a multiple of 8", nameof(headDim));
        if (batch > 65535 || queryHeads > 65535) throw new NotSupportedException($"B = {batch} and Hq = {queryHeads} must be at most 65535 (grid z and y)");
        if (batch == 0 || tokens == 0) return;
        int dp = PaddedHeadDim(headDim), causalFlag = causal ? 1 : 0;
        long vbs = vStrides.Batch, vhs = vStrides.Head, vts = vStrides.Token, obs = oStrides.Batch, ohs = oStrides.Head, ots = oStrides.Token;
        var args = stackalloc IntPtr[20]
        {
            (IntPtr)(&qq), (IntPtr)(&qs), (IntPtr)(&kq), (IntPtr)(&ks), (IntPtr)(&v), (IntPtr)(&vbs), (IntPtr)(&vhs), (IntPtr)(&vts),
            (IntPtr)(&o), (IntPtr)(&obs), (IntPtr)(&ohs), (IntPtr)(&ots), (IntPtr)(&padding), (IntPtr)(&queryHeads), (IntPtr)(&kvHeads),
            (IntPtr)(&tokens), (IntPtr)(&keyTokens), (IntPtr)(&headDim), (IntPtr)(&dp), (IntPtr)(&causalFlag),
        };
        int index = 0;
        while (EntryPointsPrefill[index].MaxHeadDim < headDim) index++;
        uint tiles = (uint)((tokens + PrefillRows - 1) / PrefillRows);
        _prefill[index].Launch((tiles, (uint)queryHeads, (uint)batch), (Block, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 20));
    }

    /// <summary>
    /// Enqueues <c>rellax_attn_int8_decode</c>: query t (of Tq) is cache position <c>count - Tq + t</c> and sees positions
    /// <c>[padding[b], count)</c> (when causal, only up to its own); positions inside the padding output 0.
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> of the kernels' context.</param>
    /// <param name="q">f32 (B, Hq, Tq, D) through <paramref name="qStrides"/>.</param>
    /// <param name="qStrides">Element strides of q (and o): batch, head, token.</param>
    /// <param name="keys">i8 (B, Hkv, capacity, D) smoothed keys.</param>
    /// <param name="keyScales">f32 (B, Hkv, capacity).</param>
    /// <param name="values">i8 (B, Hkv, capacity, D).</param>
    /// <param name="valueScales">f32 (B, Hkv, capacity).</param>
    /// <param name="padding">i32 (B).</param>
    /// <param name="batch">B (0 launches nothing).</param>
    /// <param name="queryHeads">Hq, a multiple of <paramref name="kvHeads"/>.</param>
    /// <param name="kvHeads">Hkv.</param>
    /// <param name="queryTokens">Tq, 1 to <paramref name="count"/>.</param>
    /// <param name="headDim">D, a multiple of 8 up to 256.</param>
    /// <param name="capacity">Positions per (b, h) in the cache.</param>
    /// <param name="count">Filled positions.</param>
    /// <param name="scale">Softmax scale (log2 e is folded in here).</param>
    /// <param name="causal">Whether query t sees only positions up to its own.</param>
    /// <param name="o">f32 (B, Hq, Tq, D) output, same strides as q.</param>
    public unsafe void LaunchDecode(IntPtr stream, CUdeviceptr q, (long Batch, long Head, long Token) qStrides, CUdeviceptr keys,
        CUdeviceptr keyScales, CUdeviceptr values, CUdeviceptr valueScales, CUdeviceptr padding, int batch, int queryHeads, int kvHeads,
        int queryTokens, int headDim, int capacity, int count, float scale, bool causal, CUdeviceptr o)
    {
        CheckDims(batch, queryHeads, queryTokens, headDim);
        ArgumentOutOfRangeException.ThrowIfLessThan(kvHeads, 1);
        if (queryHeads % kvHeads != 0) throw new ArgumentException($"query heads ({queryHeads}) must be a multiple of KV heads ({kvHeads})", nameof(queryHeads));
        if (headDim % 8 != 0) throw new ArgumentException($"D = {headDim} must be a multiple of 8", nameof(headDim));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queryTokens, count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, capacity);
        long items = (long)batch * queryHeads * queryTokens;
        if (items == 0) return;
        long blocks = (items + Block / 32 - 1) / (Block / 32);
        if (blocks > int.MaxValue) throw new NotSupportedException($"{items} decode rows exceed one launch");
        float multiplier = scale * AttentionReference.Log2E;
        int causalFlag = causal ? 1 : 0;
        long bs = qStrides.Batch, hs = qStrides.Head, ts = qStrides.Token;
        var args = stackalloc IntPtr[22]
        {
            (IntPtr)(&q), (IntPtr)(&bs), (IntPtr)(&hs), (IntPtr)(&ts), (IntPtr)(&keys), (IntPtr)(&keyScales), (IntPtr)(&values),
            (IntPtr)(&valueScales), (IntPtr)(&padding), (IntPtr)(&batch), (IntPtr)(&queryHeads), (IntPtr)(&kvHeads), (IntPtr)(&queryTokens),
            (IntPtr)(&headDim), (IntPtr)(&capacity), (IntPtr)(&count), (IntPtr)(&multiplier), (IntPtr)(&causalFlag), (IntPtr)(&o),
            (IntPtr)(&bs), (IntPtr)(&hs), (IntPtr)(&ts),
        };
        _decode.Launch(((uint)blocks, 1, 1), (Block, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 22));
    }

    private static void CheckDims(int batch, int heads, int tokens, int headDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfNegative(heads);
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(headDim, FlashAttention.MaxHeadDim);
    }
}

/// <summary>
/// The CUDA backend's attention kernels: int8 prefill, cache append and decode as <c>kernels/int8_attention.cu</c>
/// (<see cref="CudaAttention"/>), launched on the backend's stream with the device addresses of its ILGPU buffers, so
/// they are ordered with every other kernel and copy of the backend (int8 prefill takes Tq ≤ Tk). Fp32-precision prefill
/// is delegated to the ILGPU attention kernels (<paramref name="fp32"/>). Int8 prefill keeps its scratch (padding, key mean, quantized q and k
/// with their scales: about <c>(Hq·Tq + Hkv·Tk)·(Dp + 4)</c> bytes per sequence) cached and grows it on demand.
/// </summary>
/// <param name="backend">The CUDA backend.</param>
/// <param name="library">Its loaded kernels (owned by the backend).</param>
/// <param name="fp32">The ILGPU kernels that handle <see cref="AttentionPrecision.Fp32"/> prefill (disposed with this).</param>
internal sealed class CudaAttentionKernels(IlgpuBackend backend, CudaKernelLibrary library, IAttentionKernels fp32) : IAttentionKernels, IDisposable
{
    private readonly CudaAttention _kernels = new(library);
    private DeviceBuffer? _padding, _queryPadding, _mean, _qq, _qs, _kq, _ks;
    private bool _disposed;

    private IntPtr StreamHandle => ((CudaStream)backend.Stream).StreamPtr;

    private static CUdeviceptr Pointer(in Tensor t) => CUdeviceptr.FromIntPtr(IlgpuBuffer.DevicePointer(t));

    /// <summary>Base address of a whole buffer (a one-element view: lengths past int.MaxValue need no tensor shape).</summary>
    private static CUdeviceptr Pointer(DeviceBuffer b) => Pointer(new Tensor(b, 0, 1));

    /// <summary>A scratch buffer of at least <paramref name="length"/> elements from <paramref name="slot"/>, grown if too small.</summary>
    private DeviceBuffer Scratch(ref DeviceBuffer? slot, DType dtype, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (slot is null || slot.Length < length)
        {
            if (slot is not null)
            {
                backend.Synchronize(); // queued kernels may still read the old buffer
                slot.Dispose();
                slot = null;
            }
            slot = backend.Allocate(dtype, Math.Max(length, 1));
        }
        return slot;
    }

    /// <inheritdoc/>
    public void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, AttentionShape shape, int[] lengths, float scale, bool causal,
        AttentionPrecision precision, bool smoothKeys)
    {
        if (precision == AttentionPrecision.Fp32)
        {
            fp32.Prefill(q, k, v, o, shape, lengths, scale, causal, precision, smoothKeys);
            return;
        }
        int b = shape.Batch, hq = shape.QueryHeads, hkv = shape.KvHeads, tq = shape.Tokens, tk = shape.KeyTokens, d = shape.HeadDim;
        int dp = CudaAttention.PaddedHeadDim(d);
        var padding = Scratch(ref _padding, DType.I32, b);
        var queryPadding = Scratch(ref _queryPadding, DType.I32, b);
        var mean = Scratch(ref _mean, DType.F32, (long)b * hkv * d);
        var qq = Scratch(ref _qq, DType.I8, (long)b * hq * tq * dp);
        var qs = Scratch(ref _qs, DType.F32, (long)b * hq * tq);
        var kq = Scratch(ref _kq, DType.I8, (long)b * hkv * tk * dp);
        var ks = Scratch(ref _ks, DType.F32, (long)b * hkv * tk);
        // Padding in key positions, and the same in query rows (query t is key position Tk - Tq + t) for the quantizer.
        var pad = new int[b];
        var queryPad = new int[b];
        for (int i = 0; i < b; i++)
        {
            pad[i] = tk - lengths[i];
            queryPad[i] = Math.Max(0, pad[i] - shape.QueryStart);
        }
        padding.CopyFrom<int>(pad); // synchronous and ordered after the kernels already queued (which may read it)
        queryPadding.CopyFrom<int>(queryPad);

        // The launches must see ILGPU's context current on this thread (a no-op scope when it already is).
        using var scope = CudaDriver.Enter(library.Context);
        var stream = StreamHandle;
        var qStrides = shape.QueryStrides;
        var kStrides = shape.KeyStrides;
        if (smoothKeys) _kernels.LaunchKeyMean(stream, Pointer(k), kStrides, Pointer(padding), b, hkv, tk, d, Pointer(mean));
        _kernels.LaunchQuantize(stream, Pointer(q), qStrides, default, Pointer(queryPadding), b, hq, tq, d, scale * AttentionReference.Log2E,
            Pointer(qq), Pointer(qs), default, tq, dp, 0);
        _kernels.LaunchQuantize(stream, Pointer(k), kStrides, smoothKeys ? Pointer(mean) : default, Pointer(padding), b, hkv, tk, d, 1f,
            Pointer(kq), Pointer(ks), default, tk, dp, 0);
        _kernels.LaunchPrefill(stream, Pointer(qq), Pointer(qs), Pointer(kq), Pointer(ks), Pointer(v), kStrides, Pointer(o), qStrides,
            Pointer(padding), b, hq, hkv, tq, tk, d, causal);
    }

    /// <inheritdoc/>
    public void Append(Int8KvCache cache, Tensor k, Tensor v, AttentionShape shape, int start)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int b = shape.Batch, h = shape.KvHeads, t = shape.Tokens, d = shape.HeadDim;
        using var scope = CudaDriver.Enter(library.Context);
        var stream = StreamHandle;
        var strides = shape.KeyStrides;
        var padding = Pointer(cache.Padding);
        var mean = Pointer(cache.KeyMean);
        if (start == 0) _kernels.LaunchKeyMean(stream, Pointer(k), strides, padding, b, h, t, d, mean);
        _kernels.LaunchQuantize(stream, Pointer(k), strides, mean, padding, b, h, t, d, 1f, Pointer(cache.Keys), Pointer(cache.KeyScales),
            Pointer(cache.KeySums), cache.Capacity, d, start);
        _kernels.LaunchQuantize(stream, Pointer(v), strides, default, padding, b, h, t, d, 1f, Pointer(cache.Values), Pointer(cache.ValueScales),
            default, cache.Capacity, d, start);
    }

    /// <inheritdoc/>
    public void Decode(Tensor q, Int8KvCache cache, Tensor o, AttentionShape shape, float scale, bool causal)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = CudaDriver.Enter(library.Context);
        _kernels.LaunchDecode(StreamHandle, Pointer(q), shape.QueryStrides, Pointer(cache.Keys), Pointer(cache.KeyScales),
            Pointer(cache.Values), Pointer(cache.ValueScales), Pointer(cache.Padding), shape.Batch, shape.QueryHeads, shape.KvHeads,
            shape.Tokens, shape.HeadDim, cache.Capacity, cache.Count, scale, causal, Pointer(o));
    }

    /// <summary>Frees the scratch buffers and the fp32 kernels.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var buffer in new[] { _padding, _queryPadding, _mean, _qq, _qs, _kq, _ks }) buffer?.Dispose();
        (fp32 as IDisposable)?.Dispose();
    }
}
