namespace Rellax.Kernels;

/// <summary>
/// Plain host references for <see cref="FlashAttention"/>: exact fp64 attention, and the int8 algorithm (smoothing,
/// quantization, int32 dot products) with an fp64 softmax, which every backend's int8 kernels must match. Slow and
/// simple on purpose; arrays are in the layout of the <see cref="AttentionShape"/> given.
/// </summary>
internal static class AttentionReference
{
    /// <summary>log2(e): int8 logits are kept in base 2 (exp2 softmax).</summary>
    public const float Log2E = 1.44269504088896341f;

    /// <summary>
    /// Quantizes one row: with m = max|x| (float), when 0 &lt; m &lt; ∞, <c>x̂_c = round_half_even(x_c · (127f / m))</c>
    /// clamped to ±127; otherwise (zero, NaN or ∞ rows) x̂ = 0. Returns the scale <c>m / 127f · multiplier</c>
    /// (NaN or ∞ stay so, and poison every product they reach).
    /// </summary>
    public static float QuantizeRow(ReadOnlySpan<float> x, Span<sbyte> quantized, float multiplier = 1f)
    {
        float m = 0;
        foreach (float value in x) m = float.IsNaN(value) || float.IsNaN(m) ? float.NaN : MathF.Max(m, MathF.Abs(value));
        if (m > 0 && float.IsFinite(m))
        {
            float inv = 127f / m;
            for (int c = 0; c < x.Length; c++)
                quantized[c] = (sbyte)Math.Clamp(MathF.Round(x[c] * inv, MidpointRounding.ToEven), -127f, 127f);
        }
        else quantized[..x.Length].Clear();
        return m / 127f * multiplier;
    }

    /// <summary>First visible key of sequence b (its left padding) and the last one for query position t.</summary>
    private static (int First, int Last) Visible(int padding, int keys, int position, bool causal) =>
        (padding, causal ? Math.Min(position, keys - 1) : keys - 1);

    /// <summary>
    /// Exact fp64 prefill attention. Query t sits at key position <c>Tk − Tq + t</c>; <paramref name="lengths"/>[b] counts
    /// the real key positions (the last ones of Tk); query rows whose position is padding give 0.
    /// </summary>
    public static double[] Exact(float[] q, float[] k, float[] v, AttentionShape s, int[] lengths, float scale, bool causal)
    {
        var o = new double[q.Length];
        var p = new double[s.KeyTokens];
        for (int b = 0; b < s.Batch; b++)
        {
            int pad = s.KeyTokens - lengths[b];
            for (int h = 0; h < s.QueryHeads; h++)
            {
                int kvh = h / s.Group;
                for (int t = Math.Max(0, pad - s.QueryStart); t < s.Tokens; t++)
                {
                    var (first, last) = Visible(pad, s.KeyTokens, s.QueryStart + t, causal);
                    long qo = s.QueryOffset(b, h, t);
                    double max = double.NegativeInfinity;
                    for (int j = first; j <= last; j++)
                    {
                        long ko = s.KeyOffset(b, kvh, j);
                        double dot = 0;
                        for (int c = 0; c < s.HeadDim; c++) dot += (double)q[qo + c] * k[ko + c];
                        p[j] = dot * scale;
                        max = Math.Max(max, p[j]);
                    }
                    Accumulate(p, first, last, max, j => Row(v, s.KeyOffset(b, kvh, j), s.HeadDim), o.AsSpan((int)qo, s.HeadDim), useExp2: false);
                }
            }
        }
        return o;
    }

    /// <summary>
    /// Exact fp64 backward of <see cref="Exact"/> from the definitions (softmax recomputed in double, nothing saved):
    /// with p_tj the softmax of scale·q_t·k_j over the visible keys, dV_j = Σ_t p_tj dO_t, dS_tj = p_tj (dO_t·v_j −
    /// Σ_i p_ti dO_t·v_i), dQ_t = scale Σ_j dS_tj k_j, dK_j = scale Σ_t dS_tj q_t (summed over a KV head's query heads).
    /// Also returns the log-sum-exp lse [B, Hq, T] (−∞ for padding rows). Padding rows and keys get 0 gradients.
    /// </summary>
    public static (double[] Dq, double[] Dk, double[] Dv, double[] Lse) ExactBackward(float[] q, float[] k, float[] v, float[] dO,
        AttentionShape s, int[] lengths, float scale, bool causal)
    {
        if (s.KeyTokens != s.Tokens) throw new ArgumentException($"the backward needs Tq == Tk; got Tq = {s.Tokens}, Tk = {s.KeyTokens}", nameof(s));
        int d = s.HeadDim;
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[k.Length];
        var lse = new double[(long)s.Batch * s.QueryHeads * s.Tokens];
        Array.Fill(lse, double.NegativeInfinity);
        var p = new double[s.Tokens];
        var dp = new double[s.Tokens];
        for (int b = 0; b < s.Batch; b++)
        {
            int pad = s.Tokens - lengths[b];
            for (int h = 0; h < s.QueryHeads; h++)
            {
                int kvh = h / s.Group;
                for (int t = pad; t < s.Tokens; t++)
                {
                    var (first, last) = Visible(pad, s.Tokens, t, causal);
                    long qo = s.QueryOffset(b, h, t);
                    double max = double.NegativeInfinity;
                    for (int j = first; j <= last; j++)
                    {
                        long ko = s.KeyOffset(b, kvh, j);
                        double dot = 0, dov = 0;
                        for (int c = 0; c < d; c++)
                        {
                            dot += (double)q[qo + c] * k[ko + c];
                            dov += (double)dO[qo + c] * v[ko + c];
                        }
                        p[j] = dot * scale;
                        dp[j] = dov;
                        max = Math.Max(max, p[j]);
                    }
                    double sum = 0;
                    for (int j = first; j <= last; j++) sum += Math.Exp(p[j] - max);
                    lse[((long)b * s.QueryHeads + h) * s.Tokens + t] = max + Math.Log(sum);
                    double rowD = 0;
                    for (int j = first; j <= last; j++)
                    {
                        p[j] = Math.Exp(p[j] - max) / sum;
                        rowD += p[j] * dp[j];
                    }
                    for (int j = first; j <= last; j++)
                    {
                        long ko = s.KeyOffset(b, kvh, j);
                        double ds = p[j] * (dp[j] - rowD);
                        for (int c = 0; c < d; c++)
                        {
                            dv[ko + c] += p[j] * dO[qo + c];
                            dq[qo + c] += scale * ds * k[ko + c];
                            dk[ko + c] += scale * ds * q[qo + c];
                        }
                    }
                }
            }
        }
        return (dq, dk, dv, lse);
    }

    /// <summary>
    /// The int8 prefill algorithm: smoothing (when <paramref name="smoothKeys"/>), then q and k quantized per block of
    /// <paramref name="queryBlock"/> / <paramref name="keyBlock"/> tokens per head (1, the kernels' choice: per token;
    /// larger blocks exist to compare with SageAttention's granularity), exact int dot products, fp64 softmax and P·V.
    /// Queries and keys as in <see cref="Exact"/> (Tq ≤ Tk; the smoothing mean is over each sequence's real keys).
    /// </summary>
    public static double[] Int8Prefill(float[] q, float[] k, float[] v, AttentionShape s, int[] lengths, float scale, bool causal,
        bool smoothKeys = true, int queryBlock = 1, int keyBlock = 1)
    {
        int d = s.HeadDim, tk = s.KeyTokens, tq = s.Tokens, start = s.QueryStart;
        var o = new double[q.Length];
        var p = new double[tk];
        var qHat = new sbyte[tq * d]; var qScale = new float[tq];
        var kHat = new sbyte[tk * d]; var kScale = new float[tk];
        var rows = new float[Math.Max(tq, tk) * d];
        for (int b = 0; b < s.Batch; b++)
        {
            int pad = tk - lengths[b], firstQuery = Math.Max(0, pad - start);
            for (int kvh = 0; kvh < s.KvHeads; kvh++)
            {
                // Keys of this (sequence, head), smoothed, then quantized per block of valid tokens.
                var mean = smoothKeys ? KeyMean(k, s, b, kvh, pad, tk) : new float[d];
                for (int j = pad; j < tk; j++)
                    for (int c = 0; c < d; c++) rows[j * d + c] = k[s.KeyOffset(b, kvh, j) + c] - mean[c];
                QuantizeBlocks(rows, pad, tk, d, keyBlock, 1f, kHat, kScale);
                for (int g = 0; g < s.Group; g++)
                {
                    int h = kvh * s.Group + g;
                    for (int t = firstQuery; t < tq; t++) Row(q, s.QueryOffset(b, h, t), d).CopyTo(rows.AsSpan(t * d, d));
                    QuantizeBlocks(rows, firstQuery, tq, d, queryBlock, scale * Log2E, qHat, qScale);
                    for (int t = firstQuery; t < tq; t++)
                    {
                        var (first, last) = Visible(pad, tk, start + t, causal);
                        double max = double.NegativeInfinity;
                        for (int j = first; j <= last; j++)
                        {
                            p[j] = IntDot(qHat.AsSpan(t * d, d), kHat.AsSpan(j * d, d)) * (double)qScale[t] * kScale[j];
                            max = double.IsNaN(p[j]) || double.IsNaN(max) ? double.NaN : Math.Max(max, p[j]);
                        }
                        Accumulate(p, first, last, max, j => Row(v, s.KeyOffset(b, kvh, j), d),
                            o.AsSpan((int)s.QueryOffset(b, h, t), d), useExp2: true);
                    }
                }
            }
        }
        return o;
    }

    /// <summary>A host image of an <see cref="Int8KvCache"/> (same layouts), filled by <see cref="QuantizeIntoCache"/>.</summary>
    public sealed class CacheImage(int batch, int kvHeads, int headDim, int capacity)
    {
        public int Batch { get; } = batch;
        public int KvHeads { get; } = kvHeads;
        public int HeadDim { get; } = headDim;
        public int Capacity { get; } = capacity;
        public int Count { get; set; }
        public sbyte[] Keys { get; } = new sbyte[(long)batch * kvHeads * capacity * headDim];
        public sbyte[] Values { get; } = new sbyte[(long)batch * kvHeads * capacity * headDim];
        public float[] KeyScales { get; } = new float[batch * kvHeads * capacity];
        public int[] KeySums { get; } = new int[batch * kvHeads * capacity];
        public float[] ValueScales { get; } = new float[batch * kvHeads * capacity];
        public float[] KeyMean { get; } = new float[batch * kvHeads * headDim];
        public int[] Padding { get; } = new int[batch];

        /// <summary>Index of (b, h, j) in the per-token arrays (times D for keys and values).</summary>
        public int Row(int b, int h, int j) => (b * KvHeads + h) * Capacity + j;
    }

    /// <summary>
    /// Appends Tn = s.Tokens tokens of k and v (layout s.Layout, Hkv heads) at position <c>cache.Count</c>: on the
    /// first append, records the padding (Tn - lengths[b]) and the key mean over each sequence's valid tokens
    /// (accumulated in fp64, stored as f32); each valid key row <c>k - mean</c> and value row is quantized with
    /// <see cref="QuantizeRow"/> (key sums Σ x̂); padding positions get zeros.
    /// </summary>
    public static void QuantizeIntoCache(CacheImage cache, float[] k, float[] v, AttentionShape s, int[]? lengths)
    {
        int d = s.HeadDim, start = cache.Count;
        if (start == 0)
            for (int b = 0; b < s.Batch; b++)
            {
                cache.Padding[b] = s.Tokens - (lengths?[b] ?? s.Tokens);
                for (int h = 0; h < s.KvHeads; h++)
                    KeyMean(k, s, b, h, cache.Padding[b], s.Tokens).CopyTo(cache.KeyMean.AsSpan((b * s.KvHeads + h) * d, d));
            }
        var row = new float[d];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.KvHeads; h++)
                for (int t = 0; t < s.Tokens; t++)
                {
                    int j = start + t, r = cache.Row(b, h, j);
                    var kHat = cache.Keys.AsSpan(r * d, d);
                    var vHat = cache.Values.AsSpan(r * d, d);
                    if (j < cache.Padding[b])
                    {
                        kHat.Clear(); vHat.Clear();
                        cache.KeyScales[r] = 0; cache.KeySums[r] = 0; cache.ValueScales[r] = 0;
                        continue;
                    }
                    long src = s.KeyOffset(b, h, t);
                    for (int c = 0; c < d; c++) row[c] = k[src + c] - cache.KeyMean[(b * s.KvHeads + h) * d + c];
                    cache.KeyScales[r] = QuantizeRow(row, kHat);
                    int sum = 0;
                    foreach (sbyte x in kHat) sum += x;
                    cache.KeySums[r] = sum;
                    cache.ValueScales[r] = QuantizeRow(Row(v, src, d), vHat);
                }
        cache.Count = start + s.Tokens;
    }

    /// <summary>
    /// Decode against a cache image: query t (of s.Tokens) is position Count - Tq + t; q quantized per token and head
    /// with multiplier scale · log2 e; logits from exact int dots; fp64 softmax; values dequantized (x̂ · scale).
    /// Query positions inside the padding give 0.
    /// </summary>
    public static double[] Int8Decode(float[] q, CacheImage cache, AttentionShape s, float scale, bool causal)
    {
        int d = s.HeadDim, keys = cache.Count;
        var o = new double[q.Length];
        var p = new double[keys];
        var qHat = new sbyte[d];
        var vRow = new float[d];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.QueryHeads; h++)
            {
                int kvh = h / s.Group;
                for (int t = 0; t < s.Tokens; t++)
                {
                    int position = keys - s.Tokens + t;
                    if (position < cache.Padding[b]) continue;
                    long qo = s.QueryOffset(b, h, t);
                    float qScale = QuantizeRow(Row(q, qo, d), qHat, scale * Log2E);
                    var (first, last) = Visible(cache.Padding[b], keys, position, causal);
                    double max = double.NegativeInfinity;
                    for (int j = first; j <= last; j++)
                    {
                        int r = cache.Row(b, kvh, j);
                        p[j] = IntDot(qHat, cache.Keys.AsSpan(r * d, d)) * (double)qScale * cache.KeyScales[r];
                        max = double.IsNaN(p[j]) || double.IsNaN(max) ? double.NaN : Math.Max(max, p[j]);
                    }
                    Accumulate(p, first, last, max, j =>
                    {
                        int r = cache.Row(b, kvh, j);
                        for (int c = 0; c < d; c++) vRow[c] = cache.Values[r * d + c] * cache.ValueScales[r];
                        return vRow;
                    }, o.AsSpan((int)qo, d), useExp2: true);
                }
            }
        return o;
    }

    /// <summary>The fp32 mean (accumulated in fp64) of key rows [first, end) of (b, head).</summary>
    private static float[] KeyMean(float[] k, AttentionShape s, int b, int head, int first, int end)
    {
        int d = s.HeadDim;
        var sum = new double[d];
        for (int j = first; j < end; j++)
            for (int c = 0; c < d; c++) sum[c] += k[s.KeyOffset(b, head, j) + c];
        var mean = new float[d];
        if (end > first)
            for (int c = 0; c < d; c++) mean[c] = (float)(sum[c] / (end - first));
        return mean;
    }

    /// <summary>Quantizes rows [first, end) of [T, d] in blocks of <paramref name="block"/> tokens (aligned to first).</summary>
    private static void QuantizeBlocks(float[] rows, int first, int end, int d, int block, float multiplier, sbyte[] hat, float[] scales)
    {
        for (int b0 = first; b0 < end; b0 += block)
        {
            int b1 = Math.Min(end, b0 + block);
            float scale = QuantizeRow(rows.AsSpan(b0 * d, (b1 - b0) * d), hat.AsSpan(b0 * d, (b1 - b0) * d), multiplier);
            for (int t = b0; t < b1; t++) scales[t] = scale;
        }
    }

    private static long IntDot(ReadOnlySpan<sbyte> a, ReadOnlySpan<sbyte> b)
    {
        long dot = 0;
        for (int c = 0; c < a.Length; c++) dot += a[c] * b[c];
        return dot;
    }

    private static ReadOnlySpan<float> Row(float[] x, long offset, int d) => x.AsSpan((int)offset, d);

    /// <summary>o = Σ_j w_j v_j / Σ_j w_j with w_j = exp(p_j - max) (or exp2), over [first, last]; empty ranges give 0.</summary>
    private static void Accumulate(double[] p, int first, int last, double max, Func<int, ReadOnlySpan<float>> valueRow,
        Span<double> o, bool useExp2)
    {
        o.Clear();
        if (last < first) return;
        double sum = 0;
        for (int j = first; j <= last; j++)
        {
            double w = useExp2 ? Math.Pow(2, p[j] - max) : Math.Exp(p[j] - max);
            sum += w;
            var vr = valueRow(j);
            for (int c = 0; c < o.Length; c++) o[c] += w * vr[c];
        }
        for (int c = 0; c < o.Length; c++) o[c] /= sum;
    }
}
