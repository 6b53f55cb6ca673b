using ILGPU;
using ILGPU.Runtime;

namespace Rellax.Kernels.Ilgpu;

/// <summary>
/// Host side of the ILGPU CFLoRA kernels (SPEC §4): every kernel is compiled and loaded once, in the constructor,
/// with a typed loader whose delegate takes the backend's stream; calls compute launch configurations and queue.
/// Forward is two kernels per module (down + interaction, then the base GEMM with the adapter fused into its K loop);
/// Generate is three (the primitive LayerNorm, Linear + GELU, Linear).
/// </summary>
/// <remarks>
/// Intermediates (v [T, r] per module, the generator's LayerNorm output and hidden layer) live in scratch buffers owned
/// by this object, grown on demand (the stream is synchronized before a smaller one is freed) and freed on
/// <see cref="Dispose"/>. Forward is virtual so that the CUDA backend can replace it with hand-written kernels.
/// </remarks>
internal partial class IlgpuCfloraKernels : ICfloraKernels, IDisposable
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int,
        ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, float> _down;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>,
        ArrayView<float>, ArrayView<float>, int, int, int, int, int> _gemm;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _linearGelu;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _linear;

    private readonly MemoryBuffer1D<float, Stride1D.Dense> _dummyF32;
    private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _dummy16;
    private DeviceBuffer? _vScratch, _lnScratch, _midScratch, _backScratch;
    private bool _disposed;

    /// <summary>Compiles and loads every CFLoRA kernel for <paramref name="backend"/>'s accelerator.</summary>
    /// <exception cref="NotSupportedException">The accelerator allows fewer than 256 threads per group (the GEMM tile).</exception>
    public IlgpuCfloraKernels(IlgpuBackend backend)
    {
        Backend = backend;
        var acc = backend.Accelerator;
        if (acc.MaxNumThreadsPerGroup < Tile * Tile)
            throw new NotSupportedException($"{acc.Name} allows {acc.MaxNumThreadsPerGroup} threads per group; the CFLoRA kernels need {Tile * Tile}");
        DownGroupSize = FloorPowerOfTwo(Math.Min(256, Math.Min(acc.MaxNumThreadsPerGroup, MaxGroupSize)));
        WarpSize = Math.Max(1, acc.WarpSize);

        _down = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int,
            ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, float>(DownKernel);
        _gemm = acc.LoadKernel<ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>,
            ArrayView<float>, ArrayView<float>, int, int, int, int, int>(FusedGemmKernel);
        _linearGelu = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(LinearGeluKernel);
        _linear = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(LinearKernel);

        LoadBackwardKernels(acc);
        _dummyF32 = acc.Allocate1D<float>(1);
        try { _dummy16 = acc.Allocate1D<ushort>(1); }
        catch { _dummyF32.Dispose(); throw; }
    }

    /// <summary>The backend whose accelerator and stream the kernels run on.</summary>
    protected IlgpuBackend Backend { get; }

    /// <summary>Group size of the down kernel: min(256, device limit), a power of two.</summary>
    internal int DownGroupSize { get; }

    private int WarpSize { get; }

    private AcceleratorStream Stream => Backend.Stream;

    private static int FloorPowerOfTwo(int n)
    {
        int p = 1;
        while (p * 2 <= n) p *= 2;
        return p;
    }

    private static int CeilPowerOfTwo(int n)
    {
        int p = 1;
        while (p < n) p *= 2;
        return p;
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    private static int Count(in Tensor t) =>
        t.ElementCount <= int.MaxValue ? (int)t.ElementCount
        : throw new NotSupportedException($"the ILGPU CFLoRA kernels index elements with 32-bit ints; {t} has {t.ElementCount}");

    /// <summary>Threads per team in the down kernel: enough teams for all r ranks in one pass, but at least one warp.</summary>
    internal int DownLanes(int r)
    {
        int lanes = DownGroupSize / Math.Min(DownGroupSize, CeilPowerOfTwo(r));
        return Math.Max(lanes, Math.Min(DownGroupSize, FloorPowerOfTwo(WarpSize)));
    }

    /// <summary>The storage code and both views of a weight tensor (the unused view is a 1-element dummy).</summary>
    private (int Code, ArrayView<float> F32, ArrayView<ushort> Bits16) Weight(in Tensor t) => t.DType switch
    {
        DType.F32 => (WeightF32, IlgpuBuffer.ViewOf<float>(t), _dummy16.View),
        DType.F16 => (WeightF16, _dummyF32.View, IlgpuBuffer.ViewOf<System.Half>(t).Cast<ushort>()),
        DType.BF16 => (WeightBf16, _dummyF32.View, IlgpuBuffer.ViewOf<ushort>(t)),
        _ => throw new NotSupportedException($"CFLoRA weights must be f32, f16 or bf16; got {t}"),
    };

    /// <summary>A scratch f32 tensor of <paramref name="shape"/> from <paramref name="slot"/>, grown if too small.</summary>
    private Tensor Scratch(ref DeviceBuffer? slot, params int[] shape)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long n = 1;
        foreach (int d in shape) n *= d;
        if (slot is null || slot.Length < n)
        {
            if (slot is not null)
            {
                Stream.Synchronize(); // queued kernels may still read the old buffer
                slot.Dispose();
                slot = null;
            }
            slot = Backend.Allocate(DType.F32, Math.Max(n, 1));
        }
        return new Tensor(slot, 0, shape);
    }

    /// <summary>
    /// The f32 [rows, maxR] buffer for the adapter intermediate v, shared by all modules of a call: each module's v is
    /// consumed by its GEMM before the next module's down kernel overwrites it (same stream, in order).
    /// </summary>
    protected Tensor AdapterScratch(int rows, int maxR) => Scratch(ref _vScratch, rows, maxR);

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">A module's rank exceeds <see cref="MaxRank"/>, or a size passes 32-bit indexing.</exception>
    public virtual void Forward(Tensor x, ReadOnlySpan<CfloraModule> modules, Tensor rowSample)
    {
        int rows = x.Dim(0), din = x.Dim(1);
        Count(x);
        int maxR = 0;
        foreach (var m in modules)
        {
            int r = m.A.Dim(0);
            if (r > MaxRank) throw new NotSupportedException($"the ILGPU CFLoRA kernels support r up to {MaxRank}; A is {m.A}");
            Count(m.W0); Count(m.Y); Count(m.G);
            maxR = Math.Max(maxR, r);
        }
        var v = AdapterScratch(rows, maxR);
        var xv = IlgpuBuffer.ViewOf<float>(x);
        var rs = IlgpuBuffer.ViewOf<int>(rowSample);
        var maxGrid = Backend.Accelerator.MaxGridSize;
        foreach (var m in modules)
        {
            int r = m.A.Dim(0), dout = m.W0.Dim(0);
            var vv = IlgpuBuffer.ViewOf<float>(v).SubView(0, (long)rows * r);
            var a = Weight(m.A);
            _down(Stream, new KernelConfig(new Index1D(rows), new Index1D(DownGroupSize)),
                xv, a.F32, a.Bits16, a.Code, IlgpuBuffer.ViewOf<float>(m.G), rs, vv, din, r, DownLanes(r), m.Scale);
            if (dout == 0) continue;
            var grid = new Index2D(CeilDiv(dout, Tile), CeilDiv(rows, Tile));
            if (grid.X > maxGrid.X || grid.Y > maxGrid.Y)
                throw new NotSupportedException($"CFLoRA GEMM grid {grid} exceeds the device limit {maxGrid} (x {x}, W0 {m.W0})");
            var w0 = Weight(m.W0);
            var b = Weight(m.B);
            bool hasBias = m.Bias is not null;
            var bias = hasBias ? IlgpuBuffer.ViewOf<float>(m.Bias!.Value) : (ArrayView<float>)_dummyF32.View;
            int flags = w0.Code | b.Code << 4 | (hasBias ? 1 << 8 : 0);
            _gemm(Stream, new KernelConfig(grid, new Index2D(Tile, Tile)), xv, vv,
                w0.F32, w0.Bits16, b.F32, b.Bits16, bias, IlgpuBuffer.ViewOf<float>(m.Y), flags, rows, dout, din, r);
        }
    }

    /// <inheritdoc/>
    public virtual void Generate(Tensor h, Tensor lnWeight, Tensor lnBias, float lnEps, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor g)
    {
        int samples = h.Dim(0), dh = h.Dim(1), r = g.Dim(1), r2 = r * r, hidden = 2 * r2;
        Count(h); Count(w1); Count(w2); Count(g);
        if ((long)samples * hidden > int.MaxValue)
            throw new NotSupportedException($"the generator's hidden layer ({samples} x {hidden}) passes 32-bit indexing");
        var ln = Scratch(ref _lnScratch, samples, dh);
        var mid = Scratch(ref _midScratch, samples, hidden);
        Backend.IlgpuKernels.LayerNorm(h, lnWeight, lnBias, lnEps, ln);
        _linearGelu(Stream, samples * hidden, IlgpuBuffer.ViewOf<float>(ln), IlgpuBuffer.ViewOf<float>(w1), IlgpuBuffer.ViewOf<float>(b1),
            IlgpuBuffer.ViewOf<float>(mid), dh, hidden);
        _linear(Stream, samples * r2, IlgpuBuffer.ViewOf<float>(mid), IlgpuBuffer.ViewOf<float>(w2), IlgpuBuffer.ViewOf<float>(b2),
            IlgpuBuffer.ViewOf<float>(g), hidden, r2);
    }

    /// <summary>Waits for queued work, then frees the scratch and dummy buffers. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!Backend.IsDisposed) Stream.Synchronize();
        _vScratch?.Dispose();
        _lnScratch?.Dispose();
        _midScratch?.Dispose();
        _backScratch?.Dispose();
        _dummyF32.Dispose();
        _dummy16.Dispose();
    }
}
