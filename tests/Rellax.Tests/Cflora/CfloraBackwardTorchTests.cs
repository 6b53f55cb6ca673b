using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;
using static TorchSharp.torch;
using TTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Cflora;

/// <summary>
/// The CFLoRA backward against TorchSharp autograd in float64: the forward <c>y = x W0ᵀ (+ bias) + s·((x Aᵀ) bmm G_row) Bᵀ</c>
/// written with plain torch ops, <c>loss = Σ y ⊙ dY</c>, and <c>loss.backward()</c> gives x.grad, A.grad, B.grad, G.grad.
/// Both <see cref="CfloraReference.Backward"/> (to 1e-9 relative: it is the same math in double) and the CPU backend
/// (fp32, <see cref="CfloraBackwardCase.AssertGradient"/>) are checked on odd shapes, several samples, f32/f16/bf16
/// W0, with and without bias, dense and identity G.
/// </summary>
[TestFixture]
public sealed class CfloraBackwardTorchTests
{
    private static (float[] Dx, float[] Da, float[] Db, float[] Dg) Autograd(float[] x, CfloraBackwardCase m, int[] sampleOfRow, int samples)
    {
        using var scope = torch.NewDisposeScope();
        int rows = sampleOfRow.Length;
        TTensor D(float[] v, params long[] shape) => torch.tensor(v, shape).to(float64);
        var X = D(x, rows, m.Din).requires_grad_();
        var A = D(m.A, m.R, m.Din).requires_grad_();
        var B = D(m.B, m.Dout, m.R).requires_grad_();
        var G = m.G is null ? torch.eye(m.R, dtype: float64).unsqueeze(0).expand(samples, m.R, m.R).contiguous().requires_grad_()
                            : D(m.G, samples, m.R, m.R).requires_grad_();
        var W0 = D(m.W0, m.Dout, m.Din);
        var perRowG = G.index_select(0, torch.tensor(sampleOfRow.Select(i => (long)i).ToArray()));          // [T, r, r]
        var mixed = torch.bmm(X.mm(A.t()).unsqueeze(1), perRowG).squeeze(1);                                 // [T, r]
        var y = nn.functional.linear(X, W0, m.Bias is null ? null : D(m.Bias, m.Dout)) + m.Scale * mixed.mm(B.t());
        var loss = (y * D(m.Dy, rows, m.Dout)).sum();
        loss.backward();
        float[] F(TTensor t) => t.to(float32).contiguous().data<float>().ToArray();
        return (F(X.grad!), F(A.grad!), F(B.grad!), m.G is null ? [] : F(G.grad!));
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        yield return new TestCaseData(1, 37, 29, 1, 1, DType.F32, false, true).SetArgDisplayNames("T1", "din37", "dout29", "r1", "S1", "F32", "denseG", "bias");
        yield return new TestCaseData(23, 53, 41, 8, 3, DType.F16, false, false).SetArgDisplayNames("T23", "din53", "dout41", "r8", "S3", "F16", "denseG", "nobias");
        yield return new TestCaseData(70, 90, 77, 8, 5, DType.BF16, false, true).SetArgDisplayNames("T70", "din90", "dout77", "r8", "S5", "BF16", "denseG", "bias");
        yield return new TestCaseData(31, 45, 300, 5, 4, DType.F32, true, false).SetArgDisplayNames("T31", "din45", "dout300", "r5", "S4", "F32", "identity", "nobias");
        yield return new TestCaseData(17, 130, 66, 16, 2, DType.BF16, true, true).SetArgDisplayNames("T17", "din130", "dout66", "r16", "S2", "BF16", "identity", "bias");
    }

    [TestCaseSource(nameof(Cases))]
    public void ReferenceAndCpuMatchAutograd(int rows, int din, int dout, int r, int samples, DType dtype, bool identity, bool bias)
    {
        var x = RandomData.Uniform(rows * din, 40 + rows);
        var m = CfloraBackwardCase.Make(rows, din, dout, r, samples, dtype, identity, bias, seed: 3 * rows + r);
        using var batch = CfloraBackwardCase.Batch(rows, samples, shuffled: rows % 2 == 1, seed: rows);
        var sampleOfRow = batch.SampleOfRow.ToArray();
        var torchGrads = Autograd(x, m, sampleOfRow, samples);

        var reference = m.Reference(x, sampleOfRow, samples);
        RandomData.AssertClose(reference.Dx, torchGrads.Dx, 1e-9, 1e-6, "reference dX vs autograd");
        RandomData.AssertClose(reference.Da, torchGrads.Da, 1e-9, 1e-6, "reference dA vs autograd");
        RandomData.AssertClose(reference.Db, torchGrads.Db, 1e-9, 1e-6, "reference dB vs autograd");
        RandomData.AssertClose(reference.Dg, torchGrads.Dg, 1e-9, 1e-6, "reference dG vs autograd");

        using var backend = new CpuBackend(2);
        var module = m.OnBackend(backend, rows, samples);
        var dx = backend.Zeros(rows, din);
        backend.Cflora.Backward(backend.Tensor(x, rows, din), [module], batch, dx);
        CfloraBackwardCase.AssertGradient(dx.ToArray<float>(), torchGrads.Dx, dout + r, "cpu dX vs autograd");
        CfloraBackwardCase.AssertGradient(module.DA!.Value.ToArray<float>(), torchGrads.Da, rows, "cpu dA vs autograd");
        CfloraBackwardCase.AssertGradient(module.DB!.Value.ToArray<float>(), torchGrads.Db, rows, "cpu dB vs autograd");
        if (!identity) CfloraBackwardCase.AssertGradient(module.DG!.Value.ToArray<float>(), torchGrads.Dg, rows, "cpu dG vs autograd");
    }
}
