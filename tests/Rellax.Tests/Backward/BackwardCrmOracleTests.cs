using NUnit.Framework;
using Rellax.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Rellax.Tests.Backward;

/// <summary>
/// <see cref="BackwardReference"/>'s CRM ops against TorchSharp autograd in float64: each forward written with torch ops,
/// <c>backward(dy)</c>, and the leaves' <c>.grad</c> compared with the reference's gradients (which round to f32 at the
/// end, so the tolerance is f32 rounding). Random data, odd shapes.
/// </summary>
[TestFixture]
public sealed class BackwardCrmOracleTests
{
    private static torch.Tensor D(float[] data, params long[] shape) =>
        torch.tensor(data.Select(v => (double)v).ToArray(), shape, dtype: float64).requires_grad_(true);

    private static torch.Tensor C(float[] data, params long[] shape) => torch.tensor(data.Select(v => (double)v).ToArray(), shape, dtype: float64);

    private static float[] G(torch.Tensor t) => t.grad!.contiguous().data<double>().Select(v => (float)v).ToArray();

    private static void Close(float[] actual, float[] expected, string what) => RandomData.AssertClose(actual, expected, 1e-6, 1e-5, what);

    [TestCase(1, 5, 3)]
    [TestCase(7, 37, 29)]
    [TestCase(33, 70, 130)]
    [TestCase(257, 19, 17)]
    public void Linear(int m, int k, int n)
    {
        using var scope = torch.NewDisposeScope();
        var (x, w, b, dy) = (RandomData.Uniform(m * k, 1), RandomData.Uniform(n * k, 2), RandomData.Uniform(n, 3), RandomData.Uniform(m * n, 4));
        var (tx, tw, tb) = (D(x, m, k), D(w, n, k), D(b, n));
        nn.functional.linear(tx, tw, tb).backward([C(dy, m, n)]);
        var (dx, dw, db) = (new float[m * k], new float[n * k], new float[n]);
        BackwardReference.LinearBackward(x, w, dy, dx, dw, db, m, k, n);
        Close(dx, G(tx), "dx");
        Close(dw, G(tw), "dw");
        Close(db, G(tb), "db");
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(257)]
    public void ReluGeluLayerNorm(int rows)
    {
        using var scope = torch.NewDisposeScope();
        const int n = 19;
        var x = RandomData.Uniform(rows * n, 5, -4, 4);
        var dy = RandomData.Uniform(rows * n, 6);
        var tx = D(x, rows, n);
        nn.functional.relu(tx).backward([C(dy, rows, n)]);
        var relu = new float[rows * n];
        BackwardReference.ReluBackward(x, dy, relu);
        Close(relu, G(tx), "relu");

        var tg = D(x, rows, n);
        nn.functional.gelu(tg).backward([C(dy, rows, n)]);   // exact (erf) GELU
        var gelu = new float[rows * n];
        BackwardReference.GeluBackward(x, dy, gelu);
        Close(gelu, G(tg), "gelu");

        var w = RandomData.Uniform(n, 7);
        var beta = RandomData.Uniform(n, 8);
        var (tl, tw, tb) = (D(x, rows, n), D(w, n), D(beta, n));
        nn.functional.layer_norm(tl, [n], tw, tb, 1e-5).backward([C(dy, rows, n)]);
        var (dx, dw, db) = (new float[rows * n], new float[n], new float[n]);
        BackwardReference.LayerNormBackward(x, w, 1e-5f, dy, dx, dw, db, n);
        Close(dx, G(tl), "layernorm dx");
        Close(dw, G(tw), "layernorm dγ");
        Close(db, G(tb), "layernorm dβ");
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(257)]
    public void EmbeddingScatterAdd(int n)
    {
        using var scope = torch.NewDisposeScope();
        const int v = 40, e = 13;
        var rows = RandomData.Ints(n, v, 9);
        var dy = RandomData.Uniform(n * e, 10);
        var table = D(RandomData.Uniform(v * e, 11), v, e);
        table.index_select(0, torch.tensor(rows.Select(r => (long)r).ToArray(), dtype: int64)).backward([C(dy, n, e)]);
        var dt = new float[v * e];
        BackwardReference.EmbeddingBackward(rows, dy, dt, e);
        Close(dt, G(table), "dtable");
    }

    /// <summary>
    /// DIN's target attention as the reference writes it, on padded [B, L] histories with a 0/1 mask: the first attention
    /// layer over [t, h, t − h, t ⊙ h], ReLU, the score layer, scores × mask, u = Σ s_j h_j. Torch differentiates that
    /// literal form; the reference ops differentiate the factored form (TargetInteraction + the factored layer's Linear
    /// backwards + WeightedSum), whose gradients are mapped back to the [A, 4E] weight as the trainer does.
    /// </summary>
    [TestCase(1, 1)]
    [TestCase(7, 5)]
    [TestCase(33, 9)]
    public void TargetAttentionAndWeightedSum(int batch, int maxLen)
    {
        using var scope = torch.NewDisposeScope();
        const int e = 11, a = 7;
        var lengths = RandomData.Ints(batch, maxLen + 1, 12);
        lengths[0] = maxLen;                       // at least one full row, so L = maxLen
        var starts = new int[batch + 1];
        for (int b = 0; b < batch; b++) starts[b + 1] = starts[b] + lengths[b];
        int p = starts[^1];
        var t = RandomData.Uniform(batch * e, 13);
        var hRagged = RandomData.Uniform(p * e, 14);
        var w0 = RandomData.Uniform(a * 4 * e, 15);
        var b0 = RandomData.Uniform(a, 16);
        var ws = RandomData.Uniform(a, 17);
        var du = RandomData.Uniform(batch * e, 18);

        // Torch: padded [B, L, E] with the mask; padding rows hold garbage that the mask must cancel.
        var padded = RandomData.Uniform(batch * maxLen * e, 19);
        var mask = new float[batch * maxLen];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < lengths[b]; j++)
            {
                Array.Copy(hRagged, (starts[b] + j) * e, padded, (b * maxLen + j) * e, e);
                mask[b * maxLen + j] = 1;
            }
        var (tt, th, tw0, tb0, tws) = (D(t, batch, e), D(padded, batch, maxLen, e), D(w0, a, 4 * e), D(b0, a), D(ws, 1, a));
        var tx = tt.unsqueeze(1).expand(-1, maxLen, -1);
        var input = torch.cat([tx, th, tx - th, tx * th], -1);
        var act = nn.functional.relu(nn.functional.linear(input, tw0, tb0));
        var score = nn.functional.linear(act, tws).squeeze(-1) * C(mask, batch, maxLen);
        var u = (score.unsqueeze(-1) * th).sum(1);
        u.backward([C(du, batch, e)]);

        // Reference ops, factored.
        var wt = new float[a * e];
        var whp = new float[a * 2 * e];
        Rellax.Rec.DinRunner.SplitFirstAttentionLayer(w0, a, e, wt, whp);
        var zf = new float[p * 2 * e];
        var pre = new float[p * a];
        for (int b = 0; b < batch; b++)
            for (int j = starts[b]; j < starts[b + 1]; j++)
            {
                for (int c = 0; c < e; c++) { zf[j * 2 * e + c] = hRagged[j * e + c]; zf[j * 2 * e + e + c] = t[b * e + c] * hRagged[j * e + c]; }
                for (int o = 0; o < a; o++)
                {
                    double s = b0[o];
                    for (int c = 0; c < e; c++) s += (double)wt[o * e + c] * t[b * e + c];
                    for (int c = 0; c < 2 * e; c++) s += (double)whp[o * 2 * e + c] * zf[j * 2 * e + c];
                    pre[j * a + o] = (float)Math.Max(s, 0);
                }
            }
        var scores = new float[p];
        for (int j = 0; j < p; j++) { double s = 0; for (int o = 0; o < a; o++) s += (double)ws[o] * pre[j * a + o]; scores[j] = (float)s; }
        var dscores = new float[p];
        var dh = new float[p * e];
        BackwardReference.WeightedSumBackward(scores, hRagged, starts, du, dscores, dh, e);
        var dact = new float[p * a];
        var dws = new float[a];
        BackwardReference.LinearBackward(pre, ws, dscores, dact, dws, default, p, a, 1);
        BackwardReference.ReluBackward(pre, dact, dact);
        var dz = new float[p * 2 * e];
        var dwhp = new float[a * 2 * e];
        BackwardReference.LinearBackward(zf, whp, dact, dz, dwhp, default, p, 2 * e, a);
        var dc = new float[batch * a];
        for (int b = 0; b < batch; b++)
            for (int j = starts[b]; j < starts[b + 1]; j++)
                for (int o = 0; o < a; o++) dc[b * a + o] += dact[j * a + o];
        var dt = new float[batch * e];
        var dwt = new float[a * e];
        var db0 = new float[a];
        BackwardReference.LinearBackward(t, wt, dc, dt, dwt, db0, batch, e, a);
        BackwardReference.TargetInteractionBackward(t, hRagged, starts, dz, dt, dh, e);
        var dw0 = new float[a * 4 * e];
        for (int o = 0; o < a; o++)
            for (int c = 0; c < e; c++)
            {
                dw0[o * 4 * e + c] = dwt[o * e + c];
                dw0[o * 4 * e + e + c] = dwhp[o * 2 * e + c];
                dw0[o * 4 * e + 2 * e + c] = dwt[o * e + c] - dwhp[o * 2 * e + c];
                dw0[o * 4 * e + 3 * e + c] = dwhp[o * 2 * e + e + c];
            }

        Close(dt, G(tt), "dt");
        Close(dw0, G(tw0), "dW0 [A, 4E]");
        Close(db0, G(tb0), "db0");
        Close(dws, G(tws), "dw_s");
        var thGrad = G(th);
        var dhTorch = new float[p * e];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < lengths[b]; j++) Array.Copy(thGrad, (b * maxLen + j) * e, dhTorch, (starts[b] + j) * e, e);
        Close(dh, dhTorch, "dh");
    }

    [Test]
    public void SigmoidBce([Values(1, 7, 33, 257)] int n)
    {
        using var scope = torch.NewDisposeScope();
        var z = RandomData.Uniform(n, 20, -30, 30);
        var y = RandomData.Ints(n, 2, 21).Select(v => (float)v).ToArray();
        var tz = D(z, n);
        var loss = nn.functional.binary_cross_entropy_with_logits(tz, C(y, n), reduction: nn.Reduction.Mean);
        loss.backward();
        var d = new float[n];
        double sum = BackwardReference.SigmoidBce(z, y, 1f / n, d);
        Assert.That(sum / n, Is.EqualTo(loss.item<double>()).Within(1e-9).Percent);
        Close(d, G(tz), "dlogits");
    }
}
