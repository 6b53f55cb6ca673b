using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Rellax.Kernels.Ilgpu;

/// <summary>
/// The int8 linear layer (LLM.int8()-style W8A8; <see cref="IInt8LinearKernels"/>, ground truth
/// <see cref="PrimitivesReference.LinearInt8"/>) on ILGPU accelerators: the CUDA backend (int8 dots as PTX <c>dp4a</c>), the CPU
/// emulator and OpenCL (plain int32 multiply-adds, exact as well). Device code in <c>IlgpuInt8Linear.Device.cs</c>.
/// </summary>
/// <remarks>
/// <para><b>Layout.</b> <see cref="Int8Weights.Values"/> holds the weight row-major with K padded to a multiple of 4 by zeros,
/// so each row is ⌈K/4⌉ packed ints (byte 0 the lowest, as <c>dp4a</c> reads them); scales f32 [N]; row sums i32 [N] (Σ q,
/// kept for the contract; the s8 × s8 dot needs no offset correction).</para>
/// <para><b>Calls.</b> Linear queues four kernels: column maxima → outlier flags, one thread compacting the flags into an
/// ascending index list (count first), activation quantization per row and group of <see cref="Int8Weights.GroupSize"/>
/// columns (outlier columns zeroed, as the reference; s_x [M, ⌈K/G⌉]), and the product, one thread per output element.
/// Per-call scratch (flags, list, x8, s_x) is allocated on the backend and freed after a stream synchronization at the end of
/// the call. The output is formed in the same float operations and order as the CPU kernel (<c>f = Σ_g acc_g · s_x[g]</c>
/// group by group, then <c>f · s_w + Σ_o x_o · (q_o · s_w) + bias</c>), so on the emulator the two agree bitwise.</para>
/// <para><b>Roofline and what is missing.</b> 2·M·N·K integer ops (K/4 dp4a per output) and a read of K bytes of x8 and of w
/// per output: with no shared-memory tiling the product streams w from L2 once per row of x, so it is bound by L2 bandwidth,
/// far from dp4a's peak; the single-thread compaction costs O(K) serial steps. A tiled kernel (or <c>mma.sync</c> s8) is the
/// next step. <b>Not yet run on a GPU</b> (checked on the emulator only).</para>
/// </remarks>
internal sealed partial class IlgpuInt8Linear : IInt8LinearKernels
{
    private readonly IlgpuBackend _backend;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<ushort>, int, int, ArrayView<int>, ArrayView<float>, ArrayView<int>> _quantizeWeights;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, int, int, float, ArrayView<int>> _outlierFlags;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<int>, int, ArrayView<int>> _compact;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, int, int, ArrayView<int>, ArrayView<int>, ArrayView<float>> _quantizeRows;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, ArrayView<float>,
        ArrayView<int>, ArrayView<float>, ArrayView<float>, LinearLaunch> _linear;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int> _embedding;

    /// <summary>Compiles and loads the kernels for <paramref name="backend"/>'s accelerator.</summary>
    public IlgpuInt8Linear(IlgpuBackend backend)
    {
        _backend = backend;
        var acc = backend.Accelerator;
        Dp4aAvailable = acc is CudaAccelerator;
        _quantizeWeights = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<ushort>, int, int, ArrayView<int>, ArrayView<float>, ArrayView<int>>(QuantizeWeightsKernel);
        _outlierFlags = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, int, int, float, ArrayView<int>>(OutlierFlagsKernel);
        _compact = acc.LoadAutoGroupedKernel<Index1D, ArrayView<int>, int, ArrayView<int>>(CompactKernel);
        _quantizeRows = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, int, int, ArrayView<int>, ArrayView<int>, ArrayView<float>>(QuantizeRowsKernel);
        _linear = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, ArrayView<float>,
            ArrayView<int>, ArrayView<float>, ArrayView<float>, LinearLaunch>(LinearKernel);
        _embedding = acc.LoadAutoGroupedKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>(EmbeddingKernel);
    }

    /// <summary>Whether the int8 dot runs as PTX <c>dp4a</c> here (a CUDA accelerator).</summary>
    internal bool Dp4aAvailable { get; }

    /// <summary>Use <c>dp4a</c> where <see cref="Dp4aAvailable"/> (default); false forces the plain-int dot (both are exact).</summary>
    internal bool UseDp4a { get; set; } = true;

    private AcceleratorStream Stream => _backend.Stream;

    private static int Quads(int k) => (k + 3) / 4;

    private static ArrayView<int> Packed(Int8Weights w) => Whole<sbyte>(w.Values).Cast<int>();

    private static ArrayView<T> Whole<T>(DeviceBuffer b) where T : unmanaged => ((IlgpuBuffer)b).View<T>();

    /// <inheritdoc/>
    public Int8Weights Quantize(Tensor w, int groupSize)
    {
        int n = w.Dim(0), k = w.Dim(1), kq = Quads(k);
        var (code, f32, bits16) = _backend.IlgpuKernels.Typed(w);
        var values = _backend.Allocate(DType.I8, Math.Max(1, (long)n * kq * 4));
        var scales = _backend.Allocate(DType.F32, Math.Max(1, n));
        var sums = _backend.Allocate(DType.I32, Math.Max(1, n));
        if (n > 0) _quantizeWeights(Stream, n, f32, bits16, code, k, Whole<sbyte>(values).Cast<int>(), Whole<float>(scales), Whole<int>(sums));
        return new Int8Weights(_backend, n, k, groupSize, values, scales, sums);
    }

    /// <inheritdoc/>
    public void Linear(Tensor x, Int8Weights w, Tensor? bias, Tensor y, float threshold)
    {
        int m = x.Dim(0), k = x.Dim(1), n = w.Rows, kq = Quads(k), groups = (k + w.GroupSize - 1) / w.GroupSize;
        if (m == 0 || n == 0) return;
        using var flags = _backend.Allocate(DType.I32, Math.Max(1, k));
        using var list = _backend.Allocate(DType.I32, k + 1);
        using var x8 = _backend.Allocate(DType.I32, Math.Max(1, (long)m * kq));
        using var sx = _backend.Allocate(DType.F32, Math.Max(1, (long)m * groups));
        var xv = IlgpuBuffer.ViewOf<float>(x);
        if (k > 0) _outlierFlags(Stream, k, xv, m, k, threshold, Whole<int>(flags));
        _compact(Stream, 1, Whole<int>(flags), k, Whole<int>(list));
        if (groups > 0) _quantizeRows(Stream, checked(m * groups), xv, k, w.GroupSize, Whole<int>(list), Whole<int>(x8), Whole<float>(sx));
        var launch = new LinearLaunch { N = n, K = k, Kq = kq, GroupQuads = w.GroupSize / 4, Groups = groups, HasBias = bias is null ? 0 : 1, UseDp4a = UseDp4a ? 1 : 0 };
        _linear(Stream, checked(m * n), xv, Whole<int>(x8), Whole<float>(sx), Packed(w), Whole<float>(w.Scales), Whole<int>(list),
            bias is { } b ? IlgpuBuffer.ViewOf<float>(b) : Whole<float>(sx), IlgpuBuffer.ViewOf<float>(y), launch);
        Stream.Synchronize(); // the scratch above is freed on return
    }

    /// <inheritdoc/>
    /// <remarks>Ids outside [0, rows) give zero rows (no device-side exception), as the ILGPU f32 embedding does.</remarks>
    public void Embedding(Tensor ids, Int8Weights table, Tensor y)
    {
        int t = ids.Dim(0), h = table.Cols;
        if ((long)t * h == 0) return;
        _embedding(Stream, checked(t * h), IlgpuBuffer.ViewOf<int>(ids), Packed(table), Whole<float>(table.Scales), IlgpuBuffer.ViewOf<float>(y), h, table.Rows);
    }

    /// <inheritdoc/>
    public sbyte[] ReadValues(Int8Weights w)
    {
        int n = w.Rows, k = w.Cols, stride = Quads(k) * 4;
        var padded = new sbyte[Math.Max(1, (long)n * stride)];
        w.Values.CopyTo<sbyte>(padded);
        var values = new sbyte[(long)n * k];
        for (int j = 0; j < n; j++) Array.Copy(padded, (long)j * stride, values, (long)j * k, k);
        return values;
    }
}
