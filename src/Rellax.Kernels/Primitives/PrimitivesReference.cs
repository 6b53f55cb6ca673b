namespace Rellax.Kernels;

/// <summary>
/// Plain scalar implementations of every primitive, written for clarity, accumulating in double.
/// They are the ground truth that the CPU, ILGPU and CUDA kernels are tested against; never used on a hot path.
/// Shapes follow <see cref="Primitives"/>; all arrays are row-major.
/// </summary>
public static class PrimitivesReference
{
    /// <summary>y[M,N] = x[M,K] · w[N,K]ᵀ.</summary>
    public static void MatMul(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int m, int k, int n)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double acc = 0;
                for (int p = 0; p < k; p++) acc += (double)x[i * k + p] * w[j * k + p];
                y[i * n + j] = (float)acc;
            }
    }

    /// <summary>
    /// Linear layer y[M,N] = x[M,K] · w[N,K]ᵀ + bias[N] (no bias when <paramref name="bias"/> is empty). Half-precision
    /// weights are passed already widened to f32 (exact), so the same reference covers f32, f16 and bf16 kernels.
    /// </summary>
    public static void Linear(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> bias, Span<float> y, int m, int k, int n)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double acc = bias.IsEmpty ? 0 : bias[j];
                for (int p = 0; p < k; p++) acc += (double)x[i * k + p] * w[j * k + p];
                y[i * n + j] = (float)acc;
            }
    }

    /// <summary>
    /// Symmetric int8 quantization of one row (weights per output row, activations per token): scale = max|v| / 127 and
    /// q = round_half_even(v · (127 / max|v|)) clamped to [-127, 127], in float arithmetic (the kernels use the same
    /// operations, so they produce the same integers). A zero row gives scale 0 and q = 0.
    /// </summary>
    /// <returns>The scale, or NaN (with q = 0) when the row holds NaN or infinity.</returns>
    public static float QuantizeRowInt8(ReadOnlySpan<float> v, Span<sbyte> q)
    {
        float amax = 0f;
        foreach (float e in v)
        {
            if (!float.IsFinite(e)) { q.Slice(0, v.Length).Clear(); return float.NaN; }
            amax = Math.Max(amax, Math.Abs(e));
        }
        if (amax == 0f) { q.Slice(0, v.Length).Clear(); return 0f; }
        float inv = 127f / amax;
        for (int i = 0; i < v.Length; i++) q[i] = QuantizeActivationInt8(v[i], inv);
        return amax / 127f;
    }

    /// <summary>The activation row quantizer the int8 linear layer uses: <see cref="QuantizeRowInt8"/>.</summary>
    public static float QuantizeActivationRowInt8(ReadOnlySpan<float> v, Span<sbyte> q) => QuantizeRowInt8(v, q);

    /// <summary>One element: round_half_even(v · inv) clamped to [-127, 127].</summary>
    public static sbyte QuantizeActivationInt8(float v, float inv) => (sbyte)Math.Clamp(MathF.Round(v * inv), -127f, 127f);

    /// <summary>
    /// The int8 linear layer (LLM.int8()-style W8A8 with per-group activation scales), y[M,N] from x[M,K], int8 weights q[N,K]
    /// (row-major) with row scales s_w[N], optional bias[N]:
    /// <list type="number">
    /// <item>outlier columns O = { c : max_t |x[t, c]| &gt; threshold };</item>
    /// <item>the columns are cut into groups of <paramref name="groupSize"/> along K (group g = [g·G, min(K, (g+1)·G)), the
    /// last one may be shorter); per row t and group g, x[t, g] with the O columns zeroed is quantized by
    /// <see cref="QuantizeRowInt8"/> into x8[t, g], s_x[t, g];</item>
    /// <item>y[t, j] = s_w[j] · (Σ_g s_x[t, g] · Σ_{c∈g} x8[t, c]·q[j, c] + Σ_{c∈O} x[t, c]·q[j, c]) + bias[j], in double (each
    /// group's integer sum is exact).</item>
    /// </list>
    /// A group's scale follows its own largest |x| rather than the whole row's, so a few large values (the heavy-tailed SwiGLU
    /// product that feeds down_proj) coarsen only their own group. With G ≥ K this is LLM.int8()'s per-row scheme.
    /// </summary>
    public static void LinearInt8(ReadOnlySpan<float> x, ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, ReadOnlySpan<float> bias,
        Span<float> y, int m, int k, int n, float threshold, int groupSize = Primitives.DefaultInt8GroupSize)
    {
        var outlier = new bool[k];
        for (int t = 0; t < m; t++)
            for (int c = 0; c < k; c++)
                if (Math.Abs(x[t * k + c]) > threshold) outlier[c] = true;
        int groups = (k + groupSize - 1) / groupSize;
        var row = new float[k];
        var x8 = new sbyte[k];
        var sx = new double[groups];
        for (int t = 0; t < m; t++)
        {
            for (int c = 0; c < k; c++) row[c] = outlier[c] ? 0f : x[t * k + c];
            for (int g = 0; g < groups; g++)
            {
                int c0 = g * groupSize, len = Math.Min(k, c0 + groupSize) - c0;
                sx[g] = QuantizeRowInt8(row.AsSpan(c0, len), x8.AsSpan(c0, len));
            }
            for (int j = 0; j < n; j++)
            {
                double sum = 0, fp = 0;
                for (int g = 0; g < groups; g++)
                {
                    long acc = 0;
                    for (int c = g * groupSize; c < Math.Min(k, (g + 1) * groupSize); c++) acc += x8[c] * q[j * k + c];
                    sum += sx[g] * acc;
                }
                for (int c = 0; c < k; c++)
                    if (outlier[c]) fp += (double)x[t * k + c] * q[j * k + c];
                y[t * n + j] = (float)(scales[j] * (sum + fp) + (bias.IsEmpty ? 0 : bias[j]));
            }
        }
    }

    /// <summary>Int8 embedding gather: y[t, :] = q[ids[t], :] · scales[ids[t]] for rows of length h.</summary>
    public static void EmbeddingInt8(ReadOnlySpan<int> ids, ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, Span<float> y, int h)
    {
        for (int t = 0; t < ids.Length; t++)
            for (int i = 0; i < h; i++) y[t * h + i] = (float)((double)q[ids[t] * h + i] * scales[ids[t]]);
    }

    /// <summary>dst[rows[i]] = src[i] for rows of length h (rows distinct and inside dst).</summary>
    public static void ScatterRows(ReadOnlySpan<float> src, ReadOnlySpan<int> rows, Span<float> dst, int h)
    {
        for (int i = 0; i < rows.Length; i++) src.Slice(i * h, h).CopyTo(dst.Slice(rows[i] * h, h));
    }

    /// <summary>RMSNorm over rows of length n.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y, int n)
    {
        for (int r = 0; r < x.Length / n; r++)
        {
            double ss = 0;
            for (int i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
            double inv = 1.0 / Math.Sqrt(ss / n + eps);
            for (int i = 0; i < n; i++) y[r * n + i] = (float)(x[r * n + i] * inv * weight[i]);
        }
    }

    /// <summary>LayerNorm over rows of length n (biased variance).</summary>
    public static void LayerNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, float eps, Span<float> y, int n)
    {
        for (int r = 0; r < x.Length / n; r++)
        {
            double mean = 0, var = 0;
            for (int i = 0; i < n; i++) mean += x[r * n + i];
            mean /= n;
            for (int i = 0; i < n; i++) { double d = x[r * n + i] - mean; var += d * d; }
            double inv = 1.0 / Math.Sqrt(var / n + eps);
            for (int i = 0; i < n; i++) y[r * n + i] = (float)((x[r * n + i] - mean) * inv * weight[i] + bias[i]);
        }
    }

    /// <summary>HF rotate_half RoPE in place on x[T,H,D].</summary>
    public static void Rope(Span<float> x, ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, int heads, int headDim)
    {
        int half = headDim / 2;
        for (int t = 0; t < positions.Length; t++)
            for (int h = 0; h < heads; h++)
            {
                int b = (t * heads + h) * headDim, p = positions[t] * half;
                for (int i = 0; i < half; i++)
                {
                    double x1 = x[b + i], x2 = x[b + i + half], c = cos[p + i], s = sin[p + i];
                    x[b + i] = (float)(x1 * c - x2 * s);
                    x[b + i + half] = (float)(x2 * c + x1 * s);
                }
            }
    }

    /// <summary>y = silu(gate) · up.</summary>
    public static void SwiGlu(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = (float)(gate[i] / (1 + Math.Exp(-(double)gate[i])) * up[i]);
    }

    /// <summary>Exact GELU, x · Φ(x).</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = (float)(0.5 * x[i] * (1 + Erf(x[i] / Math.Sqrt(2))));
    }

    /// <summary>Softmax over rows of length n.</summary>
    public static void Softmax(ReadOnlySpan<float> x, Span<float> y, int n)
    {
        for (int r = 0; r < x.Length / n; r++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int i = 0; i < n; i++) max = Math.Max(max, x[r * n + i]);
            for (int i = 0; i < n; i++) sum += Math.Exp(x[r * n + i] - max);
            for (int i = 0; i < n; i++) y[r * n + i] = (float)(Math.Exp(x[r * n + i] - max) / sum);
        }
    }

    /// <summary>y[t] = table[ids[t]] with rows of length h.</summary>
    public static void Embedding(ReadOnlySpan<int> ids, ReadOnlySpan<float> table, Span<float> y, int h)
    {
        for (int t = 0; t < ids.Length; t++) table.Slice(ids[t] * h, h).CopyTo(y.Slice(t * h, h));
    }

    /// <summary>y = a + b.</summary>
    public static void Add(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = a[i] + b[i];
    }

    /// <summary>erf(x) to about 1e-15 (Abramowitz–Stegun 7.1.26 is too coarse for a reference): series for small |x|, continued fraction beyond.</summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        double ax = Math.Abs(x);
        if (ax > 6) return Math.Sign(x);
        double result;
        if (ax < 2.5)
        {
            // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
            double term = ax, sum = ax, x2 = ax * ax;
            for (int n = 1; n < 100; n++)
            {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            result = 2 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            // Continued fraction for erfc (Lentz), accurate for x >= 2.5.
            double f = ax, c = ax, dd = 0, tiny = 1e-300;
            for (int n = 1; n < 200; n++)
            {
                double an = n / 2.0;
                dd = ax + an * dd; if (Math.Abs(dd) < tiny) dd = tiny; dd = 1 / dd;
                c = ax + an / c; if (Math.Abs(c) < tiny) c = tiny;
                double delta = c * dd;
                f *= delta;
                if (Math.Abs(delta - 1) < 1e-16) break;
            }
            result = 1 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f;
        }
        return x < 0 ? -result : result;
    }
}
