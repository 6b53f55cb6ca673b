using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// fp32 GEMM for the linear layer, <c>y[M,N] = x[M,K] · w[N,K]ᵀ</c>, with w stored [out, in] as in HF files.
/// <para>
/// <b>Roofline.</b> The product costs 2·M·N·K FLOPs and must read at least 4·(M·K + N·K) bytes and write 4·M·N.
/// For M = 1 (decoding) that is 2 FLOPs per 4 weight bytes: the kernel is bound by memory bandwidth, so the GEMV
/// path streams w once, without packing. For M ≥ ~32 the arithmetic intensity grows with M and the kernel is bound
/// by FMA throughput (Zen 5: two 512-bit FMA pipes, 64 FLOPs per cycle per core), so the blocked path applies.
/// </para>
/// <para>
/// <b>Blocked path (BLIS-style, per part).</b> Each parallel part owns a rectangle of y: the N axis is split (into
/// max(threads, N/1024) parts) when N is wide enough, the M axis (into one part per thread) otherwise, so no two
/// threads write the same element and no reduction is needed. Inside a part:
/// <code>
/// for jc in N by NC (2048 on Zen)              // B block of KC×NC floats (2 MiB) stays in L3 (Zen) or L2 (Intel)
///   for pc in K by KC (256)
///     pack w[jc.., pc..]ᵀ into KC×NR column strips, NR = 32 (k-major; zero-padded past N)
///     for ic in M by MC (128 on Zen)           // A block MC×KC (128 KiB) stays in L2
///       pack x[ic.., pc..] into MR×KC row strips, MR = 8 (k-major; zero-padded past M)
///       for each NR strip (32 KiB, L1), for each MR strip:
///         microkernel: 8×32 tile of y in 16 zmm accumulators; per k: 2 vector loads of the w strip,
///         8 broadcasts of x, 16 FMAs; the tile is written at pc == 0 and accumulated afterwards
/// </code>
/// Packing w costs one element move per element of w (each part packs its own N range once), against 2·M FLOPs
/// per element: for M ≥ 128 the moves are well under 1% of the work. x is packed once per (jc, pc) block, i.e.
/// ⌈N_part/NC⌉ times per part. Packing makes every inner-loop access contiguous and keeps the 32 KiB w strip in L1 while all
/// x strips of the block stream past it from L2. Partial tiles (M or N not a multiple of the tile) are computed in
/// full on the zero padding and only their valid part is stored.
/// </para>
/// <para>
/// The blocked path is generic over its packing sources (<see cref="IPackSource"/>): the plain GEMM packs contiguous
/// f32 x and w (<see cref="PlainX"/>, <see cref="PlainW"/>); <see cref="CpuCflora"/> packs K-concatenated and f16/bf16
/// sources through the same loops and microkernel (struct type arguments, so the JIT specialises each pair).
/// </para>
/// <para>
/// MC and NC are chosen per CPU family when the backend is created (<see cref="CpuBackend.Blocking"/>, <see cref="GemmBlocking.For"/>, from
/// <see cref="CpuInfo"/>): Zen keeps the w block in its large L3, Intel AVX-512 server cores keep both blocks in their
/// 1 to 2 MiB private L2 (MC 512, NC 1024 on Sapphire Rapids). The microkernel is the same on both (see <see cref="GemmBlocking"/>).
/// </para>
/// <para>
/// Without AVX-512 the same packing feeds a <c>Vector256</c> microkernel (2 rows × 32 columns per pass, 8 ymm
/// accumulators).
/// </para>
/// </summary>
internal static unsafe partial class CpuGemm
{
    /// <summary>Rows of x per microkernel tile.</summary>
    internal const int MR = 8;

    /// <summary>Columns of y (rows of w) per microkernel tile: two 16-float vectors.</summary>
    internal const int NR = 32;

    /// <summary>K extent of one packed block.</summary>
    internal const int KC = 256;

    /// <summary>Up to this many rows of x the product runs as a GEMV over unpacked w rows.</summary>
    internal const int GemvMaxRows = 4;

    /// <summary>Target width (columns of y) of one parallel part when N is split into more parts than threads.</summary>
    private const int SplitColumns = 1024;

    /// <summary>Below this many multiply-adds the product runs on the calling thread only.</summary>
    private const long SingleThreadMacs = 1L << 18;

    /// <summary>Whether to use the 512-bit microkernels; tests switch it off to exercise the Vector256 path.</summary>
    internal static bool UseVector512 { get; set; } = Vector512.IsHardwareAccelerated;

    /// <summary>y[M,N] = x[M,K] · w[N,K]ᵀ; all pointers to contiguous row-major f32.</summary>
    public static void MatMulTransposed(float* x, float* w, float* y, int m, int k, int n, CpuBackend backend)
    {
        long macs = (long)m * n * k;
        int threads = macs < SingleThreadMacs ? 1 : backend.Threads;
        if (k == 0)
        {
            new Span<float>(y, checked(m * n)).Clear();
            return;
        }
        if (m <= GemvMaxRows)
        {
            Gemv(x, w, y, m, k, n, threads, backend.ParallelOptions);
            return;
        }

        Run(new PlainX(x, k), new PlainW(w, k), y, m, k, n, threads, backend);
    }

    /// <summary>
    /// The blocked path over any pair of packing sources: y[M,N] = X[M,K] · W[N,K]ᵀ where <typeparamref name="TX"/>
    /// packs MR-row strips of X and <typeparamref name="TW"/> packs NR-row strips of W (each over any K range). The plain
    /// GEMM uses contiguous f32 sources; other callers (e.g. <see cref="CpuCflora"/>) use K-concatenated or typed sources.
    /// </summary>
    internal static void Run<TX, TW>(TX xs, TW ws, float* y, int m, int k, int n, int threads, CpuBackend backend)
        where TX : struct, IPackSource where TW : struct, IPackSource
    {
        // Split the output into rectangles: along N (in NR multiples) when wide enough, else along M. Wide N is cut into
        // ~SplitColumns-wide parts (more parts than threads, handed out dynamically by Parallel.For) so that a thread
        // preempted on a shared machine does not hold up the whole product; each part re-packs x, which costs M·K moves
        // against 2·M·K·SplitColumns FLOPs.
        var blocking = backend.Blocking;
        bool splitN = n >= threads * NR * 2 || m < threads * MR;
        int parts = threads == 1 ? 1 : splitN ? Math.Max(threads, n / SplitColumns) : threads;
        if (parts == 1)
        {
            Blocked(xs, ws, y, 0, m, 0, n, k, n, blocking);
            return;
        }
        nint yp = (nint)y;
        Parallel.For(0, parts, backend.ParallelOptions, part =>
        {
            if (splitN)
            {
                int strips = (n + NR - 1) / NR;
                int s0 = (int)((long)strips * part / parts), s1 = (int)((long)strips * (part + 1) / parts);
                int n0 = s0 * NR, n1 = Math.Min(n, s1 * NR);
                if (n0 < n1) Blocked(xs, ws, (float*)yp, 0, m, n0, n1, k, n, blocking);
            }
            else
            {
                int strips = (m + MR - 1) / MR;
                int s0 = (int)((long)strips * part / parts), s1 = (int)((long)strips * (part + 1) / parts);
                int m0 = s0 * MR, m1 = Math.Min(m, s1 * MR);
                if (m0 < m1) Blocked(xs, ws, (float*)yp, m0, m1, 0, n, k, n, blocking);
            }
        });
    }

    /// <summary>A matrix the blocked path can pack, one strip of rows over one K range at a time.</summary>
    internal interface IPackSource
    {
        /// <summary>
        /// Packs rows [row0, row0 + rows) × k [pc, pc + kc) k-major into dst: dst[p·width + i] = src[row0 + i, pc + p]
        /// with width = <see cref="MR"/> for X sources and <see cref="NR"/> for W sources, zero for i ≥ rows.
        /// </summary>
        void Pack(int row0, int rows, int pc, int kc, float* dst);
    }

    /// <summary>Row-major contiguous f32 X [M, ld], packed in MR strips.</summary>
    internal readonly struct PlainX(float* x, int ld) : IPackSource
    {
        private readonly float* _x = x;
        private readonly int _ld = ld;

        public void Pack(int row0, int rows, int pc, int kc, float* dst) => PackXStrip(_x + (long)row0 * _ld + pc, _ld, kc, rows, dst);
    }

    /// <summary>Row-major contiguous f32 W [N, ld], packed in NR strips.</summary>
    internal readonly struct PlainW(float* w, int ld) : IPackSource
    {
        private readonly float* _w = w;
        private readonly int _ld = ld;

        public void Pack(int row0, int rows, int pc, int kc, float* dst) => PackWStrip(_w + (long)row0 * _ld + pc, _ld, kc, rows, dst);
    }

    [ThreadStatic] private static PackBuffer? t_packA;
    [ThreadStatic] private static PackBuffer? t_packB;

    /// <summary>Per-thread 64-byte aligned scratch for packed panels; grows, never shrinks, freed with the thread.</summary>
    private sealed class PackBuffer
    {
        private AlignedMemoryHandle? _memory;
        private long _floats;

        public float* Get(long floats)
        {
            if (floats > _floats || _memory is null)
            {
                _memory?.Dispose();
                _memory = new AlignedMemoryHandle((nuint)(floats * sizeof(float)));
                _floats = floats;
            }
            return (float*)_memory.DangerousGetHandle();
        }
    }

    /// <summary>Computes y[m0..m1, n0..n1) with row stride ldy = N.</summary>
    private static void Blocked<TX, TW>(in TX xs, in TW ws, float* y, int m0, int m1, int n0, int n1, int k, int ldy, GemmBlocking blocking)
        where TX : struct, IPackSource where TW : struct, IPackSource
    {
        int mcBlock = blocking.Mc, ncBlock = blocking.Nc;
        float* packA = (t_packA ??= new PackBuffer()).Get((long)mcBlock * KC);
        float* packB = (t_packB ??= new PackBuffer()).Get((long)ncBlock * KC);
        bool v512 = UseVector512;
        var tile = stackalloc float[MR * NR];

        for (int jc = n0; jc < n1; jc += ncBlock)
        {
            int nc = Math.Min(ncBlock, n1 - jc);
            int nStrips = (nc + NR - 1) / NR;
            for (int pc = 0; pc < k; pc += KC)
            {
                int kc = Math.Min(KC, k - pc);
                bool accumulate = pc > 0;
                for (int s = 0; s < nStrips; s++)
                    ws.Pack(jc + s * NR, Math.Min(NR, nc - s * NR), pc, kc, packB + (long)s * kc * NR);

                for (int ic = m0; ic < m1; ic += mcBlock)
                {
                    int mc = Math.Min(mcBlock, m1 - ic);
                    int mStrips = (mc + MR - 1) / MR;
                    for (int s = 0; s < mStrips; s++)
                        xs.Pack(ic + s * MR, Math.Min(MR, mc - s * MR), pc, kc, packA + (long)s * kc * MR);

                    for (int sn = 0; sn < nStrips; sn++)
                    {
                        int cols = Math.Min(NR, nc - sn * NR);
                        float* b = packB + (long)sn * kc * NR;
                        for (int sm = 0; sm < mStrips; sm++)
                        {
                            int rows = Math.Min(MR, mc - sm * MR);
                            float* a = packA + (long)sm * kc * MR;
                            float* c = y + (long)(ic + sm * MR) * ldy + jc + sn * NR;
                            if (rows == MR && cols == NR)
                            {
                                if (v512) Kernel8x32Avx512(kc, a, b, c, ldy, accumulate);
                                else Kernel8x32Vector256(kc, a, b, c, ldy, accumulate);
                            }
                            else
                            {
                                // Partial tile: compute the full tile on the zero padding into scratch, store the valid part.
                                if (v512) Kernel8x32Avx512(kc, a, b, tile, NR, false);
                                else Kernel8x32Vector256(kc, a, b, tile, NR, false);
                                for (int r = 0; r < rows; r++)
                                {
                                    float* dst = c + (long)r * ldy;
                                    float* src = tile + r * NR;
                                    if (accumulate) for (int j = 0; j < cols; j++) dst[j] += src[j];
                                    else for (int j = 0; j < cols; j++) dst[j] = src[j];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// <summary>Packs w rows [0, cols) × k [0, kc) (row stride ldw) as dst[p·NR + j] = w[j, p], zero past cols.</summary>
    internal static void PackWStrip(float* w, int ldw, int kc, int cols, float* dst)
    {
        if (cols < NR) new Span<float>(dst, kc * NR).Clear();
        // Four source rows at a time keeps four read streams open while writing every destination cache line fully.
        int j = 0;
        for (; j + 4 <= cols; j += 4)
        {
            float* r0 = w + (long)j * ldw, r1 = r0 + ldw, r2 = r1 + ldw, r3 = r2 + ldw;
            float* d = dst + j;
            for (int p = 0; p < kc; p++, d += NR)
            {
                d[0] = r0[p]; d[1] = r1[p]; d[2] = r2[p]; d[3] = r3[p];
            }
        }
        for (; j < cols; j++)
        {
            float* r = w + (long)j * ldw;
            float* d = dst + j;
            for (int p = 0; p < kc; p++, d += NR) *d = r[p];
        }
    }

    /// <summary>Packs x rows [0, rows) × k [0, kc) (row stride ldx) as dst[p·MR + i] = x[i, p], zero past rows.</summary>
    internal static void PackXStrip(float* x, int ldx, int kc, int rows, float* dst)
    {
        if (rows < MR) new Span<float>(dst, kc * MR).Clear();
        for (int i = 0; i < rows; i++)
        {
            float* r = x + (long)i * ldx;
            float* d = dst + i;
            for (int p = 0; p < kc; p++, d += MR) *d = r[p];
        }
    }

    /// <summary>
    /// c[8,32] (row stride ldc) = or += a[kc,8]ᵀ-packed · b[kc,32]-packed: 16 zmm accumulators, 2 loads and 8
    /// broadcasts per k step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel8x32Avx512(int kc, float* a, float* b, float* c, int ldc, bool accumulate)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
            Vector512<float> av = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(av, b0, c00); c01 = Vector512.FusedMultiplyAdd(av, b1, c01);
            av = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(av, b0, c10); c11 = Vector512.FusedMultiplyAdd(av, b1, c11);
            av = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(av, b0, c20); c21 = Vector512.FusedMultiplyAdd(av, b1, c21);
            av = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(av, b0, c30); c31 = Vector512.FusedMultiplyAdd(av, b1, c31);
            av = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(av, b0, c40); c41 = Vector512.FusedMultiplyAdd(av, b1, c41);
            av = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(av, b0, c50); c51 = Vector512.FusedMultiplyAdd(av, b1, c51);
            av = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(av, b0, c60); c61 = Vector512.FusedMultiplyAdd(av, b1, c61);
            av = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(av, b0, c70); c71 = Vector512.FusedMultiplyAdd(av, b1, c71);
            a += MR; b += NR;
        }
        Store(c, c00, c01, accumulate); c += ldc;
        Store(c, c10, c11, accumulate); c += ldc;
        Store(c, c20, c21, accumulate); c += ldc;
        Store(c, c30, c31, accumulate); c += ldc;
        Store(c, c40, c41, accumulate); c += ldc;
        Store(c, c50, c51, accumulate); c += ldc;
        Store(c, c60, c61, accumulate); c += ldc;
        Store(c, c70, c71, accumulate);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Store(float* row, Vector512<float> lo, Vector512<float> hi, bool add)
        {
            if (add) { lo += Vector512.Load(row); hi += Vector512.Load(row + 16); }
            lo.Store(row); hi.Store(row + 16);
        }
    }

    /// <summary>The same tile as <see cref="Kernel8x32Avx512"/> with 256-bit vectors: two rows per pass, 8 ymm accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel8x32Vector256(int kc, float* a, float* b, float* c, int ldc, bool accumulate)
    {
        for (int i = 0; i < MR; i += 2)
        {
            Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default;
            Vector256<float> c10 = default, c11 = default, c12 = default, c13 = default;
            float* ap = a + i, bp = b;
            for (int p = 0; p < kc; p++, ap += MR, bp += NR)
            {
                Vector256<float> b0 = Vector256.Load(bp), b1 = Vector256.Load(bp + 8), b2 = Vector256.Load(bp + 16), b3 = Vector256.Load(bp + 24);
                Vector256<float> a0 = Vector256.Create(ap[0]), a1 = Vector256.Create(ap[1]);
                c00 = Vector256.FusedMultiplyAdd(a0, b0, c00); c01 = Vector256.FusedMultiplyAdd(a0, b1, c01);
                c02 = Vector256.FusedMultiplyAdd(a0, b2, c02); c03 = Vector256.FusedMultiplyAdd(a0, b3, c03);
                c10 = Vector256.FusedMultiplyAdd(a1, b0, c10); c11 = Vector256.FusedMultiplyAdd(a1, b1, c11);
                c12 = Vector256.FusedMultiplyAdd(a1, b2, c12); c13 = Vector256.FusedMultiplyAdd(a1, b3, c13);
            }
            float* r0 = c + (long)i * ldc, r1 = r0 + ldc;
            if (accumulate)
            {
                c00 += Vector256.Load(r0); c01 += Vector256.Load(r0 + 8); c02 += Vector256.Load(r0 + 16); c03 += Vector256.Load(r0 + 24);
                c10 += Vector256.Load(r1); c11 += Vector256.Load(r1 + 8); c12 += Vector256.Load(r1 + 16); c13 += Vector256.Load(r1 + 24);
            }
            c00.Store(r0); c01.Store(r0 + 8); c02.Store(r0 + 16); c03.Store(r0 + 24);
            c10.Store(r1); c11.Store(r1 + 8); c12.Store(r1 + 16); c13.Store(r1 + 24);
        }
    }

    /// <summary>
    /// Small-M product (M ≤ <see cref="GemvMaxRows"/>): each thread streams a contiguous range of w rows once from
    /// memory against every x row (in L1/L2). With Vector512 a thread's range is cut into eight equal sub-ranges read
    /// side by side, one row of each per pass: eight continuous read streams keep more misses in flight than one or
    /// four (measured on 2 Zen 5 cores: 33 GB/s for four adjacent rows per pass, 40 for eight adjacent rows, ~43 to 50
    /// for eight interleaved sub-ranges, all noisy). With Vector256, four adjacent rows per pass.
    /// </summary>
    private static void Gemv(float* x, float* w, float* y, int m, int k, int n, int threads, ParallelOptions options)
    {
        if (threads == 1 || n < 64)
        {
            GemvRows(x, w, y, m, k, n, 0, n);
            return;
        }
        nint xp = (nint)x, wp = (nint)w, yp = (nint)y;
        Parallel.For(0, threads, options, part =>
        {
            int j0 = (int)((long)n * part / threads), j1 = (int)((long)n * (part + 1) / threads);
            GemvRows((float*)xp, (float*)wp, (float*)yp, m, k, n, j0, j1);
        });
    }

    private static void GemvRows(float* x, float* w, float* y, int m, int k, int ldy, int j0, int j1)
    {
        bool v512 = UseVector512;
        int j = j0;
        if (v512 && j1 - j0 >= 8)
        {
            // Eight interleaved sub-ranges of L rows each: pass r reads row r of every sub-range, so each of the eight
            // read streams runs on through consecutive rows instead of restarting every eight rows.
            int len = (j1 - j0) / 8;
            long stride = (long)len * k;
            for (int r = 0; r < len; r++)
                for (int i = 0; i < m; i++)
                    Dot8Avx512(x + (long)i * k, k, w + (long)(j0 + r) * k, stride, y + (long)i * ldy + j0 + r, len);
            j = j0 + 8 * len;
        }
        for (; j + 4 <= j1; j += 4)
        {
            float* w0 = w + (long)j * k;
            for (int i = 0; i < m; i++)
            {
                float* xr = x + (long)i * k;
                if (v512) Dot4Avx512(xr, w0, k, y + (long)i * ldy + j);
                else Dot4Vector256(xr, w0, k, y + (long)i * ldy + j);
            }
        }
        for (; j < j1; j++)
            for (int i = 0; i < m; i++)
                y[(long)i * ldy + j] = CpuSimd.Dot(x + (long)i * k, w + (long)j * k, k);
    }

    /// <summary>
    /// output[s·outStride] = dot(x[0..k), w[s·rowStride ..][0..k)) for s in 0..8: eight rows, eight read streams.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot8Avx512(float* x, int k, float* w, long rowStride, float* output, int outStride)
    {
        float* w1 = w + rowStride, w2 = w1 + rowStride, w3 = w2 + rowStride, w4 = w3 + rowStride, w5 = w4 + rowStride, w6 = w5 + rowStride, w7 = w6 + rowStride;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            Vector512<float> xv = Vector512.Load(x + p);
            a0 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w + p), a0);
            a1 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w1 + p), a1);
            a2 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w2 + p), a2);
            a3 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w3 + p), a3);
            a4 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w4 + p), a4);
            a5 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w5 + p), a5);
            a6 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w6 + p), a6);
            a7 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w7 + p), a7);
        }
        float s0 = Vector512.Sum(a0), s1 = Vector512.Sum(a1), s2 = Vector512.Sum(a2), s3 = Vector512.Sum(a3);
        float s4 = Vector512.Sum(a4), s5 = Vector512.Sum(a5), s6 = Vector512.Sum(a6), s7 = Vector512.Sum(a7);
        for (; p < k; p++)
        {
            float xs = x[p];
            s0 += xs * w[p]; s1 += xs * w1[p]; s2 += xs * w2[p]; s3 += xs * w3[p];
            s4 += xs * w4[p]; s5 += xs * w5[p]; s6 += xs * w6[p]; s7 += xs * w7[p];
        }
        output[0] = s0; output[outStride] = s1; output[2 * outStride] = s2; output[3 * outStride] = s3;
        output[4 * outStride] = s4; output[5 * outStride] = s5; output[6 * outStride] = s6; output[7 * outStride] = s7;
    }

    /// <summary>out[0..4) = dot(x[0..k), w row r) for the four consecutive rows starting at w (row stride k).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4Avx512(float* x, float* w, int k, float* output)
    {
        float* w1 = w + k, w2 = w1 + k, w3 = w2 + k;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
        int p = 0;
        for (; p + 32 <= k; p += 32)
        {
            Vector512<float> xv0 = Vector512.Load(x + p), xv1 = Vector512.Load(x + p + 16);
            a0 = Vector512.FusedMultiplyAdd(xv0, Vector512.Load(w + p), a0);
            a1 = Vector512.FusedMultiplyAdd(xv0, Vector512.Load(w1 + p), a1);
            a2 = Vector512.FusedMultiplyAdd(xv0, Vector512.Load(w2 + p), a2);
            a3 = Vector512.FusedMultiplyAdd(xv0, Vector512.Load(w3 + p), a3);
            b0 = Vector512.FusedMultiplyAdd(xv1, Vector512.Load(w + p + 16), b0);
            b1 = Vector512.FusedMultiplyAdd(xv1, Vector512.Load(w1 + p + 16), b1);
            b2 = Vector512.FusedMultiplyAdd(xv1, Vector512.Load(w2 + p + 16), b2);
            b3 = Vector512.FusedMultiplyAdd(xv1, Vector512.Load(w3 + p + 16), b3);
        }
        for (; p + 16 <= k; p += 16)
        {
            Vector512<float> xv = Vector512.Load(x + p);
            a0 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w + p), a0);
            a1 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w1 + p), a1);
            a2 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w2 + p), a2);
            a3 = Vector512.FusedMultiplyAdd(xv, Vector512.Load(w3 + p), a3);
        }
        float s0 = Vector512.Sum(a0 + b0), s1 = Vector512.Sum(a1 + b1), s2 = Vector512.Sum(a2 + b2), s3 = Vector512.Sum(a3 + b3);
        for (; p < k; p++)
        {
            float xs = x[p];
            s0 += xs * w[p]; s1 += xs * w1[p]; s2 += xs * w2[p]; s3 += xs * w3[p];
        }
        output[0] = s0; output[1] = s1; output[2] = s2; output[3] = s3;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4Vector256(float* x, float* w, int k, float* output)
    {
        float* w1 = w + k, w2 = w1 + k, w3 = w2 + k;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            Vector256<float> xv0 = Vector256.Load(x + p), xv1 = Vector256.Load(x + p + 8);
            a0 = Vector256.FusedMultiplyAdd(xv0, Vector256.Load(w + p), a0);
            a1 = Vector256.FusedMultiplyAdd(xv0, Vector256.Load(w1 + p), a1);
            a2 = Vector256.FusedMultiplyAdd(xv0, Vector256.Load(w2 + p), a2);
            a3 = Vector256.FusedMultiplyAdd(xv0, Vector256.Load(w3 + p), a3);
            b0 = Vector256.FusedMultiplyAdd(xv1, Vector256.Load(w + p + 8), b0);
            b1 = Vector256.FusedMultiplyAdd(xv1, Vector256.Load(w1 + p + 8), b1);
            b2 = Vector256.FusedMultiplyAdd(xv1, Vector256.Load(w2 + p + 8), b2);
            b3 = Vector256.FusedMultiplyAdd(xv1, Vector256.Load(w3 + p + 8), b3);
        }
        float s0 = Vector256.Sum(a0 + b0), s1 = Vector256.Sum(a1 + b1), s2 = Vector256.Sum(a2 + b2), s3 = Vector256.Sum(a3 + b3);
        for (; p < k; p++)
        {
            float xs = x[p];
            s0 += xs * w[p]; s1 += xs * w1[p]; s2 += xs * w2[p]; s3 += xs * w3[p];
        }
        output[0] = s0; output[1] = s1; output[2] = s2; output[3] = s3;
    }
}
