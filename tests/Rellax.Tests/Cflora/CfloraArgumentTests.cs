using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Cflora;

/// <summary>Bad CFLoRA input is refused by the checked front, before any kernel runs, with messages that name it.</summary>
[TestFixture]
public sealed class CfloraArgumentTests
{
    private CpuBackend _cpu = null!;
    [OneTimeSetUp] public void Create() => _cpu = new CpuBackend(1);
    [OneTimeTearDown] public void Dispose() => _cpu.Dispose();

    private CfloraModule Module(int din = 8, int dout = 6, int r = 2, int samples = 2, int t = 5, DType weights = DType.F32) => new(
        _cpu.Allocate(weights, dout, din).AsTensor(dout, din), null,
        _cpu.Allocate(weights, r, din).AsTensor(r, din), _cpu.Allocate(weights, dout, r).AsTensor(dout, r),
        _cpu.Zeros(samples, r, r), 1f, _cpu.Zeros(t, dout));

    [Test]
    public void ShapeMismatchesNameTheTensor()
    {
        using var batch = CfloraBatch.FromLengths(2, 3);
        var x = _cpu.Zeros(5, 8);
        var good = Module();
        Assert.That(() => _cpu.Cflora.Forward(_cpu.Zeros(5, 9), good, batch), Throws.ArgumentException.With.Message.Contains("modules[0].W0"));
        Assert.That(() => _cpu.Cflora.Forward(x, good with { B = _cpu.Zeros(6, 3) }, batch), Throws.ArgumentException.With.Message.Contains("modules[0].B"));
        Assert.That(() => _cpu.Cflora.Forward(x, good with { Y = _cpu.Zeros(5, 7) }, batch), Throws.ArgumentException.With.Message.Contains("modules[0].Y"));
        Assert.That(() => _cpu.Cflora.Forward(x, good with { Bias = _cpu.Zeros(5) }, batch), Throws.ArgumentException.With.Message.Contains("modules[0].Bias"));
        Assert.That(() => _cpu.Cflora.Forward(x, good with { A = _cpu.Allocate(DType.F16, 2, 8).AsTensor(2, 8) }, batch),
            Throws.ArgumentException.With.Message.Contains("same dtype"));
        Assert.That(() => _cpu.Cflora.Forward(x, good with { Scale = float.NaN }, batch), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => _cpu.Cflora.Forward(x, ReadOnlySpan<CfloraModule>.Empty, batch), Throws.ArgumentException.With.Message.Contains("at least one module"));
    }

    [Test]
    public void InteractionCountMustEqualSampleCount()
    {
        using var batch = CfloraBatch.FromLengths(2, 3);
        Assert.That(() => _cpu.Cflora.Forward(_cpu.Zeros(5, 8), Module(samples: 3), batch),
            Throws.ArgumentException.With.Message.Contains("modules[0].G").And.Message.Contains("one matrix per sample"));
    }

    [Test]
    public void BatchRowsMustCoverXAndSegmentsMustStayInRange()
    {
        using var shortBatch = CfloraBatch.FromLengths(2, 2);
        Assert.That(() => _cpu.Cflora.Forward(_cpu.Zeros(5, 8), Module(), shortBatch), Throws.ArgumentException.With.Message.Contains("4 rows"));
        Assert.That(() => CfloraBatch.FromRowIndex([0, 1, 2], 2), Throws.ArgumentException.With.Message.Contains("row 2 belongs to sample 2"));
        Assert.That(() => CfloraBatch.FromLengths(3, -1), Throws.ArgumentException.With.Message.Contains("negative"));
        Assert.That(() => CfloraBatch.FromLengths(), Throws.ArgumentException);
    }

    [Test]
    public void RankZeroIsRefused()
    {
        using var batch = CfloraBatch.FromLengths(5);
        var m = Module(samples: 1);
        var empty = _cpu.Allocate(DType.F32, 1L);
        var rank0 = m with { A = new Tensor(empty, 0, 0, 8), B = new Tensor(empty, 0, 6, 0), G = new Tensor(empty, 0, 1, 0, 0) };
        Assert.That(() => _cpu.Cflora.Forward(_cpu.Zeros(5, 8), rank0, batch), Throws.ArgumentException.With.Message.Contains("r = 0"));
    }

    [Test]
    public void OutputsMayNotAliasInputsOrEachOther()
    {
        using var batch = CfloraBatch.FromLengths(5);
        var m = Module(samples: 1);
        var x = _cpu.Zeros(5, 8);
        var sharedY = _cpu.Zeros(5, 6);
        Assert.That(() => _cpu.Cflora.Forward(x, [m with { Y = sharedY }, m with { Y = sharedY }], batch),
            Throws.ArgumentException.With.Message.Contains("overlaps"));
        // Module 0 writing over module 1's G would corrupt module 1 when the modules run in turn.
        var other = Module(samples: 1);
        var y0 = _cpu.Allocate(DType.F32, 30L);
        Assert.That(() => _cpu.Cflora.Forward(x, [m with { Y = new Tensor(y0, 0, 5, 6) }, other with { G = new Tensor(y0, 2, 1, 2, 2) }], batch),
            Throws.ArgumentException.With.Message.Contains("modules[1].G"));
    }

    [Test]
    public void GeneratorShapesAreChecked()
    {
        var h = _cpu.Zeros(3, 10);
        var ln = _cpu.Zeros(10);
        Assert.That(() => _cpu.Cflora.Generate(h, ln, ln, 1e-5f, _cpu.Zeros(8, 10), _cpu.Zeros(8), _cpu.Zeros(4, 8), _cpu.Zeros(4), _cpu.Zeros(3, 2, 2)),
            Throws.Nothing, "a consistent generator call (r = 2, d_h = 10) runs");
        Assert.That(() => _cpu.Cflora.Generate(h, ln, ln, 1e-5f, _cpu.Zeros(9, 10), _cpu.Zeros(8), _cpu.Zeros(4, 8), _cpu.Zeros(4), _cpu.Zeros(3, 2, 2)),
            Throws.ArgumentException.With.Message.Contains("w1"));
        Assert.That(() => _cpu.Cflora.Generate(h, ln, ln, 1e-5f, _cpu.Zeros(8, 10), _cpu.Zeros(8), _cpu.Zeros(4, 8), _cpu.Zeros(4), _cpu.Zeros(2, 2, 2)),
            Throws.ArgumentException.With.Message.Contains("g"));
    }

    [Test]
    public void BuildersRejectInconsistentCounts()
    {
        Assert.That(() => CfloraInteractions.ILora([0.5f, 0.5f], experts: 2, rank: 3), Throws.ArgumentException.With.Message.Contains("multiple"));
        Assert.That(() => CfloraInteractions.RecLora([0.5f, 0.5f, 1f], metaLoras: 2, rankPerLora: 4), Throws.ArgumentException.With.Message.Contains("mixWeights"));
        Assert.That(() => CfloraInteractions.Identity(0, 8), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(CfloraInteractions.FromC([1, 2, 3, 4], 2), Is.EqualTo(new float[] { 1, 3, 2, 4 }), "G is Cᵀ");
    }
}
