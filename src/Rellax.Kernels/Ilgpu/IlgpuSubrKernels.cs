using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace Rellax.Kernels.Ilgpu;

/// <summary>
/// Host side of the ILGPU SUBR top-K kernel (SPEC §2; semantics in <see cref="ISubrKernels"/>): the kernel is compiled
/// and loaded once, in the constructor, with a typed loader whose delegate takes the backend's stream; a call picks the
/// views of the table's storage, packs the flags and queues one launch (grid = samples, capped at the device's grid
/// limit, the kernel strides over the rest; group = <see cref="GroupSize"/>). The device code and its roofline are in
/// <c>IlgpuSubrKernels.Device.cs</c>.
/// </summary>
/// <remarks>
/// How many lanes score one history row (<see cref="LanesPerRow"/>) is chosen from the accelerator: 32 (a warp, coalesced
/// row reads, shuffle reduction) on GPUs, 1 (a thread per row, no shuffles) on ILGPU's CPU emulator, where that is much
/// faster. Tests set it to exercise the other paths. It changes the fp32 summation order of every row alike, so ties
/// within one call are still decided by position alone. <see cref="TopK"/> is virtual so that a CUDA backend can replace
/// it with a hand-written kernel.
/// </remarks>
internal partial class IlgpuSubrKernels : ISubrKernels, IDisposable
{
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<sbyte>,
        ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, int, int> _topK;

    private readonly MemoryBuffer1D<float, Stride1D.Dense> _dummyF32;
    private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _dummy16;
    private readonly MemoryBuffer1D<sbyte, Stride1D.Dense> _dummyI8;
    private int _lanesPerRow;
    private bool _disposed;

    /// <summary>Compiles and loads the SUBR kernel for <paramref name="backend"/>'s accelerator (any group size works).</summary>
    public IlgpuSubrKernels(IlgpuBackend backend)
    {
        Backend = backend;
        var acc = backend.Accelerator;
        GroupSize = FloorPowerOfTwo(Math.Min(MaxGroupSize, acc.MaxNumThreadsPerGroup));
        WarpSize = FloorPowerOfTwo(Math.Max(1, acc.WarpSize));
        _lanesPerRow = acc is CPUAccelerator ? 1 : Math.Min(32, Math.Min(WarpSize, GroupSize));

        _topK = acc.LoadKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<sbyte>, ArrayView<float>,
            ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, int, int>(TopKKernel);

        _dummyF32 = acc.Allocate1D<float>(1);
        try
        {
            _dummy16 = acc.Allocate1D<ushort>(1);
            try { _dummyI8 = acc.Allocate1D<sbyte>(1); }
            catch { _dummy16.Dispose(); throw; }
        }
        catch { _dummyF32.Dispose(); throw; }
    }

    /// <summary>The backend whose accelerator and stream the kernel runs on.</summary>
    protected IlgpuBackend Backend { get; }

    /// <summary>Threads per group: min(<see cref="MaxGroupSize"/>, device limit), a power of two; also the rows per tile.</summary>
    internal int GroupSize { get; }

    /// <summary>The accelerator's warp size (rounded down to a power of two).</summary>
    internal int WarpSize { get; }

    /// <summary>
    /// Lanes that score one history row: a power of two, at most the warp size (a team must lie in one warp, for the
    /// shuffles) and the group size. Default 32 on GPUs, 1 on the CPU emulator.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a power of two, or larger than the warp or the group.</exception>
    internal int LanesPerRow
    {
        get => _lanesPerRow;
        set
        {
            if (value < 1 || (value & (value - 1)) != 0 || value > WarpSize || value > GroupSize)
                throw new ArgumentOutOfRangeException(nameof(value), value,
                    $"lanes per row must be a power of two no larger than the warp ({WarpSize}) and the group ({GroupSize})");
            _lanesPerRow = value;
        }
    }

    /// <summary>
    /// Most groups a launch may have (0 = the device's grid limit); with fewer groups than samples the kernel strides
    /// over samples. Tests lower it to exercise that path.
    /// </summary>
    internal int GridLimit { get; set; }

    private AcceleratorStream Stream => Backend.Stream;

    private static int FloorPowerOfTwo(int n)
    {
        int p = 1;
        while (p * 2 <= n) p *= 2;
        return p;
    }

    /// <inheritdoc/>
    /// <remarks>Queues one launch on the backend's stream and returns; row offsets are computed in 64 bits, so any table
    /// that fits in device memory works.</remarks>
    public virtual void TopK(Tensor table, Tensor scales, Tensor history, Tensor offsets, Tensor targets, int k, bool byScore,
        Tensor positions, Tensor scores)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int samples = targets.Dim(0);
        if (samples == 0) return;
        int dim = table.Dim(1);
        int code;
        ArrayView<float> f32 = _dummyF32.View, scaleView = _dummyF32.View;
        ArrayView<ushort> bits16 = _dummy16.View;
        ArrayView<sbyte> i8 = _dummyI8.View;
        switch (table.DType)
        {
            case DType.F32:
                code = StorageF32;
                f32 = IlgpuBuffer.ViewOf<float>(table);
                break;
            case DType.F16:
                code = StorageF16;
                bits16 = IlgpuBuffer.ViewOf<System.Half>(table).Cast<ushort>();
                break;
            case DType.I8:
                code = StorageI8;
                i8 = IlgpuBuffer.ViewOf<sbyte>(table);
                scaleView = IlgpuBuffer.ViewOf<float>(scales);
                break;
            default:
                throw new NotSupportedException($"a SUBR table is f32, f16 or i8; got {table}");
        }
        // An empty history tensor still has a (1-element) buffer behind it; the kernel never reads past offsets[B].
        ArrayView<int> historyView = history.ElementCount == 0 ? ((IlgpuBuffer)history.Buffer).View<int>() : IlgpuBuffer.ViewOf<int>(history);
        int grid = Math.Min(samples, GridLimit > 0 ? GridLimit : Backend.Accelerator.MaxGridSize.X);
        int flags = code | (byScore ? 1 << 4 : 0) | _lanesPerRow << 8;
        _topK(Stream, new KernelConfig(new Index1D(grid), new Index1D(GroupSize)),
            f32, bits16, i8, scaleView, historyView, IlgpuBuffer.ViewOf<int>(offsets), IlgpuBuffer.ViewOf<int>(targets),
            IlgpuBuffer.ViewOf<int>(positions), IlgpuBuffer.ViewOf<float>(scores), flags, dim, k);
    }

    /// <summary>Waits for queued work, then frees the dummy buffers. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!Backend.IsDisposed) Stream.Synchronize();
        _dummyF32.Dispose();
        _dummy16.Dispose();
        _dummyI8.Dispose();
    }
}
