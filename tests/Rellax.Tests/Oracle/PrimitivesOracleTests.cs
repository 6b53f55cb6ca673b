using NUnit.Framework;
using Rellax.Kernels;

namespace Rellax.Tests.Oracle;

/// <summary>
/// Every primitive on every backend of <see cref="TestBackends"/>, checked on seeded random data and odd shapes against
/// both <see cref="PrimitivesReference"/> (scalar, double accumulation) and TorchSharp (fp32 torch ops).
/// <para>
/// Tolerances (|actual - expected| ≤ atol + rtol·|expected|):
/// GEMM: atol = 1e-5·√K with inputs in [-1, 1] (|y| ~ √(K/9); fp32 rounding grows like ε·√K·|y| for random signs,
/// so this is ~100x the expected error yet far below any indexing mistake, which is O(1)).
/// Norms, RoPE, softmax, SwiGLU, add, embedding: rtol 2e-6 plus a small atol (a few fp32 ulps of the result scale).
/// GELU: rtol 2e-6, atol 1e-7 against the reference (the CPU erfc fit has relative error &lt; 1.2e-7, see CpuSimd); atol 2e-6 against torch,
/// whose own erf loses absolute accuracy in the negative tail. Attention: atol 2e-6 + 1e-5 rtol (values are
/// convex combinations of v in [-1, 1], accumulated over up to S = 4097 keys in fp32).
/// </para>
/// </summary>
[TestFixtureSource(typeof(TestBackends), nameof(TestBackends.All))]
public sealed class PrimitivesOracleTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;
    private Primitives P => _backend.Primitives;

    [OneTimeSetUp] public void CreateBackend() => _backend = factory.Create();
    [OneTimeTearDown] public void DisposeBackend() => _backend.Dispose();

    private static void Both(float[] actual, float[] reference, float[] torchResult, double atol, double rtol, double? torchAtol = null)
    {
        RandomData.AssertClose(actual, reference, atol, rtol, "vs PrimitivesReference");
        RandomData.AssertClose(actual, torchResult, torchAtol ?? atol, rtol, "vs TorchSharp");
    }

    [TestCase(1, 1, 1)]
    [TestCase(1, 3, 17)]
    [TestCase(3, 17, 1)]
    [TestCase(17, 4097, 3)]
    [TestCase(1, 4097, 17)]
    [TestCase(4, 4097, 33)]
    [TestCase(5, 17, 4097)]
    [TestCase(8, 256, 32)]
    [TestCase(9, 257, 33)]
    [TestCase(67, 513, 129)]
    [TestCase(200, 64, 40)]
    [TestCase(130, 600, 70)]
    [TestCase(16, 300, 2100)]
    [TestCase(1, 4096, 1000)]  // GEMV, multi-threaded on the 2-thread backend
    [TestCase(3, 1000, 4097)]  // small-M GEMV, multi-threaded, row remainders
    public void MatMul(int m, int k, int n)
    {
        float[] x = RandomData.Uniform(m * k, 1), w = RandomData.Uniform(n * k, 2);
        var y = _backend.Zeros(m, n);
        P.MatMul(_backend.Tensor(x, m, k), _backend.Tensor(w, n, k), y);
        var expected = new float[m * n];
        PrimitivesReference.MatMul(x, w, expected, m, k, n);
        Both(y.ToArray<float>(), expected, TorchOps.MatMul(x, w, m, k, n), 1e-5 * Math.Sqrt(k), 0);
    }

    [TestCase(1, 1)]
    [TestCase(3, 17)]
    [TestCase(17, 4097)]
    [TestCase(4097, 3)]
    public void RmsNorm(int rows, int n)
    {
        float[] x = RandomData.Uniform(rows * n, 3, -3, 3), w = RandomData.Uniform(n, 4, 0.5f, 1.5f);
        var y = _backend.Zeros(rows, n);
        P.RmsNorm(_backend.Tensor(x, rows, n), _backend.Tensor(w, n), 1e-5f, y);
        var expected = new float[x.Length];
        PrimitivesReference.RmsNorm(x, w, 1e-5f, expected, n);
        Both(y.ToArray<float>(), expected, TorchOps.RmsNorm(x, w, 1e-5f, n), 1e-6, 2e-6);
    }

    [Test]
    public void RmsNormInPlaceOnRank3()
    {
        float[] x = RandomData.Uniform(2 * 3 * 17, 5), w = RandomData.Uniform(17, 6);
        var xt = _backend.Tensor(x, 2, 3, 17);
        P.RmsNorm(xt, _backend.Tensor(w, 17), 1e-6f, xt);
        var expected = new float[x.Length];
        PrimitivesReference.RmsNorm(x, w, 1e-6f, expected, 17);
        Both(xt.ToArray<float>(), expected, TorchOps.RmsNorm(x, w, 1e-6f, 17), 1e-6, 2e-6);
    }

    [TestCase(1, 1)]
    [TestCase(3, 17)]
    [TestCase(17, 4097)]
    [TestCase(4097, 3)]
    public void LayerNorm(int rows, int n)
    {
        float[] x = RandomData.Uniform(rows * n, 7, -2, 4), w = RandomData.Uniform(n, 8), b = RandomData.Uniform(n, 9);
        var y = _backend.Zeros(rows, n);
        P.LayerNorm(_backend.Tensor(x, rows, n), _backend.Tensor(w, n), _backend.Tensor(b, n), 1e-5f, y);
        var expected = new float[x.Length];
        PrimitivesReference.LayerNorm(x, w, b, 1e-5f, expected, n);
        // n = 1: the row is its own mean, y = bias exactly; torch agrees. Variance cancellation bounds atol by ~1e-5.
        Both(y.ToArray<float>(), expected, TorchOps.LayerNorm(x, w, b, 1e-5f, n), 1e-5, 2e-6);
    }

    [TestCase(1, 1, 2, 1)]
    [TestCase(3, 3, 34, 17)]
    [TestCase(17, 2, 128, 4097)]
    [TestCase(5, 4, 8194, 64)]
    public void Rope(int t, int h, int d, int tablePositions)
    {
        float[] x = RandomData.Uniform(t * h * d, 10);
        int[] pos = RandomData.Ints(t, tablePositions, 11);
        var (cos, sin) = RopeTables.Build(RopeTables.InverseFrequencies(d, 10000), tablePositions);
        var xt = _backend.Tensor(x, t, h, d);
        P.Rope(xt, _backend.Tensor(pos, t), _backend.Tensor(cos, tablePositions, d / 2), _backend.Tensor(sin, tablePositions, d / 2));
        var expected = (float[])x.Clone();
        PrimitivesReference.Rope(expected, pos, cos, sin, h, d);
        Both(xt.ToArray<float>(), expected, TorchOps.Rope(x, pos, cos, sin, t, h, d), 1e-6, 2e-6);
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(17)]
    [TestCase(4097)]
    [TestCase(3 * 4097)]
    [TestCase(70001)]
    public void SwiGlu(int n)
    {
        float[] g = RandomData.Uniform(n, 12, -8, 8), u = RandomData.Uniform(n, 13, -2, 2);
        var y = _backend.Zeros(n);
        P.SwiGlu(_backend.Tensor(g, n), _backend.Tensor(u, n), y);
        var expected = new float[n];
        PrimitivesReference.SwiGlu(g, u, expected);
        Both(y.ToArray<float>(), expected, TorchOps.SwiGlu(g, u), 1e-6, 4e-6);
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(17)]
    [TestCase(4097)]
    [TestCase(70001)]
    public void Gelu(int n)
    {
        float[] x = RandomData.Uniform(n, 14, -10, 10);
        var xt = _backend.Tensor(x, n);
        P.Gelu(xt, xt); // in place
        var expected = new float[n];
        PrimitivesReference.Gelu(x, expected);
        // torch evaluates 0.5·x·(1 + erf(x/√2)) with a vectorised erf whose absolute error (~1e-7) is multiplied
        // by |x|/2 in the negative tail, so against torch the absolute tolerance is 2e-6; the double reference stays tight.
        Both(xt.ToArray<float>(), expected, TorchOps.Gelu(x), 1e-7, 2e-6, torchAtol: 2e-6);
    }

    [TestCase(1, 1)]
    [TestCase(3, 17)]
    [TestCase(17, 4097)]
    [TestCase(4097, 3)]
    public void Softmax(int rows, int n)
    {
        float[] x = RandomData.Uniform(rows * n, 15, -20, 20);
        var y = _backend.Zeros(rows, n);
        P.Softmax(_backend.Tensor(x, rows, n), y);
        var expected = new float[x.Length];
        PrimitivesReference.Softmax(x, expected, n);
        Both(y.ToArray<float>(), expected, TorchOps.Softmax(x, n), 1e-9, 1e-5);
    }

    [TestCase(1, 1, 1, 1, 1, true)]
    [TestCase(3, 17, 4, 2, 17, true)]
    [TestCase(3, 17, 4, 2, 17, false)]
    [TestCase(17, 17, 6, 2, 64, true)]
    [TestCase(1, 4097, 4, 1, 64, true)]
    [TestCase(5, 33, 3, 3, 128, true)]
    public void Attention(int t, int s, int hq, int hkv, int d, bool causal)
    {
        float[] q = RandomData.Uniform(t * hq * d, 16), k = RandomData.Uniform(s * hkv * d, 17), v = RandomData.Uniform(s * hkv * d, 18);
        float scale = 1f / MathF.Sqrt(d);
        // Formerly Primitives.Attention: fp32 FlashAttention.Prefill, q [1, T, Hq, D] against k, v [1, S, Hkv, D].
        var (o, expected) = Rellax.Tests.Attention.AttentionCheck.Fp32Sequence(_backend, q, k, v, t, s, hq, hkv, d, scale, causal);
        Both(o, expected, TorchOps.Attention(q, k, v, t, s, hq, hkv, d, scale, causal), 2e-6, 1e-5);
    }

    [TestCase(1, 1, 1)]
    [TestCase(17, 3, 4097)]
    [TestCase(4097, 17, 3)]
    public void Embedding(int vocab, int h, int t)
    {
        float[] table = RandomData.Uniform(vocab * h, 19);
        int[] ids = RandomData.Ints(t, vocab, 20);
        var y = _backend.Zeros(t, h);
        P.Embedding(_backend.Tensor(ids, t), _backend.Tensor(table, vocab, h), y);
        var expected = new float[t * h];
        PrimitivesReference.Embedding(ids, table, expected, h);
        Both(y.ToArray<float>(), expected, TorchOps.Embedding(ids, table, h), 0, 0);
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(17)]
    [TestCase(4097)]
    [TestCase(200003)]
    public void AddInPlace(int n)
    {
        float[] a = RandomData.Uniform(n, 21), b = RandomData.Uniform(n, 22);
        var at = _backend.Tensor(a, n);
        P.Add(at, _backend.Tensor(b, n), at);
        var expected = new float[n];
        PrimitivesReference.Add(a, b, expected);
        Both(at.ToArray<float>(), expected, TorchOps.Add(a, b), 0, 0);
    }
}
