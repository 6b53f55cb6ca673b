using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// Launches the fused CFLoRA forward of <c>kernels/cflora.cu</c>: <c>rellax_cflora_down</c>
/// (<c>v[t] = scale · G[s(t)]ᵀ (A x[t])</c>) then <c>rellax_cflora_gemm</c>
/// (<c>y = [x | v] · [W0 | B]ᵀ (+ bias)</c>, the adapter fused into the base GEMM's K loop).
/// fp32 activations, f32/f16/bf16 weights widened in the kernels, fp32 accumulation.
/// </summary>
internal sealed class CudaCflora
{
    /// <summary>Entry point of the down-projection and interaction kernel.</summary>
    public const string DownEntryPoint = "rellax_cflora_down";

    /// <summary>Entry point of the K-augmented GEMM kernel.</summary>
    public const string GemmEntryPoint = "rellax_cflora_gemm";

    /// <summary>Largest adapter rank the down kernel supports (<c>RELLAX_CFLORA_MAX_RANK</c>).</summary>
    public const int MaxRank = 256;

    /// <summary>Threads per block of the down kernel.</summary>
    public const int DownBlock = 256;

    /// <summary>Rows and columns of y per block of the GEMM kernel (<c>RELLAX_CFLORA_BM</c>, <c>RELLAX_CFLORA_BN</c>).</summary>
    public const int GemmTile = 64;

    /// <summary>Threads per block of the GEMM kernel (its <c>__launch_bounds__</c>).</summary>
    public const int GemmBlock = 256;

    private readonly CudaFunction _down;
    private readonly CudaFunction _gemm;

    /// <summary>Binds the launcher to the kernels in <paramref name="library"/>.</summary>
    /// <param name="library">The loaded kernels.</param>
    public CudaCflora(CudaKernelLibrary library)
    {
        ArgumentNullException.ThrowIfNull(library);
        _down = library.GetFunction(DownEntryPoint);
        _gemm = library.GetFunction(GemmEntryPoint);
    }

    /// <summary>The kernels' dtype code (<c>RELLAX_CFLORA_DTYPE_*</c>) of a weight dtype.</summary>
    /// <param name="dtype">f32, f16 or bf16.</param>
    /// <exception cref="NotSupportedException">Any other dtype.</exception>
    public static int DTypeCode(DType dtype) => dtype switch
    {
        DType.F32 => 0,
        DType.F16 => 1,
        DType.BF16 => 2,
        _ => throw new NotSupportedException($"the CUDA CFLoRA kernels take f32, f16 or bf16 weights, not {dtype}"),
    };

    /// <summary>
    /// Enqueues <c>rellax_cflora_down</c> on <paramref name="stream"/> (asynchronous): for each row t,
    /// <c>v[t, j] = scale · Σ_i (Σ_c a[i, c] x[t, c]) g[rowSample[t], i, j]</c>.
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> of the kernels' context, or zero for the default stream.</param>
    /// <param name="x">fp32 (rows, dIn).</param>
    /// <param name="a">(r, dIn) of <paramref name="aDType"/>.</param>
    /// <param name="aDType">f32, f16 or bf16.</param>
    /// <param name="g">fp32 (S, r, r).</param>
    /// <param name="rowSample">i32 (rows), each in [0, S).</param>
    /// <param name="v">fp32 (rows, r), output.</param>
    /// <param name="rows">Token rows T (0 launches nothing).</param>
    /// <param name="dIn">Input features (at least 0).</param>
    /// <param name="r">Rank, 1 to <see cref="MaxRank"/>.</param>
    /// <param name="scale">Adapter scale, folded into v.</param>
    public unsafe void LaunchDown(IntPtr stream, CUdeviceptr x, CUdeviceptr a, DType aDType, CUdeviceptr g, CUdeviceptr rowSample,
        CUdeviceptr v, int rows, int dIn, int r, float scale)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(dIn);
        ArgumentOutOfRangeException.ThrowIfLessThan(r, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(r, MaxRank);
        int code = DTypeCode(aDType);
        if (rows == 0) return;
        if (x.IsNull || a.IsNull || g.IsNull || rowSample.IsNull || v.IsNull)
            throw new ArgumentException($"Null device pointer: x={x}, a={a}, g={g}, rowSample={rowSample}, v={v}.");
        var args = stackalloc IntPtr[10]
        {
            (IntPtr)(&x), (IntPtr)(&a), (IntPtr)(&code), (IntPtr)(&g), (IntPtr)(&rowSample), (IntPtr)(&v),
            (IntPtr)(&rows), (IntPtr)(&dIn), (IntPtr)(&r), (IntPtr)(&scale),
        };
        _down.Launch(((uint)rows, 1, 1), (DownBlock, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 10));
    }

    /// <summary>
    /// Enqueues <c>rellax_cflora_gemm</c> on <paramref name="stream"/> (asynchronous):
    /// <c>y[t, o] = Σ_c x[t, c] w0[o, c] + Σ_j v[t, j] b[o, j] (+ bias[o])</c>.
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> of the kernels' context, or zero for the default stream.</param>
    /// <param name="x">fp32 (rows, dIn).</param>
    /// <param name="v">fp32 (rows, r) from <see cref="LaunchDown"/>.</param>
    /// <param name="w0">(dOut, dIn) of <paramref name="w0DType"/>.</param>
    /// <param name="w0DType">f32, f16 or bf16.</param>
    /// <param name="b">(dOut, r) of <paramref name="bDType"/>.</param>
    /// <param name="bDType">f32, f16 or bf16.</param>
    /// <param name="bias">fp32 (dOut), or a null pointer for none.</param>
    /// <param name="y">fp32 (rows, dOut), output; must not alias an input.</param>
    /// <param name="rows">Token rows T (0 launches nothing).</param>
    /// <param name="dOut">Output features (0 launches nothing).</param>
    /// <param name="dIn">Input features.</param>
    /// <param name="r">Rank, at least 1.</param>
    public unsafe void LaunchGemm(IntPtr stream, CUdeviceptr x, CUdeviceptr v, CUdeviceptr w0, DType w0DType, CUdeviceptr b, DType bDType,
        CUdeviceptr bias, CUdeviceptr y, int rows, int dOut, int dIn, int r)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(dOut);
        ArgumentOutOfRangeException.ThrowIfNegative(dIn);
        ArgumentOutOfRangeException.ThrowIfLessThan(r, 1);
        int w0Code = DTypeCode(w0DType), bCode = DTypeCode(bDType);
        if (rows == 0 || dOut == 0) return;
        if (x.IsNull || v.IsNull || w0.IsNull || b.IsNull || y.IsNull)
            throw new ArgumentException($"Null device pointer: x={x}, v={v}, w0={w0}, b={b}, y={y}.");
        uint gridX = (uint)((dOut + GemmTile - 1) / GemmTile), gridY = (uint)((rows + GemmTile - 1) / GemmTile);
        if (gridY > 65535) throw new NotSupportedException($"{rows} rows need {gridY} row blocks; the grid's y limit is 65535");
        var args = stackalloc IntPtr[12]
        {
            (IntPtr)(&x), (IntPtr)(&v), (IntPtr)(&w0), (IntPtr)(&w0Code), (IntPtr)(&b), (IntPtr)(&bCode),
            (IntPtr)(&bias), (IntPtr)(&y), (IntPtr)(&rows), (IntPtr)(&dOut), (IntPtr)(&dIn), (IntPtr)(&r),
        };
        _gemm.Launch((gridX, gridY, 1), (GemmBlock, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 12));
    }

    /// <summary>Entry points of the backward kernels (<c>kernels/cflora.cu</c>).</summary>
    public const string BackDownEntryPoint = "rellax_cflora_back_down", BackDgEntryPoint = "rellax_cflora_back_dg",
        BackOuterEntryPoint = "rellax_cflora_back_outer", BackDxEntryPoint = "rellax_cflora_back_dx";

    private CudaFunction? _backDown, _backDg, _backOuter, _backDx;

    private CudaFunction Function(ref CudaFunction? slot, CudaKernelLibrary library, string name) => slot ??= library.GetFunction(name);

    /// <summary>
    /// Enqueues the CFLoRA backward of one module (asynchronous, on <paramref name="stream"/>): u, z, du, v per row
    /// (<c>rellax_cflora_back_down</c>), dG per sample when <paramref name="dg"/> is not null (<c>_back_dg</c>), dA and dB
    /// when given (<c>_back_outer</c>), and dX (<c>_back_dx</c>, accumulated when <paramref name="accumulate"/>) when
    /// <paramref name="dx"/> is not null. Pointers: x (rows, dIn), dy (rows, dOut), a (r, dIn) and b (dOut, r) of
    /// <paramref name="abDType"/>, w0 (dOut, dIn) of <paramref name="w0DType"/>, g (S, r, r) or null for the identity,
    /// rowSample (rows), scratch 4 × (rows, r) fp32, da (r, dIn), db (dOut, r), dg (S, r, r), dx (rows, dIn).
    /// </summary>
    public unsafe void LaunchBackward(CudaKernelLibrary library, IntPtr stream, CUdeviceptr x, CUdeviceptr dy, CUdeviceptr w0, DType w0DType,
        CUdeviceptr a, CUdeviceptr b, DType abDType, CUdeviceptr g, CUdeviceptr rowSample, CUdeviceptr scratch,
        CUdeviceptr da, CUdeviceptr db, CUdeviceptr dg, CUdeviceptr dx, int rows, int samples, int dIn, int dOut, int r, float scale, bool accumulate)
    {
        ArgumentNullException.ThrowIfNull(library);
        ArgumentOutOfRangeException.ThrowIfLessThan(r, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(r, MaxRank);
        int w0Code = DTypeCode(w0DType), abCode = DTypeCode(abDType);
        if (rows == 0) return;
        long stride = (long)rows * r * sizeof(float);
        CUdeviceptr u = scratch, z = scratch.Offset(stride), du = scratch.Offset(2 * stride), v = scratch.Offset(3 * stride);
        var down = stackalloc IntPtr[16]
        {
            (IntPtr)(&x), (IntPtr)(&dy), (IntPtr)(&a), (IntPtr)(&b), (IntPtr)(&abCode), (IntPtr)(&g), (IntPtr)(&rowSample),
            (IntPtr)(&u), (IntPtr)(&z), (IntPtr)(&du), (IntPtr)(&v), (IntPtr)(&rows), (IntPtr)(&dIn), (IntPtr)(&dOut), (IntPtr)(&r), (IntPtr)(&scale),
        };
        Function(ref _backDown, library, BackDownEntryPoint).Launch(((uint)rows, 1, 1), (DownBlock, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(down, 16));
        if (!dg.IsNull)
        {
            var args = stackalloc IntPtr[7] { (IntPtr)(&u), (IntPtr)(&z), (IntPtr)(&rowSample), (IntPtr)(&dg), (IntPtr)(&rows), (IntPtr)(&r), (IntPtr)(&scale) };
            Function(ref _backDg, library, BackDgEntryPoint).Launch(((uint)samples, 1, 1), (DownBlock, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 7));
        }
        var outer = Function(ref _backOuter, library, BackOuterEntryPoint);
        if (!da.IsNull) LaunchOuter(outer, stream, du, x, da, rows, r, dIn, 0);
        if (!db.IsNull) LaunchOuter(outer, stream, v, dy, db, rows, r, dOut, 1);
        if (!dx.IsNull && dIn > 0)
        {
            int acc = accumulate ? 1 : 0;
            uint gridX = (uint)((dIn + GemmTile - 1) / GemmTile), gridY = (uint)((rows + GemmTile - 1) / GemmTile);
            if (gridY > 65535) throw new NotSupportedException($"{rows} rows need {gridY} row blocks; the grid's y limit is 65535");
            var args = stackalloc IntPtr[12]
            {
                (IntPtr)(&dy), (IntPtr)(&du), (IntPtr)(&w0), (IntPtr)(&w0Code), (IntPtr)(&a), (IntPtr)(&abCode), (IntPtr)(&dx),
                (IntPtr)(&rows), (IntPtr)(&dIn), (IntPtr)(&dOut), (IntPtr)(&r), (IntPtr)(&acc),
            };
            Function(ref _backDx, library, BackDxEntryPoint).Launch((gridX, gridY, 1), (GemmBlock, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 12));
        }
    }

    /// <summary><c>rellax_cflora_back_outer</c>: out = Σ_t left[t, i] right[t, n], [ra, nb] or transposed [nb, ra].</summary>
    private static unsafe void LaunchOuter(CudaFunction outer, IntPtr stream, CUdeviceptr left, CUdeviceptr right, CUdeviceptr output,
        int rows, int ra, int nb, int transposed)
    {
        if (nb == 0) return;
        var args = stackalloc IntPtr[7] { (IntPtr)(&left), (IntPtr)(&right), (IntPtr)(&output), (IntPtr)(&rows), (IntPtr)(&ra), (IntPtr)(&nb), (IntPtr)(&transposed) };
        uint blocks = (uint)(((long)ra * nb + DownBlock - 1) / DownBlock);
        outer.Launch((blocks, 1, 1), (DownBlock, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 7));
    }
}
