using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// Launches the fused SUBR top-K of <c>kernels/subr_topk.cu</c> (<c>rellax_subr_topk</c>): for each sample b, the
/// scores of its history rows against its target row (f32 / f16 widened with fp32 accumulation; i8 as an exact int32
/// dot times <c>scale[t] · scale[h]</c>), and the min(L, k) best positions by (score desc, position desc), written
/// chronologically or best first with -1 / NaN in the unused slots. One 256-thread block per sample (grid-stride
/// beyond <see cref="MaxGrid"/> samples), one warp per history row, selection in 16 KiB of shared memory; the B × L
/// score matrix is never written. The kernel file's header gives the algorithm and its roofline.
/// </summary>
public sealed class CudaSubr
{
    /// <summary>The kernel's entry point.</summary>
    public const string EntryPoint = "rellax_subr_topk";

    /// <summary>Threads per block (8 warps; the kernel's <c>__launch_bounds__</c>). Rows are scored in tiles of this many.</summary>
    public const int Block = 256;

    /// <summary>Largest grid launched; larger batches are covered by the kernel's grid-stride loop over samples.</summary>
    public const int MaxGrid = 262_144;

    /// <summary>Largest k the kernel supports (<c>RELLAX_SUBR_MAX_K</c>; equal to <see cref="SubrTopK.MaxK"/>).</summary>
    public const int MaxK = 1024;

    private readonly CudaFunction _function;

    /// <summary>Binds the launcher to the kernel in <paramref name="library"/>.</summary>
    /// <param name="library">The loaded kernels.</param>
    public CudaSubr(CudaKernelLibrary library)
    {
        ArgumentNullException.ThrowIfNull(library);
        _function = library.GetFunction(EntryPoint);
    }

    /// <summary>The kernel's table dtype code (<c>RELLAX_SUBR_DTYPE_*</c>) of a table storage type.</summary>
    /// <param name="dtype">f32, f16 or i8.</param>
    /// <exception cref="NotSupportedException">Any other dtype.</exception>
    public static int DTypeCode(DType dtype) => dtype switch
    {
        DType.F32 => 0,
        DType.F16 => 1,
        DType.I8 => 2,
        _ => throw new NotSupportedException($"the CUDA SUBR kernel takes f32, f16 or i8 tables, not {dtype}"),
    };

    /// <summary>
    /// Enqueues <c>rellax_subr_topk</c> on <paramref name="stream"/> (asynchronous). All pointers are device memory
    /// of the context the kernels were loaded into. The caller guarantees what <see cref="ISubrKernels"/> promises:
    /// every history and target row in [0, N), offsets non-decreasing from 0, and (for i8) d ≤
    /// <see cref="SubrTable.MaxInt8Dim"/>; nothing here reads device memory to check it.
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> of the kernels' context, or zero for the default stream.</param>
    /// <param name="table">(N, d) of <paramref name="tableDType"/>, row-major. 16-byte alignment and d a multiple of
    /// 4 (f32), 8 (f16) or 16 (i8) select the vectorised loads; anything else takes the scalar path.</param>
    /// <param name="tableDType">f32, f16 or i8.</param>
    /// <param name="scales">f32 (N), the row scales of an i8 table; ignored (may be null) for f32 and f16.</param>
    /// <param name="history">i32 (offsets[B]): every history's table rows, concatenated, each in time order.</param>
    /// <param name="offsets">i32 (B + 1): history b is <c>history[offsets[b] .. offsets[b + 1])</c>.</param>
    /// <param name="targets">i32 (B): the target row of each sample.</param>
    /// <param name="samples">B (0 launches nothing).</param>
    /// <param name="dim">d, at least 1.</param>
    /// <param name="k">Items kept per sample, 1 to <see cref="MaxK"/>.</param>
    /// <param name="byScore">Best first (true) or chronological (false).</param>
    /// <param name="positions">i32 (B, k), output: positions in each history (0 = oldest), -1 past min(L, k).</param>
    /// <param name="scores">f32 (B, k), output: their scores, NaN past min(L, k).</param>
    public unsafe void Launch(IntPtr stream, CUdeviceptr table, DType tableDType, CUdeviceptr scales, CUdeviceptr history,
        CUdeviceptr offsets, CUdeviceptr targets, int samples, int dim, int k, bool byScore, CUdeviceptr positions, CUdeviceptr scores)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(samples);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(k, MaxK);
        int code = DTypeCode(tableDType);
        if (tableDType == DType.I8 && dim > SubrTable.MaxInt8Dim)
            throw new ArgumentOutOfRangeException(nameof(dim), dim, $"an i8 table may have at most {SubrTable.MaxInt8Dim} columns (exact i32 dot products)");
        if (samples == 0) return;
        if (table.IsNull || history.IsNull || offsets.IsNull || targets.IsNull || positions.IsNull || scores.IsNull
            || (tableDType == DType.I8 && scales.IsNull))
            throw new ArgumentException($"Null device pointer: table={table}, scales={scales}, history={history}, offsets={offsets}, targets={targets}, positions={positions}, scores={scores}.");
        int byScoreFlag = byScore ? 1 : 0;
        var args = stackalloc IntPtr[12]
        {
            (IntPtr)(&table), (IntPtr)(&code), (IntPtr)(&scales), (IntPtr)(&history), (IntPtr)(&offsets), (IntPtr)(&targets),
            (IntPtr)(&samples), (IntPtr)(&dim), (IntPtr)(&k), (IntPtr)(&byScoreFlag), (IntPtr)(&positions), (IntPtr)(&scores),
        };
        uint grid = (uint)Math.Min(samples, MaxGrid);
        _function.Launch((grid, 1, 1), (Block, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 12));
    }
}
