using System.Numerics.Tensors;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// The frozen Llama layer's dX-only backward on the CPU: RMSNorm row-parallel (two dot products and one fused pass per
/// row: 5·N FLOPs, 3 reads + 1 write of N floats), RoPE's inverse rotation (the forward's kernel with the sine negated),
/// SwiGLU chunk-parallel over L1-sized pieces (inputs copied to scratch first, so outputs may be exactly an input).
/// All are memory-bound elementwise passes: tiny next to the layer's GEMMs.
/// </summary>
internal sealed unsafe partial class CpuBackwardKernels
{
    /// <summary>Elements per SwiGLU chunk: 3 inputs + 2 temporaries of 2048 floats = 40 KiB, about L1.</summary>
    private const int Chunk = 2048;

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx)
    {
        int n = x.Dim(-1);
        nint xp = (nint)CpuBackend.Ptr<float>(x), wp = (nint)CpuBackend.Ptr<float>(weight), dyp = (nint)CpuBackend.Ptr<float>(dy), dxp = (nint)CpuBackend.Ptr<float>(dx);
        CpuSimd.ForChunks(_backend, x.Rows, 6L * n, (r0, count) =>
        {
            var w = new ReadOnlySpan<float>((float*)wp, n);
            float[] wdyArray = new float[n];
            var wdy = wdyArray.AsSpan();
            for (int r = r0; r < r0 + count; r++)
            {
                var xr = new ReadOnlySpan<float>((float*)xp + (long)r * n, n);
                var dyr = new ReadOnlySpan<float>((float*)dyp + (long)r * n, n);
                var dxr = new Span<float>((float*)dxp + (long)r * n, n);
                float inv = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(xr) / n + eps);
                TensorPrimitives.Multiply(w, dyr, wdy);
                float dot = TensorPrimitives.Dot(wdy, xr);
                // dx = inv · (w ⊙ dy) − x · (dot · inv³ / n); dy is fully read (into wdy) before dx, which may be dy, is written.
                TensorPrimitives.Multiply(wdy, inv, wdy);
                TensorPrimitives.MultiplyAdd(xr, -dot * inv * inv * inv / n, wdy, dxr);
            }
        });
    }

    /// <summary>
    /// dx = Σ_m dY_m · W_m as one blocked GEMM over the K-concatenation (<see cref="CpuGemm.ConcatX"/> of the dY parts
    /// against <see cref="CpuGemm.ConcatTransposedW"/> of the weights, widened while packing): the same path as the
    /// CFLoRA backward's dX, without the adapter's K steps. Int8 weights are dequantized per packed k step (q · scale_row).
    /// </summary>
    public void LinearInput(ReadOnlySpan<FrozenLinearTerm> terms, Tensor dx)
    {
        int count = terms.Length, rows = dx.Dim(0), din = dx.Dim(1);
        long k = 0;
        foreach (var t in terms) k += t.W8?.Rows ?? t.W.Dim(0);
        if (k > int.MaxValue) throw new NotSupportedException($"the layers' d_out sum to {k}: more than int.MaxValue");
        var parts = (CpuGemm.KPart*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)(2 * count * sizeof(CpuGemm.KPart)));
        try
        {
            for (int m = 0; m < count; m++)
            {
                int dout = terms[m].W8?.Rows ?? terms[m].W.Dim(0);
                parts[m] = new CpuGemm.KPart(new CpuCflora.TypedMatrix(CpuBackend.Ptr<float>(terms[m].DY), DType.F32, dout), dout);
                parts[count + m] = new CpuGemm.KPart(terms[m].W8 is { } w8 ? new CpuCflora.TypedMatrix(w8) : new CpuCflora.TypedMatrix(terms[m].W), dout);
            }
            CpuGemm.Run(new CpuGemm.ConcatX(parts, count), new CpuGemm.ConcatTransposedW(parts + count, count),
                CpuBackend.Ptr<float>(dx), rows, (int)k, din, CpuCflora.Threads(_backend, rows * k * din), _backend);
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(parts);
        }
    }

    public void Rope(Tensor dy, Tensor positions, Tensor cos, Tensor sin) =>
        CpuPrimitiveKernels.Rope(_backend, dy, positions, cos, sin, inverse: true);

    public void SwiGlu(Tensor gate, Tensor up, Tensor dy, Tensor dGate, Tensor dUp)
    {
        int length = checked((int)gate.ElementCount);
        nint gp = (nint)CpuBackend.Ptr<float>(gate), upp = (nint)CpuBackend.Ptr<float>(up), dyp = (nint)CpuBackend.Ptr<float>(dy);
        nint dgp = (nint)CpuBackend.Ptr<float>(dGate), dup = (nint)CpuBackend.Ptr<float>(dUp);
        int chunks = (length + Chunk - 1) / Chunk;
        CpuSimd.ForChunks(_backend, chunks, 30L * Chunk, (c0, count) =>
        {
            Span<float> g = stackalloc float[Chunk], u = stackalloc float[Chunk], d = stackalloc float[Chunk];
            Span<float> sig = stackalloc float[Chunk], tmp = stackalloc float[Chunk];
            for (int c = c0; c < c0 + count; c++)
            {
                int start = c * Chunk, len = Math.Min(Chunk, length - start);
                var gs = g[..len]; var us = u[..len]; var ds = d[..len]; var ss = sig[..len]; var ts = tmp[..len];
                new ReadOnlySpan<float>((float*)gp + start, len).CopyTo(gs);
                new ReadOnlySpan<float>((float*)upp + start, len).CopyTo(us);
                new ReadOnlySpan<float>((float*)dyp + start, len).CopyTo(ds);
                TensorPrimitives.Sigmoid(gs, ss);
                // dUp = dy · g · σ
                TensorPrimitives.Multiply(gs, ss, ts);
                TensorPrimitives.Multiply(ts, ds, new Span<float>((float*)dup + start, len));
                // dGate = dy · u · σ · (1 + g − g·σ) = dy · u · (σ + g·σ − g·σ²) = dy · u · (σ + ts·(1 − σ))
                TensorPrimitives.Subtract(1f, ss, gs);          // gs ← 1 − σ (g is no longer needed)
                TensorPrimitives.FusedMultiplyAdd(ts, gs, ss, ts); // ts ← g·σ·(1 − σ) + σ
                TensorPrimitives.Multiply(ts, us, ts);
                TensorPrimitives.Multiply(ts, ds, new Span<float>((float*)dgp + start, len));
            }
        });
    }
}
