using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>
/// Launches <c>rellax_rmsnorm_f32</c> (<c>kernels/rmsnorm.cu</c>):
/// <c>y[r, i] = x[r, i] / sqrt(mean_j x[r, j]^2 + eps) * weight[i]</c>, fp32 with fp32 accumulation,
/// one block per row.
/// </summary>
internal sealed class CudaRmsNorm
{
    /// <summary>The kernel's entry point.</summary>
    public const string EntryPoint = "rellax_rmsnorm_f32";

    private readonly CudaFunction _function;

    /// <summary>Binds the launcher to the kernel in <paramref name="library"/>.</summary>
    /// <param name="library">The loaded kernels.</param>
    public CudaRmsNorm(CudaKernelLibrary library)
    {
        ArgumentNullException.ThrowIfNull(library);
        _function = library.GetFunction(EntryPoint);
    }

    /// <summary>
    /// Threads per block for rows of length <paramref name="n"/>: about four elements per thread, a multiple of the
    /// warp size, between 32 and 1024 (e.g. n = 4096 gives 1024, n = 768 gives 192, n &lt;= 128 gives 32).
    /// </summary>
    /// <param name="n">Row length (at least 1).</param>
    public static int BlockSizeFor(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        var perThread4 = (n + 3) / 4;
        var rounded = (perThread4 + 31) / 32 * 32;
        return Math.Clamp(rounded, 32, 1024);
    }

    /// <summary>
    /// Enqueues RMSNorm on <paramref name="stream"/> (asynchronous). All pointers are fp32 device memory in the
    /// context the kernels were loaded into; <paramref name="y"/> may equal <paramref name="x"/>.
    /// </summary>
    /// <param name="stream">A <c>CUstream</c> (e.g. ILGPU's <c>CudaStream.StreamPtr</c>), or zero for the default stream.</param>
    /// <param name="x">Input, shape (rows, n), row-major.</param>
    /// <param name="weight">Scale, shape (n).</param>
    /// <param name="y">Output, shape (rows, n), row-major.</param>
    /// <param name="rows">Number of rows (0 launches nothing).</param>
    /// <param name="n">Row length, at least 1.</param>
    /// <param name="eps">Added to the mean square before the square root; finite and not negative.</param>
    public unsafe void Launch(IntPtr stream, CUdeviceptr x, CUdeviceptr weight, CUdeviceptr y, int rows, int n, float eps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        if (!float.IsFinite(eps) || eps < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be finite and not negative.");
        }

        if (rows == 0)
        {
            return;
        }

        if (x.IsNull || weight.IsNull || y.IsNull)
        {
            throw new ArgumentException($"Null device pointer: x={x}, weight={weight}, y={y}.");
        }

        var block = (uint)BlockSizeFor(n);
        var args = stackalloc IntPtr[6] { (IntPtr)(&x), (IntPtr)(&weight), (IntPtr)(&y), (IntPtr)(&rows), (IntPtr)(&n), (IntPtr)(&eps) };
        _function.Launch(((uint)rows, 1, 1), (block, 1, 1), 0, stream, new ReadOnlySpan<IntPtr>(args, 6));
    }
}
