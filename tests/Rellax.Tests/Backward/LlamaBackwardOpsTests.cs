using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;
using static TorchSharp.torch;
using TTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Backward;

/// <summary>
/// The frozen Llama layer's dX-only backward ops (<see cref="BackwardOps"/> RmsNorm, Rope, SwiGlu, LinearInput with f32/f16/bf16 weights) on the CPU backend
/// (1 and 2 threads, odd sizes, in-place aliasing) against <see cref="BackwardReference"/> (double), and both against
/// TorchSharp float64 autograd of the forward ops written with torch (HF's RMSNorm, rotate_half RoPE, silu(g)·u).
/// Tolerance for fp32 kernels: 2e-6·√N·max|e| + 1e-6 absolute plus 1e-5 relative (RMSNorm reduces over N; RoPE and
/// SwiGLU are a few flops per element); the reference against autograd to 1e-9 + 1e-7 relative (the same math in double,
/// except that the references round to float).
/// </summary>
[TestFixture]
public sealed class LlamaBackwardOpsTests
{
    private static TTensor D64(float[] x, params long[] shape) => torch.tensor(x, shape).to(float64);

    private static float[] Grad(TTensor t) => t.grad!.to(float32).contiguous().data<float>().ToArray();

    private static void AssertKernel(float[] actual, float[] expected, int n, string what)
    {
        double max = expected.Length == 0 ? 0 : expected.Max(v => Math.Abs((double)v));
        RandomData.AssertClose(actual, expected, 2e-6 * Math.Sqrt(n) * max + 1e-6, 1e-5, what);
    }

    [TestCase(1, 1, 1e-6f, 1)]
    [TestCase(3, 37, 1e-5f, 2)]
    [TestCase(17, 2048, 1e-6f, 2)]
    [TestCase(5, 301, 0f, 1)]
    public void RmsNorm(int rows, int n, float eps, int threads)
    {
        var x = RandomData.Uniform(rows * n, n + rows, -2, 2);
        var w = RandomData.Uniform(n, n, 0.5f, 1.5f);
        var dy = RandomData.Uniform(rows * n, 3 * n + rows);
        var expected = new float[x.Length];
        BackwardReference.RmsNorm(x, w, eps, dy, expected, n);

        using (var scope = torch.NewDisposeScope())
        {
            var tx = D64(x, rows, n).requires_grad_();
            var y = tx * torch.rsqrt(tx.pow(2).mean([-1L], keepdim: true) + eps) * D64(w, n);
            (y * D64(dy, rows, n)).sum().backward();
            RandomData.AssertClose(expected, Grad(tx), 1e-9, 1e-7, "reference vs autograd");
        }

        using var backend = new CpuBackend(threads);
        var dx = backend.Zeros(rows, n);
        backend.Backward.RmsNorm(backend.Tensor(x, rows, n), backend.Tensor(w, n), eps, backend.Tensor(dy, rows, n), dx);
        AssertKernel(dx.ToArray<float>(), expected, n, "cpu dx");
        // In place: dx written over dy.
        var dyInPlace = backend.Tensor(dy, rows, n);
        backend.Backward.RmsNorm(backend.Tensor(x, rows, n), backend.Tensor(w, n), eps, dyInPlace, dyInPlace);
        AssertKernel(dyInPlace.ToArray<float>(), expected, n, "cpu dx written over dy");
    }

    [TestCase(1, 1, 8, 1)]
    [TestCase(7, 3, 24, 2)]
    [TestCase(33, 4, 64, 2)]
    [TestCase(5, 2, 6, 1)]
    public void Rope(int t, int heads, int d, int threads)
    {
        int half = d / 2, maxPos = 50;
        var (cos, sin) = RopeTables.Build(RopeTables.InverseFrequencies(d, 10000), maxPos);
        var positions = RandomData.Ints(t, maxPos, t + d);
        var dy = RandomData.Uniform(t * heads * d, d + t);
        var expected = new float[dy.Length];
        BackwardReference.Rope(dy, positions, cos, sin, expected, heads, d);

        using (var scope = torch.NewDisposeScope())
        {
            var x = D64(RandomData.Uniform(t * heads * d, 9), t, heads, d).requires_grad_();
            var idx = torch.tensor(positions.Select(p => (long)p).ToArray(), dtype: int64);
            var c = D64(cos, maxPos, half).index_select(0, idx);
            var s = D64(sin, maxPos, half).index_select(0, idx);
            c = torch.cat([c, c], -1).unsqueeze(1);
            s = torch.cat([s, s], -1).unsqueeze(1);
            var rotated = torch.cat([-x[.., .., half..], x[.., .., ..half]], -1);
            var y = x * c + rotated * s;
            (y * D64(dy, t, heads, d)).sum().backward();
            RandomData.AssertClose(expected, Grad(x), 1e-9, 1e-7, "reference vs autograd");
        }

        using var backend = new CpuBackend(threads);
        var g = backend.Tensor(dy, t, heads, d);
        backend.Backward.Rope(g, backend.Tensor(positions, t), backend.Tensor(cos, maxPos, half), backend.Tensor(sin, maxPos, half));
        AssertKernel(g.ToArray<float>(), expected, 2, "cpu inverse rotation");
    }

    [TestCase(1, 1)]
    [TestCase(2047, 2)]
    [TestCase(5000, 2)]
    [TestCase(37, 1)]
    public void SwiGlu(int n, int threads)
    {
        var gate = RandomData.Uniform(n, n, -8, 8);
        var up = RandomData.Uniform(n, n + 1, -2, 2);
        var dy = RandomData.Uniform(n, n + 2);
        var eGate = new float[n];
        var eUp = new float[n];
        BackwardReference.SwiGlu(gate, up, dy, eGate, eUp);

        using (var scope = torch.NewDisposeScope())
        {
            var tg = D64(gate, n).requires_grad_();
            var tu = D64(up, n).requires_grad_();
            (nn.functional.silu(tg) * tu * D64(dy, n)).sum().backward();
            RandomData.AssertClose(eGate, Grad(tg), 1e-9, 1e-7, "reference dGate vs autograd");
            RandomData.AssertClose(eUp, Grad(tu), 1e-9, 1e-7, "reference dUp vs autograd");
        }

        using var backend = new CpuBackend(threads);
        var dGate = backend.Zeros(n);
        var dUp = backend.Zeros(n);
        backend.Backward.SwiGlu(backend.Tensor(gate, n), backend.Tensor(up, n), backend.Tensor(dy, n), dGate, dUp);
        AssertKernel(dGate.ToArray<float>(), eGate, 4, "cpu dGate");
        AssertKernel(dUp.ToArray<float>(), eUp, 4, "cpu dUp");
        // In place: dGate over gate, dUp over up (the forward's activations are not needed afterwards).
        var g = backend.Tensor(gate, n);
        var u = backend.Tensor(up, n);
        backend.Backward.SwiGlu(g, u, backend.Tensor(dy, n), g, u);
        AssertKernel(g.ToArray<float>(), eGate, 4, "cpu dGate written over gate");
        AssertKernel(u.ToArray<float>(), eUp, 4, "cpu dUp written over up");
    }

    [TestCase(1, 1, new[] { 1 }, 1)]
    [TestCase(7, 37, new[] { 45, 3, 17 }, 2)]
    [TestCase(130, 264, new[] { 300 }, 2)]
    [TestCase(33, 96, new[] { 96, 24, 24 }, 1)]
    public void LinearInput(int rows, int din, int[] douts, int threads)
    {
        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            var terms = douts.Select((dout, m) => (
                Dy: RandomData.Uniform(rows * dout, 10 * m + rows),
                W: RandomData.Uniform(dout * din, 10 * m + din, -1, 1).Select(v => dtype switch
                {
                    DType.F16 => (float)(Half)v,
                    DType.BF16 => (float)(Rellax.Kernels.BFloat16)v,
                    _ => v,
                }).ToArray(),
                Dout: dout)).ToArray();
            var expected = new float[rows * din];
            BackwardReference.LinearInput(terms, expected, din);

            using (var scope = torch.NewDisposeScope())
            {
                var tx = torch.zeros(rows, din, float64).requires_grad_();
                var loss = torch.zeros(1, float64);
                foreach (var (dy, w, dout) in terms)
                    loss = loss + (nn.functional.linear(tx, D64(w, dout, din)) * D64(dy, rows, dout)).sum();
                loss.backward();
                RandomData.AssertClose(expected, Grad(tx), 1e-9, 1e-7, $"reference vs autograd ({dtype})");
            }

            using var backend = new CpuBackend(threads);
            var dx = backend.Zeros(rows, din);
            var frozen = terms.Select(t => new FrozenLinearTerm(backend.Tensor(t.Dy, rows, t.Dout), dtype switch
            {
                DType.F16 => backend.Tensor(t.W.Select(v => (Half)v).ToArray(), t.Dout, din),
                DType.BF16 => backend.Tensor(t.W.Select(v => (Rellax.Kernels.BFloat16)v).ToArray(), t.Dout, din),
                _ => backend.Tensor(t.W, t.Dout, din),
            })).ToArray();
            backend.Backward.LinearInput(frozen, dx);
            AssertKernel(dx.ToArray<float>(), expected, douts.Sum(), $"cpu LinearInput ({dtype})");
        }
    }

    /// <summary>
    /// Frozen int8 weights (an int8 base, issue 19): dx = Σ_m dY_m · (scale_m ⊙ Q_m), the straight-through gradient. The
    /// double reference against TorchSharp float64 autograd of <c>linear(x, Q · scale)</c>, and the CPU kernel (the weight
    /// dequantized while the GEMM packs it) against the reference, alone and next to a dense term in the same call.
    /// </summary>
    [TestCase(7, 37, new[] { 45, 3, 17 }, 2)]
    [TestCase(130, 264, new[] { 300 }, 2)]
    [TestCase(33, 96, new[] { 96, 24, 24 }, 1)]
    public void LinearInputInt8(int rows, int din, int[] douts, int threads)
    {
        using var backend = new CpuBackend(threads);
        var q8 = new List<Int8Weights>();
        try
        {
            var terms = douts.Select((dout, m) =>
            {
                var q = backend.Primitives.QuantizeInt8(backend.Tensor(RandomData.Uniform(dout * din, 10 * m + din, -1, 1), dout, din));
                q8.Add(q);
                return (Dy: RandomData.Uniform(rows * dout, 10 * m + rows), Q: q.ReadValues(), Scales: q.ReadScales(), Dout: dout);
            }).ToArray();
            var expected = new float[rows * din];
            BackwardReference.LinearInputInt8(terms, expected, din);
            using (var scope = torch.NewDisposeScope())
            {
                var tx = torch.zeros(rows, din, float64).requires_grad_();
                var loss = torch.zeros(1, float64);
                foreach (var (dy, q, scales, dout) in terms)
                {
                    var w = torch.tensor(q.Select(v => (double)v).ToArray(), [dout, din], float64) * D64(scales, dout, 1);
                    loss = loss + (nn.functional.linear(tx, w) * D64(dy, rows, dout)).sum();
                }
                loss.backward();
                RandomData.AssertClose(expected, Grad(tx), 1e-9, 1e-7, "int8 reference vs autograd");
            }

            var dx = backend.Zeros(rows, din);
            backend.Backward.LinearInput([.. terms.Select((t, m) => new FrozenLinearTerm(backend.Tensor(t.Dy, rows, t.Dout), q8[m]))], dx);
            AssertKernel(dx.ToArray<float>(), expected, douts.Sum(), "cpu LinearInput (int8)");

            // Next to a dense f32 term: the sum of both references.
            var wDense = RandomData.Uniform(5 * din, din + 7);
            var dyDense = RandomData.Uniform(rows * 5, rows + 7);
            var dense = new float[rows * din];
            BackwardReference.LinearInput([(dyDense, wDense, 5)], dense, din);
            var mixed = backend.Zeros(rows, din);
            backend.Backward.LinearInput([new FrozenLinearTerm(backend.Tensor(dyDense, rows, 5), backend.Tensor(wDense, 5, din)),
                .. terms.Select((t, m) => new FrozenLinearTerm(backend.Tensor(t.Dy, rows, t.Dout), q8[m]))], mixed);
            AssertKernel(mixed.ToArray<float>(), [.. expected.Zip(dense, (a, b) => a + b)], douts.Sum() + 5, "cpu LinearInput (dense + int8)");
        }
        finally
        {
            foreach (var q in q8) q.Dispose();
        }
    }

    [Test]
    public void BadArgumentsNameTheArgument()
    {
        using var backend = new CpuBackend(1);
        var x = backend.Zeros(2, 8);
        var ex = Assert.Throws<ArgumentException>(() => backend.Backward.RmsNorm(x, backend.Zeros(7), 1e-6f, backend.Zeros(2, 8), backend.Zeros(2, 8)));
        Assert.That(ex!.ParamName, Is.EqualTo("weight"));
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.RmsNorm(x, backend.Zeros(8), 1e-6f, backend.Zeros(2, 8), x));
        Assert.That(ex!.ParamName, Is.EqualTo("dx"));
        var buffer = backend.Zeros(20);
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.SwiGlu(buffer.Slice(0, 8), backend.Zeros(8), backend.Zeros(8), buffer.Slice(2, 8), backend.Zeros(8)));
        Assert.That(ex!.ParamName, Is.EqualTo("dGate"));
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.Rope(backend.Zeros(3, 1, 7), backend.Tensor(new int[3], 3), backend.Zeros(4, 3), backend.Zeros(4, 3)));
        Assert.That(ex!.ParamName, Is.EqualTo("dy"));
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.Backward.Rope(backend.Zeros(1, 1, 8), backend.Tensor(new[] { 9 }, 1), backend.Zeros(4, 4), backend.Zeros(4, 4)));
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.LinearInput([new FrozenLinearTerm(backend.Zeros(2, 5), backend.Zeros(4, 8))], backend.Zeros(2, 8)));
        Assert.That(ex!.ParamName, Is.EqualTo("terms[0].DY"));
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.LinearInput([new FrozenLinearTerm(backend.Zeros(2, 4), backend.Zeros(4, 7))], backend.Zeros(2, 8)));
        Assert.That(ex!.ParamName, Is.EqualTo("terms[0].W"));
        var dyBuffer = backend.Zeros(2, 8);
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.LinearInput([new FrozenLinearTerm(dyBuffer, backend.Zeros(8, 8))], dyBuffer));
        Assert.That(ex!.ParamName, Is.EqualTo("dx"));
        Assert.Throws<ArgumentException>(() => backend.Backward.LinearInput([], backend.Zeros(2, 8)));
        using var w8 = backend.Primitives.QuantizeInt8(backend.Zeros(4, 7));
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.LinearInput([new FrozenLinearTerm(backend.Zeros(2, 4), w8)], backend.Zeros(2, 8)));
        Assert.That(ex!.ParamName, Is.EqualTo("terms[0].W"));
        Assert.That(ex.Message, Does.Contain("int8[4, 7]"));
        ex = Assert.Throws<ArgumentException>(() => backend.Backward.LinearInput([new FrozenLinearTerm(backend.Zeros(2, 5), w8)], backend.Zeros(2, 7)));
        Assert.That(ex!.ParamName, Is.EqualTo("terms[0].DY"));
    }
}
