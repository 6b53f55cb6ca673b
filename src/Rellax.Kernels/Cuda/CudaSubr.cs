using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// Launches the fused SUBR top-K of <c>kernels/subr_topk.cu</c> (<c>rellax_subr_topk_{f32,f16,i8}</c>, one kernel per
/// table dtype, so each gets the registers its own dot product needs): for each sample b, the
/// scores of its history rows against its target row (f32 / f16 widened with fp32 accumulation; i8 as an exact int32
/// dot times <c>scale[t] · scale[h]</c>), and the min(L, k) best positions by (score desc, position desc), written
/// chronologically or best first with -1 / NaN in the unused slots. One 256-thread block per sample (grid-stride
/// beyond <see cref="MaxGrid"/> samples), one warp per history row, selection in 16 KiB of shared memory; the B × L
/// score matrix is never written. The kernel file's header gives the algorithm and its roofline.
/// </summary>
internal sealed class CudaSubr
{
    /// <summary>Entry point for f32 tables.</summary>
    public const string EntryPointF32 = "rellax_subr_topk_f32";

    /// <summary>Entry point for f16 tables.</summary>
    public const string EntryPointF16 = "rellax_subr_topk_f16";

    /// <summary>Entry point for i8 tables (with per-row f32 scales).</summary>
    public const string EntryPointI8 = "rellax_subr_topk_i8";

    /// <summary>Threads per block (8 warps; the kernel's <c>__launch_bounds__</c>). Rows are scored in tiles of this many.</summary>
    public const int Block = 256;

    /// <summary>Largest grid launched; larger batches are covered by the kernel's grid-stride loop over samples.</summary>
    public const int MaxGrid = 262_144;

    /// <summary>Largest k the kernel supports (<c>RELLAX_SUBR_MAX_K</c>; equal to <see cref="SubrTopK.MaxK"/>).</summary>
    public const int MaxK = 1024;

    private readonly CudaFunction _f32;
    private readonly CudaFunction _f16;
    private readonly CudaFunction _i8;

    /// <summary>Binds the launcher to the kernels in <paramref name="library"/>.</summary>
    /// <param name="library">The loaded kernels.</param>
    public CudaSubr(CudaKernelLibrary library)
    {
        ArgumentNullException.ThrowIfNull(library);
        _f32 = library.GetFunction(EntryPointF32);
        _f16 = library.GetFunction(EntryPointF16);
        _i8 = library.GetFunction(EntryPointI8);
    }

    /// <summary>The entry point that handles tables stored as <paramref name="dtype"/>.</summary>
    /// <param name="dtype">f32, f16 or i8.</param>
    /// <exception cref="NotSupportedException">Any other dtype.</exception>
    public static string EntryPointFor(DType dtype) => dtype switch
    {
        DType.F32 => EntryPointF32,
        DType.F16 => EntryPointF16,
        DType.I8 => EntryPointI8,
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
        _ = EntryPointFor(tableDType);
        if (tableDType == DType.I8 && dim > SubrTable.MaxInt8Dim)
            throw new ArgumentOutOfRangeException(nameof(dim), dim, $"an i8 table may have at most {SubrTable.MaxInt8Dim} columns (exact i32 dot products)");
        if (samples == 0) return;
        if (table.IsNull || history.IsNull || offsets.IsNull || targets.IsNull || positions.IsNull || scores.IsNull
            || (tableDType == DType.I8 && scales.IsNull))
            throw new ArgumentException($"Null device pointer: table={table}, scales={scales}, history={history}, offsets={offsets}, targets={targets}, positions={positions}, scores={scores}.");
        int byScoreFlag = byScore ? 1 : 0;
        var args = stackalloc IntPtr[11]
        {
            (IntPtr)(&table), (IntPtr)(&scales), (IntPtr)(&history), (IntPtr)(&offsets), (IntPtr)(&targets),
            (IntPtr)(&samples), (IntPtr)(&dim), (IntPtr)(&k), (IntPtr)(&byScoreFlag), (IntPtr)(&positions), (IntPtr)(&scores),
        };
        var function = tableDType switch { DType.F32 => _f32, DType.F16 => _f16, _ => _i8 };
        uint grid = (uint)Math.Min(samples, MaxGrid);
        function.Launch((grid, 1, 1), (Block, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 11));
    }
}
