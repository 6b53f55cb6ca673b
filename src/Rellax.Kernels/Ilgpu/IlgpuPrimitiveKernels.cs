using ILGPU;
using ILGPU.Runtime;

namespace Rellax.Kernels.Ilgpu;

/// <summary>
/// Host side of the ILGPU primitives: every kernel is compiled and loaded once, in the constructor, with a typed
/// loader (<c>LoadKernel</c> with explicit group sizes, <c>LoadAutoGroupedKernel</c>) whose delegate takes the stream
/// explicitly, so hand-written kernels can share it; each call only computes the launch configuration and queues the kernel on the backend's stream.
/// Methods are virtual so that the CUDA backend can replace individual kernels with hand-written ones.
/// </summary>
/// <remarks>
/// Element counts and per-row sizes must fit in an <c>int</c> (grid indices are 32-bit); linear offsets are 64-bit.
/// Out-of-range token ids (Embedding) give zero rows and out-of-range positions (RoPE) leave the vectors
/// unrotated: kernels do not throw on the device.
/// </remarks>
internal partial class IlgpuPrimitiveKernels : IPrimitiveKernels
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> _gemm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _rmsNorm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _layerNorm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int> _softmax;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int> _rope;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> _swiGlu;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>> _gelu;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<int>, ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, int, int> _embedding;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _scatterRows;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>,
        ArrayView<float>, ArrayView<float>, int, int, int, int, int> _linear;

    // 1-element stand-ins for the views a kernel call does not use (the other storage of a weight, the adapter's v and B
    // in Linear). Freed with the accelerator, which owns every buffer allocated on it.
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _dummyF32;
    private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _dummy16;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> _add;

    /// <summary>Compiles and loads every kernel for <paramref name="backend"/>'s accelerator.</summary>
    /// <exception cref="NotSupportedException">The accelerator allows fewer than 256 threads per group (the GEMM tile).</exception>
    public IlgpuPrimitiveKernels(IlgpuBackend backend)
    {
        Backend = backend;
        var acc = backend.Accelerator;
        if (acc.MaxNumThreadsPerGroup < GemmTile * GemmTile)
            throw new NotSupportedException($"{acc.Name} allows {acc.MaxNumThreadsPerGroup} threads per group; the ILGPU kernels need {GemmTile * GemmTile}");
        RowGroupSize = FloorPowerOfTwo(Math.Min(256, Math.Min(acc.MaxNumThreadsPerGroup, MaxGroupSize)));
        MinRowGroupSize = Math.Min(RowGroupSize, FloorPowerOfTwo(Math.Max(1, acc.WarpSize)));

        _gemm = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(GemmKernel);
        _rmsNorm = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(RmsNormKernel);
        _layerNorm = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(LayerNormKernel);
        _softmax = acc.LoadKernel<ArrayView<float>, ArrayView<float>, int>(SoftmaxKernel);
        _rope = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(RopeKernel);
        _swiGlu = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluKernel);
        _gelu = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>>(GeluKernel);
        _embedding = acc.LoadAutoGroupedKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, int, int>(EmbeddingKernel);
        _scatterRows = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(ScatterRowsKernel);
        _linear = acc.LoadKernel<ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>,
            ArrayView<float>, ArrayView<float>, int, int, int, int, int>(IlgpuCfloraKernels.FusedGemmKernel);
        _dummyF32 = acc.Allocate1D<float>(1);
        _dummy16 = acc.Allocate1D<ushort>(1);
        _add = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(AddKernel);
    }

    /// <summary>The backend whose accelerator and stream the kernels run on.</summary>
    protected IlgpuBackend Backend { get; }

    /// <summary>Largest group of the row kernels (norms, softmax): min(256, accelerator limit), a power of two.</summary>
    internal int RowGroupSize { get; }

    /// <summary>Smallest group of the row kernels: one warp (a power of two, at most <see cref="RowGroupSize"/>).</summary>
    internal int MinRowGroupSize { get; }

    private AcceleratorStream Stream => Backend.Stream;

    private static ArrayView<float> F(in Tensor t) => IlgpuBuffer.ViewOf<float>(t);

    private static ArrayView<int> I(in Tensor t) => IlgpuBuffer.ViewOf<int>(t);

    private static int Count(in Tensor t) =>
        t.ElementCount <= int.MaxValue ? (int)t.ElementCount
        : throw new NotSupportedException($"the ILGPU kernels index elements with 32-bit ints; {t} has {t.ElementCount}");

    private static int FloorPowerOfTwo(int n)
    {
        int p = 1;
        while (p * 2 <= n) p *= 2;
        return p;
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    /// <summary>
    /// One group per row; the group has the fewest threads (a power of two, at least one warp, at most
    /// <see cref="RowGroupSize"/>) that give each thread no more than one element of a row of <paramref name="rowLength"/>.
    /// Short rows thus do not pay for 256-thread reductions.
    /// </summary>
    internal KernelConfig RowConfig(int rows, int rowLength)
    {
        int g = MinRowGroupSize;
        while (g < RowGroupSize && g < rowLength) g *= 2;
        return new(new Index1D(rows), new Index1D(g));
    }

    /// <inheritdoc/>
    public virtual void MatMulTransposed(Tensor x, Tensor w, Tensor y)
    {
        int m = x.Dim(0), k = x.Dim(1), n = w.Dim(0);
        Count(x); Count(w); Count(y);
        var grid = new Index2D(CeilDiv(n, GemmTile), CeilDiv(m, GemmTile));
        var maxGrid = Backend.Accelerator.MaxGridSize;
        if (grid.X > maxGrid.X || grid.Y > maxGrid.Y)
            throw new NotSupportedException($"MatMul grid {grid} exceeds the device limit {maxGrid} (x {x}, w {w})");
        var config = new KernelConfig(grid, new Index2D(GemmTile, GemmTile));
        _gemm(Stream, config, F(x), F(w), F(y), m, n, k);
    }

    /// <inheritdoc/>
    public virtual void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y)
    {
        Count(x);
        _rmsNorm(Stream, RowConfig(x.Rows, x.Dim(-1)), F(x), F(weight), F(y), x.Dim(-1), eps);
    }

    /// <inheritdoc/>
    public virtual void LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y)
    {
        Count(x);
        _layerNorm(Stream, RowConfig(x.Rows, x.Dim(-1)), F(x), F(weight), F(bias), F(y), x.Dim(-1), eps);
    }

    /// <inheritdoc/>
    public virtual void Rope(Tensor x, Tensor positions, Tensor cos, Tensor sin) =>
        _rope(Stream, Count(x) / 2, F(x), I(positions), F(cos), F(sin), x.Dim(1), x.Dim(2) / 2, cos.Dim(0));

    /// <inheritdoc/>
    public virtual void SwiGlu(Tensor gate, Tensor up, Tensor y) => _swiGlu(Stream, Count(y), F(gate), F(up), F(y));

    /// <inheritdoc/>
    public virtual void Gelu(Tensor x, Tensor y) => _gelu(Stream, Count(y), F(x), F(y));

    /// <inheritdoc/>
    public virtual void Softmax(Tensor x, Tensor y)
    {
        Count(x);
        _softmax(Stream, RowConfig(x.Rows, x.Dim(-1)), F(x), F(y), x.Dim(-1));
    }

    /// <summary>The storage code (<see cref="IlgpuCfloraKernels.WeightF32"/>, ...) and both views of an f32/f16/bf16 tensor.</summary>
    internal (int Code, ArrayView<float> F32, ArrayView<ushort> Bits16) Typed(in Tensor t) => t.DType switch
    {
        DType.F32 => (IlgpuCfloraKernels.WeightF32, F(t), (ArrayView<ushort>)_dummy16.View),
        DType.F16 => (IlgpuCfloraKernels.WeightF16, _dummyF32.View, IlgpuBuffer.ViewOf<System.Half>(t).Cast<ushort>()),
        DType.BF16 => (IlgpuCfloraKernels.WeightBf16, _dummyF32.View, IlgpuBuffer.ViewOf<ushort>(t)),
        _ => throw new NotSupportedException($"weights must be f32, f16 or bf16; got {t}"),
    };

    /// <inheritdoc/>
    /// <remarks>
    /// The CFLoRA fused GEMM (<see cref="IlgpuCfloraKernels.FusedGemmKernel"/>) with rank 0: 16×16 shared-memory tiles,
    /// f16/bf16 weight elements widened as they are staged, the bias added at the store.
    /// </remarks>
    public virtual void Linear(Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        int m = x.Dim(0), k = x.Dim(1), n = w.Dim(0);
        Count(x); Count(w); Count(y);
        var grid = new Index2D(CeilDiv(n, GemmTile), CeilDiv(m, GemmTile));
        var maxGrid = Backend.Accelerator.MaxGridSize;
        if (grid.X > maxGrid.X || grid.Y > maxGrid.Y)
            throw new NotSupportedException($"Linear grid {grid} exceeds the device limit {maxGrid} (x {x}, w {w})");
        // K = 0: the kernel reads neither x nor w (y = bias or 0), and ILGPU cannot view their empty buffers.
        var typed = k == 0 ? (Code: IlgpuCfloraKernels.WeightF32, F32: (ArrayView<float>)_dummyF32.View, Bits16: (ArrayView<ushort>)_dummy16.View) : Typed(w);
        var xView = k == 0 ? (ArrayView<float>)_dummyF32.View : F(x);
        var biasView = bias is { } b ? F(b) : (ArrayView<float>)_dummyF32.View;
        int flags = typed.Code | (bias is not null ? 1 << 8 : 0);
        _linear(Stream, new KernelConfig(grid, new Index2D(GemmTile, GemmTile)), xView, _dummyF32.View,
            typed.F32, typed.Bits16, _dummyF32.View, _dummy16.View, biasView, F(y), flags, m, n, k, 0);
    }

    /// <inheritdoc/>
    /// <remarks>Rows outside dst are skipped on the device (the CPU backend throws); duplicate rows race (last writer unspecified).</remarks>
    public virtual void ScatterRows(Tensor src, Tensor rows, Tensor dst) =>
        _scatterRows(Stream, Count(src), F(src), I(rows), F(dst), src.Dim(1), dst.Dim(0));

    /// <inheritdoc/>
    public virtual void Embedding(Tensor ids, Tensor table, Tensor y)
    {
        var typed = Typed(table);
        _embedding(Stream, Count(y), I(ids), typed.F32, typed.Bits16, typed.Code, F(y), table.Dim(1), table.Dim(0));
    }

    /// <inheritdoc/>
    public virtual void Add(Tensor a, Tensor b, Tensor y) => _add(Stream, Count(y), F(a), F(b), F(y));
}
