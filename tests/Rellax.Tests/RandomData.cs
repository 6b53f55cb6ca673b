using Rellax.Kernels;

namespace Rellax.Tests;

/// <summary>Seeded random inputs and tensor helpers shared by the tests.</summary>
internal static class RandomData
{
    /// <summary>n floats uniform in [lo, hi) from a fixed seed.</summary>
    public static float[] Uniform(int n, int seed, float lo = -1f, float hi = 1f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * rng.NextSingle();
        return a;
    }

    /// <summary>n ints uniform in [0, max) from a fixed seed.</summary>
    public static int[] Ints(int n, int max, int seed)
    {
        var rng = new Random(seed);
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = rng.Next(max);
        return a;
    }

    public static int Product(int[] shape) => shape.Aggregate(1, (a, b) => a * b);

    /// <summary>Uploads data to a new buffer on the backend and views it with the shape.</summary>
    public static Tensor Tensor<T>(this ComputeBackend backend, T[] data, params int[] shape) where T : unmanaged =>
        backend.Upload<T>(data).AsTensor(shape);

    /// <summary>A zeroed f32 tensor of the shape.</summary>
    public static Tensor Zeros(this ComputeBackend backend, params int[] shape) =>
        backend.Allocate(DType.F32, shape).AsTensor(shape);

    /// <summary>Largest |a - b| / (atol + rtol·|b|); a value ≤ 1 means every element is within tolerance.</summary>
    public static (double Worst, int Index) WorstRatio(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double atol, double rtol)
    {
        if (actual.Length != expected.Length) throw new ArgumentException($"length {actual.Length} vs {expected.Length}");
        double worst = 0; int at = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            double a = actual[i], e = expected[i];
            double ratio = double.IsFinite(a) ? Math.Abs(a - e) / (atol + rtol * Math.Abs(e)) : double.PositiveInfinity;
            if (!(ratio <= worst)) { worst = ratio; at = i; }
        }
        return (worst, at);
    }

    /// <summary>Fails with the worst element when any element is outside atol + rtol·|expected|.</summary>
    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double atol, double rtol, string what)
    {
        var (worst, i) = WorstRatio(actual, expected, atol, rtol);
        if (worst > 1)
            NUnit.Framework.Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected {expected[i]:R} (|diff| = {Math.Abs(actual[i] - expected[i]):E3}, tolerance {atol} + {rtol}·|expected|, {worst:F1}x over)");
    }
}
