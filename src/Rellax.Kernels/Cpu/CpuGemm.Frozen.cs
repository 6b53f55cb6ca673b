namespace Rellax.Kernels.Cpu;

/// <summary>
/// Packing sources for products against frozen (f32, f16 or bf16) weights read transposed, as the backward needs:
/// <c>dX = dY · W0 + du · A</c> is <c>y = X' · W'ᵀ</c> with <c>X' = [dY | du]</c> and <c>W'[n, k]</c> the K-concatenation
/// of the rows of W0 [d_out, d_in] and A [r, d_in] (<see cref="ConcatTransposedW"/>), so the blocked path of
/// <see cref="CpuGemm"/> runs it unchanged. Packing a transposed row-major weight is the cheap direction: each k step of an
/// NR strip is NR consecutive elements of one weight row, widened to f32 as it is copied.
/// </summary>
internal static unsafe partial class CpuGemm
{
    /// <summary>
    /// One part of a K-concatenated operand: <see cref="M"/> is row-major with <see cref="Width"/> entries along K
    /// (columns of an X part, rows of a transposed W part).
    /// </summary>
    internal readonly struct KPart(CpuCflora.TypedMatrix m, int width)
    {
        /// <summary>The matrix (data, dtype, row length).</summary>
        public readonly CpuCflora.TypedMatrix M = m;

        /// <summary>This part's extent along K.</summary>
        public readonly int Width = width;
    }

    /// <summary>
    /// X' [M, K'] = [P_0 | P_1 | …] along K, each part f32 row-major [M, Width_i]. <paramref name="parts"/> must stay valid
    /// while the product runs.
    /// </summary>
    internal readonly struct ConcatX(KPart* parts, int count) : IPackSource
    {
        private readonly KPart* _parts = parts;
        private readonly int _count = count;

        public void Pack(int row0, int rows, int pc, int kc, float* dst)
        {
            if (rows < MR) new Span<float>(dst, kc * MR).Clear();
            int start = 0;
            for (int i = 0; i < _count; i++)
            {
                int w = _parts[i].Width;
                int lo = Math.Max(pc, start), hi = Math.Min(pc + kc, start + w);
                if (lo < hi)
                    PackXStrip((float*)_parts[i].M.Data + (long)row0 * w + (lo - start), w, hi - lo, rows, dst + (long)(lo - pc) * MR);
                start += w;
            }
        }
    }

    /// <summary>
    /// W' [N, K'] with W'[n, k] = P_i[k − off_i, n]: the K axis runs over the rows of the parts P_i [Width_i, N] (f32, f16
    /// or bf16, row length N) one after the other. <paramref name="parts"/> must stay valid while the product runs.
    /// </summary>
    internal readonly struct ConcatTransposedW(KPart* parts, int count) : IPackSource
    {
        private readonly KPart* _parts = parts;
        private readonly int _count = count;

        public void Pack(int row0, int rows, int pc, int kc, float* dst)
        {
            if (rows < NR) new Span<float>(dst, kc * NR).Clear();
            int start = 0;
            for (int i = 0; i < _count; i++)
            {
                int w = _parts[i].Width;
                int lo = Math.Max(pc, start), hi = Math.Min(pc + kc, start + w);
                var m = _parts[i].M;
                for (int k = lo; k < hi; k++) m.Widen(k - start, row0, rows, dst + (long)(k - pc) * NR);
                start += w;
            }
        }
    }
}
