using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Rellax.Kernels.Cpu;

// The CRM / adapter-head backward kernels. Products go through CpuGemm's backward layouts (CpuGemm.Backward.cs); the rest is
// row- or sample-parallel (CpuSimd.ForChunks) over TensorPrimitives / Vector512 bodies. No two chunks write the same element,
// except the column reductions (db, dγ, dβ), which sum one partial per chunk.
internal sealed unsafe partial class CpuBackwardKernels
{
    public void LinearBackward(Tensor x, Tensor w, Tensor dy, Tensor? dx, Tensor? dw, Tensor? db)
    {
        int m = x.Dim(0), k = x.Dim(1), n = w.Dim(0);
        float* pdy = CpuBackend.Ptr<float>(dy);
        if (dx is { } gx) CpuGemm.MatMulBackwardInput(pdy, CpuBackend.Ptr<float>(w), CpuBackend.Ptr<float>(gx), m, n, k, _backend);
        if (dw is { } gw) CpuGemm.MatMulBackwardWeight(pdy, CpuBackend.Ptr<float>(x), CpuBackend.Ptr<float>(gw), m, n, k, _backend);
        if (db is { } gb) ColumnSums(pdy, m, n, CpuBackend.Span<float>(gb));
    }

    /// <summary>sums[j] = Σ_i a[i, j] over a [rows, n]: one partial per chunk of rows, then added.</summary>
    private void ColumnSums(float* a, int rows, int n, Span<float> sums)
    {
        int parts = Math.Max(1, Math.Min(_backend.Threads, rows / 64));
        var partial = new float[parts * n];
        nint pa = (nint)a;
        CpuSimd.ForChunks(_backend, parts, (long)rows * n / parts, (p0, count) =>
        {
            for (int p = p0; p < p0 + count; p++)
            {
                int r0 = (int)((long)rows * p / parts), r1 = (int)((long)rows * (p + 1) / parts);
                var acc = partial.AsSpan(p * n, n);
                for (int r = r0; r < r1; r++) TensorPrimitives.Add(acc, new ReadOnlySpan<float>((float*)pa + (long)r * n, n), acc);
            }
        });
        sums.Clear();
        for (int p = 0; p < parts; p++) TensorPrimitives.Add(sums, partial.AsSpan(p * n, n), sums);
    }

    public void ReluBackward(Tensor y, Tensor dy, Tensor dx)
    {
        float* py = CpuBackend.Ptr<float>(y), pg = CpuBackend.Ptr<float>(dy), po = CpuBackend.Ptr<float>(dx);
        nint ay = (nint)py, ag = (nint)pg, ao = (nint)po;
        long total = y.ElementCount;
        const int block = 4096;
        int blocks = checked((int)((total + block - 1) / block));
        CpuSimd.ForChunks(_backend, blocks, block, (b0, count) =>
        {
            long i0 = (long)b0 * block, i1 = Math.Min(total, (long)(b0 + count) * block);
            ReluMask((float*)ay + i0, (float*)ag + i0, (float*)ao + i0, (int)(i1 - i0));
        });
    }

    /// <summary>o[i] = y[i] &gt; 0 ? g[i] : 0 (o may be g).</summary>
    private static void ReluMask(float* y, float* g, float* o, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
                Vector512.ConditionalSelect(Vector512.GreaterThan(Vector512.Load(y + i), Vector512<float>.Zero), Vector512.Load(g + i), Vector512<float>.Zero).Store(o + i);
        for (; i + 8 <= n; i += 8)
            Vector256.ConditionalSelect(Vector256.GreaterThan(Vector256.Load(y + i), Vector256<float>.Zero), Vector256.Load(g + i), Vector256<float>.Zero).Store(o + i);
        for (; i < n; i++) o[i] = y[i] > 0 ? g[i] : 0f;
    }

    public void GeluBackward(Tensor x, Tensor dy, Tensor dx)
    {
        var xs = CpuBackend.Span<float>(x);
        nint px = (nint)CpuBackend.Ptr<float>(x), pg = (nint)CpuBackend.Ptr<float>(dy), po = (nint)CpuBackend.Ptr<float>(dx);
        int total = xs.Length;
        const float invSqrt2Pi = 0.398942280401432678f;
        CpuSimd.ForChunks(_backend, total, 32, (i0, count) =>
        {
            float* a = (float*)px, g = (float*)pg, o = (float*)po;
            for (int i = i0; i < i0 + count; i++)
            {
                float v = a[i];
                float pdf = invSqrt2Pi * MathF.Exp(-0.5f * v * v);
                // Φ(v) from the forward's exact-GELU map (v Φ(v)); near 0 its first-order expansion.
                float cdf = MathF.Abs(v) < 1e-3f ? 0.5f + v * invSqrt2Pi : CpuSimd.GeluScalar(v) / v;
                o[i] = g[i] * (cdf + v * pdf);
            }
        });
    }

    public void LayerNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx, Tensor dweight, Tensor dbias)
    {
        int n = x.Dim(-1), rows = x.Rows;
        var dwOut = CpuBackend.Span<float>(dweight);
        var dbOut = CpuBackend.Span<float>(dbias);
        dwOut.Clear();
        dbOut.Clear();
        if (rows == 0) return;
        nint px = (nint)CpuBackend.Ptr<float>(x), pw = (nint)CpuBackend.Ptr<float>(weight);
        nint pg = (nint)CpuBackend.Ptr<float>(dy), po = (nint)CpuBackend.Ptr<float>(dx);
        int parts = Math.Max(1, Math.Min(_backend.Threads, rows));
        var partial = new float[parts * 2 * n];
        CpuSimd.ForChunks(_backend, parts, (long)rows * n * 8 / parts, (p0, count) =>
        {
            var xhat = new float[n];
            var g = new float[n];
            var w = new ReadOnlySpan<float>((float*)pw, n);
            for (int p = p0; p < p0 + count; p++)
            {
                var accW = partial.AsSpan(p * 2 * n, n);
                var accB = partial.AsSpan(p * 2 * n + n, n);
                int r0 = (int)((long)rows * p / parts), r1 = (int)((long)rows * (p + 1) / parts);
                for (int r = r0; r < r1; r++)
                {
                    var xr = new ReadOnlySpan<float>((float*)px + (long)r * n, n);
                    var gr = new ReadOnlySpan<float>((float*)pg + (long)r * n, n);
                    var or = new Span<float>((float*)po + (long)r * n, n);
                    float mean = TensorPrimitives.Sum(xr) / n;
                    TensorPrimitives.Subtract(xr, mean, xhat);
                    float inv = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(xhat) / n + eps);
                    TensorPrimitives.Multiply(xhat, inv, xhat);
                    TensorPrimitives.MultiplyAdd(gr, xhat, accW, accW);
                    TensorPrimitives.Add(accB, gr, accB);
                    TensorPrimitives.Multiply(gr, w, g);
                    float mg = TensorPrimitives.Sum(g) / n, mgx = TensorPrimitives.Dot(g, xhat) / n;
                    // dx = (g - mg - x̂ mgx) inv
                    TensorPrimitives.MultiplyAdd(xhat, -mgx, g, or);
                    TensorPrimitives.Subtract(or, mg, or);
                    TensorPrimitives.Multiply(or, inv, or);
                }
            }
        });
        for (int p = 0; p < parts; p++)
        {
            TensorPrimitives.Add(dwOut, partial.AsSpan(p * 2 * n, n), dwOut);
            TensorPrimitives.Add(dbOut, partial.AsSpan(p * 2 * n + n, n), dbOut);
        }
    }

    public void EmbeddingBackward(Tensor rows, Tensor dy, Tensor dtable)
    {
        var r = CpuBackend.Span<int>(rows);
        int v = dtable.Dim(0), e = dtable.Dim(1);
        for (int i = 0; i < r.Length; i++)
            if ((uint)r[i] >= (uint)v)
                throw new ArgumentException($"rows[{i}] = {r[i]} is outside the table [0, {v}) of dtable {dtable}", nameof(rows));
        float* g = CpuBackend.Ptr<float>(dy), t = CpuBackend.Ptr<float>(dtable);
        // Serial: repeated rows would race, and n·E adds are far below a thread hand-off for DIN-sized batches.
        for (int i = 0; i < r.Length; i++)
        {
            var row = new Span<float>(t + (long)r[i] * e, e);
            TensorPrimitives.Add(row, new ReadOnlySpan<float>(g + (long)i * e, e), row);
        }
    }

    /// <summary>Checks ragged offsets: starts[0] = 0, non-decreasing, starts[B] = P.</summary>
    private static ReadOnlySpan<int> Starts(in Tensor starts, int positions)
    {
        var s = CpuBackend.Span<int>(starts);
        if (s[0] != 0) throw new ArgumentException($"starts[0] is {s[0]}, not 0", nameof(starts));
        for (int b = 1; b < s.Length; b++)
            if (s[b] < s[b - 1]) throw new ArgumentException($"starts decreases at {b}: {s[b - 1]} then {s[b]}", nameof(starts));
        if (s[^1] != positions) throw new ArgumentException($"starts ends at {s[^1]}, but there are {positions} positions", nameof(starts));
        return s;
    }

    public void TargetInteractionBackward(Tensor target, Tensor hist, Tensor starts, Tensor dz, Tensor dtarget, Tensor dhist)
    {
        int e = target.Dim(1), batch = target.Dim(0);
        Starts(starts, hist.Dim(0));
        nint ps = (nint)CpuBackend.Ptr<int>(starts), pt = (nint)CpuBackend.Ptr<float>(target), ph = (nint)CpuBackend.Ptr<float>(hist);
        nint pz = (nint)CpuBackend.Ptr<float>(dz), pdt = (nint)CpuBackend.Ptr<float>(dtarget), pdh = (nint)CpuBackend.Ptr<float>(dhist);
        long perSample = Math.Max(1, hist.Dim(0) / Math.Max(1, batch)) * 4L * e;
        CpuSimd.ForChunks(_backend, batch, perSample, (b0, count) =>
        {
            int* s = (int*)ps;
            for (int b = b0; b < b0 + count; b++)
            {
                var t = new ReadOnlySpan<float>((float*)pt + (long)b * e, e);
                var dt = new Span<float>((float*)pdt + (long)b * e, e);
                for (int j = s[b]; j < s[b + 1]; j++)
                {
                    var zh = new ReadOnlySpan<float>((float*)pz + (long)j * 2 * e, e);
                    var zp = new ReadOnlySpan<float>((float*)pz + (long)j * 2 * e + e, e);
                    var h = new ReadOnlySpan<float>((float*)ph + (long)j * e, e);
                    var dh = new Span<float>((float*)pdh + (long)j * e, e);
                    TensorPrimitives.MultiplyAdd(h, zp, dt, dt);
                    TensorPrimitives.Add(dh, zh, dh);
                    TensorPrimitives.MultiplyAdd(t, zp, dh, dh);
                }
            }
        });
    }

    public void WeightedSumBackward(Tensor scores, Tensor hist, Tensor starts, Tensor du, Tensor dscores, Tensor dhist)
    {
        int e = hist.Dim(1), batch = du.Dim(0);
        Starts(starts, hist.Dim(0));
        nint ps = (nint)CpuBackend.Ptr<int>(starts), pw = (nint)CpuBackend.Ptr<float>(scores), ph = (nint)CpuBackend.Ptr<float>(hist);
        nint pu = (nint)CpuBackend.Ptr<float>(du), pds = (nint)CpuBackend.Ptr<float>(dscores), pdh = (nint)CpuBackend.Ptr<float>(dhist);
        long perSample = Math.Max(1, hist.Dim(0) / Math.Max(1, batch)) * 2L * e;
        CpuSimd.ForChunks(_backend, batch, perSample, (b0, count) =>
        {
            int* s = (int*)ps;
            float* sc = (float*)pw, ds = (float*)pds;
            for (int b = b0; b < b0 + count; b++)
            {
                var u = new ReadOnlySpan<float>((float*)pu + (long)b * e, e);
                for (int j = s[b]; j < s[b + 1]; j++)
                {
                    var dh = new Span<float>((float*)pdh + (long)j * e, e);
                    ds[j] = TensorPrimitives.Dot(u, new ReadOnlySpan<float>((float*)ph + (long)j * e, e));
                    TensorPrimitives.MultiplyAdd(u, sc[j], dh, dh);
                }
            }
        });
    }

    public double SigmoidBce(Tensor logits, Tensor labels, float scale, Tensor dlogits)
    {
        var z = CpuBackend.Span<float>(logits);
        var y = CpuBackend.Span<float>(labels);
        var d = CpuBackend.Span<float>(dlogits);
        double sum = 0;
        for (int i = 0; i < z.Length; i++)
        {
            float v = z[i], t = y[i];
            float en = MathF.Exp(-MathF.Abs(v));                 // in (0, 1]: never overflows
            sum += Math.Max(v, 0f) - (double)v * t + Math.Log(1 + (double)en);
            float p = v >= 0 ? 1f / (1f + en) : en / (1f + en);  // σ(v) without overflow
            d[i] = scale * (p - t);
        }
        return sum;
    }
}
