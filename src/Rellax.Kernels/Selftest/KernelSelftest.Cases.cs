namespace Rellax.Kernels;

public static partial class KernelSelftest
{
    /// <summary>Random host data for one case; every case draws from its own seeded stream.</summary>
    private sealed class Data(int seed)
    {
        private readonly Random _rng = new(seed);

        public float[] Uniform(int n, float lo = -1f, float hi = 1f)
        {
            var a = new float[n];
            for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * _rng.NextSingle();
            return a;
        }

        public float[] Normal(int n, float sigma = 1f)
        {
            var a = new float[n];
            for (int i = 0; i < n; i++)
            {
                double u1 = 1 - _rng.NextDouble(), u2 = _rng.NextDouble();
                a[i] = sigma * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
            }
            return a;
        }

        public int[] Ints(int n, int max)
        {
            var a = new int[n];
            for (int i = 0; i < n; i++) a[i] = _rng.Next(max);
            return a;
        }

        public int Next(int lo, int hi) => _rng.Next(lo, hi);
    }

    /// <summary>Rounds f32 values through f16 or bf16, so that the reference sees exactly the stored weights.</summary>
    private static float[] Through(DType dtype, float[] values) => dtype switch
    {
        DType.F16 => values.Select(v => (float)(Half)v).ToArray(),
        DType.BF16 => values.Select(v => (float)(BFloat16)v).ToArray(),
        _ => values,
    };

    /// <summary>Uploads f32 values stored as <paramref name="dtype"/> (f32, f16 or bf16).</summary>
    private static Tensor UpAs(SelftestRun run, DType dtype, float[] values, params int[] shape) => dtype switch
    {
        DType.F16 => run.Up(values.Select(v => (Half)v).ToArray(), shape),
        DType.BF16 => run.Up(values.Select(v => (BFloat16)v).ToArray(), shape),
        _ => run.Up(values, shape),
    };

    private static string Name(DType dtype) => dtype.ToString().ToLowerInvariant();

    /// <summary>Every check at <paramref name="size"/>: the ops of issue 20, in a fixed order.</summary>
    private static IEnumerable<Case> Cases(SelftestSize size, int seed)
    {
        int Pick(int small, int medium, int large) => size switch { SelftestSize.Small => small, SelftestSize.Medium => medium, _ => large };
        int caseSeed = seed * 1000;
        Data Rand() => new(++caseSeed);

        // GEMM / Linear: one M per path of the CPU (GEMV M <= 4, register-blocked 5..16, blocked above).
        int k = Pick(67, 515, 2051), n = Pick(45, 257, 1031);
        {
            int m = Pick(33, 129, 257);
            var d = Rand();
            var x = d.Uniform(m * k); var w = d.Uniform(n * k);
            yield return new Case("matmul", $"M={m} K={k} N={n}", new Elementwise(1e-5 * Math.Sqrt(k), 1e-5),
                run =>
                {
                    var (xt, wt, yt) = (run.Up(x, m, k), run.Up(w, n, k), run.Zeros(m, n));
                    run.Time(() => run.Backend.Primitives.MatMul(xt, wt, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[m * n]; PrimitivesReference.MatMul(x, w, y, m, k, n); return y; }));
        }
        foreach (var (dtype, m) in new[] { (DType.F32, Pick(33, 131, 259)), (DType.F16, 3), (DType.BF16, 9) })
        {
            var d = Rand();
            var x = d.Uniform(m * k); var w = Through(dtype, d.Uniform(n * k)); var bias = d.Uniform(n);
            yield return new Case($"linear.{Name(dtype)}", $"M={m} K={k} N={n} +bias", new Elementwise(1e-5 * Math.Sqrt(k), 1e-5),
                run =>
                {
                    var (xt, wt, bt, yt) = (run.Up(x, m, k), UpAs(run, dtype, w, n, k), run.Up(bias, n), run.Zeros(m, n));
                    run.Time(() => run.Backend.Primitives.Linear(xt, wt, bt, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[m * n]; PrimitivesReference.Linear(x, w, bias, y, m, k, n); return y; }));
        }
        {
            int m = Pick(13, 67, 131);
            var d = Rand();
            var x = d.Uniform(m * k); var w = d.Uniform(n * k); var bias = d.Uniform(n);
            // Two outlier columns (|x| > 6) take the fp32 path of LLM.int8().
            for (int t = 0; t < m; t++) { x[t * k + 1] *= 10; x[t * k + k - 2] *= 12; }
            yield return new Case("linear.int8", $"M={m} K={k} N={n} +bias, 2 outlier cols", new Elementwise(1e-4, 1e-4),
                run =>
                {
                    var (xt, wt, bt, yt) = (run.Up(x, m, k), run.Up(w, n, k), run.Up(bias, n), run.Zeros(m, n));
                    var w8 = run.Own(run.Backend.Primitives.QuantizeInt8(wt));
                    run.Time(() => run.Backend.Primitives.LinearInt8(xt, w8, bt, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() =>
                {
                    // The weights are quantized here by the shared rule, not read back from the backend under test.
                    var q = new sbyte[n * k]; var scales = new float[n];
                    for (int j = 0; j < n; j++) scales[j] = PrimitivesReference.QuantizeRowInt8(w.AsSpan(j * k, k), q.AsSpan(j * k, k));
                    var y = new float[m * n];
                    PrimitivesReference.LinearInt8(x, q, scales, bias, y, m, k, n, Primitives.DefaultOutlierThreshold);
                    return y;
                }));
        }

        // Row-wise and elementwise primitives.
        int rows = Pick(19, 129, 517), width = Pick(67, 515, 2053);
        {
            var d = Rand();
            var x = d.Uniform(rows * width, -3, 3); var weight = d.Uniform(width, 0.5f, 1.5f);
            yield return new Case("rmsnorm", $"R={rows} N={width}", new Elementwise(1e-5, 1e-5),
                run =>
                {
                    var (xt, wt, yt) = (run.Up(x, rows, width), run.Up(weight, width), run.Zeros(rows, width));
                    run.Time(() => run.Backend.Primitives.RmsNorm(xt, wt, 1e-5f, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[x.Length]; PrimitivesReference.RmsNorm(x, weight, 1e-5f, y, width); return y; }));
        }
        {
            var d = Rand();
            var x = d.Uniform(rows * width, -3, 3); var weight = d.Uniform(width, 0.5f, 1.5f); var bias = d.Uniform(width);
            yield return new Case("layernorm", $"R={rows} N={width}", new Elementwise(2e-5, 1e-5),
                run =>
                {
                    var (xt, wt, bt, yt) = (run.Up(x, rows, width), run.Up(weight, width), run.Up(bias, width), run.Zeros(rows, width));
                    run.Time(() => run.Backend.Primitives.LayerNorm(xt, wt, bt, 1e-5f, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[x.Length]; PrimitivesReference.LayerNorm(x, weight, bias, 1e-5f, y, width); return y; }));
        }
        {
            int t = Pick(11, 67, 259), heads = 3, hd = Pick(16, 64, 128), p = 4 * t;
            var d = Rand();
            var x = d.Uniform(t * heads * hd); var positions = d.Ints(t, p);
            var (cos, sin) = RopeTables.Build(RopeTables.InverseFrequencies(hd, 10000), p);
            yield return new Case("rope", $"T={t} H={heads} D={hd}", new Elementwise(1e-5, 1e-5),
                run =>
                {
                    var (xt, pt, ct, st) = (run.Up(x, t, heads, hd), run.Up(positions, t), run.Up(cos, p, hd / 2), run.Up(sin, p, hd / 2));
                    run.Time(() => run.Backend.Primitives.Rope(xt, pt, ct, st));
                    return SelftestRun.Read(xt);
                },
                FixedF(() => { var y = (float[])x.Clone(); PrimitivesReference.Rope(y, positions, cos, sin, heads, hd); return y; }));
        }
        {
            var d = Rand();
            var gate = d.Uniform(rows * width, -8, 8); var up = d.Uniform(rows * width, -2, 2);
            yield return new Case("swiglu", $"R={rows} N={width}", new Elementwise(1e-5, 1e-5),
                run =>
                {
                    var (gt, ut, yt) = (run.Up(gate, rows, width), run.Up(up, rows, width), run.Zeros(rows, width));
                    run.Time(() => run.Backend.Primitives.SwiGlu(gt, ut, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[gate.Length]; PrimitivesReference.SwiGlu(gate, up, y); return y; }));
        }
        {
            var d = Rand();
            var x = d.Uniform(rows * width, -6, 6);
            yield return new Case("gelu", $"R={rows} N={width}", new Elementwise(1e-6, 1e-5),
                run =>
                {
                    var (xt, yt) = (run.Up(x, rows, width), run.Zeros(rows, width));
                    run.Time(() => run.Backend.Primitives.Gelu(xt, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[x.Length]; PrimitivesReference.Gelu(x, y); return y; }));
        }
        {
            var d = Rand();
            var x = d.Uniform(rows * width, -10, 10);
            yield return new Case("softmax", $"R={rows} N={width}", new Elementwise(1e-7, 1e-5),
                run =>
                {
                    var (xt, yt) = (run.Up(x, rows, width), run.Zeros(rows, width));
                    run.Time(() => run.Backend.Primitives.Softmax(xt, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[x.Length]; PrimitivesReference.Softmax(x, y, width); return y; }));
        }
        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            int vocab = Pick(97, 1031, 32003), t = Pick(23, 129, 515);
            var d = Rand();
            var table = Through(dtype, d.Uniform(vocab * width)); var ids = d.Ints(t, vocab);
            yield return new Case($"embedding.{Name(dtype)}", $"V={vocab} H={width} T={t}", new Elementwise(0, 0),
                run =>
                {
                    var (it, tt, yt) = (run.Up(ids, t), UpAs(run, dtype, table, vocab, width), run.Zeros(t, width));
                    run.Time(() => run.Backend.Primitives.Embedding(it, tt, yt));
                    return SelftestRun.Read(yt);
                },
                FixedF(() => { var y = new float[t * width]; PrimitivesReference.Embedding(ids, table, y, width); return y; }));
        }
        {
            // The model runtime's fp32 GQA attention for generation: T new queries against S cached positions
            // (FlashAttention.Prefill with Tq < Tk, token-major B = 1, as LlamaSession's fp32 cache runs it).
            int t = Pick(5, 33, 65), s = Pick(23, 131, 517), hq = 4, hkv = 2, hd = Pick(16, 64, 128);
            var d = Rand();
            var q = d.Normal(t * hq * hd); var kk = d.Normal(s * hkv * hd); var v = d.Normal(s * hkv * hd);
            float scale = 1f / MathF.Sqrt(hd);
            var options = new AttentionOptions { Precision = AttentionPrecision.Fp32, Layout = AttentionLayout.TokenMajor, Scale = scale, Causal = true };
            yield return new Case("attention.cached", $"T={t} S={s} Hq={hq} Hkv={hkv} D={hd}", new Elementwise(2e-5, 1e-4),
                run =>
                {
                    var (qt, kt, vt, ot) = (run.Up(q, 1, t, hq, hd), run.Up(kk, 1, s, hkv, hd), run.Up(v, 1, s, hkv, hd), run.Zeros(1, t, hq, hd));
                    run.Time(() => run.Backend.Attention.Prefill(qt, kt, vt, [s], ot, options));
                    return SelftestRun.Read(ot);
                },
                FixedF(() => [.. AttentionReference.Exact(q, kk, v, new AttentionShape(1, hq, hkv, t, s, hd, AttentionLayout.TokenMajor), [s], scale, true)
                    .Select(x => (float)x)]));
        }

        foreach (var c in AttentionCases(Pick, Rand)) yield return c;
        foreach (var c in CfloraCases(Pick, Rand)) yield return c;
        foreach (var c in SubrCases(Pick, Rand)) yield return c;
        foreach (var c in BackwardCases(Pick, Rand)) yield return c;
    }
}
