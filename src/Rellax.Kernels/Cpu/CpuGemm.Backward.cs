namespace Rellax.Kernels.Cpu;

/// <summary>
/// The two GEMM layouts a linear layer's backward needs, on the blocked path of <see cref="CpuGemm"/> (same packing
/// loops, same microkernels; only the packing sources differ). For the forward <c>y[M,N] = x[M,K] · w[N,K]ᵀ</c>:
/// <code>
/// dX[M,K] = dY[M,N] · W[N,K]        = dY · (Wᵀ)ᵀ       X source: dY as is;  W source: Wᵀ (read down W's columns)
/// dW[N,K] = dY[M,N]ᵀ · X[M,K]       = (dYᵀ) · (Xᵀ)ᵀ    X source: dYᵀ;       W source: Xᵀ
/// </code>
/// Both cost 2·M·N·K FLOPs, like the forward. A transposed source packs k-major strips straight from rows of the stored
/// matrix (<see cref="TransposedSource"/>: the strip's rows are contiguous columns there), so no transposed copy is made.
/// </summary>
internal static unsafe partial class CpuGemm
{
    /// <summary>dX[M,K] = dY[M,N] · W[N,K] (overwrites dX).</summary>
    public static void MatMulBackwardInput(float* dy, float* w, float* dx, int m, int n, int k, CpuBackend backend)
    {
        if (m == 0 || k == 0) return;
        if (n == 0) { new Span<float>(dx, checked(m * k)).Clear(); return; }
        int threads = (long)m * n * k < SingleThreadMacs ? 1 : backend.Threads;
        // y = dY [m, n] · (Wᵀ [k, n])ᵀ: the W source's "rows" are W's columns.
        Run(new PlainX(dy, n), new TransposedSource(w, k, NR), dx, m, n, k, threads, backend);
    }

    /// <summary>dW[N,K] = dY[M,N]ᵀ · X[M,K] (overwrites dW): the reduction runs over the M rows.</summary>
    public static void MatMulBackwardWeight(float* dy, float* x, float* dw, int m, int n, int k, CpuBackend backend)
    {
        if (n == 0 || k == 0) return;
        if (m == 0) { new Span<float>(dw, checked(n * k)).Clear(); return; }
        int threads = (long)m * n * k < SingleThreadMacs ? 1 : backend.Threads;
        // y = dYᵀ [n, m] · (Xᵀ [k, m])ᵀ.
        Run(new TransposedSource(dy, n, MR), new TransposedSource(x, k, NR), dw, n, m, k, threads, backend);
    }

    /// <summary>
    /// Packs the transpose of a row-major matrix S [R, C] (row stride <c>ld</c> = C): the source's row i is S's column i,
    /// so a strip of <c>width</c> source rows over k range [pc, pc + kc) is dst[p·width + i] = S[pc + p, row0 + i]: for
    /// each p one contiguous run of S's row pc + p.
    /// </summary>
    internal readonly struct TransposedSource(float* s, int ld, int width) : IPackSource
    {
        private readonly float* _s = s;
        private readonly int _ld = ld, _width = width;

        public void Pack(int row0, int rows, int pc, int kc, float* dst)
        {
            float* src = _s + (long)pc * _ld + row0;
            for (int p = 0; p < kc; p++, src += _ld, dst += _width)
            {
                new ReadOnlySpan<float>(src, rows).CopyTo(new Span<float>(dst, rows));
                if (rows < _width) new Span<float>(dst + rows, _width - rows).Clear();
            }
        }
    }
}
