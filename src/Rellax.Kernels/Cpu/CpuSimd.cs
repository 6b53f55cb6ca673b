using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// Small SIMD building blocks shared by the CPU kernels: dot products, the exact-GELU map and a row-parallel driver.
/// Each has a <c>Vector512</c> body (when <see cref="CpuGemm.UseVector512"/>), a <c>Vector256</c> body and a scalar tail.
/// </summary>
internal static unsafe class CpuSimd
{
    /// <summary>Σ a[i]·b[i] over n floats, fp32 accumulation in several independent vector lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        float sum;
        if (CpuGemm.UseVector512)
        {
            Vector512<float> s0 = default, s1 = default;
            for (; i + 32 <= n; i += 32)
            {
                s0 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
                s1 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i + 16), Vector512.Load(b + i + 16), s1);
            }
            for (; i + 16 <= n; i += 16) s0 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
            sum = Vector512.Sum(s0 + s1);
        }
        else
        {
            Vector256<float> s0 = default, s1 = default;
            for (; i + 16 <= n; i += 16)
            {
                s0 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
                s1 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), s1);
            }
            for (; i + 8 <= n; i += 8) s0 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
            sum = Vector256.Sum(s0 + s1);
        }
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>y[0..n) = x[0..n) · Φ(x) (exact GELU); y may equal x.</summary>
    public static void Gelu(float* x, float* y, int n)
    {
        int i = 0;
        if (CpuGemm.UseVector512)
            for (; i + 16 <= n; i += 16) Gelu512(Vector512.Load(x + i)).Store(y + i);
        for (; i + 8 <= n; i += 8) Gelu256(Vector256.Load(x + i)).Store(y + i);
        for (; i < n; i++) y[i] = GeluScalar(x[i]);
    }

    // Φ(x) = (1 + erf(z)) / 2 = erfc(-z) / 2 with z = x/√2. erfc from the Chebyshev fit of Numerical Recipes (erfcc,
    // fractional error < 1.2e-7 for every argument): erfc(a) = t·exp(-a² + P(t)), t = 1/(1 + a/2), a = |z| ≥ 0.
    // 1 + erf(z) is then erfc(|z|) for z < 0 and 2 - erfc(|z|) for z ≥ 0: no cancellation, so GELU keeps its relative
    // accuracy deep into the negative tail. The a² = x²/2 term is split exactly (FMA) into hi + lo, and exp(-hi) is
    // taken separately from exp(P - lo): adding P to a large -hi in float would cost ~1e-5 relative at |x| ~ 12.
    private const float InvSqrt2 = 0.70710678118654752f;
    private const float E0 = -1.26551223f, E1 = 1.00002368f, E2 = 0.37409196f, E3 = 0.09678418f, E4 = -0.18628806f;
    private const float E5 = 0.27886807f, E6 = -1.13520398f, E7 = 1.48851587f, E8 = -0.82215223f, E9 = 0.17087277f;

    /// <summary>Scalar exact GELU with the same approximation as the vector bodies.</summary>
    public static float GeluScalar(float x)
    {
        float a = MathF.Abs(x) * InvSqrt2;
        float t = 1f / (1f + 0.5f * a);
        float p = E9;
        p = MathF.FusedMultiplyAdd(p, t, E8); p = MathF.FusedMultiplyAdd(p, t, E7); p = MathF.FusedMultiplyAdd(p, t, E6);
        p = MathF.FusedMultiplyAdd(p, t, E5); p = MathF.FusedMultiplyAdd(p, t, E4); p = MathF.FusedMultiplyAdd(p, t, E3);
        p = MathF.FusedMultiplyAdd(p, t, E2); p = MathF.FusedMultiplyAdd(p, t, E1); p = MathF.FusedMultiplyAdd(p, t, E0);
        float hi = x * x, lo = MathF.FusedMultiplyAdd(x, x, -hi);
        float erfc = t * MathF.Exp(-0.5f * hi) * MathF.Exp(p - 0.5f * lo);
        float onePlusErf = x >= 0 ? 2f - erfc : erfc;
        return 0.5f * x * onePlusErf;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Gelu512(Vector512<float> x)
    {
        Vector512<float> a = Vector512.Abs(x) * InvSqrt2;
        Vector512<float> t = Vector512<float>.One / (Vector512<float>.One + a * 0.5f);
        Vector512<float> p = Vector512.Create(E9);
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E8)); p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E7));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E6)); p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E5));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E4)); p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E3));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E2)); p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E1));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E0));
        Vector512<float> hi = x * x, lo = Vector512.FusedMultiplyAdd(x, x, -hi);
        Vector512<float> erfc = t * Vector512.Exp(hi * -0.5f) * Vector512.Exp(p - lo * 0.5f);
        Vector512<float> onePlusErf = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x, Vector512<float>.Zero), Vector512.Create(2f) - erfc, erfc);
        return x * 0.5f * onePlusErf;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Gelu256(Vector256<float> x)
    {
        Vector256<float> a = Vector256.Abs(x) * InvSqrt2;
        Vector256<float> t = Vector256<float>.One / (Vector256<float>.One + a * 0.5f);
        Vector256<float> p = Vector256.Create(E9);
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E8)); p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E7));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E6)); p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E5));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E4)); p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E3));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E2)); p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E1));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E0));
        Vector256<float> hi = x * x, lo = Vector256.FusedMultiplyAdd(x, x, -hi);
        Vector256<float> erfc = t * Vector256.Exp(hi * -0.5f) * Vector256.Exp(p - lo * 0.5f);
        Vector256<float> onePlusErf = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, Vector256<float>.Zero), Vector256.Create(2f) - erfc, erfc);
        return x * 0.5f * onePlusErf;
    }

    /// <summary>
    /// Runs <paramref name="body"/>(start, count) over [0, items) in one contiguous chunk per thread, or on the
    /// calling thread alone when <paramref name="items"/> · <paramref name="costPerItem"/> is below ~64k units.
    /// </summary>
    public static void ForChunks(CpuBackend backend, int items, long costPerItem, Action<int, int> body)
    {
        int threads = backend.Threads;
        if (threads <= 1 || items < 2 || (long)items * costPerItem < (1 << 16))
        {
            body(0, items);
            return;
        }
        int parts = Math.Min(threads, items);
        Parallel.For(0, parts, backend.ParallelOptions, part =>
        {
            int start = (int)((long)items * part / parts), end = (int)((long)items * (part + 1) / parts);
            if (end > start) body(start, end - start);
        });
    }
}
