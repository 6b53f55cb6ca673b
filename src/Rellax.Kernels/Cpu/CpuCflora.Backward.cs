using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// The CFLoRA backward on the CPU (contract: <see cref="ICfloraKernels.Backward"/>, ground truth
/// <see cref="CfloraReference.Backward"/>). Per module, with T rows:
/// <code>
/// z[T, r]  = dY · B                        (Bᵀ widened once to f32 [r, d_out]; <see cref="RankProduct"/>)
/// u[T, r]  = x · Aᵀ                        (recomputed, only when dB or dG is wanted; <see cref="RankProduct"/>)
/// du[t]    = scale · G_s z[t]              (r² per row; identity G: scale · z, no r × r work)
/// v[t]     = scale · G_sᵀ u[t]             (only for dB)
/// dG_s     = scale · Σ_{t of s} u[t] ⊗ z[t] (only when wanted: T·r² MACs)
/// dA       = duᵀ · x,  dB = dYᵀ · v        (skinny outer-product sums, register-blocked, parallel over columns)
/// </code>
/// then, for all modules at once, ONE GEMM over the concatenated K axis:
/// <code>dX[T, d_in] = [dY_1 … dY_M | du_1 … du_M] · [W0_1; …; W0_M; A_1; …; A_M]</code>
/// through <see cref="CpuGemm.Run{TX, TW}"/> with <see cref="CpuGemm.ConcatX"/> and <see cref="CpuGemm.ConcatTransposedW"/>
/// (W0/A widened while packing): the adapter is r more K steps of the base GEMM, no ΔW and no T × d_in intermediate,
/// and q/k/v (or gate/up) sum into dX inside the microkernel's accumulators.
/// <para>
/// <b>Roofline</b> (T = 4096, d_in = d_out = 2048, r = 8, one module): the dX GEMM is 2·T·d_in·(d_out + r) = 34.5 GFLOP,
/// the same as the forward's base GEMM, FMA-bound; z and u are 2·T·r·d each (0.13 GFLOP, streamed, load-bound), dA and
/// dB 2·T·r·d each, dG 2·T·r². So the backward of a frozen layer costs about one forward plus a few % for the adapter
/// (measured: benchmarks/results/training-cpu.md).
/// </para>
/// <para>
/// All T ≤ 16 products also take the blocked path for dX (training batches are hundreds of rows; the streamed GEMV
/// kernels read W0 row by row and would need a column-streaming variant for Wᵀ).
/// </para>
/// </summary>
internal sealed unsafe partial class CpuCflora
{
    public void Backward(Tensor x, ReadOnlySpan<CfloraBackwardModule> modules, Tensor rowSample, int samples, Tensor? dx)
    {
        int rows = x.Dim(0), din = x.Dim(1), count = modules.Length;
        float* xp = CpuBackend.Ptr<float>(x);
        int* sp = CpuBackend.Ptr<int>(rowSample);
        int maxR = 0, maxDout = 0, sumR = 0;
        long kTotal = 0;
        foreach (var m in modules)
        {
            int r = m.A.Dim(0), dout = m.DOut;
            maxR = Math.Max(maxR, r);
            maxDout = Math.Max(maxDout, dout);
            sumR += r;
            kTotal += dout + r;
        }
        if (kTotal > int.MaxValue) throw new NotSupportedException($"the modules' d_out + r sum to {kTotal}: more than int.MaxValue");
        // du of every module (the dX GEMM reads them together), then u, z, v [T, r_max] and Bᵀ [r_max, d_out_max].
        long duFloats = (long)rows * sumR, rowFloats = (long)rows * maxR;
        long total = duFloats + 3 * rowFloats + (long)maxR * maxDout;
        float* scratch = (float*)NativeMemory.AlignedAlloc((nuint)(Math.Max(total, 1) * sizeof(float)), 64);
        var parts = (CpuGemm.KPart*)NativeMemory.Alloc((nuint)(4 * count * sizeof(CpuGemm.KPart)));
        try
        {
            float* du = scratch, u = du + duFloats, z = u + rowFloats, v = z + rowFloats, bT = v + rowFloats;
            float* duM = du;
            for (int m = 0; m < count; m++)
            {
                var mod = modules[m];
                int r = mod.A.Dim(0), dout = mod.DOut;
                BackwardModule(xp, rows, din, sp, samples, mod, duM, u, z, v, bT);
                // K parts of the dX GEMM: dY_m's and W0_m's first (all modules), then du_m's and A_m's.
                parts[m] = new CpuGemm.KPart(new TypedMatrix(CpuBackend.Ptr<float>(mod.DY), DType.F32, dout), dout);
                parts[count + m] = new CpuGemm.KPart(new TypedMatrix(duM, DType.F32, r), r);
                parts[2 * count + m] = new CpuGemm.KPart(mod.W0Int8 is { } w8 ? new TypedMatrix(w8) : new TypedMatrix(mod.W0), dout);
                parts[3 * count + m] = new CpuGemm.KPart(new TypedMatrix(mod.A), r);
                duM += (long)rows * r;
            }
            if (dx is { } d)
            {
                int k = (int)kTotal;
                CpuGemm.Run(new CpuGemm.ConcatX(parts, 2 * count), new CpuGemm.ConcatTransposedW(parts + 2 * count, 2 * count),
                    CpuBackend.Ptr<float>(d), rows, k, din, Threads(_backend, (long)rows * k * din), _backend);
            }
        }
        finally
        {
            NativeMemory.Free(parts);
            NativeMemory.AlignedFree(scratch);
        }
    }

    /// <summary>One module's du [T, r] (into <paramref name="du"/>) and its requested dA, dB, dG.</summary>
    private void BackwardModule(float* x, int rows, int din, int* sampleOfRow, int samples, in CfloraBackwardModule mod,
        float* du, float* u, float* z, float* v, float* bT)
    {
        int r = mod.A.Dim(0), dout = mod.DOut;
        float scale = mod.Scale;
        float* dy = CpuBackend.Ptr<float>(mod.DY);
        float* g = mod.G is { } gt ? CpuBackend.Ptr<float>(gt) : null;

        // z = dY · B, through Bᵀ in f32 (d_out · r elements: small).
        var b = new TypedMatrix(mod.B);
        for (int o = 0; o < dout; o++)
            for (int j = 0; j < r; j++) bT[(long)j * dout + o] = b.At(o, j);
        RankProduct(_backend, dy, rows, dout, new TypedMatrix(bT, DType.F32, dout), r, z);

        bool needU = mod.DB is not null || mod.DG is not null;
        if (needU) RankProduct(_backend, x, rows, din, new TypedMatrix(mod.A), r, u);

        // du[t] = scale · G_s z[t]; v[t] = scale · G_sᵀ u[t] (for dB).
        var duAll = new Span<float>(du, checked(rows * r));
        if (g == null)
        {
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(z, rows * r), scale, duAll);
            if (mod.DB is not null) TensorPrimitives.Multiply(new ReadOnlySpan<float>(u, rows * r), scale, new Span<float>(v, rows * r));
        }
        else
        {
            for (int t = 0; t < rows; t++)
            {
                float* gs = g + (long)sampleOfRow[t] * r * r;
                var zt = new ReadOnlySpan<float>(z + (long)t * r, r);
                float* dut = du + (long)t * r;
                for (int i = 0; i < r; i++) dut[i] = scale * TensorPrimitives.Dot(new ReadOnlySpan<float>(gs + (long)i * r, r), zt);
                if (mod.DB is null) continue;
                var vt = new Span<float>(v + (long)t * r, r);
                vt.Clear();
                float* ut = u + (long)t * r;
                for (int i = 0; i < r; i++) TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(gs + (long)i * r, r), ut[i], vt, vt);
                TensorPrimitives.Multiply(vt, scale, vt);
            }
        }

        if (mod.DG is { } dgt)
        {
            // dG_s[i][:] += scale · u[t][i] · z[t] over the rows of s (a sample without rows keeps zeros).
            var dg = CpuBackend.Span<float>(dgt);
            dg.Clear();
            float* dgp = CpuBackend.Ptr<float>(dgt);
            for (int t = 0; t < rows; t++)
            {
                float* dgs = dgp + (long)sampleOfRow[t] * r * r;
                var zt = new ReadOnlySpan<float>(z + (long)t * r, r);
                float* ut = u + (long)t * r;
                for (int i = 0; i < r; i++)
                {
                    var row = new Span<float>(dgs + (long)i * r, r);
                    TensorPrimitives.MultiplyAdd(zt, scale * ut[i], row, row);
                }
            }
        }
        if (mod.DA is { } da) OuterSum(_backend, du, r, x, din, rows, CpuBackend.Ptr<float>(da), transposed: false);
        if (mod.DB is { } db) OuterSum(_backend, v, r, dy, dout, rows, CpuBackend.Ptr<float>(db), transposed: true);
    }

    /// <summary>
    /// <c>y[t, j] = x[t] · w[j]</c> for t &lt; rows, j &lt; r (x f32 [rows, k], w [r, k] f32/f16/bf16, y [rows, r]): the
    /// rank-r products (u = x Aᵀ, z = dY B) for any number of rows. With AVX-512 it runs the streamed kernels of the
    /// small-T forward (<see cref="GemvRows{TL}"/>: 4 w rows × 4 x rows register-blocked, w in L2) on 16-row chunks of x,
    /// parallel over chunks: x is read once and nothing is packed (the blocked GEMM would pad N = r to 32 columns and
    /// repack all of x for 2·T·r·k FLOPs, which measured ~15% of a d × d GEMM's time at T = 4096, r = 8). Without
    /// AVX-512, the blocked path.
    /// </summary>
    internal static void RankProduct(CpuBackend backend, float* x, int rows, int k, TypedMatrix w, int r, float* y)
    {
        if (!CpuGemm.UseVector512)
        {
            Product(backend, x, rows, k, w, null, y, r);
            return;
        }
        int chunks = (rows + FusedGemvMaxRows - 1) / FusedGemvMaxRows;
        nint xp = (nint)x, yp = (nint)y;
        CpuSimd.ForChunks(backend, chunks, 2L * FusedGemvMaxRows * k * r, (c0, count) =>
        {
            for (int c = c0; c < c0 + count; c++)
            {
                int t0 = c * FusedGemvMaxRows, m = Math.Min(FusedGemvMaxRows, rows - t0);
                float* xc = (float*)xp + (long)t0 * k, yc = (float*)yp + (long)t0 * r;
                switch (w.Type)
                {
                    case DType.F32: GemvRows<F32Load>(xc, m, k, w.Data, yc, r, 0, r); break;
                    case DType.F16: GemvRows<F16Load>(xc, m, k, w.Data, yc, r, 0, r); break;
                    case DType.BF16: GemvRows<Bf16Load>(xc, m, k, w.Data, yc, r, 0, r); break;
                    default: throw new NotSupportedException($"CFLoRA weights of dtype {w.Type}");
                }
            }
        });
    }

    /// <summary>Columns per task of <see cref="OuterSum"/>: two Vector512 of each of 8 output rows in registers.</summary>
    private const int OuterColumns = 32;

    /// <summary>
    /// <c>out[i, n] = Σ_t a[t, i] · b[t, n]</c> for i &lt; ra, n &lt; nb (a [T, ra], b [T, nb] row-major, ra small: the
    /// rank), stored [ra, nb], or [nb, ra] when <paramref name="transposed"/>; overwritten. Parallel over 32-column blocks
    /// of b; per block and 8 rows of a, 16 Vector512 accumulators see every t (2 loads of b, 8 broadcasts of a, 16 FMAs
    /// per t), so b is read once per 8 ranks and nothing is packed. Columns past the last full block and the Vector256
    /// configuration use a per-column scalar loop.
    /// Cost: 2·T·ra·nb FLOPs, reads T·nb·⌈ra/8⌉ + T·ra floats.
    /// </summary>
    private static void OuterSum(CpuBackend backend, float* a, int ra, float* b, int nb, int rows, float* output, bool transposed)
    {
        int fullBlocks = CpuGemm.UseVector512 ? nb / OuterColumns : 0;
        int tasks = fullBlocks + (fullBlocks * OuterColumns < nb ? 1 : 0);
        int threads = Math.Min(tasks, Threads(backend, (long)rows * ra * nb));
        nint ap = (nint)a, bp = (nint)b, op = (nint)output;
        void Task(int block)
        {
            if (block < fullBlocks)
                for (int i0 = 0; i0 < ra; i0 += 8)
                    OuterBlock8x32((float*)ap, ra, i0, (float*)bp, nb, block * OuterColumns, rows, (float*)op, transposed);
            else
                OuterTail((float*)ap, ra, (float*)bp, nb, fullBlocks * OuterColumns, rows, (float*)op, transposed);
        }
        if (threads <= 1)
        {
            for (int blk = 0; blk < tasks; blk++) Task(blk);
            return;
        }
        Parallel.For(0, tasks, backend.ParallelOptions, Task);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OuterBlock8x32(float* a, int ra, int i0, float* b, int nb, int c0, int rows, float* output, bool transposed)
    {
        // Ranks past ra repeat the last one; their sums are dropped.
        int last = ra - 1;
        int q0 = i0, q1 = Math.Min(i0 + 1, last), q2 = Math.Min(i0 + 2, last), q3 = Math.Min(i0 + 3, last);
        int q4 = Math.Min(i0 + 4, last), q5 = Math.Min(i0 + 5, last), q6 = Math.Min(i0 + 6, last), q7 = Math.Min(i0 + 7, last);
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        float* bt = b + c0;
        float* at = a;
        for (int t = 0; t < rows; t++, bt += nb, at += ra)
        {
            Vector512<float> b0 = Vector512.Load(bt), b1 = Vector512.Load(bt + 16);
            Vector512<float> av = Vector512.Create(at[q0]);
            c00 = Vector512.FusedMultiplyAdd(av, b0, c00); c01 = Vector512.FusedMultiplyAdd(av, b1, c01);
            av = Vector512.Create(at[q1]);
            c10 = Vector512.FusedMultiplyAdd(av, b0, c10); c11 = Vector512.FusedMultiplyAdd(av, b1, c11);
            av = Vector512.Create(at[q2]);
            c20 = Vector512.FusedMultiplyAdd(av, b0, c20); c21 = Vector512.FusedMultiplyAdd(av, b1, c21);
            av = Vector512.Create(at[q3]);
            c30 = Vector512.FusedMultiplyAdd(av, b0, c30); c31 = Vector512.FusedMultiplyAdd(av, b1, c31);
            av = Vector512.Create(at[q4]);
            c40 = Vector512.FusedMultiplyAdd(av, b0, c40); c41 = Vector512.FusedMultiplyAdd(av, b1, c41);
            av = Vector512.Create(at[q5]);
            c50 = Vector512.FusedMultiplyAdd(av, b0, c50); c51 = Vector512.FusedMultiplyAdd(av, b1, c51);
            av = Vector512.Create(at[q6]);
            c60 = Vector512.FusedMultiplyAdd(av, b0, c60); c61 = Vector512.FusedMultiplyAdd(av, b1, c61);
            av = Vector512.Create(at[q7]);
            c70 = Vector512.FusedMultiplyAdd(av, b0, c70); c71 = Vector512.FusedMultiplyAdd(av, b1, c71);
        }
        float* tile = stackalloc float[8 * OuterColumns];
        c00.Store(tile); c01.Store(tile + 16); c10.Store(tile + 32); c11.Store(tile + 48);
        c20.Store(tile + 64); c21.Store(tile + 80); c30.Store(tile + 96); c31.Store(tile + 112);
        c40.Store(tile + 128); c41.Store(tile + 144); c50.Store(tile + 160); c51.Store(tile + 176);
        c60.Store(tile + 192); c61.Store(tile + 208); c70.Store(tile + 224); c71.Store(tile + 240);
        int count = Math.Min(8, ra - i0);
        for (int q = 0; q < count; q++)
        {
            float* src = tile + q * OuterColumns;
            if (transposed)
                for (int c = 0; c < OuterColumns; c++) output[(long)(c0 + c) * ra + i0 + q] = src[c];
            else
                new ReadOnlySpan<float>(src, OuterColumns).CopyTo(new Span<float>(output + (long)(i0 + q) * nb + c0, OuterColumns));
        }
    }

    /// <summary>Columns [c0, nb) of <see cref="OuterSum"/>, one column at a time over all ranks.</summary>
    private static void OuterTail(float* a, int ra, float* b, int nb, int c0, int rows, float* output, bool transposed)
    {
        float* acc = stackalloc float[Math.Min(ra, 256)];
        for (int i0 = 0; i0 < ra; i0 += 256)
        {
            int n = Math.Min(256, ra - i0);
            for (int c = c0; c < nb; c++)
            {
                var sums = new Span<float>(acc, n);
                sums.Clear();
                for (int t = 0; t < rows; t++)
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(a + (long)t * ra + i0, n), b[(long)t * nb + c], sums, sums);
                for (int q = 0; q < n; q++)
                {
                    if (transposed) output[(long)c * ra + i0 + q] = acc[q];
                    else output[(long)(i0 + q) * nb + c] = acc[q];
                }
            }
        }
    }
}
