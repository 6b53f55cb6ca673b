using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// CFLoRA on the CPU backend (SPEC §4): <c>y_m[t] = W0_m x[t] (+ bias_m) + scale_m · B_m (G_m[s(t)]ᵀ (A_m x[t]))</c>.
/// <para>
/// <b>Roofline.</b> Per module the base product costs 2·T·d_out·d_in FLOPs and reads the weight once
/// (d_out·d_in·bytes(W0)); the adapter adds 2·T·r·(d_in + d_out) + 2·T·r² FLOPs and r·(d_in + d_out) weight elements,
/// i.e. a fraction ≈ r·(d_in + d_out)/(d_in·d_out) of the base work: 0.4% at r = 8, 3.1% at r = 64 for 4096².
/// T ≤ 4 (decoding) is bound by weight bandwidth; T ≥ ~32 by FMA throughput, exactly like <see cref="CpuGemm"/>.
/// </para>
/// <para>
/// <b>Fusion scheme (K augmentation).</b> Three steps per module:
/// <code>
/// u[T, r]   = x · Aᵀ                          (small GEMM / GEMV; A converted to f32 while packing or streaming)
/// v[t]      = scale · G[s(t)]ᵀ u[t]          (r² MACs per row, on the host thread)
/// y[T, N]   = [x | v | 1] · [W0 | B | bias]ᵀ  (ONE GEMM over K' = d_in + r (+ 1))
/// </code>
/// The last step is <see cref="CpuGemm.Run{TX, TW}"/> with packing sources that concatenate along K: the W source packs
/// B's r columns (and the bias as one more column) after W0's d_in columns, converting f16/bf16 to f32 in L1-sized
/// pieces as it packs; the X source packs v (and a column of ones) after x. The adapter is thus r more k-steps of the
/// same 8×32 microkernel: no T×d_out intermediate, no second pass over y, fp32 accumulation throughout, and W0 is never
/// materialised in f32 beyond one packed KC×NC block. For T ≤ <see cref="FusedGemvMaxRows"/> (16), with AVX-512 (the streamed
/// kernels have no 256-bit version; without it every T takes the blocked path), the same idea runs as a GEMV: each thread streams its range of W0 rows (eight interleaved read streams, widening f16/bf16 16 elements at a
/// time in registers), then adds the r terms of B's rows and the bias to the same outputs while they are in L1.
/// </para>
/// <para>
/// <b>Register-blocked rows (<see cref="BlockedMinRows"/> = 5 ≤ T ≤ 16).</b> Within the GEMV path, each thread takes its
/// W0 rows four at a time and walks K in chunks of <see cref="BlockedKc"/> = 1024 elements (4 rows × 4 KiB = 16 KiB, L1);
/// every block of four x rows (x is ≤ 16 × d_in f32, 256 KiB at d_in = 4096: L2) passes over the chunk with 16 Vector512
/// accumulators, i.e. 8 loads per 16 FMAs instead of the ~1 load per FMA of the 8-row dot products, and W0 is streamed
/// from memory exactly once (the first x block pulls the chunk in, the others hit L1). f16/bf16 chunks are widened once
/// per chunk into an L1 scratch and reused by all x blocks. Roofline at T = 16, d = 4096, f32: 64 MiB of W0 (≈ 0.8 ms at
/// 82 GB/s DRAM) and 537 MFLOP (≈ 1 ms at the two cores' peak, 2 cores × 2 FMA pipes × 16 lanes × 2 FLOP × ~4 GHz
/// ≈ 0.5 TFLOP/s; ≈ 1.5 ms at the ~350 GFLOP/s our blocked GEMM reaches), so ~1.5 to 2.5 ms is the realistic floor; the
/// inner loop is limited by its loads (4 of the 8 from L2) rather than by the FMAs.
/// </para>
/// <para>
/// NaN or infinity in a row of x makes that row's u and v non-finite and so only that row's outputs; padding in the
/// packed tiles is zero and only valid elements are stored.
/// </para>
/// </summary>
internal sealed unsafe partial class CpuCflora(CpuBackend backend) : ICfloraKernels, ICfloraAdapterKernels
{
    private readonly CpuBackend _backend = backend;

    /// <summary>Below this many multiply-adds a product runs on the calling thread only (as in <see cref="CpuGemm"/>).</summary>
    private const long SingleThreadMacs = 1L << 18;

    /// <summary>
    /// Up to this many rows the forward streams unpacked weight rows (GEMV-style) instead of packing W0 for the blocked
    /// GEMM: at T = 16, d = 4096 packing the whole weight costs more than streaming it (see benchmarks/results/cflora-cpu.md);
    /// from <see cref="BlockedMinRows"/> rows on, the streamed rows go through the register-blocked kernel.
    /// </summary>
    internal const int FusedGemvMaxRows = 16;

    public void Forward(Tensor x, ReadOnlySpan<CfloraModule> modules, Tensor rowSample)
    {
        int rows = x.Dim(0), din = x.Dim(1);
        float* xp = CpuBackend.Ptr<float>(x);
        int* sp = CpuBackend.Ptr<int>(rowSample);
        int maxR = 0;
        foreach (var mod in modules) maxR = Math.Max(maxR, mod.A.Dim(0));
        // u and v: T × r_max floats each, reused by every module.
        float* scratch = (float*)NativeMemory.AlignedAlloc((nuint)(2L * rows * maxR * sizeof(float)), 64);
        try
        {
            foreach (var mod in modules) ForwardModule(xp, rows, din, sp, mod, scratch, scratch + (long)rows * maxR);
        }
        finally
        {
            NativeMemory.AlignedFree(scratch);
        }
    }

    private void ForwardModule(float* x, int rows, int din, int* sampleOfRow, in CfloraModule mod, float* u, float* v)
    {
        int dout = mod.W0.Dim(0), r = mod.A.Dim(0);
        var w0 = new TypedMatrix(mod.W0);
        var a = new TypedMatrix(mod.A);
        var b = new TypedMatrix(mod.B);
        float* bias = mod.Bias is { } bt ? CpuBackend.Ptr<float>(bt) : null;
        float* g = CpuBackend.Ptr<float>(mod.G);
        float* y = CpuBackend.Ptr<float>(mod.Y);

        AdapterActivations(_backend, x, rows, din, sampleOfRow, a, g, mod.Scale, u, v);

        // (c) y = [x | v | 1] · [W0 | B | bias]ᵀ
        if (rows <= FusedGemvMaxRows && CpuGemm.UseVector512)
            Gemv(_backend, x, rows, din, w0, b, v, bias, y, dout);
        else
        {
            int kAug = din + r + (bias != null ? 1 : 0);
            CpuGemm.Run(new AugmentedX(x, din, v, r, bias != null), new AugmentedW(w0, b, bias), y, rows, kAug, dout,
                Threads(_backend, (long)rows * kAug * dout), _backend);
        }
    }

    /// <summary>(a) u = x · Aᵀ [T, r]; (b) v[t] = scale · G[s(t)]ᵀ u[t] [T, r].</summary>
    private static void AdapterActivations(CpuBackend backend, float* x, int rows, int din, int* sampleOfRow, TypedMatrix a, float* g, float scale, float* u, float* v)
    {
        int r = a.Rows;
        RankProduct(backend, x, rows, din, a, r, u);
        for (int t = 0; t < rows; t++)
        {
            float* gs = g + (long)sampleOfRow[t] * r * r;
            var vt = new Span<float>(v + (long)t * r, r);
            vt.Clear();
            float* ut = u + (long)t * r;
            for (int i = 0; i < r; i++)
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(gs + (long)i * r, r), ut[i], vt, vt);
            TensorPrimitives.Multiply(vt, scale, vt);
        }
    }

    public void AddAdapter(Tensor x, Tensor a, Tensor b, Tensor g, float scale, Tensor rowSample, Tensor y)
    {
        int rows = x.Dim(0), din = x.Dim(1), dout = y.Dim(1), r = a.Dim(0);
        float* yp = CpuBackend.Ptr<float>(y);
        // u, v [T, r] and the adapter output [T, d_out], added to y row by row.
        float* scratch = (float*)NativeMemory.AlignedAlloc((nuint)((2L * r + dout) * rows * sizeof(float)), 64);
        try
        {
            float* u = scratch, v = u + (long)rows * r, add = v + (long)rows * r;
            AdapterActivations(_backend, CpuBackend.Ptr<float>(x), rows, din, CpuBackend.Ptr<int>(rowSample), new TypedMatrix(a),
                CpuBackend.Ptr<float>(g), scale, u, v);
            Product(_backend, v, rows, r, new TypedMatrix(b), null, add, dout);
            var all = new Span<float>(yp, checked(rows * dout));
            TensorPrimitives.Add(all, new ReadOnlySpan<float>(add, all.Length), all);
        }
        finally
        {
            NativeMemory.AlignedFree(scratch);
        }
    }

    /// <summary>
    /// The linear layer <c>y[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N])</c> with w in f32, f16 or bf16: the fused forward with no
    /// adapter (r = 0). M ≤ <see cref="FusedGemvMaxRows"/> streams unpacked weight rows (eight-row dot products for M ≤ 4,
    /// the register-blocked 4×4 kernel from <see cref="BlockedMinRows"/>), larger M runs <see cref="CpuGemm"/>'s blocked
    /// path over <c>[x | 1] · [w | bias]ᵀ</c>, widening f16/bf16 while packing. Without AVX-512 the streamed paths have
    /// no 256-bit version, so every M takes the blocked path (whose microkernel has one), except f32 without bias,
    /// which is exactly <see cref="CpuGemm.MatMulTransposed"/>.
    /// </summary>
    /// <param name="backend">Threads and parallel options.</param>
    /// <param name="x">f32 [M, K], contiguous.</param>
    /// <param name="w">f32, f16 or bf16 [N, K], contiguous.</param>
    /// <param name="bias">f32 [N], or null.</param>
    /// <param name="y">f32 [M, N], contiguous, not overlapping the inputs.</param>
    internal static void Linear(CpuBackend backend, in Tensor x, in Tensor w, in Tensor? bias, in Tensor y)
    {
        int rows = x.Dim(0), din = x.Dim(1), dout = w.Dim(0);
        float* xp = CpuBackend.Ptr<float>(x), yp = CpuBackend.Ptr<float>(y);
        float* bp = bias is { } bt ? CpuBackend.Ptr<float>(bt) : null;
        if (din == 0)
        {
            // No K terms: y = bias (or 0) per row. (The blocked path never writes y when K' = 0.)
            for (int i = 0; i < rows; i++)
            {
                var row = new Span<float>(yp + (long)i * dout, dout);
                if (bp == null) row.Clear();
                else new ReadOnlySpan<float>(bp, dout).CopyTo(row);
            }
            return;
        }
        if (w.DType == DType.F32 && bp == null && !CpuGemm.UseVector512)
        {
            CpuGemm.MatMulTransposed(xp, CpuBackend.Ptr<float>(w), yp, rows, din, dout, backend);
            return;
        }
        Product(backend, xp, rows, din, new TypedMatrix(w), bp, yp, dout);
    }

    /// <summary>
    /// y[M,N] = x[M,K] · (scale_row ⊙ W8)ᵀ (+ bias) in fp32: an int8 weight read dequantized while the blocked GEMM packs it
    /// (W8A32; <see cref="CpuInt8Linear"/> runs it when every input column is an outlier column). K ≥ 1.
    /// </summary>
    internal static void LinearDequantized(CpuBackend backend, float* x, int rows, Int8Weights w, float* bias, float* y) =>
        Product(backend, x, rows, w.Cols, new TypedMatrix(w), bias, y, w.Rows);

    /// <summary>y[M,N] = x[M,K] · w[N,K]ᵀ (+ bias): the GEMV paths for small M with AVX-512 (not for int8 weights), the
    /// blocked path otherwise.</summary>
    private static void Product(CpuBackend backend, float* x, int rows, int din, TypedMatrix w, float* bias, float* y, int dout)
    {
        if (rows <= FusedGemvMaxRows && CpuGemm.UseVector512 && w.Type != DType.I8)
            Gemv(backend, x, rows, din, w, default, null, bias, y, dout);
        else
        {
            int kAug = din + (bias != null ? 1 : 0);
            CpuGemm.Run(new AugmentedX(x, din, null, 0, bias != null), new AugmentedW(w, default, bias), y, rows, kAug, dout,
                Threads(backend, (long)rows * kAug * dout), backend);
        }
    }

    internal static int Threads(CpuBackend backend, long macs) => macs < SingleThreadMacs ? 1 : backend.Threads;

    public void Generate(Tensor h, Tensor lnWeight, Tensor lnBias, float lnEps, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor g)
    {
        int samples = h.Dim(0), dh = h.Dim(1), r2 = g.Dim(1) * g.Dim(2), hidden = 2 * r2;
        using var normedBuffer = _backend.Allocate(DType.F32, (long)samples * dh);
        using var midBuffer = _backend.Allocate(DType.F32, (long)samples * hidden);
        var normed = normedBuffer.AsTensor(samples, dh);
        var mid = midBuffer.AsTensor(samples, hidden);
        _backend.PrimitiveKernels.LayerNorm(h, lnWeight, lnBias, lnEps, normed);

        float* np = CpuBackend.Ptr<float>(normed), mp = CpuBackend.Ptr<float>(mid), gp = CpuBackend.Ptr<float>(g);
        CpuGemm.MatMulTransposed(np, CpuBackend.Ptr<float>(w1), mp, samples, dh, hidden, _backend);
        var b1s = CpuBackend.Span<float>(b1);
        for (int s = 0; s < samples; s++)
        {
            var row = new Span<float>(mp + (long)s * hidden, hidden);
            TensorPrimitives.Add(row, b1s, row);
            CpuSimd.Gelu(mp + (long)s * hidden, mp + (long)s * hidden, hidden);
        }
        CpuGemm.MatMulTransposed(mp, CpuBackend.Ptr<float>(w2), gp, samples, hidden, r2, _backend);
        var b2s = CpuBackend.Span<float>(b2);
        for (int s = 0; s < samples; s++)
        {
            var row = new Span<float>(gp + (long)s * r2, r2);
            TensorPrimitives.Add(row, b2s, row);
        }
    }

    // ---------------------------------------------------------------- typed weights

    /// <summary>A row-major [rows, cols] weight matrix of f32, f16 or bf16 elements (also the half-precision embedding gather).</summary>
    internal readonly struct TypedMatrix
    {
        public readonly void* Data;
        public readonly DType Type;
        public readonly int Cols;
        public readonly int Rows;

        /// <summary>Per-row scales of an int8 matrix (<see cref="DType.I8"/>: <see cref="Data"/> in the packed layout of
        /// <see cref="CpuInt8Linear"/>, u8 = q + 128), read as q · scale; null otherwise.</summary>
        public readonly float* Scales;

        public TypedMatrix(in Tensor t)
        {
            Data = CpuBackend.Ptr<byte>(t);
            Type = t.DType;
            Cols = t.Dim(1);
            Rows = t.Dim(0);
        }

        /// <summary>An int8 weight read dequantized (q · scale_row, one f32 rounding, as the forward's fp32 columns).</summary>
        public TypedMatrix(Int8Weights w)
        {
            Data = ((CpuBuffer)w.Values).Pointer;
            Type = DType.I8;
            Cols = w.Cols;
            Rows = w.Rows;
            Scales = (float*)((CpuBuffer)w.Scales).Pointer;
        }

        /// <summary>A matrix over raw memory: <paramref name="cols"/> elements of <paramref name="type"/> per row.</summary>
        public TypedMatrix(void* data, DType type, int cols)
        {
            Data = data;
            Type = type;
            Cols = cols;
        }

        /// <summary>Element [row, col] widened to f32.</summary>
        public float At(int row, int col)
        {
            long i = (long)row * Cols + col;
            return Type switch
            {
                DType.F32 => ((float*)Data)[i],
                DType.F16 => (float)((Half*)Data)[i],
                DType.I8 => CpuInt8Linear.ValueAt((byte*)Data, Cols, row, col) * Scales[row],
                _ => BitConverter.UInt32BitsToSingle((uint)((ushort*)Data)[i] << 16),
            };
        }

        public bool IsEmpty => Data == null;

        /// <summary>dst[0..n) = row[row][col0 .. col0 + n) widened to f32.</summary>
        public void Widen(int row, int col0, int n, float* dst)
        {
            long start = (long)row * Cols + col0;
            switch (Type)
            {
                case DType.F32: new ReadOnlySpan<float>((float*)Data + start, n).CopyTo(new Span<float>(dst, n)); break;
                case DType.F16: TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)Data + start, n), new Span<float>(dst, n)); break;
                case DType.BF16: WidenBf16((ushort*)Data + start, n, dst); break;
                case DType.I8: CpuInt8Linear.Dequantize((byte*)Data, Scales[row], Cols, row, col0, n, dst); break;
                default: throw new NotSupportedException($"CFLoRA weights of dtype {Type}");
            }
        }
    }

    private static void WidenBf16(ushort* src, int n, float* dst)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16) Bf16Load.Load16(src, i).Store(dst + i);
        for (; i < n; i++) dst[i] = BitConverter.UInt32BitsToSingle((uint)src[i] << 16);
    }

    [ThreadStatic] private static float* t_widen;

    /// <summary>Per-thread scratch for NR rows × KC widened elements (32 KiB), never freed (one per pool thread).</summary>
    private static float* WidenScratch() =>
        t_widen != null ? t_widen : (t_widen = (float*)NativeMemory.AlignedAlloc((nuint)(CpuGemm.NR * CpuGemm.KC * sizeof(float)), 64));

    /// <summary>
    /// W' = [W0 | B | bias] along K: columns [0, d_in) from W0, [d_in, d_in + r) from B, then one bias column when
    /// present. Either part may be f32, f16 or bf16; non-f32 parts are widened row by row into L1 scratch, then packed.
    /// With B and bias absent it is just a typed W0.
    /// </summary>
    private readonly struct AugmentedW(TypedMatrix w0, TypedMatrix b, float* bias) : CpuGemm.IPackSource
    {
        private readonly TypedMatrix _w0 = w0, _b = b;
        private readonly float* _bias = bias;

        public void Pack(int row0, int rows, int pc, int kc, float* dst)
        {
            const int NR = CpuGemm.NR;
            int din = _w0.Cols, r = _b.IsEmpty ? 0 : _b.Cols;
            if (rows < NR) new Span<float>(dst, kc * NR).Clear();
            PackPart(_w0, 0, din, row0, rows, pc, kc, dst);
            if (r > 0) PackPart(_b, din, r, row0, rows, pc, kc, dst);
            if (_bias != null && pc + kc > din + r)
            {
                float* d = dst + (long)(din + r - pc) * NR;
                for (int j = 0; j < rows; j++) d[j] = _bias[row0 + j];
            }
        }

        /// <summary>Packs the overlap of K range [pc, pc + kc) with this part's columns [start, start + width).</summary>
        private static void PackPart(in TypedMatrix m, int start, int width, int row0, int rows, int pc, int kc, float* dst)
        {
            int lo = Math.Max(pc, start), hi = Math.Min(pc + kc, start + width);
            if (lo >= hi) return;
            int len = hi - lo;
            float* d = dst + (long)(lo - pc) * CpuGemm.NR;
            if (m.Type == DType.F32)
            {
                CpuGemm.PackWStrip((float*)m.Data + (long)row0 * m.Cols + (lo - start), m.Cols, len, rows, d);
                return;
            }
            float* tmp = WidenScratch();
            for (int j = 0; j < rows; j++) m.Widen(row0 + j, lo - start, len, tmp + (long)j * len);
            CpuGemm.PackWStrip(tmp, len, len, rows, d);
        }
    }

    /// <summary>X' = [x | v | 1] along K (all f32): x [T, d_in], the scaled adapter activations v [T, r], then ones.</summary>
    private readonly struct AugmentedX(float* x, int din, float* v, int r, bool ones) : CpuGemm.IPackSource
    {
        private readonly float* _x = x, _v = v;
        private readonly int _din = din, _r = r;
        private readonly bool _ones = ones;

        public void Pack(int row0, int rows, int pc, int kc, float* dst)
        {
            const int MR = CpuGemm.MR;
            if (rows < MR) new Span<float>(dst, kc * MR).Clear();
            Part(_x, _din, 0, row0, rows, pc, kc, dst);
            Part(_v, _r, _din, row0, rows, pc, kc, dst);
            if (_ones && pc + kc > _din + _r)
            {
                float* d = dst + (long)(_din + _r - pc) * MR;
                for (int i = 0; i < rows; i++) d[i] = 1f;
            }
        }

        private static void Part(float* m, int width, int start, int row0, int rows, int pc, int kc, float* dst)
        {
            int lo = Math.Max(pc, start), hi = Math.Min(pc + kc, start + width);
            if (lo < hi)
                CpuGemm.PackXStrip(m + (long)row0 * width + (lo - start), width, hi - lo, rows, dst + (long)(lo - pc) * CpuGemm.MR);
        }
    }

    // ---------------------------------------------------------------- GEMV path (T ≤ FusedGemvMaxRows)

    /// <summary>
    /// y[i, j] = x[i] · w[j] (+ v[i] · b[j]) (+ bias[j]) for i &lt; m ≤ 16, j &lt; n (row stride of y: n). Each thread streams
    /// a contiguous range of w rows once; b's rows and the bias are added to the same outputs right after.
    /// </summary>
    private static void Gemv(CpuBackend backend, float* x, int m, int k, TypedMatrix w, TypedMatrix b, float* v, float* bias, float* y, int n)
    {
        int threads = Threads(backend, (long)m * n * k);
        if (threads == 1 || n < 64)
        {
            GemvRange(x, m, k, w, b, v, bias, y, n, 0, n);
            return;
        }
        nint xp = (nint)x, vp = (nint)v, bp = (nint)bias, yp = (nint)y;
        Parallel.For(0, threads, backend.ParallelOptions, part =>
        {
            int j0 = (int)((long)n * part / threads), j1 = (int)((long)n * (part + 1) / threads);
            GemvRange((float*)xp, m, k, w, b, (float*)vp, (float*)bp, (float*)yp, n, j0, j1);
        });
    }

    private static void GemvRange(float* x, int m, int k, TypedMatrix w, TypedMatrix b, float* v, float* bias, float* y, int ldy, int j0, int j1)
    {
        switch (w.Type)
        {
            case DType.F32: GemvRows<F32Load>(x, m, k, w.Data, y, ldy, j0, j1); break;
            case DType.F16: GemvRows<F16Load>(x, m, k, w.Data, y, ldy, j0, j1); break;
            case DType.BF16: GemvRows<Bf16Load>(x, m, k, w.Data, y, ldy, j0, j1); break;
            default: throw new NotSupportedException($"CFLoRA weights of dtype {w.Type}");
        }
        if (b.IsEmpty && bias == null) return;
        // The adapter's r extra K terms of each output, as a second small GEMV over the same rows of B (contiguous
        // [j1 - j0, r]) against v, added to y while this range of y is still in L1/L2.
        int len = j1 - j0;
        float* add = b.IsEmpty ? null : (float*)NativeMemory.Alloc((nuint)((long)m * len * sizeof(float)));
        try
        {
            if (add != null)
            {
                int r = b.Cols;
                void* brows = (byte*)b.Data + (long)j0 * r * b.Type.SizeInBytes();
                switch (b.Type)
                {
                    case DType.F32: GemvRows<F32Load>(v, m, r, brows, add, len, 0, len); break;
                    case DType.F16: GemvRows<F16Load>(v, m, r, brows, add, len, 0, len); break;
                    case DType.BF16: GemvRows<Bf16Load>(v, m, r, brows, add, len, 0, len); break;
                    default: throw new NotSupportedException($"CFLoRA weights of dtype {b.Type}");
                }
            }
            for (int i = 0; i < m; i++)
            {
                var yRow = new Span<float>(y + (long)i * ldy + j0, len);
                if (add != null) TensorPrimitives.Add(yRow, new ReadOnlySpan<float>(add + (long)i * len, len), yRow);
                if (bias != null) TensorPrimitives.Add(yRow, new ReadOnlySpan<float>(bias + j0, len), yRow);
            }
        }
        finally
        {
            if (add != null) NativeMemory.Free(add);
        }
    }

    /// <summary>
    /// y[i, j] = x[i] · w[j] for j in [j0, j1): with Vector512, eight interleaved sub-ranges of rows read side by side
    /// (eight continuous read streams, as in <see cref="CpuGemm"/>'s GEMV), elements widened to f32 in registers.
    /// </summary>
    private static void GemvRows<TL>(float* x, int m, int k, void* w, float* y, int ldy, int j0, int j1) where TL : struct, IWidenLoad
    {
        if (CpuGemm.UseVector512 && m >= BlockedMinRows && k >= 16 && j1 - j0 >= 4)
        {
            BlockedRows<TL>(x, m, k, w, y, ldy, j0, j1);
            return;
        }
        int j = j0;
        if (CpuGemm.UseVector512 && j1 - j0 >= 8)
        {
            int len = (j1 - j0) / 8;
            long stride = (long)len * k;
            for (int rr = 0; rr < len; rr++)
                for (int i = 0; i < m; i++)
                    Dot8<TL>(x + (long)i * k, k, w, (long)(j0 + rr) * k, stride, y + (long)i * ldy + j0 + rr, len);
            j = j0 + 8 * len;
        }
        bool v512 = CpuGemm.UseVector512;
        for (; j < j1; j++)
            for (int i = 0; i < m; i++)
            {
                float* xr = x + (long)i * k;
                long row = (long)j * k;
                Vector512<float> acc = default;
                int p = 0;
                if (v512)
                    for (; p + 16 <= k; p += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(xr + p), TL.Load16(w, row + p), acc);
                float s = v512 ? Vector512.Sum(acc) : 0f;
                for (; p < k; p++) s += xr[p] * TL.Load1(w, row + p);
                y[(long)i * ldy + j] = s;
            }
    }

    // ---------------------------------------------------------------- register-blocked path (BlockedMinRows ≤ T ≤ 16)

    /// <summary>From this many x rows the GEMV path uses <see cref="BlockedRows{TL}"/> (4 W rows × 4 x rows per step).</summary>
    internal const int BlockedMinRows = 5;

    /// <summary>K chunk of the blocked path: 4 W rows × 1024 f32 = 16 KiB, stays in L1 while every x block passes over it.</summary>
    private const int BlockedKc = 1024;

    [ThreadStatic] private static float* t_blockWiden;

    /// <summary>
    /// y[i, j] = x[i] · w[j] for i &lt; m, j in [j0, j1), register-blocked: for each block of 4 W rows and each K chunk of
    /// <see cref="BlockedKc"/> elements, every block of 4 x rows runs 16 Vector512 accumulators (8 loads per 16 FMAs);
    /// the W chunk is read from memory by the first x block and from L1 by the others, so W is streamed once. f16/bf16
    /// chunks are widened once into an L1 scratch. Accumulators live in a stack buffer between chunks; a short last x
    /// block repeats its last row (results dropped). Leftover W rows (&lt; 4) go through the scalar-row loop of
    /// <see cref="GemvRows{TL}"/>, the K tail (k mod 16) through scalar loads.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BlockedRows<TL>(float* x, int m, int k, void* w, float* y, int ldy, int j0, int j1) where TL : struct, IWidenLoad
    {
        int xBlocks = (m + 3) / 4;
        int kMain = k & ~15;
        bool widen = typeof(TL) != typeof(F32Load);
        float* scratch = null;
        if (widen)
            scratch = t_blockWiden != null ? t_blockWiden : (t_blockWiden = (float*)NativeMemory.AlignedAlloc(4 * BlockedKc * sizeof(float), 64));
        Vector512<float>* acc = stackalloc Vector512<float>[16 * 4];
        float** xr = stackalloc float*[16];
        for (int i = 0; i < 4 * xBlocks; i++) xr[i] = x + (long)Math.Min(i, m - 1) * k;

        int j = j0;
        for (; j + 4 <= j1; j += 4)
        {
            new Span<byte>(acc, 16 * 4 * 64).Clear();
            for (int pc = 0; pc < kMain; pc += BlockedKc)
            {
                int kc = Math.Min(BlockedKc, kMain - pc);
                float* w0, w1, w2, w3;
                if (widen)
                {
                    for (int q = 0; q < 4; q++)
                    {
                        long row = (long)(j + q) * k + pc;
                        float* dst = scratch + q * BlockedKc;
                        for (int p = 0; p < kc; p += 16) TL.Load16(w, row + p).Store(dst + p);
                    }
                    w0 = scratch - pc; w1 = w0 + BlockedKc; w2 = w1 + BlockedKc; w3 = w2 + BlockedKc;
                }
                else
                {
                    w0 = (float*)w + (long)j * k; w1 = w0 + k; w2 = w1 + k; w3 = w2 + k;
                }
                for (int xb = 0; xb < xBlocks; xb++)
                    Micro4x4(w0, w1, w2, w3, xr[4 * xb], xr[4 * xb + 1], xr[4 * xb + 2], xr[4 * xb + 3], pc, pc + kc, acc + 16 * xb);
            }
            for (int i = 0; i < m; i++)
            {
                Vector512<float>* ai = acc + 16 * (i >> 2) + 4 * (i & 3);
                float* xi = x + (long)i * k;
                for (int q = 0; q < 4; q++)
                {
                    float s = Vector512.Sum(ai[q]);
                    long row = (long)(j + q) * k;
                    for (int p = kMain; p < k; p++) s += xi[p] * TL.Load1(w, row + p);
                    y[(long)i * ldy + j + q] = s;
                }
            }
        }
        if (j < j1) GemvRows<TL>(x, m, k, w, y, ldy, j, j1);
    }

    /// <summary>acc[4·a + b] += Σ_{p ∈ [p0, p1)} x_a[p] · w_b[p] (16 Vector512 accumulators, p1 - p0 a multiple of 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro4x4(float* w0, float* w1, float* w2, float* w3, float* x0, float* x1, float* x2, float* x3, int p0, int p1, Vector512<float>* acc)
    {
        Vector512<float> c00 = acc[0], c01 = acc[1], c02 = acc[2], c03 = acc[3];
        Vector512<float> c10 = acc[4], c11 = acc[5], c12 = acc[6], c13 = acc[7];
        Vector512<float> c20 = acc[8], c21 = acc[9], c22 = acc[10], c23 = acc[11];
        Vector512<float> c30 = acc[12], c31 = acc[13], c32 = acc[14], c33 = acc[15];
        for (int p = p0; p < p1; p += 16)
        {
            Vector512<float> b0 = Vector512.Load(w0 + p), b1 = Vector512.Load(w1 + p), b2 = Vector512.Load(w2 + p), b3 = Vector512.Load(w3 + p);
            Vector512<float> a = Vector512.Load(x0 + p);
            c00 = Vector512.FusedMultiplyAdd(a, b0, c00); c01 = Vector512.FusedMultiplyAdd(a, b1, c01);
            c02 = Vector512.FusedMultiplyAdd(a, b2, c02); c03 = Vector512.FusedMultiplyAdd(a, b3, c03);
            a = Vector512.Load(x1 + p);
            c10 = Vector512.FusedMultiplyAdd(a, b0, c10); c11 = Vector512.FusedMultiplyAdd(a, b1, c11);
            c12 = Vector512.FusedMultiplyAdd(a, b2, c12); c13 = Vector512.FusedMultiplyAdd(a, b3, c13);
            a = Vector512.Load(x2 + p);
            c20 = Vector512.FusedMultiplyAdd(a, b0, c20); c21 = Vector512.FusedMultiplyAdd(a, b1, c21);
            c22 = Vector512.FusedMultiplyAdd(a, b2, c22); c23 = Vector512.FusedMultiplyAdd(a, b3, c23);
            a = Vector512.Load(x3 + p);
            c30 = Vector512.FusedMultiplyAdd(a, b0, c30); c31 = Vector512.FusedMultiplyAdd(a, b1, c31);
            c32 = Vector512.FusedMultiplyAdd(a, b2, c32); c33 = Vector512.FusedMultiplyAdd(a, b3, c33);
        }
        acc[0] = c00; acc[1] = c01; acc[2] = c02; acc[3] = c03;
        acc[4] = c10; acc[5] = c11; acc[6] = c12; acc[7] = c13;
        acc[8] = c20; acc[9] = c21; acc[10] = c22; acc[11] = c23;
        acc[12] = c30; acc[13] = c31; acc[14] = c32; acc[15] = c33;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot8<TL>(float* x, int k, void* w, long row0, long rowStride, float* output, int outStride) where TL : struct, IWidenLoad
    {
        long o0 = row0, o1 = o0 + rowStride, o2 = o1 + rowStride, o3 = o2 + rowStride, o4 = o3 + rowStride, o5 = o4 + rowStride, o6 = o5 + rowStride, o7 = o6 + rowStride;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            Vector512<float> xv = Vector512.Load(x + p);
            a0 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o0 + p), a0);
            a1 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o1 + p), a1);
            a2 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o2 + p), a2);
            a3 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o3 + p), a3);
            a4 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o4 + p), a4);
            a5 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o5 + p), a5);
            a6 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o6 + p), a6);
            a7 = Vector512.FusedMultiplyAdd(xv, TL.Load16(w, o7 + p), a7);
        }
        float s0 = Vector512.Sum(a0), s1 = Vector512.Sum(a1), s2 = Vector512.Sum(a2), s3 = Vector512.Sum(a3);
        float s4 = Vector512.Sum(a4), s5 = Vector512.Sum(a5), s6 = Vector512.Sum(a6), s7 = Vector512.Sum(a7);
        for (; p < k; p++)
        {
            float xs = x[p];
            s0 += xs * TL.Load1(w, o0 + p); s1 += xs * TL.Load1(w, o1 + p); s2 += xs * TL.Load1(w, o2 + p); s3 += xs * TL.Load1(w, o3 + p);
            s4 += xs * TL.Load1(w, o4 + p); s5 += xs * TL.Load1(w, o5 + p); s6 += xs * TL.Load1(w, o6 + p); s7 += xs * TL.Load1(w, o7 + p);
        }
        output[0] = s0; output[outStride] = s1; output[2 * outStride] = s2; output[3 * outStride] = s3;
        output[4 * outStride] = s4; output[5 * outStride] = s5; output[6 * outStride] = s6; output[7 * outStride] = s7;
    }

    /// <summary>Loads weight elements of one dtype widened to f32; index in elements from the base pointer.</summary>
    private interface IWidenLoad
    {
        static abstract Vector512<float> Load16(void* p, long index);
        static abstract float Load1(void* p, long index);
    }

    private readonly struct F32Load : IWidenLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(void* p, long index) => Vector512.Load((float*)p + index);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(void* p, long index) => ((float*)p)[index];
    }

    /// <summary>bf16 is the top half of an f32: zero-extend 16 u16 to u32 and shift left by 16.</summary>
    private readonly struct Bf16Load : IWidenLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(void* p, long index) =>
            Vector512.ShiftLeft(Vector512.WidenLower(Vector256.Load((ushort*)p + index).ToVector512Unsafe()), 16).AsSingle();
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(void* p, long index) => BitConverter.UInt32BitsToSingle((uint)((ushort*)p)[index] << 16);
    }

    /// <summary>
    /// IEEE binary16 → binary32 exactly, in integer/float arithmetic: the 15 magnitude bits shifted into an f32's
    /// exponent/mantissa field and multiplied by 2^112 (exact for normals and subnormals), exponent forced to 255 for
    /// inf/NaN (payload kept), sign OR-ed back.
    /// </summary>
    private readonly struct F16Load : IWidenLoad
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(void* p, long index)
        {
            Vector512<uint> h = Vector512.WidenLower(Vector256.Load((ushort*)p + index).ToVector512Unsafe());
            Vector512<uint> em = h & Vector512.Create(0x7fffu);
            Vector512<uint> bits = (Vector512.ShiftLeft(em, 13).AsSingle() * Vector512.Create(0x77800000u).AsSingle() /* 2^112 */).AsUInt32();
            bits |= Vector512.GreaterThanOrEqual(em, Vector512.Create(0x7c00u)) & Vector512.Create(0x7f800000u);
            bits |= Vector512.ShiftLeft(h & Vector512.Create(0x8000u), 16);
            return bits.AsSingle();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(void* p, long index) => (float)((Half*)p)[index];
    }
}
