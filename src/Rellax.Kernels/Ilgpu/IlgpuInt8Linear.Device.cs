using ILGPU;
using ILGPU.Algorithms;

namespace Rellax.Kernels.Ilgpu;

// Device code of the ILGPU int8 linear layer (host side and roofline in IlgpuInt8Linear.cs). Quantization follows
// PrimitivesReference.QuantizeRowInt8 operation for operation (max |v|, inv = 127 / max, round half to even of v · inv, clamp to
// ±127), so weights and activations get the same integers as on the CPU. Int8 dots go through IlgpuAttentionKernels.Dot4:
// PTX dp4a on CUDA, an exact int32 fallback elsewhere.
internal sealed partial class IlgpuInt8Linear
{
    /// <summary>Scalars of one <see cref="LinearKernel"/> launch.</summary>
    internal struct LinearLaunch
    {
        public int N, K, Kq, GroupQuads, Groups, HasBias, UseDp4a;
    }

    /// <summary>Sign-extended byte <c>c &amp; 3</c> of a packed int (byte 0 the lowest).</summary>
    private static int Byte(int packed, int c) => (packed << (24 - 8 * (c & 3))) >> 24;

    private static int Pack(int q0, int q1, int q2, int q3) => (q0 & 0xff) | ((q1 & 0xff) << 8) | ((q2 & 0xff) << 16) | (q3 << 24);

    private static int QuantizeOne(float v, float inv) => (int)XMath.Clamp(XMath.RoundToEven(v * inv), -127f, 127f);

    // One thread per weight row j: scale = max|w_j| / 127, packed q row (K padded with zeros), row sum. Launch: auto-grouped
    // over N. Roofline: reads the row twice (K elements), writes ⌈K/4⌉ ints; memory-bound, once per model load.
    private static void QuantizeWeightsKernel(Index1D j, ArrayView<float> f32, ArrayView<ushort> bits16, int code, int k,
        ArrayView<int> packed, ArrayView<float> scales, ArrayView<int> sums)
    {
        long row = (long)j.X * k;
        int kq = (k + 3) / 4;
        float amax = 0f;
        for (int c = 0; c < k; c++) amax = XMath.Max(amax, XMath.Abs(IlgpuCfloraKernels.LoadWeight(code, f32, bits16, row + c)));
        float inv = amax == 0f ? 0f : 127f / amax;
        int sum = 0;
        for (int p = 0; p < kq; p++)
        {
            int q0 = 0, q1 = 0, q2 = 0, q3 = 0;
            int c = 4 * p;
            if (c < k) q0 = QuantizeOne(IlgpuCfloraKernels.LoadWeight(code, f32, bits16, row + c), inv);
            if (c + 1 < k) q1 = QuantizeOne(IlgpuCfloraKernels.LoadWeight(code, f32, bits16, row + c + 1), inv);
            if (c + 2 < k) q2 = QuantizeOne(IlgpuCfloraKernels.LoadWeight(code, f32, bits16, row + c + 2), inv);
            if (c + 3 < k) q3 = QuantizeOne(IlgpuCfloraKernels.LoadWeight(code, f32, bits16, row + c + 3), inv);
            sum += q0 + q1 + q2 + q3;
            packed[(long)j.X * kq + p] = Pack(q0, q1, q2, q3);
        }
        scales[j] = amax / 127f;
        sums[j] = sum;
    }

    // One thread per input column c: flags[c] = 1 when max_t |x[t, c]| > threshold (a NaN never counts). Launch: auto-grouped
    // over K. Roofline: reads x once (4·M·K bytes), column-strided across a warp's rows, coalesced across its columns.
    private static void OutlierFlagsKernel(Index1D c, ArrayView<float> x, int m, int k, float threshold, ArrayView<int> flags)
    {
        float mx = 0f;
        for (int t = 0; t < m; t++)
        {
            float v = XMath.Abs(x[(long)t * k + c.X]);
            if (v > mx) mx = v;
        }
        flags[c] = mx > threshold ? 1 : 0;
    }

    // One thread: list[0] = the number of flagged columns, list[1..] = their indices, ascending. Launch: a grid of 1.
    private static void CompactKernel(Index1D index, ArrayView<int> flags, int k, ArrayView<int> list)
    {
        int count = 0;
        for (int c = 0; c < k; c++)
            if (flags[c] != 0) list[1 + count++] = c;
        list[0] = count;
    }

    // One thread per (row t, group g) (index t·groups + g): columns [g·G, min(K, (g+1)·G)) of the row with the outlier columns
    // zeroed, quantized (QuantizeRowInt8: a non-finite value gives scale NaN and q = 0) into x8 [M, Kq] (G is a multiple of 4,
    // so a group owns whole ints) and sx [M, groups]. Launch: auto-grouped over M·groups. Roofline: reads the group twice,
    // writes G/4 ints.
    private static void QuantizeRowsKernel(Index1D index, ArrayView<float> x, int k, int groupSize, ArrayView<int> list, ArrayView<int> x8, ArrayView<float> sx)
    {
        int groups = (k + groupSize - 1) / groupSize, t = index.X / groups, g = index.X % groups;
        int c0 = g * groupSize, c1 = XMath.Min(k, c0 + groupSize);
        long row = (long)t * k;
        int kq = (k + 3) / 4, no = list[0];
        int first = 0;
        while (first < no && list[1 + first] < c0) first++;
        float amax = 0f;
        bool finite = true;
        int o = first;
        for (int c = c0; c < c1; c++)
        {
            if (o < no && list[1 + o] == c) { o++; continue; }
            float v = x[row + c];
            if (!(XMath.Abs(v) <= float.MaxValue)) finite = false;
            amax = XMath.Max(amax, XMath.Abs(v));
        }
        float inv = !finite || amax == 0f ? 0f : 127f / amax;
        o = first;
        for (int p = c0 / 4; p < (c1 + 3) / 4; p++)
        {
            int q0 = 0, q1 = 0, q2 = 0, q3 = 0;
            for (int e = 0; e < 4; e++)
            {
                int c = 4 * p + e;
                if (c >= c1) break;
                if (o < no && list[1 + o] == c) { o++; continue; }
                int q = finite ? QuantizeOne(x[row + c], inv) : 0;
                if (e == 0) q0 = q; else if (e == 1) q1 = q; else if (e == 2) q2 = q; else q3 = q;
            }
            x8[(long)t * kq + p] = Pack(q0, q1, q2, q3);
        }
        sx[index] = finite ? amax / 127f : float.NaN;
    }

    // One thread per output (t, j): per activation group g, acc_g = Σ_{c∈g} x8[t]·w8[j] exactly in int32 (G/4 dp4a) and
    // f += acc_g · s_x[t, g]; then the CPU kernel's float formula f · s_w + Σ_o x[t, c_o] · (q[j, c_o] · s_w) (ascending c_o)
    // + bias. Launch: auto-grouped over M·N.
    private static void LinearKernel(Index1D index, ArrayView<float> x, ArrayView<int> x8, ArrayView<float> sx, ArrayView<int> w8,
        ArrayView<float> sw, ArrayView<int> list, ArrayView<float> bias, ArrayView<float> y, LinearLaunch p)
    {
        int t = index.X / p.N, j = index.X % p.N;
        long xb = (long)t * p.Kq, wb = (long)j * p.Kq;
        bool dp4a = p.UseDp4a != 0;
        float f = 0f;
        for (int g = 0; g < p.Groups; g++)
        {
            int acc = 0;
            int q1 = XMath.Min(p.Kq, (g + 1) * p.GroupQuads);
            for (int q = g * p.GroupQuads; q < q1; q++) acc = IlgpuAttentionKernels.Dot4(x8[xb + q], w8[wb + q], acc, dp4a);
            f += acc * sx[(long)t * p.Groups + g];
        }
        float s = sw[j];
        float v = f * s;
        int no = list[0];
        for (int o = 0; o < no; o++)
        {
            int c = list[1 + o];
            v += x[(long)t * p.K + c] * (Byte(w8[wb + (c >> 2)], c) * s);
        }
        if (p.HasBias != 0) v += bias[j];
        y[index] = v;
    }

    // One thread per output element (t, i): y = q[ids[t], i] · scale[ids[t]] (0 for an id outside the table). Launch:
    // auto-grouped over T·K. Roofline: one byte and one scale read, one float written per element.
    private static void EmbeddingKernel(Index1D index, ArrayView<int> ids, ArrayView<int> w8, ArrayView<float> scales, ArrayView<float> y,
        int k, int rows)
    {
        int id = ids[index.X / k], c = index.X % k;
        y[index] = id >= 0 && id < rows ? Byte(w8[(long)id * ((k + 3) / 4) + (c >> 2)], c) * scales[id] : 0f;
    }
}
