using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Cflora;

/// <summary>
/// The CPU CFLoRA kernels (<c>CpuCflora</c>) against the scalar double <see cref="CfloraReference"/> on seeded random
/// data: both the GEMV path (T ≤ 16) and the K-augmented blocked GEMM (T &gt; 16), f32/f16/bf16 weights (values rounded
/// through the dtype first, so the reference sees exactly what the kernel widens), bias or not, contiguous and shuffled
/// batches, several modules per call, wide d_in/d_out, NaN rows, and the generator.
/// <para>
/// <b>Tolerances.</b> x, W0 are uniform in [-1, 1], A is scaled by 1/√d_in and B by 1/√r so every term stays O(1);
/// fp32 accumulation of K terms of that size errs by ~ε·√K, so atol = 2e-5·(√d_in + √r) with rtol = 1e-5 (about
/// 100x the expected error; an error in any single term of W0, B or G, e.g. a wrong sample or a missing bias, is ≥ 1e-2).
/// </para>
/// </summary>
[TestFixture]
public sealed class CpuCfloraTests
{
    private sealed record ModuleData(float[] W0, float[]? Bias, float[] A, float[] B, float[] G, float Scale, int Dout, int R, DType Dtype);

    private static float Round(float v, DType dtype) => dtype switch
    {
        DType.F16 => (float)(Half)v,
        DType.BF16 => (float)(BFloat16)v,
        _ => v,
    };

    private static float[] Weights(int n, int seed, float scale, DType dtype)
    {
        var a = RandomData.Uniform(n, seed);
        for (int i = 0; i < n; i++) a[i] = Round(a[i] * scale, dtype);
        return a;
    }

    private static Tensor Upload(ComputeBackend backend, float[] data, DType dtype, params int[] shape) => dtype switch
    {
        DType.F16 => backend.Tensor(data.Select(v => (Half)v).ToArray(), shape),
        DType.BF16 => backend.Tensor(data.Select(v => (BFloat16)v).ToArray(), shape),
        _ => backend.Tensor(data, shape),
    };

    private static ModuleData MakeModule(int din, int dout, int r, int samples, DType dtype, bool bias, int seed) => new(
        W0: Weights(dout * din, seed, 1f, dtype),
        Bias: bias ? RandomData.Uniform(dout, seed + 1) : null,
        A: Weights(r * din, seed + 2, 1f / MathF.Sqrt(din), dtype),
        B: Weights(dout * r, seed + 3, 1f / MathF.Sqrt(r), dtype),
        G: RandomData.Uniform(samples * r * r, seed + 4),
        Scale: 16f / r, Dout: dout, R: r, Dtype: dtype);

    private static CfloraBatch MakeBatch(int rows, int samples, bool shuffled, int seed)
    {
        if (shuffled) return CfloraBatch.FromRowIndex(RandomData.Ints(rows, samples, seed), samples);
        // Contiguous runs of uneven length (the last sample takes the remainder; some may be empty).
        var lengths = new int[samples];
        int left = rows;
        for (int s = 0; s < samples - 1; s++) { lengths[s] = Math.Min(left, (rows + s) / samples); left -= lengths[s]; }
        lengths[^1] = left;
        return CfloraBatch.FromLengths(lengths);
    }

    /// <summary>Runs all modules in one call and checks each output against the reference.</summary>
    private static void RunAndCheck(int threads, float[] x, int rows, int din, ModuleData[] mods, CfloraBatch batch, string what, int nanRow = -1)
    {
        using var backend = new CpuBackend(threads);
        var xt = backend.Tensor(x, rows, din);
        var modules = mods.Select(m => new CfloraModule(
            Upload(backend, m.W0, m.Dtype, m.Dout, din),
            m.Bias is null ? null : backend.Tensor(m.Bias, m.Dout),
            Upload(backend, m.A, m.Dtype, m.R, din),
            Upload(backend, m.B, m.Dtype, m.Dout, m.R),
            backend.Tensor(m.G, batch.Samples, m.R, m.R),
            m.Scale,
            backend.Zeros(rows, m.Dout))).ToArray();
        backend.Cflora.Forward(xt, modules, batch);
        for (int mi = 0; mi < mods.Length; mi++)
        {
            var m = mods[mi];
            var expected = new float[rows * m.Dout];
            CfloraReference.Forward(x, m.W0, m.Bias ?? [], m.A, m.B, m.G, batch.SampleOfRow, m.Scale, expected, din, m.Dout, m.R);
            var actual = modules[mi].Y.ToArray<float>();
            if (nanRow >= 0)
            {
                for (int o = 0; o < m.Dout; o++)
                    Assert.That(float.IsNaN(actual[nanRow * m.Dout + o]), $"{what} module {mi}: y[{nanRow}, {o}] = {actual[nanRow * m.Dout + o]} should be NaN");
                for (int t = 0; t < rows; t++)
                    if (t != nanRow)
                        RandomData.AssertClose(actual.AsSpan(t * m.Dout, m.Dout), expected.AsSpan(t * m.Dout, m.Dout),
                            2e-5 * (Math.Sqrt(din) + Math.Sqrt(m.R)), 1e-5, $"{what} module {mi} row {t}");
            }
            else
                RandomData.AssertClose(actual, expected, 2e-5 * (Math.Sqrt(din) + Math.Sqrt(m.R)), 1e-5, $"{what} module {mi}");
        }
    }

    private static IEnumerable<TestCaseData> SingleModuleCases()
    {
        int i = 0;
        foreach (int r in new[] { 1, 8, 16, 64 })
            foreach (int rows in new[] { 1, 3, 17, 130 })
                foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
                {
                    bool bias = i % 2 == 0, shuffled = i % 3 == 1;
                    int threads = i % 5 == 4 ? 1 : 2;
                    // d_in 250: W0 | B crosses the KC = 256 block boundary for r ≥ 8; 600: several K blocks.
                    int din = i % 2 == 0 ? 250 : 600;
                    yield return new TestCaseData(r, rows, dtype, bias, shuffled, threads, din)
                        .SetArgDisplayNames($"r{r}", $"T{rows}", dtype.ToString(), bias ? "bias" : "nobias", shuffled ? "shuffled" : "contiguous", $"threads{threads}", $"din{din}");
                    i++;
                }
    }

    [TestCaseSource(nameof(SingleModuleCases))]
    public void ForwardMatchesReference(int r, int rows, DType dtype, bool bias, bool shuffled, int threads, int din)
    {
        const int Dout = 97, Samples = 3;
        var x = RandomData.Uniform(rows * din, 7 + rows);
        var mod = MakeModule(din, Dout, r, Samples, dtype, bias, 100 * r + rows);
        using var batch = MakeBatch(rows, Samples, shuffled, rows + r);
        RunAndCheck(threads, x, rows, din, [mod], batch, $"r={r} T={rows} {dtype}");
    }

    [TestCase(2, 2)]
    [TestCase(7, 3)]
    [TestCase(12, 3)]
    [TestCase(16, 3)]
    [TestCase(17, 3)]
    [TestCase(40, 3)]
    public void SeveralModulesInOneCall(int rows, int moduleCount)
    {
        const int Din = 320, Samples = 4;
        var x = RandomData.Uniform(rows * Din, 11);
        var all = new[]
        {
            MakeModule(Din, 64, 8, Samples, DType.F32, bias: true, seed: 1),
            MakeModule(Din, 130, 16, Samples, DType.BF16, bias: false, seed: 2),
            MakeModule(Din, 33, 3, Samples, DType.F16, bias: true, seed: 3),
        };
        using var batch = MakeBatch(rows, Samples, shuffled: rows % 2 == 0, seed: 5);
        RunAndCheck(2, x, rows, Din, all[..moduleCount], batch, $"{moduleCount} modules T={rows}");
    }

    [TestCase(1, 64, 11008, DType.BF16)]
    [TestCase(5, 64, 11008, DType.F32)]
    [TestCase(3, 11008, 40, DType.F16)]
    [TestCase(9, 11008, 40, DType.BF16)]
    [TestCase(2, 48, 14336, DType.F16)]
    [TestCase(20, 48, 14336, DType.F32)]
    [TestCase(4, 22016, 24, DType.BF16)]
    [TestCase(19, 22016, 24, DType.F32)]
    public void WideDimensions(int rows, int din, int dout, DType dtype)
    {
        const int Samples = 2;
        var x = RandomData.Uniform(rows * din, 3);
        var mod = MakeModule(din, dout, 8, Samples, dtype, bias: true, seed: 17);
        using var batch = MakeBatch(rows, Samples, shuffled: true, seed: 9);
        RunAndCheck(2, x, rows, din, [mod], batch, $"d_in={din} d_out={dout}");
    }

    /// <summary>
    /// The register-blocked path (5 ≤ T ≤ 16): 4 W rows × 4 x rows per step, K chunks of 1024, a short last x block,
    /// leftover W rows (d_out mod 4), a K tail (d_in mod 16), f16/bf16 widened per chunk, bias, both thread counts.
    /// </summary>
    [TestCase(5, 250, 97, DType.F32, true, 2)]
    [TestCase(7, 1100, 33, DType.F16, false, 2)]
    [TestCase(12, 2049, 66, DType.BF16, true, 1)]
    [TestCase(16, 1024, 128, DType.F32, false, 2)]
    [TestCase(16, 3000, 131, DType.F16, true, 2)]
    [TestCase(13, 4096, 70, DType.BF16, false, 2)]
    [TestCase(6, 16, 9, DType.F32, true, 1)]
    [TestCase(8, 2060, 1027, DType.F32, true, 2)]
    public void BlockedPathMatchesReference(int rows, int din, int dout, DType dtype, bool bias, int threads)
    {
        const int Samples = 3;
        var x = RandomData.Uniform(rows * din, 31 + rows);
        var mod = MakeModule(din, dout, 16, Samples, dtype, bias, 1000 + rows);
        using var batch = MakeBatch(rows, Samples, shuffled: rows % 2 == 1, seed: rows);
        RunAndCheck(threads, x, rows, din, [mod], batch, $"blocked T={rows} d_in={din} d_out={dout} {dtype}");
    }

    [TestCase(3)]
    [TestCase(7)]
    [TestCase(17)]
    public void NanInOneRowStaysInThatRow(int rows)
    {
        const int Din = 200, Samples = 2, NanRow = 1;
        var x = RandomData.Uniform(rows * Din, 21);
        x[NanRow * Din + 37] = float.NaN;
        var mod = MakeModule(Din, 70, 8, Samples, DType.F32, bias: true, seed: 4);
        using var batch = MakeBatch(rows, Samples, shuffled: false, seed: 0);
        RunAndCheck(2, x, rows, Din, [mod], batch, $"NaN row T={rows}", NanRow);
    }

    [Test]
    [NonParallelizable] // toggles the process-wide CpuGemm.UseVector512 switch
    public void Vector256FallbackMatchesReference()
    {
        bool saved = CpuGemm.UseVector512;
        CpuGemm.UseVector512 = false;
        try
        {
            foreach (int rows in new[] { 2, 11, 19 })
                foreach (var dtype in new[] { DType.F16, DType.BF16 })
                {
                    var x = RandomData.Uniform(rows * 300, rows);
                    var mod = MakeModule(300, 50, 16, 2, dtype, bias: true, seed: rows);
                    using var batch = MakeBatch(rows, 2, shuffled: true, seed: 1);
                    RunAndCheck(2, x, rows, 300, [mod], batch, $"vector256 T={rows} {dtype}");
                }
        }
        finally { CpuGemm.UseVector512 = saved; }
    }

    [TestCase(1, 4, 32)]
    [TestCase(5, 8, 48)]
    [TestCase(3, 16, 256)]
    public void GeneratorMatchesReference(int samples, int r, int dh)
    {
        int r2 = r * r, hidden = 2 * r2;
        float[] h = RandomData.Uniform(samples * dh, 1, -3f, 3f), lnW = RandomData.Uniform(dh, 2, 0.5f, 1.5f), lnB = RandomData.Uniform(dh, 3);
        float[] w1 = Weights(hidden * dh, 4, 1f / MathF.Sqrt(dh), DType.F32), b1 = RandomData.Uniform(hidden, 5);
        float[] w2 = Weights(r2 * hidden, 6, 1f / MathF.Sqrt(hidden), DType.F32), b2 = RandomData.Uniform(r2, 7);
        using var backend = new CpuBackend(2);
        var g = backend.Zeros(samples, r, r);
        backend.Cflora.Generate(backend.Tensor(h, samples, dh), backend.Tensor(lnW, dh), backend.Tensor(lnB, dh), 1e-5f,
            backend.Tensor(w1, hidden, dh), backend.Tensor(b1, hidden), backend.Tensor(w2, r2, hidden), backend.Tensor(b2, r2), g);
        var expected = new float[samples * r2];
        CfloraReference.Generate(h, lnW, lnB, 1e-5f, w1, b1, w2, b2, expected, dh, r);
        // Two chained fp32 products of O(1) terms plus GELU (relative error ≤ 1e-6): ε·√K per product.
        RandomData.AssertClose(g.ToArray<float>(), expected, 2e-5 * (Math.Sqrt(dh) + Math.Sqrt(hidden)), 1e-5, $"generator S={samples} r={r}");
    }
}
