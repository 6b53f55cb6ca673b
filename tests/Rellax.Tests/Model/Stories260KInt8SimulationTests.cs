using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// Where the int8-vs-fp32 logit gap of stories260K comes from. An independent fp64 host forward pass of the model
/// (plain loops over the checkpoint's tensors, HF Llama semantics) runs attention exactly or with the int8 contract
/// of <see cref="AttentionReference"/> applied to Q·Kᵀ (smoothing by the first chunk's key mean, per-token int8 rows,
/// exact integer dots, exp2 softmax) and/or to V (per-token int8 rows). With both off it must reproduce the fp32
/// session; with both on, the int8 session. That pins the int8 session's gap to fp32 on the quantization itself,
/// not on the runtime's wiring (positions, RoPE, layout, causal decoding), and splits it between Q·Kᵀ and V.
/// </summary>
[TestFixture]
public sealed class Stories260KInt8SimulationTests
{
    private const int Hidden = 64, Heads = 8, KvHeads = 4, D = 8, Inter = 172, Layers = 5, Vocab = 512;
    private const double Eps = 1e-5, Theta = 10000;

    private sealed class Weights
    {
        public required float[] Embed, FinalNorm;
        public required float[][] Q, K, V, O, Gate, Up, Down, InNorm, PostNorm;
    }

    private static Weights Load(string dir)
    {
        using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        float[][] Per(string name) => Enumerable.Range(0, Layers).Select(l => f.ReadFloat32($"model.layers.{l}.{name}")).ToArray();
        return new Weights
        {
            Embed = f.ReadFloat32("model.embed_tokens.weight"), FinalNorm = f.ReadFloat32("model.norm.weight"),
            Q = Per("self_attn.q_proj.weight"), K = Per("self_attn.k_proj.weight"), V = Per("self_attn.v_proj.weight"),
            O = Per("self_attn.o_proj.weight"), Gate = Per("mlp.gate_proj.weight"), Up = Per("mlp.up_proj.weight"),
            Down = Per("mlp.down_proj.weight"), InNorm = Per("input_layernorm.weight"), PostNorm = Per("post_attention_layernorm.weight"),
        };
    }

    /// <summary>y [rows, outDim] = x [rows, inDim] · Wᵀ, W [outDim, inDim].</summary>
    private static double[] MatMul(double[] x, int rows, float[] w, int outDim, int inDim)
    {
        var y = new double[rows * outDim];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
            {
                double s = 0;
                for (int i = 0; i < inDim; i++) s += x[r * inDim + i] * w[o * inDim + i];
                y[r * outDim + o] = s;
            }
        return y;
    }

    private static double[] RmsNorm(double[] x, int rows, float[] weight)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < Hidden; i++) ss += x[r * Hidden + i] * x[r * Hidden + i];
            double inv = 1 / Math.Sqrt(ss / Hidden + Eps);
            for (int i = 0; i < Hidden; i++) y[r * Hidden + i] = x[r * Hidden + i] * inv * weight[i];
        }
        return y;
    }

    /// <summary>HF rotate_half RoPE on [T, heads, D] in place; token t is at position t.</summary>
    private static void Rope(double[] x, int tokens, int heads)
    {
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < D / 2; i++)
                {
                    double angle = t * Math.Pow(Theta, -2.0 * i / D), c = Math.Cos(angle), s = Math.Sin(angle);
                    int o = (t * heads + h) * D;
                    double a = x[o + i], b = x[o + i + D / 2];
                    x[o + i] = a * c - b * s;
                    x[o + i + D / 2] = b * c + a * s;
                }
    }

    private static float[] Row(double[] x, int offset) => Enumerable.Range(0, D).Select(c => (float)x[offset + c]).ToArray();

    /// <summary>
    /// Causal attention of T tokens (q [T, Hq·D], k, v [T, Hkv·D]) with optional int8 Q·Kᵀ (key mean over the first
    /// <paramref name="firstChunk"/> tokens) and int8 V, following <see cref="AttentionReference.Int8Decode"/>.
    /// </summary>
    private static double[] Attention(double[] q, double[] k, double[] v, int tokens, bool int8Scores, bool int8Values, int firstChunk)
    {
        var o = new double[tokens * Heads * D];
        float scale = 1f / MathF.Sqrt(D);
        var kHat = new sbyte[tokens, KvHeads, D]; var kScale = new float[tokens, KvHeads];
        var vRows = new float[tokens, KvHeads][];
        for (int h = 0; h < KvHeads; h++)
        {
            var sum = new double[D];
            for (int t = 0; t < firstChunk; t++)
                for (int c = 0; c < D; c++) sum[c] += (float)k[(t * KvHeads + h) * D + c];
            var mean = sum.Select(s => (float)(s / firstChunk)).ToArray();
            for (int t = 0; t < tokens; t++)
            {
                var row = Row(k, (t * KvHeads + h) * D);
                for (int c = 0; c < D; c++) row[c] -= mean[c];
                var hat = new sbyte[D];
                kScale[t, h] = AttentionReference.QuantizeRow(row, hat);
                for (int c = 0; c < D; c++) kHat[t, h, c] = hat[c];
                var vr = Row(v, (t * KvHeads + h) * D);
                if (int8Values)
                {
                    float vs = AttentionReference.QuantizeRow(vr, hat);
                    for (int c = 0; c < D; c++) vr[c] = hat[c] * vs;
                }
                vRows[t, h] = vr;
            }
        }
        var p = new double[tokens];
        var qHat = new sbyte[D];
        for (int h = 0; h < Heads; h++)
        {
            int kvh = h / (Heads / KvHeads);
            for (int t = 0; t < tokens; t++)
            {
                int qo = (t * Heads + h) * D;
                float qScale = AttentionReference.QuantizeRow(Row(q, qo), qHat, scale * AttentionReference.Log2E);
                double max = double.NegativeInfinity;
                for (int j = 0; j <= t; j++)
                {
                    double dot = 0;
                    if (int8Scores)
                    {
                        long idot = 0;
                        for (int c = 0; c < D; c++) idot += qHat[c] * kHat[j, kvh, c];
                        dot = idot * (double)qScale * kScale[j, kvh] / AttentionReference.Log2E; // back to base e
                    }
                    else
                    {
                        for (int c = 0; c < D; c++) dot += q[qo + c] * k[(j * KvHeads + kvh) * D + c];
                        dot *= 1 / Math.Sqrt(D);
                    }
                    p[j] = dot;
                    max = Math.Max(max, dot);
                }
                double total = 0;
                for (int j = 0; j <= t; j++)
                {
                    double w = Math.Exp(p[j] - max);
                    total += w;
                    for (int c = 0; c < D; c++) o[qo + c] += w * vRows[j, kvh][c];
                }
                for (int c = 0; c < D; c++) o[qo + c] /= total;
            }
        }
        return o;
    }

    /// <summary>Next-token logits after <paramref name="tokens"/>, in fp64 with the chosen attention.</summary>
    private static double[] Logits(Weights w, int[] tokens, bool int8Scores, bool int8Values, int firstChunk)
    {
        int t = tokens.Length;
        var x = new double[t * Hidden];
        for (int i = 0; i < t; i++)
            for (int c = 0; c < Hidden; c++) x[i * Hidden + c] = w.Embed[tokens[i] * Hidden + c];
        for (int l = 0; l < Layers; l++)
        {
            var xn = RmsNorm(x, t, w.InNorm[l]);
            var q = MatMul(xn, t, w.Q[l], Heads * D, Hidden);
            var k = MatMul(xn, t, w.K[l], KvHeads * D, Hidden);
            var v = MatMul(xn, t, w.V[l], KvHeads * D, Hidden);
            Rope(q, t, Heads); Rope(k, t, KvHeads);
            var a = MatMul(Attention(q, k, v, t, int8Scores, int8Values, firstChunk), t, w.O[l], Hidden, Heads * D);
            for (int i = 0; i < x.Length; i++) x[i] += a[i];
            xn = RmsNorm(x, t, w.PostNorm[l]);
            var g = MatMul(xn, t, w.Gate[l], Inter, Hidden);
            var u = MatMul(xn, t, w.Up[l], Inter, Hidden);
            for (int i = 0; i < g.Length; i++) g[i] = g[i] / (1 + Math.Exp(-g[i])) * u[i];
            var m = MatMul(g, t, w.Down[l], Hidden, Inter);
            for (int i = 0; i < x.Length; i++) x[i] += m[i];
        }
        var last = RmsNorm(x[((t - 1) * Hidden)..], 1, w.FinalNorm);
        return MatMul(last, 1, w.Embed, Vocab, Hidden);
    }

    private static double MaxAbsDiff(IReadOnlyList<double> a, IReadOnlyList<float> b) =>
        Enumerable.Range(0, a.Count).Max(i => Math.Abs(a[i] - b[i]));

    private static double MaxAbsDiff(IReadOnlyList<double> a, IReadOnlyList<double> b) =>
        Enumerable.Range(0, a.Count).Max(i => Math.Abs(a[i] - b[i]));

    /// <summary>
    /// BOS + 40 documented tokens, fed in two chunks (the first of <paramref name="firstChunk"/> tokens fixes the key
    /// mean). The fp64 simulation without quantization matches the fp32 session to 1e-4 (the documented-logits
    /// tolerance); with the int8 contract it matches the int8 session to 0.01, ten times closer than int8 is to fp32 (a
    /// rare flip of one int8 rounding between fp32 and fp64 inputs moves a logit by about one quantization step, so
    /// not 1e-4). The split of the gap between Q·Kᵀ and V is printed.
    /// </summary>
    [TestCase(41)]
    [TestCase(20)]
    [TestCase(1)]
    public void Int8SessionIsTheInt8ContractAppliedToTheModel(int firstChunk)
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        var w = Load(dir);
        int[] tokens = [1, .. Stories260KTests.DocumentedIds.Take(40)];
        using var backend = new CpuBackend();
        using var model = LlamaModel.Load(dir, backend);
        Assert.That((model.Config.HiddenSize, model.Config.NumAttentionHeads, model.Config.NumKeyValueHeads, model.Config.HeadDim, model.Config.NumHiddenLayers),
            Is.EqualTo((Hidden, Heads, KvHeads, D, Layers)));
        using var fp32 = model.CreateSession();
        var sessionFp32 = fp32.Forward(tokens);
        using var int8 = model.CreateSession(attention: AttentionPrecision.Int8);
        var sessionInt8 = int8.Forward(tokens.AsSpan(0, firstChunk));
        if (firstChunk < tokens.Length) sessionInt8 = int8.Forward(tokens.AsSpan(firstChunk));

        var exact = Logits(w, tokens, false, false, firstChunk);
        var both = Logits(w, tokens, true, true, firstChunk);
        var scoresOnly = Logits(w, tokens, true, false, firstChunk);
        var valuesOnly = Logits(w, tokens, false, true, firstChunk);
        TestContext.Out.WriteLine($"first chunk {firstChunk}: max |logit - fp64 exact|: fp32 session {MaxAbsDiff(exact, sessionFp32):G3}, " +
            $"int8 session {MaxAbsDiff(exact, sessionInt8):G3}, simulated int8 Q·Kᵀ + V {MaxAbsDiff(exact, both):G3}, " +
            $"int8 Q·Kᵀ only {MaxAbsDiff(exact, scoresOnly):G3}, int8 V only {MaxAbsDiff(exact, valuesOnly):G3}; " +
            $"int8 session vs its simulation {MaxAbsDiff(both, sessionInt8):G3}");
        Assert.That(sessionFp32, Is.EqualTo(exact).Within(1e-4), "the fp64 simulation without quantization is the fp32 model");
        Assert.That(sessionInt8, Is.EqualTo(both).Within(0.01), "the int8 session is the int8 contract applied to the model");
        Assert.That(MaxAbsDiff(exact, sessionInt8), Is.GreaterThan(0.05), "the quantization gap is real, and 5x the agreement bound above");
    }
}
