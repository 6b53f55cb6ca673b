namespace Rellax.Kernels;

// Double-precision references of the CRM / adapter-head backward ops (BackwardOps.Crm.cs): plain loops, one formula each.
public static partial class BackwardReference
{
    /// <summary>dx[M,K] = dy[M,N]·w[N,K], dw[N,K] = dyᵀ·x, db[N] = Σ_rows dy (each skipped when its span is empty).</summary>
    public static void LinearBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> dy,
        Span<float> dx, Span<float> dw, Span<float> db, int m, int k, int n)
    {
        if (!dx.IsEmpty)
            for (int i = 0; i < m; i++)
                for (int c = 0; c < k; c++)
                {
                    double s = 0;
                    for (int j = 0; j < n; j++) s += (double)dy[i * n + j] * w[j * k + c];
                    dx[i * k + c] = (float)s;
                }
        if (!dw.IsEmpty)
            for (int j = 0; j < n; j++)
                for (int c = 0; c < k; c++)
                {
                    double s = 0;
                    for (int i = 0; i < m; i++) s += (double)dy[i * n + j] * x[i * k + c];
                    dw[j * k + c] = (float)s;
                }
        if (!db.IsEmpty)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int i = 0; i < m; i++) s += dy[i * n + j];
                db[j] = (float)s;
            }
    }

    /// <summary>dx = dy where y &gt; 0, else 0.</summary>
    public static void ReluBackward(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> dx)
    {
        for (int i = 0; i < y.Length; i++) dx[i] = y[i] > 0 ? dy[i] : 0f;
    }

    /// <summary>dx = dy · (Φ(x) + x φ(x)), exact GELU.</summary>
    public static void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        for (int i = 0; i < x.Length; i++)
        {
            double v = x[i];
            double cdf = 0.5 * (1 + PrimitivesReference.Erf(v / Math.Sqrt(2)));
            double pdf = Math.Exp(-0.5 * v * v) / Math.Sqrt(2 * Math.PI);
            dx[i] = (float)(dy[i] * (cdf + v * pdf));
        }
    }

    /// <summary>LayerNorm backward over rows of length n (biased variance): dx, dweight = Σ dy·x̂, dbias = Σ dy.</summary>
    public static void LayerNormBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, ReadOnlySpan<float> dy,
        Span<float> dx, Span<float> dweight, Span<float> dbias, int n)
    {
        var gw = new double[n];
        var gb = new double[n];
        var xhat = new double[n];
        var g = new double[n];
        for (int r = 0; r < x.Length / n; r++)
        {
            double mean = 0, var = 0;
            for (int i = 0; i < n; i++) mean += x[r * n + i];
            mean /= n;
            for (int i = 0; i < n; i++) { double d = x[r * n + i] - mean; var += d * d; }
            double inv = 1.0 / Math.Sqrt(var / n + eps);
            double mg = 0, mgx = 0;
            for (int i = 0; i < n; i++)
            {
                xhat[i] = (x[r * n + i] - mean) * inv;
                g[i] = (double)dy[r * n + i] * weight[i];
                gw[i] += dy[r * n + i] * xhat[i];
                gb[i] += dy[r * n + i];
                mg += g[i];
                mgx += g[i] * xhat[i];
            }
            mg /= n;
            mgx /= n;
            for (int i = 0; i < n; i++) dx[r * n + i] = (float)((g[i] - mg - xhat[i] * mgx) * inv);
        }
        for (int i = 0; i < n; i++) { dweight[i] = (float)gw[i]; dbias[i] = (float)gb[i]; }
    }

    /// <summary>dtable[rows[i]] += dy[i] (rows of width e).</summary>
    public static void EmbeddingBackward(ReadOnlySpan<int> rows, ReadOnlySpan<float> dy, Span<float> dtable, int e)
    {
        for (int i = 0; i < rows.Length; i++)
            for (int c = 0; c < e; c++) dtable[rows[i] * e + c] = (float)((double)dtable[rows[i] * e + c] + dy[i * e + c]);
    }

    /// <summary>dhist_j += dz_j[:E] + t_b ⊙ dz_j[E:], dtarget_b += Σ_j h_j ⊙ dz_j[E:] (see
    /// <see cref="BackwardOps.TargetInteractionBackward"/>).</summary>
    public static void TargetInteractionBackward(ReadOnlySpan<float> target, ReadOnlySpan<float> hist, ReadOnlySpan<int> starts,
        ReadOnlySpan<float> dz, Span<float> dtarget, Span<float> dhist, int e)
    {
        for (int b = 0; b + 1 < starts.Length; b++)
            for (int c = 0; c < e; c++)
            {
                double st = dtarget[b * e + c];
                for (int j = starts[b]; j < starts[b + 1]; j++)
                {
                    double dp = dz[j * 2 * e + e + c];
                    dhist[j * e + c] = (float)(dhist[j * e + c] + (double)dz[j * 2 * e + c] + target[b * e + c] * dp);
                    st += hist[j * e + c] * dp;
                }
                dtarget[b * e + c] = (float)st;
            }
    }

    /// <summary>dscores_j = du_b · h_j, dhist_j += s_j du_b.</summary>
    public static void WeightedSumBackward(ReadOnlySpan<float> scores, ReadOnlySpan<float> hist, ReadOnlySpan<int> starts,
        ReadOnlySpan<float> du, Span<float> dscores, Span<float> dhist, int e)
    {
        for (int b = 0; b + 1 < starts.Length; b++)
            for (int j = starts[b]; j < starts[b + 1]; j++)
            {
                double s = 0;
                for (int c = 0; c < e; c++)
                {
                    s += (double)du[b * e + c] * hist[j * e + c];
                    dhist[j * e + c] = (float)(dhist[j * e + c] + (double)scores[j] * du[b * e + c]);
                }
                dscores[j] = (float)s;
            }
    }

    /// <summary>Σ ℓ with ℓ = max(z,0) − z y + log(1 + e^(−|z|)); dlogits = scale (σ(z) − y).</summary>
    public static double SigmoidBce(ReadOnlySpan<float> logits, ReadOnlySpan<float> labels, float scale, Span<float> dlogits)
    {
        double sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            double z = logits[i], y = labels[i];
            sum += Math.Max(z, 0) - z * y + Math.Log(1 + Math.Exp(-Math.Abs(z)));
            double p = z >= 0 ? 1 / (1 + Math.Exp(-z)) : Math.Exp(z) / (1 + Math.Exp(z));
            dlogits[i] = (float)(scale * (p - y));
        }
        return sum;
    }
}
