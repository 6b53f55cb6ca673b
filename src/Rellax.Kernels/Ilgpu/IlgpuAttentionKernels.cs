using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Rellax.Kernels.Ilgpu;

/// <summary>
/// Host side of the ILGPU attention kernels (SPEC §7; semantics in <see cref="IAttentionKernels"/>, ground truth
/// <see cref="AttentionReference"/>): three kernels (key mean, row quantization, flash attention) compiled and loaded
/// once, in the constructor, with typed loaders whose delegates take the backend's stream. Every call only queues work
/// on <see cref="IlgpuBackend.Stream"/>; the device code and its roofline are in <c>IlgpuAttentionKernels.Device.cs</c>.
/// </summary>
/// <remarks>
/// <para><b>Calls.</b> Prefill (q of Tq tokens, k/v of Tk ≥ Tq positions; query t at key position Tk − Tq + t) fp32:
/// one attention launch on the f32 tensors. Prefill int8: quantize q (multiplier
/// scale · log2 e) into scratch, the key mean (when smoothing), quantize k into scratch, then one attention launch with
/// int8 scores and fp32 values. Append: the key mean into the cache (first append only), then k (mean subtracted, with
/// key sums) and v into the cache's int8 rows. Decode: quantize q into scratch, then one attention launch on the cache's
/// int8 keys and values.</para>
/// <para><b>Scratch.</b> Quantized queries/keys, their scales, the mean and the uploaded padding live in buffers owned by
/// this object, grown on demand (the stream is synchronized before a smaller one is freed, since queued kernels may
/// still read it) and freed on <see cref="Dispose"/>. The only host synchronization is the padding upload of Prefill
/// (ILGPU's span copy waits for the stream), skipped when the padding equals the previous call's.</para>
/// <para><b>Lanes.</b> <see cref="LanesPerRow"/> lanes score one query row: the warp size on GPUs (tiles of 32 keys, warp
/// shuffles), 1 on ILGPU's CPU emulator (no shuffles, each of which costs a warp barrier there). <see cref="UseDp4a"/>
/// switches the int8 dot between PTX <c>dp4a</c> (CUDA devices only) and plain int math; both are exact.</para>
/// </remarks>
internal sealed partial class IlgpuAttentionKernels : IAttentionKernels, IDisposable
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>,
        ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>,
        ArrayView<float>, ArrayView<int>, AttentionLaunch> _attention;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>,
        ArrayView<sbyte>, ArrayView<float>, ArrayView<int>, QuantizeLaunch> _quantize;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, QuantizeLaunch> _mean;

    private readonly IlgpuBackend _backend;
    private readonly Scratch<float> _dummyF32, _qScale, _kScale, _keyMean;
    private readonly Scratch<int> _dummyI32, _padding;
    private readonly Scratch<sbyte> _dummyI8, _qHat, _kHat;
    private int[]? _uploadedPadding;
    private int _uploadedGeneration;
    private int _lanesPerRow, _rowsPerGroup;
    private bool _disposed;

    /// <summary>Compiles and loads the attention kernels for <paramref name="backend"/>'s accelerator.</summary>
    public IlgpuAttentionKernels(IlgpuBackend backend)
    {
        _backend = backend;
        var acc = backend.Accelerator;
        WarpSize = Math.Max(1, acc.WarpSize);
        MaxGroup = FloorPowerOfTwo(Math.Min(MaxGroupSize, acc.MaxNumThreadsPerGroup));
        if (acc is CPUAccelerator) { _lanesPerRow = 1; _rowsPerGroup = Math.Min(MaxGroup, 32); }
        else { _lanesPerRow = Math.Min(WarpSize, MaxGroup); _rowsPerGroup = MaxGroup / _lanesPerRow; }
        Dp4aAvailable = acc is CudaAccelerator;

        _attention = acc.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
            ArrayView<float>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
            AttentionLaunch>(AttentionKernel);
        _quantize = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<sbyte>,
            ArrayView<float>, ArrayView<int>, QuantizeLaunch>(QuantizeKernel);
        _mean = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, QuantizeLaunch>(MeanKernel);

        _dummyF32 = new(backend); _qScale = new(backend); _kScale = new(backend); _keyMean = new(backend);
        _dummyI32 = new(backend); _padding = new(backend);
        _dummyI8 = new(backend); _qHat = new(backend); _kHat = new(backend);
    }

    /// <summary>The accelerator's warp size.</summary>
    internal int WarpSize { get; }

    /// <summary>The largest group the attention kernel uses: min(<see cref="MaxGroupSize"/>, device limit), a power of two.</summary>
    internal int MaxGroup { get; }

    /// <summary>Whether the int8 dot can run as PTX <c>dp4a</c> here (a CUDA accelerator); elsewhere only the fallback runs.</summary>
    internal bool Dp4aAvailable { get; }

    /// <summary>
    /// Use <c>dp4a</c> for int8 dot products where <see cref="Dp4aAvailable"/> (default true); false forces the plain-int
    /// fallback, so tests can compare the two. It has no effect on other accelerators.
    /// </summary>
    internal bool UseDp4a { get; set; } = true;

    /// <summary>
    /// Lanes that process one query row: 1, or the warp size (a team must be a whole warp, because rows of one warp
    /// see different numbers of key tiles and every lane of a warp must join its shuffles). Default: the warp size on
    /// GPUs, 1 on the CPU emulator. Setting it keeps the group at <see cref="RowsPerGroup"/> rows when that fits.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Neither 1 nor the warp size, or more than <see cref="MaxGroup"/>.</exception>
    internal int LanesPerRow
    {
        get => _lanesPerRow;
        set
        {
            if ((value != 1 && value != WarpSize) || value > MaxGroup)
                throw new ArgumentOutOfRangeException(nameof(value), value, $"lanes per row must be 1 or the warp size ({WarpSize}), at most {MaxGroup}");
            _lanesPerRow = value;
            _rowsPerGroup = Math.Max(1, Math.Min(_rowsPerGroup, MaxGroup / value));
        }
    }

    /// <summary>Query rows per group (the group has <c>RowsPerGroup · LanesPerRow</c> threads).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Below 1, or a group larger than <see cref="MaxGroup"/>.</exception>
    internal int RowsPerGroup
    {
        get => _rowsPerGroup;
        set
        {
            if (value < 1 || (long)value * _lanesPerRow > MaxGroup)
                throw new ArgumentOutOfRangeException(nameof(value), value, $"rows per group times lanes per row ({_lanesPerRow}) must be in [1, {MaxGroup}]");
            _rowsPerGroup = value;
        }
    }

    /// <summary>Total elements currently held by the scratch buffers (for tests of reuse and growth).</summary>
    internal long ScratchElements => _qScale.Length + _kScale.Length + _keyMean.Length + _padding.Length + _qHat.Length + _kHat.Length;

    private AcceleratorStream Stream => _backend.Stream;

    private static int FloorPowerOfTwo(int n)
    {
        int p = 1;
        while (p * 2 <= n) p *= 2;
        return p;
    }

    private static ArrayView<float> F(in Tensor t) => IlgpuBuffer.ViewOf<float>(t);

    private static ArrayView<T> Whole<T>(DeviceBuffer buffer) where T : unmanaged => ((IlgpuBuffer)buffer).View<T>();

    private static int Rows(long rows, string what) =>
        rows <= int.MaxValue ? (int)rows : throw new NotSupportedException($"the ILGPU attention kernels index {what} rows with 32-bit ints; got {rows}");

    /// <summary>A quantize/mean launch over the query side (q: Hq heads, Tq tokens) or the key side (k/v: Hkv, Tk) of s.</summary>
    private static QuantizeLaunch Source(AttentionShape s, bool queries, int capacity, int dstStart, int positionStart, int flags, float multiplier)
    {
        var (bs, hs, ts) = queries ? s.QueryStrides : s.KeyStrides;
        return new()
        {
            Batch = s.Batch, Heads = queries ? s.QueryHeads : s.KvHeads, Tokens = queries ? s.Tokens : s.KeyTokens, HeadDim = s.HeadDim,
            Capacity = capacity, DstStart = dstStart, PositionStart = positionStart, Flags = flags, Multiplier = multiplier,
            SrcBatch = bs, SrcHead = hs, SrcToken = ts,
        };
    }

    /// <inheritdoc/>
    public void Prefill(Tensor q, Tensor k, Tensor v, Tensor o, AttentionShape shape, int[] lengths, float scale, bool causal,
        AttentionPrecision precision, bool smoothKeys)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int b = shape.Batch, hq = shape.QueryHeads, hkv = shape.KvHeads, tq = shape.Tokens, tk = shape.KeyTokens, d = shape.HeadDim;
        var padding = new int[b];
        for (int i = 0; i < b; i++) padding[i] = tk - lengths[i];
        var pad = UploadPadding(padding);
        var launch = Launch(shape, tk, causal, capacity: tk);
        if (precision == AttentionPrecision.Fp32)
        {
            launch.Scale = scale * AttentionReference.Log2E;
            Attend(launch, F(q), _dummyI32.View(1), _dummyF32.View(1), F(k), _dummyI32.View(1), _dummyF32.View(1),
                F(v), _dummyI8.View(4), _dummyF32.View(1), F(o), pad);
            return;
        }
        long qRows = (long)b * hq * tq, kRows = (long)b * hkv * tk;
        var qHat = _qHat.View(qRows * d); var qScale = _qScale.View(qRows);
        var kHat = _kHat.View(kRows * d); var kScale = _kScale.View(kRows);
        // Query t is key position Tk - Tq + t (its padding test); int8 query rows are (b·Hq + h)·Tq + t, key rows (b·Hkv + kvh)·Tk + j.
        _quantize(Stream, Rows(qRows, "query"), F(q), _dummyF32.View(1), pad, qHat, qScale, _dummyI32.View(1),
            Source(shape, queries: true, tq, 0, shape.QueryStart, 0, scale * AttentionReference.Log2E));
        var mean = _dummyF32.View(1);
        if (smoothKeys)
        {
            mean = _keyMean.View((long)b * hkv * d);
            _mean(Stream, Rows((long)b * hkv * d, "mean"), F(k), pad, mean, Source(shape, queries: false, tk, 0, 0, 0, 1f));
        }
        _quantize(Stream, Rows(kRows, "key"), F(k), mean, pad, kHat, kScale, _dummyI32.View(1),
            Source(shape, queries: false, tk, 0, 0, smoothKeys ? FlagSubtractMean : 0, 1f));
        launch.Flags = FlagInt8Keys | Dp4aFlag;
        Attend(launch, _dummyF32.View(1), qHat.Cast<int>(), qScale, _dummyF32.View(1), kHat.Cast<int>(), kScale,
            F(v), _dummyI8.View(4), _dummyF32.View(1), F(o), pad);
    }

    /// <inheritdoc/>
    public void Append(Int8KvCache cache, Tensor k, Tensor v, AttentionShape shape, int start)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int h = cache.KvHeads, d = cache.HeadDim;
        var pad = Whole<int>(cache.Padding);
        var mean = Whole<float>(cache.KeyMean);
        if (start == 0)
            _mean(Stream, Rows((long)cache.Batch * h * d, "mean"), F(k), pad, mean, Source(shape, queries: false, cache.Capacity, start, start, 0, 1f));
        int rows = Rows((long)cache.Batch * h * shape.Tokens, "key");
        _quantize(Stream, rows, F(k), mean, pad, Whole<sbyte>(cache.Keys), Whole<float>(cache.KeyScales), Whole<int>(cache.KeySums),
            Source(shape, queries: false, cache.Capacity, start, start, FlagSubtractMean | FlagWriteSums, 1f));
        _quantize(Stream, rows, F(v), _dummyF32.View(1), pad, Whole<sbyte>(cache.Values), Whole<float>(cache.ValueScales), _dummyI32.View(1),
            Source(shape, queries: false, cache.Capacity, start, start, 0, 1f));
    }

    /// <inheritdoc/>
    public void Decode(Tensor q, Int8KvCache cache, Tensor o, AttentionShape shape, float scale, bool causal)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int tq = shape.Tokens, d = shape.HeadDim;
        long qRows = (long)shape.Batch * shape.QueryHeads * tq;
        var pad = Whole<int>(cache.Padding);
        var qHat = _qHat.View(qRows * d); var qScale = _qScale.View(qRows);
        _quantize(Stream, Rows(qRows, "query"), F(q), _dummyF32.View(1), pad, qHat, qScale, _dummyI32.View(1),
            Source(shape, queries: true, tq, 0, cache.Count - tq, 0, scale * AttentionReference.Log2E));
        var launch = Launch(shape, cache.Count, causal, cache.Capacity);
        launch.Flags = FlagInt8Keys | FlagInt8Values | Dp4aFlag;
        Attend(launch, _dummyF32.View(1), qHat.Cast<int>(), qScale, _dummyF32.View(1), Whole<sbyte>(cache.Keys).Cast<int>(),
            Whole<float>(cache.KeyScales), _dummyF32.View(1), Whole<sbyte>(cache.Values), Whole<float>(cache.ValueScales), F(o), pad);
    }

    private int Dp4aFlag => UseDp4a && Dp4aAvailable ? FlagDp4a : 0;

    private AttentionLaunch Launch(AttentionShape s, int keys, bool causal, int capacity) => new()
    {
        Batch = s.Batch, QueryHeads = s.QueryHeads, KvHeads = s.KvHeads, QueryTokens = s.Tokens, Keys = keys,
        HeadDim = s.HeadDim, Capacity = capacity, Causal = causal ? 1 : 0, Lanes = _lanesPerRow,
        QBatch = s.QueryStrides.Batch, QHead = s.QueryStrides.Head, QToken = s.QueryStrides.Token,
        KvBatch = s.KeyStrides.Batch, KvHead = s.KeyStrides.Head, KvToken = s.KeyStrides.Token,
    };

    private void Attend(AttentionLaunch p, ArrayView<float> qF, ArrayView<int> qI, ArrayView<float> qS, ArrayView<float> kF,
        ArrayView<int> kI, ArrayView<float> kS, ArrayView<float> vF, ArrayView<sbyte> vI, ArrayView<float> vS,
        ArrayView<float> o, ArrayView<int> padding)
    {
        long rows = (long)p.Batch * p.QueryHeads * p.QueryTokens;
        long groups = (rows + _rowsPerGroup - 1) / _rowsPerGroup;
        if (groups > _backend.Accelerator.MaxGridSize.X)
            throw new NotSupportedException($"attention over {rows} query rows needs {groups} groups; the device allows {_backend.Accelerator.MaxGridSize.X}");
        var config = new KernelConfig(new Index1D((int)groups), new Index1D(_rowsPerGroup * _lanesPerRow));
        _attention(Stream, config, qF, qI, qS, kF, kI, kS, vF, vI, vS, o, padding, p);
    }

    /// <summary>The padding as a device view, uploaded only when it differs from the last upload (the copy synchronizes).</summary>
    private ArrayView<int> UploadPadding(int[] padding)
    {
        var view = _padding.View(padding.Length);
        if (_uploadedPadding is null || _uploadedGeneration != _padding.Generation || !padding.AsSpan().SequenceEqual(_uploadedPadding))
        {
            view.CopyFromCPU(Stream, padding);
            _uploadedPadding = padding;
            _uploadedGeneration = _padding.Generation;
        }
        return view;
    }

    /// <summary>Waits for queued work, then frees every scratch buffer. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!_backend.IsDisposed) Stream.Synchronize();
        foreach (var s in new IDisposable[] { _dummyF32, _qScale, _kScale, _keyMean, _dummyI32, _padding, _dummyI8, _qHat, _kHat })
            s.Dispose();
    }

    /// <summary>
    /// A device buffer of <typeparamref name="T"/> that grows on demand (to at least twice its size, so alternating
    /// sizes do not reallocate); growing synchronizes the stream before freeing the old buffer.
    /// </summary>
    private sealed class Scratch<T>(IlgpuBackend backend) : IDisposable where T : unmanaged
    {
        private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

        /// <summary>Counts the allocations, so a caller can tell whether its uploaded data is still there.</summary>
        public int Generation { get; private set; }

        /// <summary>Elements held (0 before first use).</summary>
        public long Length => _buffer?.Length ?? 0;

        /// <summary>The first <paramref name="length"/> elements (≥ 1), growing the buffer if needed.</summary>
        public ArrayView<T> View(long length)
        {
            length = Math.Max(1, length);
            if (_buffer is null || _buffer.Length < length)
            {
                long size = Math.Max(length, 2 * (_buffer?.Length ?? 0));
                if (_buffer is not null)
                {
                    if (!backend.IsDisposed) backend.Stream.Synchronize();
                    _buffer.Dispose();
                    _buffer = null;
                }
                _buffer = backend.Accelerator.Allocate1D<T>(size);
                Generation++;
            }
            return _buffer.View.SubView(0, length);
        }

        public void Dispose()
        {
            _buffer?.Dispose();
            _buffer = null;
        }
    }
}
