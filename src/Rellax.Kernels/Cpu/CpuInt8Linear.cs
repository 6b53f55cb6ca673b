using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// The int8 linear layer on the CPU (LLM.int8()-style W8A8 with per-group activation scales,
/// <see cref="PrimitivesReference.LinearInt8"/> defines it):
/// <c>y[t, j] = s_w[j] · (Σ_g s_x[t, g] · Σ_{c∈g, c∉O} x8[t, c] · w8[j, c] + Σ_{c∈O} x[t, c] · w8[j, c]) + bias[j]</c>, where
/// g runs over groups of G = <see cref="Int8Weights.GroupSize"/> input columns and O are the outlier input columns (largest
/// |x| over the rows above the threshold), kept in fp32.
/// <para>
/// <b>Layouts.</b> Weights are packed once, at quantization, in strips of <see cref="NR"/> = 16 rows:
/// <c>[⌈N/16⌉][⌈K/4⌉][16][4]</c> u8 = w8 + 128 (four consecutive k of one row form one dword; K and N padding holds 128,
/// i.e. w8 = 0), which is the only copy kept: 1 byte per weight and 4 per row for the scale, nothing else. Each call
/// quantizes the activations into <c>[⌈M/6⌉][⌈K/4⌉][6][4]</c> s8 = x8 (outlier and padding columns hold 0), their scales
/// into <c>[⌈M/6⌉][⌈K/G⌉][6]</c> f32 and the corrections <c>−128·Σ_{c∈g} x8</c> into <c>[⌈M/6⌉][⌈K/G⌉][6]</c> i32 (M·K/G
/// sums, computed while quantizing).
/// </para>
/// <para>
/// <b>Exactness of the u8 × s8 products.</b> w8 + 128 ∈ [1, 255] is unsigned, so per group
/// <c>Σ_g (w8 + 128)·x8 = Σ_g w8·x8 + 128·Σ_g x8</c> and the group step adds the row's <c>−128·Σ_g x8</c> (outlier and
/// padding columns have x8 = 0 on both sides). A group's biased sum is at most G·255·127 ≤ 8.3·10⁶ (G ≤ 256): exact in i32,
/// and its unbiased sum (≤ G·127² &lt; 2²⁴) exact when converted to f32. The unbiased integer is the one the earlier layout
/// (s8 weights, u8 activations, per-group weight sums) produced, so the outputs are bit-identical to it.
/// </para>
/// <para>
/// <b>Microkernels</b> (tile 6 rows × 16 columns, one activation group of K at a time in registers; after each group its
/// i32 tile becomes <c>f += (float)(acc − 128·Σ_g x8) · s_x[t, g]</c> on an f32 tile in L1, multiply then add, no FMA: about
/// 60 vector operations per 12·G/4 dot instructions, i.e. per 192 at the default G = 64; measured cost in
/// <c>benchmarks/results/int8-weights.md</c>):
/// <list type="bullet">
/// <item>AVX-VNNI: per k-quad two ymm loads of the u8 weight strip (16 columns × 4 k), six dword broadcasts of s8 x and twelve
/// <c>vpdpbusd</c> (12 ymm accumulators): 32 MACs per instruction, twice the 16 of a zmm fp32 FMA; the group step runs
/// on the accumulators in registers (<see cref="KernelVnniGroups"/>).</item>
/// <item>AVX-512BW without VNNI: the u8 weight quad-columns zero-extended to i16 (<c>vpmovzxbw</c>), the s8 x quad
/// sign-extended to four i16 (<c>pdep</c> and a sign fill in a general register) and broadcast, <c>vpmaddwd</c> + <c>vpaddd</c>.
/// i16 × i16 pair sums are exact in i32. Not <c>vpmaddubsw</c>: with u8 up to 255 its i16 pair sum reaches 2·255·127 = 64 770
/// and saturates; the sign trick (|x8| × sign(x8)·w8, pair sums ≤ 2·127² = 32 258) needs a masked negation of the weights
/// per x row, which costs as many instructions per MAC as the i16 path.</item>
/// <item>Scalar: the same sums in plain loops. These two write the group's i32 tile and the shared
/// <see cref="AccumulateGroup"/> does the group step.</item>
/// </list>
/// All three produce the same i32 tile per group; the shared group step and one shared epilogue (<c>f·s_w</c>, plus the outlier
/// terms and the bias) turn it into f32, so the three paths give bit-identical outputs.
/// </para>
/// <para>
/// <b>All columns outliers</b> (a threshold below every |x|, W8A32): the fp32 GEMM over the weight dequantized while packing
/// (<see cref="CpuCflora.LinearDequantized"/>): the same function, another float summation order, fp32 GEMM speed.
/// </para>
/// <para>
/// <b>Blocking and threads.</b> The output is cut into parts along N (strips of 16 columns, several parts per thread,
/// handed out dynamically) or along M when N is narrow. Inside a part: for each chunk of <see cref="MC"/> = 96 rows
/// (≈ 96·K bytes of packed x, L2) and each weight strip (16·K bytes, L1 up to K = 2048, else L2), every 6-row x strip runs
/// the microkernel. Per k-quad the VNNI kernel loads 64 + 24 bytes for 12 instructions (~6 cycles at two per cycle), so
/// even an L2-resident strip feeds it. <b>Roofline</b> (Zen 5, two cores, ~4 GHz): 2 × 2 × 32 = 128 int8 MACs per cycle,
/// ≈ 0.5 T MAC/s, against 64 fp32 MACs per cycle for the fp32 GEMM. Activation quantization reads x once and writes
/// M·K bytes; outlier detection reads x once more.
/// </para>
/// </summary>
internal sealed unsafe class CpuInt8Linear(CpuBackend backend) : IInt8LinearKernels
{
    /// <summary>Rows of x per microkernel tile.</summary>
    internal const int MR = 6;

    /// <summary>Columns of y (rows of w) per microkernel tile and per packed weight strip.</summary>
    internal const int NR = 16;

    /// <summary>Rows of x per cache block (a multiple of <see cref="MR"/>).</summary>
    internal const int MC = 96;

    private const long SingleThreadMacs = 1L << 20;

    private readonly CpuBackend _backend = backend;

    /// <summary>The integer dot-product instructions the kernel uses.</summary>
    internal enum DotStrategy
    {
        /// <summary>AVX-VNNI <c>vpdpbusd</c> on ymm registers.</summary>
        AvxVnni,
        /// <summary>AVX-512BW <c>vpmaddwd</c> on i16-widened operands (zmm).</summary>
        Avx512BW,
        /// <summary>Plain integer loops.</summary>
        Scalar,
    }

    /// <summary>The best strategy this CPU supports.</summary>
    internal static DotStrategy Best =>
        AvxVnni.IsSupported ? DotStrategy.AvxVnni
        : Avx512BW.IsSupported && Bmi2.X64.IsSupported ? DotStrategy.Avx512BW
        : DotStrategy.Scalar;

    /// <summary>The backend's strategy (<see cref="CpuBackend.Int8Dots"/>), re-checked against the CPU (an unsupported one runs the scalar loops).</summary>
    private DotStrategy Effective => _backend.Int8Dots switch
    {
        DotStrategy.AvxVnni when AvxVnni.IsSupported => DotStrategy.AvxVnni,
        DotStrategy.Avx512BW when Avx512BW.IsSupported && Bmi2.X64.IsSupported => DotStrategy.Avx512BW,
        _ => DotStrategy.Scalar,
    };

    /// <summary>What <c>rellax backends</c> prints: the int8 GEMM paths this CPU has.</summary>
    internal static string Describe() =>
        $"int8 linear: {Best} (AVX-VNNI {Yes(AvxVnni.IsSupported)}, AVX-512BW {Yes(Avx512BW.IsSupported && Bmi2.X64.IsSupported)}, scalar yes)";

    private static string Yes(bool b) => b ? "yes" : "no";

    private static int Quads(int k) => (k + 3) / 4;

    private static int Strips(int n) => (n + NR - 1) / NR;

    // ---------------------------------------------------------------- weights

    private static int Groups(int k, int groupSize) => (k + groupSize - 1) / groupSize;

    public Int8Weights Quantize(Tensor w, int groupSize)
    {
        int n = w.Dim(0), k = w.Dim(1), kq = Quads(k);
        var matrix = new CpuCflora.TypedMatrix(w);
        var values = _backend.Allocate(DType.I8, (long)Strips(n) * kq * NR * 4);
        var scales = _backend.Allocate(DType.F32, (long)n);
        try
        {
            byte* packed = (byte*)((CpuBuffer)values).Pointer;
            new Span<byte>(packed, checked((int)values.SizeInBytes)).Fill(Bias); // padding rows and columns: q = 0
            float* sp = (float*)((CpuBuffer)scales).Pointer;
            int badRow = int.MaxValue;
            CpuSimd.ForChunks(_backend, n, k, (start, count) =>
            {
                float* row = (float*)NativeMemory.AlignedAlloc((nuint)(Math.Max(k, 1) * sizeof(float)), 64);
                sbyte* q = (sbyte*)NativeMemory.Alloc((nuint)Math.Max(k, 1));
                try
                {
                    for (int j = start; j < start + count; j++)
                    {
                        if (k > 0) matrix.Widen(j, 0, k, row);
                        float scale = PrimitivesReference.QuantizeRowInt8(new ReadOnlySpan<float>(row, k), new Span<sbyte>(q, k));
                        if (!float.IsFinite(scale))
                        {
                            InterlockedMin(ref badRow, j);
                            continue;
                        }
                        sp[j] = scale;
                        for (int p = 0; p < k; p++) packed[Offset(k, j, p)] = (byte)(q[p] + Bias);
                    }
                }
                finally
                {
                    NativeMemory.AlignedFree(row);
                    NativeMemory.Free(q);
                }
            });
            if (badRow != int.MaxValue)
                throw new ArgumentException($"w {w} row {badRow} holds a non-finite value; it cannot be quantized to int8", nameof(w));
            return new Int8Weights(_backend, n, k, groupSize, values, scales, null);
        }
        catch
        {
            values.Dispose(); scales.Dispose();
            throw;
        }
    }

    private static void InterlockedMin(ref int target, int value)
    {
        int seen;
        while (value < (seen = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, seen) != seen) { }
    }

    public sbyte[] ReadValues(Int8Weights w)
    {
        int n = w.Rows, k = w.Cols;
        byte* packed = (byte*)((CpuBuffer)w.Values).Pointer;
        var result = new sbyte[(long)n * k];
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++) result[(long)j * k + p] = (sbyte)(packed[Offset(k, j, p)] - Bias);
        return result;
    }

    public void Embedding(Tensor ids, Int8Weights table, Tensor y)
    {
        int v = table.Rows, h = table.Cols;
        var idSpan = CpuBackend.Span<int>(ids);
        foreach (int id in idSpan)
            if ((uint)id >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the embedding table of {v} rows");
        nint ip = (nint)CpuBackend.Ptr<int>(ids), yp = (nint)CpuBackend.Ptr<float>(y);
        byte* packed = (byte*)((CpuBuffer)table.Values).Pointer;
        float* scales = (float*)((CpuBuffer)table.Scales).Pointer;
        CpuSimd.ForChunks(_backend, ids.Dim(0), h, (t0, count) =>
        {
            for (int t = t0; t < t0 + count; t++)
            {
                int j = ((int*)ip)[t];
                Dequantize(packed, scales[j], h, j, 0, h, (float*)yp + (long)t * h);
            }
        });
    }

    /// <summary>The bias of the stored weights: the packed byte of q is q + 128 (u8).</summary>
    internal const int Bias = 128;

    /// <summary>Where q[row, col] + 128 of a packed weight with <paramref name="k"/> columns lies: strip row / 16, k-quad col / 4,
    /// lane row % 16, byte col % 4 (<c>[⌈N/16⌉][⌈K/4⌉][16][4]</c>).</summary>
    private static long Offset(int k, int row, int col) =>
        ((long)(row / NR) * Quads(k) + (col >> 2)) * NR * 4 + (row % NR) * 4 + (col & 3);

    /// <summary>q[row, col] of a packed weight with <paramref name="k"/> columns (the stored u8 minus 128).</summary>
    internal static int ValueAt(byte* packed, int k, int row, int col) => packed[Offset(k, row, col)] - Bias;

    /// <summary>dst[0..n) = q[row, col0 .. col0 + n) · scale (the dequantized row, one f32 rounding per element): the embedding
    /// gather and the frozen-weight backward (<see cref="CpuCflora.TypedMatrix"/>) read int8 weights through it.</summary>
    internal static void Dequantize(byte* packed, float scale, int k, int row, int col0, int n, float* dst)
    {
        for (int i = 0; i < n; i++) dst[i] = (packed[Offset(k, row, col0 + i)] - Bias) * scale;
    }

    // ---------------------------------------------------------------- forward

    public void Linear(Tensor x, Int8Weights w, Tensor? bias, Tensor y, float threshold)
    {
        int m = x.Dim(0), k = x.Dim(1), n = w.Rows, kq = Quads(k), mStrips = (m + MR - 1) / MR, nStrips = Strips(n);
        int groups = Groups(k, w.GroupSize);
        float* xp = CpuBackend.Ptr<float>(x), yp = CpuBackend.Ptr<float>(y);
        float* bp = bias is { } bt ? CpuBackend.Ptr<float>(bt) : null;
        int threads = (long)m * n * k < SingleThreadMacs ? 1 : _backend.Threads;

        int[] outliers = OutlierColumns(xp, m, k, threshold, threads);
        int no = outliers.Length;
        if (no == k && k > 0)
        {
            // Every column is an outlier column (a threshold below every |x|): y = x · dequant(W8)ᵀ in fp32, i.e. W8A32, the
            // fp32 model with the dequantized weights (training's exact mode). The blocked fp32 GEMM dequantizes each packed
            // k step, instead of the epilogue's column-by-column outlier path.
            CpuCflora.LinearDequantized(_backend, xp, m, w, bp, yp);
            return;
        }
        long aBytes = (long)mStrips * kq * MR * 4;
        sbyte* a = (sbyte*)NativeMemory.AlignedAlloc((nuint)Math.Max(aBytes, 64), 64);
        float* sx = (float*)NativeMemory.AlignedAlloc((nuint)(Math.Max((long)mStrips * groups * MR, 1) * sizeof(float)), 64);
        int* corr = (int*)NativeMemory.AlignedAlloc((nuint)(Math.Max((long)mStrips * groups * MR, 1) * sizeof(int)), 64);
        float* xo = no == 0 ? null : (float*)NativeMemory.AlignedAlloc((nuint)((long)m * no * sizeof(float)), 64);
        float* wo = no == 0 ? null : (float*)NativeMemory.AlignedAlloc((nuint)((long)nStrips * no * NR * sizeof(float)), 64);
        try
        {
            fixed (int* op = outliers)
            {
                nint opp = (nint)op;
                CpuSimd.ForChunks(_backend, mStrips, (long)MR * k,
                    (start, count) => QuantizeStrips(xp, m, k, w.GroupSize, (int*)opp, no, a, sx, corr, xo, start, count));
                if (no > 0) DequantizeOutlierColumns(w, op, no, wo);
            }
            var job = new Job
            {
                A = a, W = (byte*)((CpuBuffer)w.Values).Pointer, Kq = kq, M = m, N = n, Groups = groups, GroupQuads = w.GroupSize / 4,
                Sx = sx, Sw = (float*)((CpuBuffer)w.Scales).Pointer, Corrections = corr,
                Xo = xo, Wo = wo, No = no, Bias = bp, Y = yp, Dots = Effective,
            };
            Run(job, mStrips, nStrips, threads);
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(sx);
            NativeMemory.AlignedFree(corr);
            if (xo != null) NativeMemory.AlignedFree(xo);
            if (wo != null) NativeMemory.AlignedFree(wo);
        }
    }

    /// <summary>The input columns c with max_t |x[t, c]| &gt; threshold, ascending.</summary>
    private int[] OutlierColumns(float* x, int m, int k, float threshold, int threads)
    {
        if (k == 0 || m == 0) return [];
        int parts = threads == 1 ? 1 : Math.Min(threads, m);
        var partial = new float[parts * k];
        fixed (float* pp = partial)
        {
            nint ppp = (nint)pp;
            if (parts == 1) ColumnMax(x, 0, m, k, pp);
            else
                Parallel.For(0, parts, _backend.ParallelOptions, part =>
                {
                    int r0 = (int)((long)m * part / parts), r1 = (int)((long)m * (part + 1) / parts);
                    ColumnMax(x, r0, r1, k, (float*)ppp + (long)part * k);
                });
        }
        var result = new List<int>();
        for (int c = 0; c < k; c++)
        {
            float mx = 0;
            for (int p = 0; p < parts; p++) mx = Math.Max(mx, partial[p * k + c]);
            if (mx > threshold) result.Add(c);
        }
        return [.. result];
    }

    /// <summary>colMax[c] = max over rows [r0, r1) of |x[t, c]| (NaN is ignored: it stays in the int8 path).</summary>
    private static void ColumnMax(float* x, int r0, int r1, int k, float* colMax)
    {
        for (int t = r0; t < r1; t++)
        {
            float* row = x + (long)t * k;
            int c = 0;
            if (Vector512.IsHardwareAccelerated)
                for (; c + 16 <= k; c += 16)
                {
                    var v = Vector512.Abs(Vector512.Load(row + c));
                    var cur = Vector512.Load(colMax + c);
                    Vector512.ConditionalSelect(Vector512.GreaterThan(v, cur), v, cur).Store(colMax + c);
                }
            for (; c < k; c++)
            {
                float v = Math.Abs(row[c]);
                if (v > colMax[c]) colMax[c] = v;
            }
        }
    }

    /// <summary>
    /// Quantizes x rows of strips [start, start + count) into the packed s8 layout (x8; outlier and padding columns 0), one
    /// scale per row and group of <paramref name="groupSize"/> columns into sx [strip][group][6] (0 for padding rows), the
    /// u8-weight correction −128·Σ_{c∈g} x8 per row and group into corr (same layout), and copies the outlier columns into xo [M, no].
    /// </summary>
    private static void QuantizeStrips(float* x, int m, int k, int groupSize, int* outliers, int no, sbyte* a, float* sx, int* corr, float* xo,
        int start, int count)
    {
        int kq = Quads(k), groups = Groups(k, groupSize);
        float* row = (float*)NativeMemory.AlignedAlloc((nuint)(Math.Max(kq * 4, 16) * sizeof(float)), 64);
        sbyte* q = (sbyte*)NativeMemory.AlignedAlloc((nuint)Math.Max(kq * 4, 16), 64);
        try
        {
            for (int s = start; s < start + count; s++)
            {
                sbyte* strip = a + (long)s * kq * MR * 4;
                for (int i = 0; i < MR; i++)
                {
                    int t = s * MR + i;
                    if (t >= m)
                    {
                        for (int p = 0; p < kq; p++) *(uint*)(strip + ((long)p * MR + i) * 4) = 0u;
                        for (int g = 0; g < groups; g++)
                        {
                            sx[((long)s * groups + g) * MR + i] = 0f;
                            corr[((long)s * groups + g) * MR + i] = 0;
                        }
                        continue;
                    }
                    float* xr = x + (long)t * k;
                    new ReadOnlySpan<float>(xr, k).CopyTo(new Span<float>(row, k));
                    for (int o = 0; o < no; o++)
                    {
                        xo[(long)t * no + o] = xr[outliers[o]];
                        row[outliers[o]] = 0f;
                    }
                    for (int g = 0; g < groups; g++)
                    {
                        int c0 = g * groupSize, len = Math.Min(k, c0 + groupSize) - c0;
                        sx[((long)s * groups + g) * MR + i] = QuantizeActivations(row + c0, len, q + c0);
                        corr[((long)s * groups + g) * MR + i] = -Bias * Sum(q + c0, len);
                    }
                    for (int p = k; p < kq * 4; p++) q[p] = 0;
                    for (int p = 0; p < kq; p++)
                        *(uint*)(strip + ((long)p * MR + i) * 4) = *(uint*)(q + 4 * p);
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(row);
            NativeMemory.AlignedFree(q);
        }
    }

    /// <summary>Σ q[0..n) (|Σ| ≤ 256·127: exact in i32).</summary>
    private static int Sum(sbyte* q, int n)
    {
        int c = 0, sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var acc = Vector512<short>.Zero; // at most 2·⌈256/64⌉ values of |x8| ≤ 127 per i16 lane
            for (; c + 64 <= n; c += 64)
            {
                var v = Vector512.Load(q + c);
                acc += Vector512.WidenLower(v) + Vector512.WidenUpper(v);
            }
            sum = Vector512.Sum(Vector512.WidenLower(acc)) + Vector512.Sum(Vector512.WidenUpper(acc));
        }
        for (; c < n; c++) sum += q[c];
        return sum;
    }

    /// <summary>
    /// q[0..k) = x8 of one row or group (outlier columns already zeroed) as <see cref="PrimitivesReference.QuantizeActivationRowInt8"/>
    /// defines it (same float operations, so the same integers); returns its scale.
    /// </summary>
    private static float QuantizeActivations(float* row, int k, sbyte* q)
    {
        if (!Vector512.IsHardwareAccelerated || !Avx512F.IsSupported)
            return PrimitivesReference.QuantizeActivationRowInt8(new ReadOnlySpan<float>(row, k), new Span<sbyte>(q, k));
        var amax = Vector512<float>.Zero;
        var nan = Vector512<float>.Zero;
        int c = 0;
        for (; c + 16 <= k; c += 16)
        {
            var v = Vector512.Load(row + c);
            amax = Vector512.Max(amax, Vector512.Abs(v));
            nan |= ~Vector512.Equals(v, v);
        }
        float mx = 0f;
        for (int i = 0; i < 16; i++) mx = Math.Max(mx, amax.GetElement(i));
        bool hasNaN = nan != Vector512<float>.Zero;
        for (int i = c; i < k; i++)
        {
            float v = row[i];
            if (float.IsNaN(v)) hasNaN = true;
            else mx = Math.Max(mx, Math.Abs(v));
        }
        if (hasNaN || !float.IsFinite(mx) || mx == 0f)
            return PrimitivesReference.QuantizeActivationRowInt8(new ReadOnlySpan<float>(row, k), new Span<sbyte>(q, k));
        float inv = 127f / mx;
        var invV = Vector512.Create(inv);
        var lo = Vector512.Create(-127);
        var hi = Vector512.Create(127);
        for (c = 0; c + 16 <= k; c += 16)
        {
            var r = Vector512.ConvertToInt32(Vector512.Round(Vector512.Load(row + c) * invV));
            Avx512F.ConvertToVector128SByte(Vector512.Min(Vector512.Max(r, lo), hi)).Store(q + c);
        }
        for (; c < k; c++) q[c] = PrimitivesReference.QuantizeActivationInt8(row[c], inv);
        return mx / 127f;
    }

    /// <summary>wo[s][o][jj] = w8[16s + jj, outliers[o]] · s_w (0 past N): the fp32 weights of the outlier columns, per strip.</summary>
    private static void DequantizeOutlierColumns(Int8Weights w, int* outliers, int no, float* wo)
    {
        int n = w.Rows, k = w.Cols, strips = Strips(n);
        byte* packed = (byte*)((CpuBuffer)w.Values).Pointer;
        float* sw = (float*)((CpuBuffer)w.Scales).Pointer;
        for (int s = 0; s < strips; s++)
            for (int o = 0; o < no; o++)
            {
                float* dst = wo + ((long)s * no + o) * NR;
                for (int jj = 0; jj < NR; jj++)
                {
                    int j = s * NR + jj;
                    dst[jj] = j < n ? (packed[Offset(k, j, outliers[o])] - Bias) * sw[j] : 0f;
                }
            }
    }

    /// <summary>Everything one GEMM call reads and writes (pointers stay valid for the call).</summary>
    private struct Job
    {
        public sbyte* A; public byte* W; public int Kq, M, N, Groups, GroupQuads;
        public float* Sx, Sw; public int* Corrections;
        public float* Xo, Wo; public int No;
        public float* Bias, Y;
        public DotStrategy Dots;
    }

    private void Run(Job job, int mStrips, int nStrips, int threads)
    {
        if (threads == 1)
        {
            Block(job, 0, mStrips, 0, nStrips);
            return;
        }
        bool splitN = nStrips >= 2 * threads || mStrips < 2 * threads;
        int parts = splitN ? Math.Min(nStrips, 4 * threads) : Math.Min(mStrips, 4 * threads);
        Parallel.For(0, parts, _backend.ParallelOptions, part =>
        {
            int total = splitN ? nStrips : mStrips;
            int s0 = (int)((long)total * part / parts), s1 = (int)((long)total * (part + 1) / parts);
            if (s0 >= s1) return;
            if (splitN) Block(job, 0, mStrips, s0, s1);
            else Block(job, s0, s1, 0, nStrips);
        });
    }

    /// <summary>Computes the tiles of x strips [m0, m1) × weight strips [n0, n1).</summary>
    private static void Block(in Job job, int m0, int m1, int n0, int n1)
    {
        const int StripsPerChunk = MC / MR;
        int* tile = stackalloc int[MR * NR];
        float* acc = stackalloc float[MR * NR];
        long aStrip = (long)job.Kq * MR * 4, wStrip = (long)job.Kq * NR * 4;
        for (int ic = m0; ic < m1; ic += StripsPerChunk)
        {
            int icEnd = Math.Min(m1, ic + StripsPerChunk);
            for (int sn = n0; sn < n1; sn++)
            {
                byte* b = job.W + sn * wStrip;
                for (int sm = ic; sm < icEnd; sm++)
                {
                    sbyte* a = job.A + sm * aStrip;
                    Vector512<float>.Zero.Store(acc); Vector512<float>.Zero.Store(acc + 16); Vector512<float>.Zero.Store(acc + 32);
                    Vector512<float>.Zero.Store(acc + 48); Vector512<float>.Zero.Store(acc + 64); Vector512<float>.Zero.Store(acc + 80);
                    if (job.Dots == DotStrategy.AvxVnni)
                    {
                        KernelVnniGroups(job.Kq, job.GroupQuads, a, b, job.Corrections + (long)sm * job.Groups * MR, job.Sx + (long)sm * job.Groups * MR, acc);
                        Epilogue(job, acc, sm, sn);
                        continue;
                    }
                    for (int g = 0; g < job.Groups; g++)
                    {
                        int p0 = g * job.GroupQuads, quads = Math.Min(job.Kq, p0 + job.GroupQuads) - p0;
                        sbyte* ag = a + (long)p0 * MR * 4;
                        byte* bg = b + (long)p0 * NR * 4;
                        switch (job.Dots)
                        {
                            case DotStrategy.Avx512BW: KernelAvx512BW(quads, ag, bg, tile); break;
                            default: KernelScalar(quads, ag, bg, tile); break;
                        }
                        long rg = ((long)sm * job.Groups + g) * MR;
                        AccumulateGroup(tile, job.Corrections + rg, job.Sx + rg, acc);
                    }
                    Epilogue(job, acc, sm, sn);
                }
            }
        }
    }

    /// <summary>
    /// One activation group's step: f[i, j] += (float)(tile[i, j] + corr[i]) · sx[i] for the 6 × 16 tile, where tile
    /// holds the group's biased (w8 + 128) × x8 sums, corr = −128·Σ_{c∈g} x8 per row and sx the rows' group scales. The same
    /// arithmetic for every dot strategy (multiply, then add: no FMA, as the ILGPU kernel), so their outputs are bit-identical.
    /// </summary>
    private static void AccumulateGroup(int* tile, int* corr, float* sx, float* f)
    {
        for (int i = 0; i < MR; i++)
        {
            var exact = Vector512.Load(tile + i * NR) + Vector512.Create(corr[i]);
            (Vector512.Load(f + i * NR) + Vector512.ConvertToSingle(exact) * Vector512.Create(sx[i])).Store(f + i * NR);
        }
    }

    /// <summary>
    /// y[t, j] = f[t, j]·s_w[j] + Σ_o xo[t, o]·wo[j, o] + bias[j] for the valid part of the tile (f from
    /// <see cref="AccumulateGroup"/>). The same arithmetic for every dot strategy (so their outputs are bit-identical).
    /// </summary>
    private static void Epilogue(in Job job, float* f, int sm, int sn)
    {
        int j0 = sn * NR, cols = Math.Min(NR, job.N - j0);
        float* swTmp = stackalloc float[NR];
        float* bTmp = stackalloc float[NR];
        float* outTmp = stackalloc float[NR];
        for (int jj = 0; jj < NR; jj++)
        {
            bool valid = jj < cols;
            swTmp[jj] = valid ? job.Sw[j0 + jj] : 0f;
            bTmp[jj] = valid && job.Bias != null ? job.Bias[j0 + jj] : 0f;
        }
        var sw = Vector512.Load(swTmp);
        var bias = Vector512.Load(bTmp);
        float* wo = job.Wo + (long)sn * job.No * NR;
        for (int i = 0; i < MR; i++)
        {
            int t = sm * MR + i;
            if (t >= job.M) break;
            var v = Vector512.Load(f + i * NR) * sw;
            for (int o = 0; o < job.No; o++)
                v += Vector512.Create(job.Xo[(long)t * job.No + o]) * Vector512.Load(wo + o * NR);
            if (job.Bias != null) v += bias;
            float* dst = job.Y + (long)t * job.N + j0;
            if (cols == NR) v.Store(dst);
            else
            {
                v.Store(outTmp);
                for (int jj = 0; jj < cols; jj++) dst[jj] = outTmp[jj];
            }
        }
    }

    /// <summary>
    /// The whole K of one 6 × 16 tile with AVX-VNNI, group by group (<paramref name="gq"/> k-quads each, the last one
    /// shorter): the group's i32 sums in 12 ymm accumulators (vpdpbusd: u8 weights × s8 activations), then the group step of
    /// <see cref="AccumulateGroup"/> on ymm halves in registers (no i32 tile round trip through memory),
    /// f[i, j] += (float)(acc + corr[i]) · sx[i]; the same
    /// IEEE operations per element as <see cref="AccumulateGroup"/>, so bit-identical to the other strategies.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KernelVnniGroups(int kq, int gq, sbyte* a, byte* b, int* corr, float* sx, float* f)
    {
        for (int p0 = 0; p0 < kq; p0 += gq, corr += MR, sx += MR)
        {
            int p1 = Math.Min(kq, p0 + gq);
            Vector256<int> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
            Vector256<int> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
            for (int p = p0; p < p1; p++, a += MR * 4, b += NR * 4)
            {
                Vector256<byte> b0 = Vector256.Load(b), b1 = Vector256.Load(b + 32);
                Vector256<sbyte> av = Vector256.Create(*(int*)a).AsSByte();
                c00 = AvxVnni.MultiplyWideningAndAdd(c00, b0, av); c01 = AvxVnni.MultiplyWideningAndAdd(c01, b1, av);
                av = Vector256.Create(*(int*)(a + 4)).AsSByte();
                c10 = AvxVnni.MultiplyWideningAndAdd(c10, b0, av); c11 = AvxVnni.MultiplyWideningAndAdd(c11, b1, av);
                av = Vector256.Create(*(int*)(a + 8)).AsSByte();
                c20 = AvxVnni.MultiplyWideningAndAdd(c20, b0, av); c21 = AvxVnni.MultiplyWideningAndAdd(c21, b1, av);
                av = Vector256.Create(*(int*)(a + 12)).AsSByte();
                c30 = AvxVnni.MultiplyWideningAndAdd(c30, b0, av); c31 = AvxVnni.MultiplyWideningAndAdd(c31, b1, av);
                av = Vector256.Create(*(int*)(a + 16)).AsSByte();
                c40 = AvxVnni.MultiplyWideningAndAdd(c40, b0, av); c41 = AvxVnni.MultiplyWideningAndAdd(c41, b1, av);
                av = Vector256.Create(*(int*)(a + 20)).AsSByte();
                c50 = AvxVnni.MultiplyWideningAndAdd(c50, b0, av); c51 = AvxVnni.MultiplyWideningAndAdd(c51, b1, av);
            }
            Step(f, c00, c01, corr[0], sx[0]); Step(f + 16, c10, c11, corr[1], sx[1]); Step(f + 32, c20, c21, corr[2], sx[2]);
            Step(f + 48, c30, c31, corr[3], sx[3]); Step(f + 64, c40, c41, corr[4], sx[4]); Step(f + 80, c50, c51, corr[5], sx[5]);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Step(float* row, Vector256<int> lo, Vector256<int> hi, int corr, float s)
        {
            var sv = Vector256.Create(s);
            var cv = Vector256.Create(corr);
            (Vector256.Load(row) + Vector256.ConvertToSingle(lo + cv) * sv).Store(row);
            (Vector256.Load(row + 8) + Vector256.ConvertToSingle(hi + cv) * sv).Store(row + 8);
        }
    }

    /// <summary>
    /// One group's 6 × 16 i32 tile with AVX-512BW: the u8 weights zero-extended to i16 (8 columns × 4 k per zmm), the s8 x quad
    /// sign-extended to four i16 (<see cref="SignExtendQuad"/>) and broadcast, vpmaddwd (lane 2j: k0, k1 of column j; lane
    /// 2j + 1: k2, k3; pair sums ≤ 2·255·127, exact), pairs summed at the end.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KernelAvx512BW(int kq, sbyte* a, byte* b, int* tile)
    {
        Vector512<int> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<int> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kq; p++, a += MR * 4, b += NR * 4)
        {
            Vector512<short> b0 = Avx512BW.ConvertToVector512Int16(Vector256.Load(b)), b1 = Avx512BW.ConvertToVector512Int16(Vector256.Load(b + 32));
            Vector512<short> av = Vector512.Create(SignExtendQuad(*(uint*)a)).AsInt16();
            c00 += Avx512BW.MultiplyAddAdjacent(av, b0); c01 += Avx512BW.MultiplyAddAdjacent(av, b1);
            av = Vector512.Create(SignExtendQuad(*(uint*)(a + 4))).AsInt16();
            c10 += Avx512BW.MultiplyAddAdjacent(av, b0); c11 += Avx512BW.MultiplyAddAdjacent(av, b1);
            av = Vector512.Create(SignExtendQuad(*(uint*)(a + 8))).AsInt16();
            c20 += Avx512BW.MultiplyAddAdjacent(av, b0); c21 += Avx512BW.MultiplyAddAdjacent(av, b1);
            av = Vector512.Create(SignExtendQuad(*(uint*)(a + 12))).AsInt16();
            c30 += Avx512BW.MultiplyAddAdjacent(av, b0); c31 += Avx512BW.MultiplyAddAdjacent(av, b1);
            av = Vector512.Create(SignExtendQuad(*(uint*)(a + 16))).AsInt16();
            c40 += Avx512BW.MultiplyAddAdjacent(av, b0); c41 += Avx512BW.MultiplyAddAdjacent(av, b1);
            av = Vector512.Create(SignExtendQuad(*(uint*)(a + 20))).AsInt16();
            c50 += Avx512BW.MultiplyAddAdjacent(av, b0); c51 += Avx512BW.MultiplyAddAdjacent(av, b1);
        }
        PairSums(c00, c01, tile); PairSums(c10, c11, tile + 16); PairSums(c20, c21, tile + 32);
        PairSums(c30, c31, tile + 48); PairSums(c40, c41, tile + 64); PairSums(c50, c51, tile + 80);

        static void PairSums(Vector512<int> lo, Vector512<int> hi, int* dst)
        {
            int* tmp = stackalloc int[32];
            lo.Store(tmp); hi.Store(tmp + 16);
            for (int j = 0; j < NR; j++) dst[j] = unchecked(tmp[2 * j] + tmp[2 * j + 1]);
        }
    }

    /// <summary>Four s8 (byte 0 lowest) sign-extended to four i16 in one u64: <c>pdep</c> spreads the bytes to the low halves
    /// of the i16 lanes, then each lane's sign bit (bit 7) times 0x1FE fills bits 8..15 (no carry between lanes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong SignExtendQuad(uint quad)
    {
        ulong spread = Bmi2.X64.ParallelBitDeposit(quad, 0x00FF00FF00FF00FFUL);
        return spread | (spread & 0x0080008000800080UL) * 0x1FEUL;
    }

    /// <summary>The same tile in plain integer loops (wrapping i32, like the SIMD paths).</summary>
    private static void KernelScalar(int kq, sbyte* a, byte* b, int* tile)
    {
        for (int e = 0; e < MR * NR; e++) tile[e] = 0;
        for (int p = 0; p < kq; p++, a += MR * 4, b += NR * 4)
            for (int i = 0; i < MR; i++)
                for (int j = 0; j < NR; j++)
                {
                    int s = 0;
                    for (int c = 0; c < 4; c++) s += a[i * 4 + c] * b[j * 4 + c];
                    tile[i * NR + j] = unchecked(tile[i * NR + j] + s);
                }
    }
}
