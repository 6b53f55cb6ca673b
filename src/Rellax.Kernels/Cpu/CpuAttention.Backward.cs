using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// The fp32 attention backward on the CPU (contract: <see cref="IAttentionKernels.Backward"/>, ground truth
/// <see cref="AttentionReference.ExactBackward"/>), FlashAttention-2 style: P is recomputed from the forward's saved
/// log-sum-exp, never stored, and never more than a 64 × 64 tile of it exists.
/// <para>
/// <b>Work items</b> are (sequence b, KV head): each owns its dK, dV rows and the dQ rows of its group's query heads, so
/// items never write the same element and need no reduction (parallel over B·Hkv items, dynamically scheduled; fewer
/// items than threads leaves threads idle). Per item, the valid rows (tokens from the sequence's first real one, times
/// the group's query heads, token-major: row = (t − first)·G + g) of q and dO are packed contiguous once, with
/// <c>D_row = dO·o</c> and the row's lse; dQ accumulates in a packed [rows, D] scratch.
/// </para>
/// <para>
/// <b>Per key block</b> (64 keys, K packed row-major and transposed, V transposed; dK, dV accumulators [64, D] in L1),
/// <b>per block of 64 rows</b> that can see it (causal: tokens t ≥ the block's first key), five small products through
/// one register-tiled kernel (<see cref="MiniGemm"/>: 4 rows × 64 columns in 16 zmm accumulators):
/// <code>
/// S  = Q Kᵀ,  dP = dO Vᵀ                 [R, 64]   then per row, over its visible keys only:
/// P  = exp(scale·S − lse),  dS = P ⊙ (dP − D)       (masked keys: P = dS = 0)
/// dV += Pᵀ dO,  dK += dSᵀ Q               [64, D]   (scale applied once at the end)
/// dQ += dS K                              [R, D]
/// </code>
/// Roofline: 5 products of R·64·D MACs per (key block, row block), i.e. 2.5x the forward's two (Q Kᵀ and P V), plus
/// T²/2·Hq exps (causal). Head dimensions that are not a multiple of 64, and machines without AVX-512, take an
/// 8-column Vector256 kernel for the columns the 64-wide one does not cover.
/// </para>
/// </summary>
internal sealed unsafe partial class CpuAttention
{
    public void Backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor lse, Tensor dq, Tensor dk, Tensor dv,
        AttentionShape shape, int[] lengths, float scale, bool causal)
    {
        var job = new BackwardJob(shape, lengths, scale, causal,
            CpuBackend.Ptr<float>(q), CpuBackend.Ptr<float>(k), CpuBackend.Ptr<float>(v), CpuBackend.Ptr<float>(o),
            CpuBackend.Ptr<float>(dO), CpuBackend.Ptr<float>(lse), CpuBackend.Ptr<float>(dq), CpuBackend.Ptr<float>(dk), CpuBackend.Ptr<float>(dv));
        int items = shape.Batch * shape.KvHeads;
        long macs = 5L * shape.Batch * shape.QueryHeads * shape.Tokens * shape.Tokens * shape.HeadDim;
        int threads = Math.Min(_backend.Threads, items);
        // One scratch per worker, sized for the longest sequence (fresh memory per item cost a page fault per 4 KiB).
        long bytes = ScratchBytes((long)lengths.DefaultIfEmpty(0).Max() * shape.Group, shape.HeadDim);
        if (threads <= 1 || macs < (1 << 18))
        {
            float* mem = (float*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            try { for (int i = 0; i < items; i++) BackwardItem(job, i, mem); }
            finally { NativeMemory.AlignedFree(mem); }
            return;
        }
        int next = -1;
        Parallel.For(0, threads, _backend.ParallelOptions, _ =>
        {
            float* mem = (float*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            try { for (int i; (i = Interlocked.Increment(ref next)) < items;) BackwardItem(job, i, mem); }
            finally { NativeMemory.AlignedFree(mem); }
        });
    }

    /// <summary>Bytes of one item's scratch: packed q, dO, dQ [rows, D], D and lse per row, the K/V block tiles and the 64 × 64 tiles.</summary>
    private static long ScratchBytes(long rowsTotal, int d) =>
        4 * (3 * rowsTotal * d + 2 * rowsTotal + 5L * BackBlock * d + 4L * BackBlock * BackBlock);

    /// <summary>One backward call: geometry and host pointers (shapes as in <see cref="IAttentionKernels.Backward"/>).</summary>
    private sealed class BackwardJob(AttentionShape shape, int[] lengths, float scale, bool causal,
        float* q, float* k, float* v, float* o, float* dO, float* lse, float* dq, float* dk, float* dv)
    {
        public readonly AttentionShape Shape = shape;
        public readonly int[] Lengths = lengths;
        public readonly float Scale = scale;
        public readonly bool Causal = causal;
        public readonly float* Q = q, K = k, V = v, O = o, DO = dO, Lse = lse, DQ = dq, DK = dk, DV = dv;
    }

    /// <summary>Keys per block and rows per tile of the backward.</summary>
    private const int BackBlock = 64;

    private static void BackwardItem(BackwardJob job, int item, float* mem)
    {
        var s = job.Shape;
        int d = s.HeadDim, g = s.Group, hq = s.QueryHeads, hkv = s.KvHeads, tokens = s.Tokens;
        int b = item / hkv, kvh = item % hkv;
        int len = job.Lengths[b], first = tokens - len;
        // Padding rows and keys: zero gradients.
        for (int t = 0; t < first; t++)
        {
            for (int gi = 0; gi < g; gi++) new Span<float>(job.DQ + s.Offset(hq, b, kvh * g + gi, t), d).Clear();
            new Span<float>(job.DK + s.Offset(hkv, b, kvh, t), d).Clear();
            new Span<float>(job.DV + s.Offset(hkv, b, kvh, t), d).Clear();
        }
        if (len == 0) return;

        long rowsTotal = (long)len * g;
        float* qp = mem, dop = qp + rowsTotal * d, dqp = dop + rowsTotal * d, drow = dqp + rowsTotal * d, lrow = drow + rowsTotal;
        float* kb = lrow + rowsTotal, kt = kb + BackBlock * d, vt = kt + BackBlock * d, dka = vt + BackBlock * d, dva = dka + BackBlock * d;
        float* sTile = dva + BackBlock * d, dpTile = sTile + BackBlock * BackBlock, pt = dpTile + BackBlock * BackBlock, dst = pt + BackBlock * BackBlock;

        for (int t = first; t < tokens; t++)
            for (int gi = 0; gi < g; gi++)
            {
                long row = (long)(t - first) * g + gi;
                int h = kvh * g + gi;
                long off = s.Offset(hq, b, h, t);
                new ReadOnlySpan<float>(job.Q + off, d).CopyTo(new Span<float>(qp + row * d, d));
                new ReadOnlySpan<float>(job.DO + off, d).CopyTo(new Span<float>(dop + row * d, d));
                drow[row] = TensorPrimitives.Dot(new ReadOnlySpan<float>(job.DO + off, d), new ReadOnlySpan<float>(job.O + off, d));
                lrow[row] = job.Lse[((long)b * hq + h) * tokens + t];
            }
        new Span<float>(dqp, checked((int)(rowsTotal * d))).Clear();

        long kStride = s.TokenStride(hkv);
        for (int j0 = first; j0 < tokens; j0 += BackBlock)
        {
            int nk = Math.Min(BackBlock, tokens - j0);
            new Span<float>(kb, BackBlock * d).Clear();
            new Span<float>(kt, BackBlock * d).Clear();
            new Span<float>(vt, BackBlock * d).Clear();
            new Span<float>(dka, BackBlock * d).Clear();
            new Span<float>(dva, BackBlock * d).Clear();
            float* k0 = job.K + s.Offset(hkv, b, kvh, j0), v0 = job.V + s.Offset(hkv, b, kvh, j0);
            for (int j = 0; j < nk; j++)
            {
                float* kr = k0 + j * kStride, vr = v0 + j * kStride;
                new ReadOnlySpan<float>(kr, d).CopyTo(new Span<float>(kb + (long)j * d, d));
                for (int c = 0; c < d; c++)
                {
                    kt[c * BackBlock + j] = kr[c];
                    vt[c * BackBlock + j] = vr[c];
                }
            }
            long rowStart = job.Causal ? (long)(j0 - first) * g : 0;
            for (long r0 = rowStart; r0 < rowsTotal; r0 += BackBlock)
            {
                int rows = (int)Math.Min(BackBlock, rowsTotal - r0);
                new Span<float>(sTile, rows * BackBlock).Clear();
                new Span<float>(dpTile, rows * BackBlock).Clear();
                MiniGemm(qp + r0 * d, d, kt, BackBlock, sTile, BackBlock, rows, BackBlock, d);
                MiniGemm(dop + r0 * d, d, vt, BackBlock, dpTile, BackBlock, rows, BackBlock, d);
                for (int i = 0; i < rows; i++)
                {
                    long row = r0 + i;
                    int t = first + (int)(row / g);
                    int visible = job.Causal ? Math.Min(nk, t - j0 + 1) : nk;
                    var p = new Span<float>(sTile + i * BackBlock, BackBlock);
                    var ds = new Span<float>(dpTile + i * BackBlock, BackBlock);
                    var pv = p[..visible];
                    TensorPrimitives.Multiply(pv, job.Scale, pv);
                    TensorPrimitives.Subtract(pv, lrow[row], pv);
                    TensorPrimitives.Exp(pv, pv);
                    var dsv = ds[..visible];
                    TensorPrimitives.Subtract(dsv, drow[row], dsv);
                    TensorPrimitives.Multiply(dsv, pv, dsv);
                    p[visible..].Clear();
                    ds[visible..].Clear();
                    for (int j = 0; j < nk; j++)
                    {
                        pt[j * BackBlock + i] = p[j];
                        dst[j * BackBlock + i] = ds[j];
                    }
                }
                MiniGemm(pt, BackBlock, dop + r0 * d, d, dva, d, nk, d, rows);
                MiniGemm(dst, BackBlock, qp + r0 * d, d, dka, d, nk, d, rows);
                MiniGemm(dpTile, BackBlock, kb, d, dqp + r0 * d, d, rows, d, nk);
            }
            for (int j = 0; j < nk; j++)
            {
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(dka + (long)j * d, d), job.Scale, new Span<float>(job.DK + s.Offset(hkv, b, kvh, j0 + j), d));
                new ReadOnlySpan<float>(dva + (long)j * d, d).CopyTo(new Span<float>(job.DV + s.Offset(hkv, b, kvh, j0 + j), d));
            }
        }
        for (int t = first; t < tokens; t++)
            for (int gi = 0; gi < g; gi++)
            {
                long row = (long)(t - first) * g + gi;
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(dqp + row * d, d), job.Scale,
                    new Span<float>(job.DQ + s.Offset(hq, b, kvh * g + gi, t), d));
            }
    }

    /// <summary>
    /// <c>C[m, n] += A[m, k] · B[k, n]</c>, all row-major with leading dimensions lda, ldb, ldc; n a multiple of 8.
    /// With AVX-512, 64-column panels run 4 rows at a time in 16 zmm accumulators (4 loads of B and 4 broadcasts of A per
    /// 16 FMAs; a short last row block repeats its last row and drops it); the other columns run 8 at a time in ymm.
    /// </summary>
    private static void MiniGemm(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int n, int k)
    {
        int n0 = 0;
        if (CpuGemm.UseVector512)
            for (; n0 + 64 <= n; n0 += 64)
                for (int i = 0; i < m; i += 4)
                {
                    int valid = Math.Min(4, m - i);
                    float* a0 = a + (long)i * lda, a1 = a + (long)(i + Math.Min(1, valid - 1)) * lda;
                    float* a2 = a + (long)(i + Math.Min(2, valid - 1)) * lda, a3 = a + (long)(i + Math.Min(3, valid - 1)) * lda;
                    Kernel4x64(a0, a1, a2, a3, b + n0, ldb, c + (long)i * ldc + n0, ldc, k, valid);
                }
        for (; n0 < n; n0 += 8)
            for (int i = 0; i < m; i++)
            {
                float* ai = a + (long)i * lda, ci = c + (long)i * ldc + n0;
                Vector256<float> acc = Vector256.Load(ci);
                for (int p = 0; p < k; p++) acc = Vector256.FusedMultiplyAdd(Vector256.Create(ai[p]), Vector256.Load(b + (long)p * ldb + n0), acc);
                acc.Store(ci);
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x64(float* a0, float* a1, float* a2, float* a3, float* b, int ldb, float* c, int ldc, int k, int valid)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
        for (int p = 0; p < k; p++)
        {
            float* bp = b + (long)p * ldb;
            Vector512<float> b0 = Vector512.Load(bp), b1 = Vector512.Load(bp + 16), b2 = Vector512.Load(bp + 32), b3 = Vector512.Load(bp + 48);
            Vector512<float> x = Vector512.Create(a0[p]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            c02 = Vector512.FusedMultiplyAdd(x, b2, c02); c03 = Vector512.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a1[p]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            c12 = Vector512.FusedMultiplyAdd(x, b2, c12); c13 = Vector512.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a2[p]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            c22 = Vector512.FusedMultiplyAdd(x, b2, c22); c23 = Vector512.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a3[p]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            c32 = Vector512.FusedMultiplyAdd(x, b2, c32); c33 = Vector512.FusedMultiplyAdd(x, b3, c33);
        }
        AddRow(c, c00, c01, c02, c03);
        if (valid > 1) AddRow(c + ldc, c10, c11, c12, c13);
        if (valid > 2) AddRow(c + 2L * ldc, c20, c21, c22, c23);
        if (valid > 3) AddRow(c + 3L * ldc, c30, c31, c32, c33);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void AddRow(float* row, Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3)
        {
            (Vector512.Load(row) + x0).Store(row);
            (Vector512.Load(row + 16) + x1).Store(row + 16);
            (Vector512.Load(row + 32) + x2).Store(row + 32);
            (Vector512.Load(row + 48) + x3).Store(row + 48);
        }
    }
}
