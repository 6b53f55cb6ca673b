using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// CPU implementation of the primitives: the blocked GEMM of <see cref="CpuGemm"/>, row-parallel norms and softmax,
/// (token, head)-parallel RoPE, chunk-parallel elementwise ops. Elementwise arithmetic uses
/// <see cref="TensorPrimitives"/> (which picks Vector512 itself) or explicit Vector512/Vector256 loops.
/// Checked against <see cref="PrimitivesReference"/> and TorchSharp in the tests.
/// </summary>
internal sealed unsafe class CpuPrimitiveKernels(CpuBackend backend) : IPrimitiveKernels
{
    private readonly CpuBackend _backend = backend;

    /// <summary>Elements per chunk for elementwise ops that need a scratch row (fits in L1 alongside inputs).</summary>
    private const int ElementwiseChunk = 2048;

    public void MatMulTransposed(Tensor x, Tensor w, Tensor y) =>
        CpuGemm.MatMulTransposed(CpuBackend.Ptr<float>(x), CpuBackend.Ptr<float>(w), CpuBackend.Ptr<float>(y), x.Dim(0), x.Dim(1), w.Dim(0), _backend);

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y)
    {
        int n = x.Dim(-1);
        nint xp = (nint)CpuBackend.Ptr<float>(x), wp = (nint)CpuBackend.Ptr<float>(weight), yp = (nint)CpuBackend.Ptr<float>(y);
        CpuSimd.ForChunks(_backend, x.Rows, 4L * n, (r0, count) =>
        {
            var wRow = new ReadOnlySpan<float>((float*)wp, n);
            for (int r = r0; r < r0 + count; r++)
            {
                var xRow = new ReadOnlySpan<float>((float*)xp + (long)r * n, n);
                var yRow = new Span<float>((float*)yp + (long)r * n, n);
                float meanSquare = TensorPrimitives.SumOfSquares(xRow) / n;
                float inv = 1f / MathF.Sqrt(meanSquare + eps);
                TensorPrimitives.Multiply(xRow, inv, yRow);
                TensorPrimitives.Multiply(yRow, wRow, yRow);
            }
        });
    }

    public void LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y)
    {
        int n = x.Dim(-1);
        nint xp = (nint)CpuBackend.Ptr<float>(x), wp = (nint)CpuBackend.Ptr<float>(weight), bp = (nint)CpuBackend.Ptr<float>(bias), yp = (nint)CpuBackend.Ptr<float>(y);
        CpuSimd.ForChunks(_backend, x.Rows, 6L * n, (r0, count) =>
        {
            var wRow = new ReadOnlySpan<float>((float*)wp, n);
            var bRow = new ReadOnlySpan<float>((float*)bp, n);
            for (int r = r0; r < r0 + count; r++)
            {
                var xRow = new ReadOnlySpan<float>((float*)xp + (long)r * n, n);
                var yRow = new Span<float>((float*)yp + (long)r * n, n);
                float mean = TensorPrimitives.Sum(xRow) / n;
                // Two-pass variance on the centred row (written to y, which may be x itself).
                TensorPrimitives.Subtract(xRow, mean, yRow);
                float variance = TensorPrimitives.SumOfSquares(yRow) / n;
                float inv = 1f / MathF.Sqrt(variance + eps);
                TensorPrimitives.Multiply(yRow, inv, yRow);
                TensorPrimitives.FusedMultiplyAdd(yRow, wRow, bRow, yRow);
            }
        });
    }

    public void Rope(Tensor x, Tensor positions, Tensor cos, Tensor sin) => Rope(_backend, x, positions, cos, sin, inverse: false);

    /// <summary>RoPE over x [T, H, D] in place, or its inverse rotation (the backward), parallel over (token, head).</summary>
    internal static void Rope(CpuBackend backend, Tensor x, Tensor positions, Tensor cos, Tensor sin, bool inverse)
    {
        var pos = CpuBackend.Span<int>(positions);
        foreach (int p in pos)
            if ((uint)p >= (uint)cos.Dim(0))
                throw new ArgumentOutOfRangeException(nameof(positions), p, $"position outside the RoPE table of {cos.Dim(0)} positions");
        int heads = x.Dim(1), d = x.Dim(2), half = d / 2;
        nint xp = (nint)CpuBackend.Ptr<float>(x), pp = (nint)CpuBackend.Ptr<int>(positions);
        nint cp = (nint)CpuBackend.Ptr<float>(cos), sp = (nint)CpuBackend.Ptr<float>(sin);
        CpuSimd.ForChunks(backend, x.Dim(0) * heads, 3L * d, (i0, count) =>
        {
            for (int item = i0; item < i0 + count; item++)
            {
                float* x1 = (float*)xp + (long)item * d;
                long row = (long)((int*)pp)[item / heads] * half;
                RotateHalf(x1, x1 + half, (float*)cp + row, (float*)sp + row, half, inverse);
            }
        });
    }

    /// <summary>
    /// (x1, x2) ← (x1·c − x2·s, x2·c + x1·s) elementwise over half floats; with <paramref name="inverse"/> the rotation
    /// by the opposite angle (s negated), which is RoPE's transpose and so its backward.
    /// </summary>
    internal static void RotateHalf(float* x1, float* x2, float* c, float* s, int half, bool inverse = false)
    {
        int i = 0;
        float sign = inverse ? -1f : 1f;
        if (CpuGemm.UseVector512)
            for (; i + 16 <= half; i += 16)
            {
                Vector512<float> a = Vector512.Load(x1 + i), b = Vector512.Load(x2 + i), cv = Vector512.Load(c + i), sv = Vector512.Load(s + i) * sign;
                Vector512.FusedMultiplyAdd(a, cv, -(b * sv)).Store(x1 + i);
                Vector512.FusedMultiplyAdd(b, cv, a * sv).Store(x2 + i);
            }
        for (; i + 8 <= half; i += 8)
        {
            Vector256<float> a = Vector256.Load(x1 + i), b = Vector256.Load(x2 + i), cv = Vector256.Load(c + i), sv = Vector256.Load(s + i) * sign;
            Vector256.FusedMultiplyAdd(a, cv, -(b * sv)).Store(x1 + i);
            Vector256.FusedMultiplyAdd(b, cv, a * sv).Store(x2 + i);
        }
        for (; i < half; i++)
        {
            float a = x1[i], b = x2[i], si = s[i] * sign;
            x1[i] = a * c[i] - b * si;
            x2[i] = b * c[i] + a * si;
        }
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor y)
    {
        nint gp = (nint)CpuBackend.Ptr<float>(gate), up_ = (nint)CpuBackend.Ptr<float>(up), yp = (nint)CpuBackend.Ptr<float>(y);
        ForElementChunks(checked((int)y.ElementCount), 16, (start, count) =>
        {
            Span<float> sig = stackalloc float[ElementwiseChunk];
            for (int i = start; i < start + count; i += ElementwiseChunk)
            {
                int len = Math.Min(ElementwiseChunk, start + count - i);
                var g = new ReadOnlySpan<float>((float*)gp + i, len);
                var u = new ReadOnlySpan<float>((float*)up_ + i, len);
                var s = sig[..len];
                TensorPrimitives.Sigmoid(g, s);
                TensorPrimitives.Multiply(s, g, s);
                // Reads of this chunk of gate and up are complete before y (which may alias either) is written.
                TensorPrimitives.Multiply(s, u, new Span<float>((float*)yp + i, len));
            }
        });
    }

    public void Gelu(Tensor x, Tensor y)
    {
        nint xp = (nint)CpuBackend.Ptr<float>(x), yp = (nint)CpuBackend.Ptr<float>(y);
        ForElementChunks(checked((int)y.ElementCount), 24, (start, count) => CpuSimd.Gelu((float*)xp + start, (float*)yp + start, count));
    }

    public void Softmax(Tensor x, Tensor y)
    {
        int n = x.Dim(-1);
        nint xp = (nint)CpuBackend.Ptr<float>(x), yp = (nint)CpuBackend.Ptr<float>(y);
        CpuSimd.ForChunks(_backend, x.Rows, 8L * n, (r0, count) =>
        {
            for (int r = r0; r < r0 + count; r++)
                SoftmaxRow(new ReadOnlySpan<float>((float*)xp + (long)r * n, n), new Span<float>((float*)yp + (long)r * n, n));
        });
    }

    /// <summary>y = exp(x - max x) / Σ exp(x - max x); y may be x.</summary>
    private static void SoftmaxRow(ReadOnlySpan<float> x, Span<float> y)
    {
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, y);
        TensorPrimitives.Exp(y, y);
        float sum = TensorPrimitives.Sum(y);
        TensorPrimitives.Multiply(y, 1f / sum, y);
    }

    /// <summary>y = x wᵀ (+ bias) with w in f32, f16 or bf16: <see cref="CpuCflora.Linear"/> (the fused CFLoRA GEMM with no adapter).</summary>
    public void Linear(Tensor x, Tensor w, Tensor? bias, Tensor y) => CpuCflora.Linear(_backend, x, w, bias, y);

    /// <summary>dst[rows[i]] = src[i]; throws on a row outside dst or a row given twice (before anything is written).</summary>
    public void ScatterRows(Tensor src, Tensor rows, Tensor dst)
    {
        var r = CpuBackend.Span<int>(rows);
        int h = src.Dim(1), total = dst.Dim(0);
        var seen = new HashSet<int>();
        for (int i = 0; i < r.Length; i++)
        {
            if ((uint)r[i] >= (uint)total)
                throw new ArgumentOutOfRangeException(nameof(rows), r[i], $"rows[{i}] = {r[i]} is outside dst of {total} rows ({dst})");
            if (!seen.Add(r[i]))
                throw new ArgumentException($"rows[{i}] = {r[i]} appears twice; scattered rows must be distinct", nameof(rows));
        }
        nint sp = (nint)CpuBackend.Ptr<float>(src), dp = (nint)CpuBackend.Ptr<float>(dst), rp = (nint)CpuBackend.Ptr<int>(rows);
        CpuSimd.ForChunks(_backend, r.Length, h, (i0, count) =>
        {
            for (int i = i0; i < i0 + count; i++)
                new ReadOnlySpan<float>((float*)sp + (long)i * h, h).CopyTo(new Span<float>((float*)dp + (long)((int*)rp)[i] * h, h));
        });
    }

    /// <summary>y[t] = table[ids[t]], f16/bf16 rows widened exactly to f32; throws on an id outside the table.</summary>
    public void Embedding(Tensor ids, Tensor table, Tensor y)
    {
        var idSpan = CpuBackend.Span<int>(ids);
        foreach (int id in idSpan)
            if ((uint)id >= (uint)table.Dim(0))
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the embedding table of {table.Dim(0)} rows");
        int h = table.Dim(1);
        var rowsOf = new CpuCflora.TypedMatrix(table);
        nint ip = (nint)CpuBackend.Ptr<int>(ids), yp = (nint)CpuBackend.Ptr<float>(y);
        CpuSimd.ForChunks(_backend, ids.Dim(0), h, (t0, count) =>
        {
            for (int t = t0; t < t0 + count; t++)
                rowsOf.Widen(((int*)ip)[t], 0, h, (float*)yp + (long)t * h);
        });
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        nint ap = (nint)CpuBackend.Ptr<float>(a), bp = (nint)CpuBackend.Ptr<float>(b), yp = (nint)CpuBackend.Ptr<float>(y);
        // Same-index reads before writes, so y may be a or b.
        ForElementChunks(checked((int)y.ElementCount), 1, (start, count) =>
            TensorPrimitives.Add(new ReadOnlySpan<float>((float*)ap + start, count), new ReadOnlySpan<float>((float*)bp + start, count),
                new Span<float>((float*)yp + start, count)));
    }

    /// <summary>Splits [0, length) into one cache-line aligned chunk per thread (or one chunk for small work).</summary>
    private void ForElementChunks(int length, long costPerElement, Action<int, int> body)
    {
        const int Align = 16;
        int blocks = (length + Align - 1) / Align;
        CpuSimd.ForChunks(_backend, blocks, costPerElement * Align, (b0, count) =>
        {
            int start = b0 * Align, end = Math.Min(length, (b0 + count) * Align);
            body(start, end - start);
        });
    }
}
