namespace Rellax.Kernels;

// Double-precision references of the frozen Llama layer's dX-only backward ops (BackwardOps.Llama.cs).
public static partial class BackwardReference
{
    /// <summary>
    /// RMSNorm backward with the weight frozen, per row of n: with r = √(mean(x²) + eps),
    /// dx_i = w_i dy_i / r − x_i · Σ_j (w_j dy_j x_j) / (n r³). x, dy, dx [rows, n]; weight [n].
    /// </summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, ReadOnlySpan<float> dy, Span<float> dx, int n)
    {
        int rows = n == 0 ? 0 : x.Length / n;
        for (int row = 0; row < rows; row++)
        {
            int o = row * n;
            double sumSq = 0, dot = 0;
            for (int i = 0; i < n; i++)
            {
                sumSq += (double)x[o + i] * x[o + i];
                dot += (double)weight[i] * dy[o + i] * x[o + i];
            }
            double r = Math.Sqrt(sumSq / n + eps);
            for (int i = 0; i < n; i++) dx[o + i] = (float)((double)weight[i] * dy[o + i] / r - x[o + i] * dot / (n * r * r * r));
        }
    }

    /// <summary>
    /// Input gradient of frozen linear layers, accumulated in double: dx[t, i] = Σ_m Σ_o dY_m[t, o] · W_m[o, i].
    /// dY_m [T, d_out_m] and W_m [d_out_m, d_in] as f32 (callers widen f16/bf16 weights exactly); dx [T, d_in].
    /// </summary>
    public static void LinearInput(IReadOnlyList<(float[] DY, float[] W, int DOut)> terms, Span<float> dx, int dIn)
    {
        int rows = dIn == 0 ? 0 : dx.Length / dIn;
        var acc = new double[dIn];
        for (int t = 0; t < rows; t++)
        {
            Array.Clear(acc);
            foreach (var (dy, w, dOut) in terms)
                for (int o = 0; o < dOut; o++)
                {
                    double g = dy[t * dOut + o];
                    if (g == 0) continue;
                    for (int i = 0; i < dIn; i++) acc[i] += g * w[o * dIn + i];
                }
            for (int i = 0; i < dIn; i++) dx[t * dIn + i] = (float)acc[i];
        }
    }

    /// <summary>
    /// Input gradient of frozen int8 linear layers, in double: dx[t, i] = Σ_m Σ_o dY_m[t, o] · Q_m[o, i] · scale_m[o], the
    /// gradient of the fp32 layers with the dequantized weights (straight-through; see <see cref="BackwardOps.LinearInput"/>).
    /// Q_m row-major [d_out_m, d_in] with its row scales [d_out_m]; dY_m [T, d_out_m]; dx [T, d_in].
    /// </summary>
    public static void LinearInputInt8(IReadOnlyList<(float[] DY, sbyte[] Q, float[] Scales, int DOut)> terms, Span<float> dx, int dIn)
    {
        int rows = dIn == 0 ? 0 : dx.Length / dIn;
        var acc = new double[dIn];
        for (int t = 0; t < rows; t++)
        {
            Array.Clear(acc);
            foreach (var (dy, q, scales, dOut) in terms)
                for (int o = 0; o < dOut; o++)
                {
                    double g = dy[t * dOut + o] * (double)scales[o];
                    for (int i = 0; i < dIn; i++) acc[i] += g * q[o * dIn + i];
                }
            for (int i = 0; i < dIn; i++) dx[t * dIn + i] = (float)acc[i];
        }
    }

    /// <summary>
    /// RoPE backward: the rotation by the opposite angle, dx1 = dy1 cos + dy2 sin, dx2 = dy2 cos − dy1 sin, for each pair
    /// (i, i + d/2). dy, dx [T, H, d]; positions [T]; cos, sin [P, d/2].
    /// </summary>
    public static void Rope(ReadOnlySpan<float> dy, ReadOnlySpan<int> positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin,
        Span<float> dx, int heads, int d)
    {
        int half = d / 2;
        for (int t = 0; t < positions.Length; t++)
            for (int h = 0; h < heads; h++)
            {
                int o = (t * heads + h) * d, row = positions[t] * half;
                for (int i = 0; i < half; i++)
                {
                    double c = cos[row + i], s = sin[row + i], a = dy[o + i], b = dy[o + half + i];
                    dx[o + i] = (float)(a * c + b * s);
                    dx[o + half + i] = (float)(b * c - a * s);
                }
            }
    }

    /// <summary>SwiGLU backward: dUp = dy·silu(g), dGate = dy·u·σ(g)·(1 + g(1 − σ(g))), elementwise in double.</summary>
    public static void SwiGlu(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, ReadOnlySpan<float> dy, Span<float> dGate, Span<float> dUp)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            double g = gate[i], sig = 1 / (1 + Math.Exp(-g));
            dUp[i] = (float)(dy[i] * g * sig);
            dGate[i] = (float)(dy[i] * (double)up[i] * sig * (1 + g * (1 - sig)));
        }
    }
}
