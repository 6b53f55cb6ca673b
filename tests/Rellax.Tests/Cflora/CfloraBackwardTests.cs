using NUnit.Framework;
using Rellax.Kernels;

namespace Rellax.Tests.Cflora;

/// <summary>
/// <see cref="CfloraLinear.Backward"/> on every backend against <see cref="CfloraReference.Backward"/> (double): dX, dA,
/// dB, dG on odd shapes (d_in, d_out not multiples of any tile; T crossing the GEMM's 8-row strips and, on the CPU, the
/// 32-column blocks of the rank sums), f32/f16/bf16 weights, identity and dense G, contiguous and shuffled batches,
/// several modules summing into one dX, samples without rows, and partial requests. Tolerances:
/// <see cref="CfloraBackwardCase.AssertGradient"/>.
/// </summary>
[TestFixtureSource(typeof(TestBackends), nameof(TestBackends.All))]
public sealed class CfloraBackwardTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;

    [OneTimeSetUp] public void CreateBackend() => _backend = factory.Create();
    [OneTimeTearDown] public void DisposeBackend() => _backend.Dispose();

    private void RunAndCheck(float[] x, int rows, int din, CfloraBackwardCase[] mods, CfloraBatch batch, string what, bool wantDx = true)
    {
        var modules = mods.Select(m => m.OnBackend(_backend, rows, batch.Samples)).ToArray();
        var dx = wantDx ? _backend.Zeros(rows, din) : (Tensor?)null;
        if (dx is { } d0) d0.Buffer.CopyFrom<float>(Enumerable.Repeat(float.NaN, rows * din).ToArray()); // overwritten, not accumulated
        _backend.Cflora.Backward(_backend.Tensor(x, rows, din), modules, batch, dx);
        var sampleOfRow = batch.SampleOfRow.ToArray();
        var dxExpected = new double[rows * din];
        for (int mi = 0; mi < mods.Length; mi++)
        {
            var m = mods[mi];
            var (edx, eda, edb, edg) = m.Reference(x, sampleOfRow, batch.Samples);
            for (int i = 0; i < edx.Length; i++) dxExpected[i] += edx[i];
            if (m.WantDa) CfloraBackwardCase.AssertGradient(modules[mi].DA!.Value.ToArray<float>(), eda, rows, $"{what} module {mi} dA");
            if (m.WantDb) CfloraBackwardCase.AssertGradient(modules[mi].DB!.Value.ToArray<float>(), edb, rows, $"{what} module {mi} dB");
            if (m.WantDg) CfloraBackwardCase.AssertGradient(modules[mi].DG!.Value.ToArray<float>(), edg, rows, $"{what} module {mi} dG");
        }
        if (dx is { } d)
            CfloraBackwardCase.AssertGradient(d.ToArray<float>(), dxExpected.Select(v => (float)v).ToArray(),
                mods.Sum(m => m.Dout + m.R), $"{what} dX");
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        int i = 0;
        foreach (int r in new[] { 1, 8, 13 })
            foreach (int rows in new[] { 1, 7, 45 })
                foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
                {
                    bool identity = i % 3 == 2, shuffled = i % 2 == 1;
                    yield return new TestCaseData(r, rows, dtype, identity, shuffled)
                        .SetArgDisplayNames($"r{r}", $"T{rows}", dtype.ToString(), identity ? "identity" : "denseG", shuffled ? "shuffled" : "contiguous");
                    i++;
                }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(int r, int rows, DType dtype, bool identity, bool shuffled)
    {
        // Native: d_in 70 = two 32-column blocks + a tail of 6 in the rank sums; d_out 261 crosses the KC = 256 block of
        // the dX GEMM's K axis (d_out + r). The emulator runs one thread per output: smaller.
        int din = factory.Emulated ? 21 : 70, dout = factory.Emulated ? 19 : 261;
        const int Samples = 3;
        var x = RandomData.Uniform(rows * din, 7 + rows);
        var mod = CfloraBackwardCase.Make(rows, din, dout, r, Samples, dtype, identity, bias: false, seed: 100 * r + rows);
        using var batch = CfloraBackwardCase.Batch(rows, Samples, shuffled, rows + r);
        RunAndCheck(x, rows, din, [mod], batch, $"r={r} T={rows} {dtype}");
    }

    [Test]
    public void SeveralModulesSumIntoDx([Values(5, 40)] int rows)
    {
        int din = factory.Emulated ? 24 : 96;
        const int Samples = 4;
        var x = RandomData.Uniform(rows * din, 11);
        CfloraBackwardCase[] mods =
        [
            CfloraBackwardCase.Make(rows, din, 64, 8, Samples, DType.F32, identity: false, bias: false, seed: 1),
            CfloraBackwardCase.Make(rows, din, 33, 3, Samples, DType.BF16, identity: true, bias: false, seed: 2, wantDb: false),
            CfloraBackwardCase.Make(rows, din, 50, 16, Samples, DType.F16, identity: false, bias: false, seed: 3, wantDa: false),
        ];
        using var batch = CfloraBackwardCase.Batch(rows, Samples, shuffled: rows % 2 == 0, seed: 5);
        RunAndCheck(x, rows, din, mods, batch, $"3 modules T={rows}");
    }

    [Test]
    public void OnlyDgWithoutDx()
    {
        // ReLLaX's stage: A, B frozen, only the generators train; and the first layer needs no dX.
        const int Rows = 9, Din = 40, Samples = 3;
        var x = RandomData.Uniform(Rows * Din, 12);
        var mod = CfloraBackwardCase.Make(Rows, Din, 30, 8, Samples, DType.BF16, identity: false, bias: false, seed: 4, wantDa: false, wantDb: false);
        using var batch = CfloraBackwardCase.Batch(Rows, Samples, shuffled: true, seed: 6);
        RunAndCheck(x, Rows, Din, [mod], batch, "dG only", wantDx: false);
    }

    [Test]
    public void SampleWithoutRowsHasZeroDg()
    {
        const int Din = 24, Dout = 20, R = 4;
        var x = RandomData.Uniform(5 * Din, 13);
        var mod = CfloraBackwardCase.Make(5, Din, Dout, R, 3, DType.F32, identity: false, bias: false, seed: 7);
        using var batch = CfloraBatch.FromLengths(2, 0, 3);
        var m = mod.OnBackend(_backend, 5, 3);
        m.DG!.Value.Buffer.CopyFrom<float>(Enumerable.Repeat(float.NaN, 3 * R * R).ToArray());
        _backend.Cflora.Backward(_backend.Tensor(x, 5, Din), [m], batch, null);
        var dg = m.DG!.Value.ToArray<float>();
        Assert.That(dg.AsSpan(R * R, R * R).ToArray(), Is.All.EqualTo(0f), "sample 1 has no rows: its dG is an empty sum");
        Assert.That(dg.AsSpan(0, R * R).ToArray().Any(v => v != 0f), "sample 0 has rows: its dG is not all zero");
    }

    [Test]
    public void NoRowsZeroesEveryGradient()
    {
        const int Din = 16, Dout = 12, R = 2;
        var mod = CfloraBackwardCase.Make(0, Din, Dout, R, 1, DType.F32, identity: false, bias: false, seed: 8);
        using var batch = CfloraBatch.FromLengths(0);
        var m = mod.OnBackend(_backend, 0, 1);
        m.DA!.Value.Buffer.CopyFrom<float>(Enumerable.Repeat(3f, R * Din).ToArray());
        _backend.Cflora.Backward(_backend.Zeros(0, Din), [m], batch, _backend.Zeros(0, Din));
        Assert.That(m.DA!.Value.ToArray<float>(), Is.All.EqualTo(0f));
    }

    [Test]
    public void BadArgumentsNameTheArgument()
    {
        const int Rows = 4, Din = 16, Dout = 12, R = 2;
        var mod = CfloraBackwardCase.Make(Rows, Din, Dout, R, 2, DType.F32, identity: false, bias: false, seed: 10);
        using var batch = CfloraBatch.FromLengths(1, 3);
        var x = _backend.Tensor(RandomData.Uniform(Rows * Din, 1), Rows, Din);
        var m = mod.OnBackend(_backend, Rows, 2);
        ArgumentException Fails(CfloraBackwardModule module, Tensor? dx) =>
            Assert.Throws<ArgumentException>(() => _backend.Cflora.Backward(x, [module], batch, dx))!;
        Assert.That(Fails(m with { G = null }, null).ParamName, Is.EqualTo("modules[0].DG"), "dG of the identity");
        Assert.That(Fails(m, _backend.Zeros(Rows, Din + 1)).ParamName, Is.EqualTo("dx"));
        Assert.That(Fails(m with { DY = _backend.Zeros(Rows, Dout + 1) }, null).ParamName, Is.EqualTo("modules[0].DY"));
        Assert.That(Fails(m with { DB = _backend.Zeros(R, Dout) }, null).ParamName, Is.EqualTo("modules[0].DB"));
        Assert.That(Fails(m with { DG = _backend.Zeros(3, R, R) }, null).ParamName, Is.EqualTo("modules[0].DG"));
        var ex = Fails(m, x);
        Assert.That(ex.ParamName, Is.EqualTo("dx"));
        Assert.That(ex.Message, Does.Contain("overlaps x"));
        using var otherBatch = CfloraBatch.FromLengths(5);
        Assert.That(Assert.Throws<ArgumentException>(() => _backend.Cflora.Backward(x, [m], otherBatch, null))!.ParamName, Is.EqualTo("batch"));
    }

    [Test, NonParallelizable] // toggles the process-wide CpuGemm.UseVector512 switch
    public void Vector256FallbackMatchesReference()
    {
        if (_backend is not Rellax.Kernels.Cpu.CpuBackend) Assert.Ignore("the Vector256 switch is the CPU backend's");
        bool saved = Rellax.Kernels.Cpu.CpuGemm.UseVector512;
        Rellax.Kernels.Cpu.CpuGemm.UseVector512 = false;
        try
        {
            const int Rows = 19, Din = 70, Samples = 2;
            var x = RandomData.Uniform(Rows * Din, 14);
            var mod = CfloraBackwardCase.Make(Rows, Din, 45, 8, Samples, DType.BF16, identity: false, bias: false, seed: 9);
            using var batch = CfloraBackwardCase.Batch(Rows, Samples, shuffled: true, seed: 2);
            RunAndCheck(x, Rows, Din, [mod], batch, "vector256");
        }
        finally
        {
            Rellax.Kernels.Cpu.CpuGemm.UseVector512 = saved;
        }
    }
}
