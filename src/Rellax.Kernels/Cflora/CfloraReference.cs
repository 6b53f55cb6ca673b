namespace Rellax.Kernels;

/// <summary>
/// Plain scalar CFLoRA, accumulating in double: the ground truth the fused kernels are tested against.
/// Inputs are f32 spans (callers widen f16/bf16 weights first); shapes as in <see cref="CfloraLinear"/>.
/// </summary>
public static class CfloraReference
{
    /// <summary>
    /// y[t] = w0 x[t] (+ bias) + scale · b (G[s]ᵀ (a x[t])) with s = sampleOfRow[t].
    /// x [T, d_in], w0 [d_out, d_in], bias [d_out] or empty, a [r, d_in], b [d_out, r], g [S, r, r], y [T, d_out].
    /// </summary>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w0, ReadOnlySpan<float> bias,
        ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> g, ReadOnlySpan<int> sampleOfRow,
        float scale, Span<float> y, int din, int dout, int r)
    {
        int rows = sampleOfRow.Length;
        var u = new double[r];
        var v = new double[r];
        for (int t = 0; t < rows; t++)
        {
            var xt = x.Slice(t * din, din);
            for (int i = 0; i < r; i++)
            {
                double acc = 0;
                for (int c = 0; c < din; c++) acc += (double)a[i * din + c] * xt[c];
                u[i] = acc;
            }
            var gs = g.Slice(sampleOfRow[t] * r * r, r * r);
            for (int j = 0; j < r; j++)
            {
                double acc = 0;
                for (int i = 0; i < r; i++) acc += u[i] * gs[i * r + j];
                v[j] = acc;
            }
            for (int o = 0; o < dout; o++)
            {
                double baseAcc = bias.IsEmpty ? 0 : bias[o];
                for (int c = 0; c < din; c++) baseAcc += (double)w0[o * din + c] * xt[c];
                double adapter = 0;
                for (int j = 0; j < r; j++) adapter += (double)b[o * r + j] * v[j];
                y[t * dout + o] = (float)(baseAcc + scale * adapter);
            }
        }
    }

    /// <summary>
    /// The backward of <see cref="Forward"/> for one module, straight from the chain rule in double: with
    /// u[t] = a x[t], v[t] = scale · G_sᵀ u[t], z[t] = bᵀ dy[t], du[t] = scale · G_s z[t],
    /// dx[t] = w0ᵀ dy[t] + aᵀ du[t], da = Σ_t du[t] ⊗ x[t], db = Σ_t dy[t] ⊗ v[t], dg_s = scale · Σ_{t of s} u[t] ⊗ z[t].
    /// x [T, d_in], w0 [d_out, d_in], a [r, d_in], b [d_out, r], g [S, r, r] or empty for the identity, dy [T, d_out];
    /// outputs (each may be empty to skip it) dx [T, d_in], da [r, d_in], db [d_out, r], dg [S, r, r], all overwritten.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> x, ReadOnlySpan<float> w0, ReadOnlySpan<float> a, ReadOnlySpan<float> b,
        ReadOnlySpan<float> g, ReadOnlySpan<int> sampleOfRow, float scale, ReadOnlySpan<float> dy,
        Span<float> dx, Span<float> da, Span<float> db, Span<float> dg, int din, int dout, int r, int samples)
    {
        int rows = sampleOfRow.Length;
        bool identity = g.IsEmpty;
        var dxAcc = new double[dx.IsEmpty ? 0 : rows * din];
        var daAcc = new double[r * din];
        var dbAcc = new double[dout * r];
        var dgAcc = new double[samples * r * r];
        var u = new double[r];
        var z = new double[r];
        var v = new double[r];
        var du = new double[r];
        for (int t = 0; t < rows; t++)
        {
            int s = sampleOfRow[t];
            var xt = x.Slice(t * din, din);
            var dyt = dy.Slice(t * dout, dout);
            for (int i = 0; i < r; i++)
            {
                double ua = 0, za = 0;
                for (int c = 0; c < din; c++) ua += (double)a[i * din + c] * xt[c];
                for (int o = 0; o < dout; o++) za += (double)b[o * r + i] * dyt[o];
                u[i] = ua;
                z[i] = za;
            }
            for (int i = 0; i < r; i++)
            {
                double vAcc = 0, duAcc = 0;
                for (int j = 0; j < r; j++)
                {
                    double gji = identity ? (i == j ? 1 : 0) : g[(s * r + j) * r + i]; // G[s][j][i]
                    double gij = identity ? (i == j ? 1 : 0) : g[(s * r + i) * r + j]; // G[s][i][j]
                    vAcc += u[j] * gji;
                    duAcc += gij * z[j];
                }
                v[i] = scale * vAcc;
                du[i] = scale * duAcc;
            }
            if (!identity)
                for (int i = 0; i < r; i++)
                    for (int j = 0; j < r; j++) dgAcc[(s * r + i) * r + j] += scale * u[i] * z[j];
            for (int i = 0; i < r; i++)
                for (int c = 0; c < din; c++) daAcc[i * din + c] += du[i] * xt[c];
            for (int o = 0; o < dout; o++)
                for (int j = 0; j < r; j++) dbAcc[o * r + j] += dyt[o] * v[j];
            if (!dx.IsEmpty)
                for (int c = 0; c < din; c++)
                {
                    double acc = 0;
                    for (int o = 0; o < dout; o++) acc += (double)w0[o * din + c] * dyt[o];
                    for (int i = 0; i < r; i++) acc += (double)a[i * din + c] * du[i];
                    dxAcc[t * din + c] = acc;
                }
        }
        for (int i = 0; i < dx.Length; i++) dx[i] = (float)dxAcc[i];
        for (int i = 0; i < da.Length; i++) da[i] = (float)daAcc[i];
        for (int i = 0; i < db.Length; i++) db[i] = (float)dbAcc[i];
        for (int i = 0; i < dg.Length; i++) dg[i] = (float)dgAcc[i];
    }

    /// <summary>
    /// The generator: g[s] = w2 · GELU(w1 · LayerNorm(h[s]) + b1) + b2, read row-major as r × r.
    /// h [S, d_h], lnWeight/lnBias [d_h], w1 [2r², d_h], b1 [2r²], w2 [r², 2r²], b2 [r²], g [S, r·r].
    /// </summary>
    public static void Generate(ReadOnlySpan<float> h, ReadOnlySpan<float> lnWeight, ReadOnlySpan<float> lnBias, float lnEps,
        ReadOnlySpan<float> w1, ReadOnlySpan<float> b1, ReadOnlySpan<float> w2, ReadOnlySpan<float> b2, Span<float> g, int dh, int r)
    {
        int samples = h.Length / dh, r2 = r * r, hidden = 2 * r2;
        var normed = new float[dh];
        var mid = new double[hidden];
        for (int s = 0; s < samples; s++)
        {
            PrimitivesReference.LayerNorm(h.Slice(s * dh, dh), lnWeight, lnBias, lnEps, normed, dh);
            for (int k = 0; k < hidden; k++)
            {
                double acc = b1[k];
                for (int c = 0; c < dh; c++) acc += (double)w1[k * dh + c] * normed[c];
                mid[k] = 0.5 * acc * (1 + PrimitivesReference.Erf(acc / Math.Sqrt(2)));
            }
            for (int o = 0; o < r2; o++)
            {
                double acc = b2[o];
                for (int k = 0; k < hidden; k++) acc += w2[o * hidden + k] * mid[k];
                g[s * r2 + o] = (float)acc;
            }
        }
    }
}
