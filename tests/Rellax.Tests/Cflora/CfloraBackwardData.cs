using NUnit.Framework;
using Rellax.Kernels;

namespace Rellax.Tests.Cflora;

/// <summary>
/// One CFLoRA module's data for the backward tests: weights rounded through their dtype (so references see exactly what
/// the kernels widen), G (or null for the identity), the upstream gradient dY, and which gradients to request.
/// </summary>
internal sealed record CfloraBackwardCase(int Din, int Dout, int R, DType Dtype, float[] W0, float[]? Bias, float[] A, float[] B,
    float[]? G, float Scale, float[] Dy, bool WantDa, bool WantDb, bool WantDg)
{
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

    /// <summary>Random module: x, W0, dY in [-1, 1]; A scaled by 1/√d_in and B by 1/√r so every term is O(1).</summary>
    public static CfloraBackwardCase Make(int rows, int din, int dout, int r, int samples, DType dtype, bool identity, bool bias, int seed,
        bool wantDa = true, bool wantDb = true, bool wantDg = true) => new(
        din, dout, r, dtype,
        W0: Weights(dout * din, seed, 1f, dtype),
        Bias: bias ? RandomData.Uniform(dout, seed + 1) : null,
        A: Weights(r * din, seed + 2, 1f / MathF.Sqrt(din), dtype),
        B: Weights(dout * r, seed + 3, 1f / MathF.Sqrt(r), dtype),
        G: identity ? null : RandomData.Uniform(samples * r * r, seed + 4),
        Scale: 16f / r,
        Dy: RandomData.Uniform(rows * dout, seed + 5),
        WantDa: wantDa, WantDb: wantDb, WantDg: wantDg && !identity);

    public static Tensor Upload(ComputeBackend backend, float[] data, DType dtype, params int[] shape) => dtype switch
    {
        DType.F16 => backend.Tensor(data.Select(v => (Half)v).ToArray(), shape),
        DType.BF16 => backend.Tensor(data.Select(v => (BFloat16)v).ToArray(), shape),
        _ => backend.Tensor(data, shape),
    };

    /// <summary>The module on <paramref name="backend"/>, with zero-filled gradient outputs for the requested parts.</summary>
    public CfloraBackwardModule OnBackend(ComputeBackend backend, int rows, int samples) => new(
        Upload(backend, W0, Dtype, Dout, Din), Upload(backend, A, Dtype, R, Din), Upload(backend, B, Dtype, Dout, R),
        G is null ? null : backend.Tensor(G, samples, R, R), Scale, backend.Tensor(Dy, rows, Dout),
        WantDa ? backend.Zeros(R, Din) : null, WantDb ? backend.Zeros(Dout, R) : null, WantDg ? backend.Zeros(samples, R, R) : null);

    /// <summary>The double reference: (dx [T, d_in], da, db, dg).</summary>
    public (float[] Dx, float[] Da, float[] Db, float[] Dg) Reference(float[] x, int[] sampleOfRow, int samples)
    {
        int rows = sampleOfRow.Length;
        var dx = new float[rows * Din];
        var da = new float[R * Din];
        var db = new float[Dout * R];
        var dg = new float[G is null ? 0 : samples * R * R];
        CfloraReference.Backward(x, W0, A, B, G ?? [], sampleOfRow, Scale, Dy, dx, da, db, dg, Din, Dout, R, samples);
        return (dx, da, db, dg);
    }

    /// <summary>
    /// |actual − expected| ≤ 2e-6·√K·max|expected| + 1e-6 + 1e-5·|expected|, K the length of the sums behind each element:
    /// fp32 summation of K terms errs by ~6e-8·√K times their size, so this is ~30x the expected error, while a wrong
    /// sample, transpose or missing term moves an element by ~max|expected|/√K or more.
    /// </summary>
    public static void AssertGradient(float[] actual, float[] expected, int sumLength, string what)
    {
        double max = expected.Length == 0 ? 0 : expected.Max(v => Math.Abs((double)v));
        RandomData.AssertClose(actual, expected, 2e-6 * Math.Sqrt(sumLength) * max + 1e-6, 1e-5, what);
    }

    public static CfloraBatch Batch(int rows, int samples, bool shuffled, int seed)
    {
        if (shuffled) return CfloraBatch.FromRowIndex(RandomData.Ints(rows, samples, seed), samples);
        var lengths = new int[samples];
        int left = rows;
        for (int s = 0; s < samples - 1; s++) { lengths[s] = Math.Min(left, (rows + s) / samples); left -= lengths[s]; }
        lengths[^1] = left;
        return CfloraBatch.FromLengths(lengths);
    }
}
