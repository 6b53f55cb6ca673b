using ILGPU.Runtime.Cuda;
using Rellax.Interop;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// Launches <c>kernels/int8_linear.cu</c> (the int8 linear layer, LLM.int8()-style W8A8 with per-group activation scales;
/// <see cref="PrimitivesReference.LinearInt8"/> defines it): per call the outlier flags, their compaction, the activation
/// quantizer (one warp per row and group) and the 64 × 64-tile dp4a GEMM, queued on one stream with no host
/// synchronization; and the int8 embedding gather. The kernel file's header gives the layouts, grids and roofline. The
/// weights use the ILGPU layout (<see cref="IlgpuInt8Linear"/>: packed ints [N, ⌈K/4⌉], scales [N]).
/// <b>Not yet run on a GPU</b>: the kernels are checked by <c>kernels/tests/sim/int8_linear_sim.cpp</c> and compiled by NVRTC
/// in the tests; this launcher's argument lists follow the kernels' signatures (<c>CudaInt8LinearTests</c> check the names
/// and run it where a device exists).
/// </summary>
internal sealed class CudaInt8Linear
{
    /// <summary>Entry points, in call order.</summary>
    internal const string OutlierFlags = "rellax_int8_outlier_flags", Compact = "rellax_int8_compact",
        QuantizeRows = "rellax_int8_quantize_rows", Linear = "rellax_int8_linear", Embedding = "rellax_int8_embedding",
        QuantizeWeights = "rellax_int8_quantize_weights";

    /// <summary>The GEMM's output tile (<c>RELLAX_INT8_TILE</c>) and threads per block.</summary>
    internal const int Tile = 64, GemmThreads = 256;

    private readonly CudaFunction _flags, _compact, _quantizeRows, _linear, _embedding;

    public CudaInt8Linear(CudaKernelLibrary library)
    {
        ArgumentNullException.ThrowIfNull(library);
        _flags = library.GetFunction(OutlierFlags);
        _compact = library.GetFunction(Compact);
        _quantizeRows = library.GetFunction(QuantizeRows);
        _linear = library.GetFunction(Linear);
        _embedding = library.GetFunction(Embedding);
    }

    /// <summary>
    /// Enqueues y[M, N] = LinearInt8(x[M, K], w8, sw, bias) on <paramref name="stream"/>, with scratch flags [K], list [K + 1],
    /// x8 [M, ⌈K/4⌉] and sx [M, ⌈K/G⌉] (device memory the caller keeps alive until the stream has run the call). M, N ≥ 1.
    /// </summary>
    public unsafe void LaunchLinear(IntPtr stream, CUdeviceptr x, CUdeviceptr w8, CUdeviceptr sw, CUdeviceptr bias, CUdeviceptr y,
        CUdeviceptr flags, CUdeviceptr list, CUdeviceptr x8, CUdeviceptr sx, int m, int n, int k, int group, float threshold)
    {
        int groups = (k + group - 1) / group;
        if (k > 0)
        {
            var a = stackalloc IntPtr[5] { (IntPtr)(&x), (IntPtr)(&m), (IntPtr)(&k), (IntPtr)(&threshold), (IntPtr)(&flags) };
            _flags.Launch(((uint)((k + 255) / 256), 1, 1), (256, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(a, 5));
        }
        var c = stackalloc IntPtr[3] { (IntPtr)(&flags), (IntPtr)(&k), (IntPtr)(&list) };
        _compact.Launch((1, 1, 1), (32, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(c, 3));
        if (groups > 0)
        {
            var q = stackalloc IntPtr[7] { (IntPtr)(&x), (IntPtr)(&m), (IntPtr)(&k), (IntPtr)(&group), (IntPtr)(&flags), (IntPtr)(&x8), (IntPtr)(&sx) };
            _quantizeRows.Launch(((uint)groups, (uint)m, 1), (32, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(q, 7));
        }
        var g = stackalloc IntPtr[12]
        {
            (IntPtr)(&x8), (IntPtr)(&sx), (IntPtr)(&w8), (IntPtr)(&sw), (IntPtr)(&list), (IntPtr)(&x), (IntPtr)(&bias), (IntPtr)(&y),
            (IntPtr)(&m), (IntPtr)(&n), (IntPtr)(&k), (IntPtr)(&group),
        };
        _linear.Launch(((uint)((n + Tile - 1) / Tile), (uint)((m + Tile - 1) / Tile), 1), (GemmThreads, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(g, 12));
    }

    /// <summary>Enqueues y[T, K] = w8[ids[t]] · scales[ids[t]] (an id outside [0, rows) gives a zero row). T·K ≥ 1.</summary>
    public unsafe void LaunchEmbedding(IntPtr stream, CUdeviceptr ids, CUdeviceptr w8, CUdeviceptr scales, CUdeviceptr y, int t, int k, int rows)
    {
        var a = stackalloc IntPtr[7] { (IntPtr)(&ids), (IntPtr)(&w8), (IntPtr)(&scales), (IntPtr)(&y), (IntPtr)(&t), (IntPtr)(&k), (IntPtr)(&rows) };
        _embedding.Launch(((uint)(((long)t * k + 255) / 256), 1, 1), (256, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(a, 7));
    }
}

/// <summary>
/// The CUDA backend's int8 linear kernels: <see cref="Linear"/> and <see cref="Embedding"/> launch <c>kernels/int8_linear.cu</c>
/// (<see cref="CudaInt8Linear"/>); quantization at load and <see cref="ReadValues"/> are the ILGPU ones (the same layout and
/// the same integers, as the simulation checks against the shared quantizer).
/// </summary>
internal sealed class CudaInt8LinearKernels(IlgpuBackend backend, CudaKernelLibrary library) : IInt8LinearKernels
{
    private readonly IlgpuInt8Linear _ilgpu = new(backend);
    private readonly CudaInt8Linear _launcher = new(library);

    private IntPtr StreamHandle => ((CudaStream)backend.Stream).StreamPtr;

    private static CUdeviceptr Pointer(in Tensor t) => CUdeviceptr.FromIntPtr(IlgpuBuffer.DevicePointer(t));

    private static CUdeviceptr Pointer(DeviceBuffer b) => CUdeviceptr.FromIntPtr(IlgpuBuffer.DevicePointer(b));

    public Int8Weights Quantize(Tensor w, int groupSize) => _ilgpu.Quantize(w, groupSize);

    public sbyte[] ReadValues(Int8Weights w) => _ilgpu.ReadValues(w);

    public void Linear(Tensor x, Int8Weights w, Tensor? bias, Tensor y, float threshold)
    {
        int m = x.Dim(0), k = x.Dim(1), n = w.Rows, groups = (k + w.GroupSize - 1) / w.GroupSize;
        if (m == 0 || n == 0) return;
        using var flags = backend.Allocate(DType.I32, Math.Max(1, k));
        using var list = backend.Allocate(DType.I32, k + 1);
        using var x8 = backend.Allocate(DType.I32, Math.Max(1, (long)m * ((k + 3) / 4)));
        using var sx = backend.Allocate(DType.F32, Math.Max(1, (long)m * groups));
        using (CudaDriver.Enter(library.Context))
            _launcher.LaunchLinear(StreamHandle, Pointer(x), Pointer(w.Values), Pointer(w.Scales), bias is { } b ? Pointer(b) : default, Pointer(y),
                Pointer(flags), Pointer(list), Pointer(x8), Pointer(sx), m, n, k, w.GroupSize, threshold);
        backend.Stream.Synchronize(); // the scratch above is freed on return
    }

    public void Embedding(Tensor ids, Int8Weights table, Tensor y)
    {
        int t = ids.Dim(0), k = table.Cols;
        if ((long)t * k == 0) return;
        using (CudaDriver.Enter(library.Context))
            _launcher.LaunchEmbedding(StreamHandle, Pointer(ids), Pointer(table.Values), Pointer(table.Scales), Pointer(y), t, k, table.Rows);
    }
}
