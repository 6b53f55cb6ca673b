using NUnit.Framework;
using Rellax.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Rellax.Tests.Cflora;

/// <summary>
/// The claim that vanilla LoRA, iLoRA and RecLoRA are "degraded CFLoRA", checked by code on every backend:
/// each builder of <see cref="CfloraInteractions"/> plus the fused kernel must equal the method's own formula
/// computed directly (double precision). CFLoRA itself (generator + kernel) is checked against the unfused
/// TorchSharp formula <c>x W0ᵀ + s·((x Aᵀ) bmm G) Bᵀ</c>.
/// Tolerance: 2e-5·√d_in absolute + 1e-5 relative (inputs in [-1, 1], fp32 accumulation over d_in + r terms).
/// </summary>
[TestFixtureSource(typeof(TestBackends), nameof(TestBackends.All))]
public sealed class CfloraFamilyTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;

    [OneTimeSetUp] public void CreateBackend() => _backend = factory.Create();
    [OneTimeTearDown] public void DisposeBackend() => _backend.Dispose();

    // The emulator runs GPU kernels on OS threads: keep its problems small.
    private int DIn => factory.Emulated ? 37 : 301;
    private int DOut => factory.Emulated ? 29 : 259;

    private static double Tolerance(int din) => 2e-5 * Math.Sqrt(din);

    private float[] RunFused(float[] x, float[] w0, float[] a, float[] b, float[] g, CfloraBatch batch, float scale, int r)
    {
        int t = batch.Rows;
        var y = _backend.Zeros(t, DOut);
        _backend.Cflora.Forward(_backend.Tensor(x, t, DIn),
            new CfloraModule(_backend.Tensor(w0, DOut, DIn), null, _backend.Tensor(a, r, DIn), _backend.Tensor(b, DOut, r),
                _backend.Tensor(g, batch.Samples, r, r), scale, y), batch);
        return y.ToArray<float>();
    }

    /// <summary>y[t] = W0 x[t] + adapter(t, o), with the adapter term written straight from the method's definition.</summary>
    private float[] Direct(float[] x, float[] w0, int t, Func<int, int, double> adapterOfRowAndOut)
    {
        var y = new float[t * DOut];
        for (int row = 0; row < t; row++)
        {
            for (int o = 0; o < DOut; o++)
            {
                double acc = 0;
                for (int c = 0; c < DIn; c++) acc += (double)w0[o * DIn + c] * x[row * DIn + c];
                y[row * DOut + o] = (float)(acc + adapterOfRowAndOut(row, o));
            }
        }
        return y;
    }

    private static double Dot(float[] m, int rowStart, float[] x, int xStart, int n)
    {
        double acc = 0;
        for (int c = 0; c < n; c++) acc += (double)m[rowStart + c] * x[xStart + c];
        return acc;
    }

    [Test]
    public void IdentityIsVanillaLora([Values(1, 8)] int r)
    {
        int t = 7;
        using var batch = CfloraBatch.FromLengths(3, 4);
        float[] x = RandomData.Uniform(t * DIn, 1), w0 = RandomData.Uniform(DOut * DIn, 2);
        float[] a = RandomData.Uniform(r * DIn, 3), b = RandomData.Uniform(DOut * r, 4);
        float scale = 16f / r;
        var actual = RunFused(x, w0, a, b, CfloraInteractions.Identity(batch.Samples, r), batch, scale, r);
        var expected = Direct(x, w0, t, (row, o) =>
        {
            double acc = 0;
            for (int i = 0; i < r; i++) acc += b[o * r + i] * Dot(a, i * DIn, x, row * DIn, DIn);
            return scale * acc;
        });
        RandomData.AssertClose(actual, expected, Tolerance(DIn), 1e-5, "LoRA: W0 x + s B A x");
    }

    [Test]
    public void BlockDiagonalGateIsILora()
    {
        const int experts = 4, expertRank = 2, r = experts * expertRank, t = 9;
        int[] sampleOfRow = [2, 0, 1, 2, 2, 0, 1, 1, 0];
        using var batch = CfloraBatch.FromRowIndex(sampleOfRow, 3);
        float[] x = RandomData.Uniform(t * DIn, 5), w0 = RandomData.Uniform(DOut * DIn, 6);
        float[] a = RandomData.Uniform(r * DIn, 7), b = RandomData.Uniform(DOut * r, 8);
        float[] gate = RandomData.Uniform(batch.Samples * experts, 9, 0, 1);
        const float scale = 2f;
        var actual = RunFused(x, w0, a, b, CfloraInteractions.ILora(gate, experts, r), batch, scale, r);
        // iLoRA's own formula: Σ_k w_k B_k A_k x, expert k owning rank components [k·2, k·2 + 2).
        var expected = Direct(x, w0, t, (row, o) =>
        {
            double acc = 0;
            for (int k = 0; k < experts; k++)
            {
                double expert = 0;
                for (int i = k * expertRank; i < (k + 1) * expertRank; i++) expert += b[o * r + i] * Dot(a, i * DIn, x, row * DIn, DIn);
                acc += gate[sampleOfRow[row] * experts + k] * expert;
            }
            return scale * acc;
        });
        RandomData.AssertClose(actual, expected, Tolerance(DIn), 1e-5, "iLoRA: Σ w_k B_k A_k x");
    }

    [Test]
    public void KroneckerMixIsRecLora()
    {
        const int metas = 3, rankPer = 4, r = metas * rankPer, t = 6;
        using var batch = CfloraBatch.FromLengths(1, 2, 3);
        int[] sampleOfRow = batch.SampleOfRow.ToArray();
        float[] x = RandomData.Uniform(t * DIn, 10), w0 = RandomData.Uniform(DOut * DIn, 11);
        float[] a = RandomData.Uniform(r * DIn, 12), b = RandomData.Uniform(DOut * r, 13);
        float[] mix = RandomData.Uniform(batch.Samples * metas, 14, 0, 1);
        const float scale = 0.5f;
        var actual = RunFused(x, w0, a, b, CfloraInteractions.RecLora(mix, metas, rankPer), batch, scale, r);
        // RecLoRA's own formula: (Σ_k w_k B_k)(Σ_l w_l A_l) x with rank-4 meta-LoRAs.
        var expected = Direct(x, w0, t, (row, o) =>
        {
            int s = sampleOfRow[row];
            double acc = 0;
            for (int i = 0; i < rankPer; i++)
            {
                double mixedB = 0, mixedAx = 0;
                for (int k = 0; k < metas; k++)
                {
                    mixedB += mix[s * metas + k] * b[o * r + k * rankPer + i];
                    mixedAx += mix[s * metas + k] * Dot(a, (k * rankPer + i) * DIn, x, row * DIn, DIn);
                }
                acc += mixedB * mixedAx;
            }
            return scale * acc;
        });
        RandomData.AssertClose(actual, expected, Tolerance(DIn), 1e-5, "RecLoRA: (Σ w B)(Σ w A) x");
    }

    [TestCase(1, 5, 1)]
    [TestCase(8, 17, 4)]
    [TestCase(16, 13, 13)]
    [TestCase(64, 3, 2)]
    public void GeneratedCfloraMatchesUnfusedTorchSharp(int r, int t, int samples)
    {
        if (factory.Emulated && r > 16) Assert.Ignore("r = 64 is exercised on the native backends; the emulator is too slow for it");
        const int dh = 24;
        var lengths = Enumerable.Range(0, samples).Select(s => t / samples + (s < t % samples ? 1 : 0)).ToArray();
        using var batch = CfloraBatch.FromLengths(lengths);
        float[] h = RandomData.Uniform(samples * dh, 20, -2, 2), lnW = RandomData.Uniform(dh, 21, 0.5f, 1.5f), lnB = RandomData.Uniform(dh, 22, -0.1f, 0.1f);
        float[] w1 = RandomData.Uniform(2 * r * r * dh, 23, -0.3f, 0.3f), b1 = RandomData.Uniform(2 * r * r, 24, -0.1f, 0.1f);
        float[] w2 = RandomData.Uniform(r * r * 2 * r * r, 25, -0.3f / r, 0.3f / r), b2 = RandomData.Uniform(r * r, 26, -0.1f, 0.1f);
        float[] x = RandomData.Uniform(t * DIn, 27), w0 = RandomData.Uniform(DOut * DIn, 28);
        float[] a = RandomData.Uniform(r * DIn, 29), b = RandomData.Uniform(DOut * r, 30);
        float scale = 16f / r;

        var g = _backend.Zeros(samples, r, r);
        _backend.Cflora.Generate(_backend.Tensor(h, samples, dh), _backend.Tensor(lnW, dh), _backend.Tensor(lnB, dh), 1e-5f,
            _backend.Tensor(w1, 2 * r * r, dh), _backend.Tensor(b1, 2 * r * r), _backend.Tensor(w2, r * r, 2 * r * r), _backend.Tensor(b2, r * r), g);
        var gHost = g.ToArray<float>();
        var gExpected = new float[gHost.Length];
        CfloraReference.Generate(h, lnW, lnB, 1e-5f, w1, b1, w2, b2, gExpected, dh, r);
        RandomData.AssertClose(gHost, gExpected, 1e-5, 1e-4, "generator vs CfloraReference.Generate");

        var actual = RunFused(x, w0, a, b, gHost, batch, scale, r);
        RandomData.AssertClose(actual, TorchUnfused(x, w0, a, b, gHost, batch.SampleOfRow.ToArray(), scale, t, r), Tolerance(DIn), 1e-5,
            "CFLoRA vs TorchSharp x W0ᵀ + s((x Aᵀ) bmm G) Bᵀ");
    }

    private float[] TorchUnfused(float[] x, float[] w0, float[] a, float[] b, float[] g, int[] sampleOfRow, float scale, int t, int r)
    {
        using var scope = torch.NewDisposeScope();
        var X = torch.tensor(x).reshape(t, DIn).to_type(ScalarType.Float64);
        var W0 = torch.tensor(w0).reshape(DOut, DIn).to_type(ScalarType.Float64);
        var A = torch.tensor(a).reshape(r, DIn).to_type(ScalarType.Float64);
        var B = torch.tensor(b).reshape(DOut, r).to_type(ScalarType.Float64);
        var G = torch.tensor(g).reshape(-1, r, r).to_type(ScalarType.Float64);
        var perRowG = G.index_select(0, torch.tensor(sampleOfRow.Select(i => (long)i).ToArray()));        // [T, r, r]
        var mixed = torch.bmm(X.mm(A.t()).unsqueeze(1), perRowG).squeeze(1);                               // [T, r]
        var y = X.mm(W0.t()) + scale * mixed.mm(B.t());
        return y.to_type(ScalarType.Float32).data<float>().ToArray();
    }
}
