using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Cpu;

/// <summary>
/// The checked fronts of <see cref="Primitives.Linear"/>, <see cref="Primitives.ScatterRows"/> and the half-precision
/// <see cref="Primitives.Embedding"/> reject bad dtypes, shapes, backends and overlaps, naming the argument; the CPU
/// kernels reject rows and ids outside the tensors before writing anything.
/// </summary>
[TestFixture]
public sealed class LinearArgumentTests
{
    private CpuBackend _cpu = null!, _other = null!;

    [OneTimeSetUp] public void Create() { _cpu = new CpuBackend(1); _other = new CpuBackend(1); }
    [OneTimeTearDown] public void Dispose() { _cpu.Dispose(); _other.Dispose(); }

    private Tensor F32(params int[] shape) => _cpu.Zeros(shape);
    private Tensor Of(DType dtype, params int[] shape) => _cpu.Allocate(dtype, shape).AsTensor(shape);

    private static ArgumentException ThrowsNaming(string param, Action call)
    {
        var ex = Assert.Catch<ArgumentException>(() => call());
        Assert.That(ex!.ParamName, Is.EqualTo(param), ex.Message);
        return ex;
    }

    [Test] public void LinearXMustBeF32() => ThrowsNaming("x", () => _cpu.Primitives.Linear(Of(DType.F16, 2, 3), F32(4, 3), null, F32(2, 4)));
    [Test] public void LinearWeightMustBeFloating() => ThrowsNaming("w", () => _cpu.Primitives.Linear(F32(2, 3), Of(DType.I8, 4, 3), null, F32(2, 4)));
    [Test] public void LinearOutputMustBeF32() => ThrowsNaming("y", () => _cpu.Primitives.Linear(F32(2, 3), Of(DType.F16, 4, 3), null, Of(DType.F16, 2, 4)));

    [Test]
    public void LinearInnerDimensionMismatchPrintsShapes()
    {
        var ex = ThrowsNaming("w", () => _cpu.Primitives.Linear(F32(2, 3), Of(DType.BF16, 4, 5), null, F32(2, 4)));
        Assert.That(ex.Message, Does.Contain("[2, 3]").And.Contain("[4, 5]"));
    }

    [Test] public void LinearWrongOutputShape() => ThrowsNaming("w", () => _cpu.Primitives.Linear(F32(2, 3), F32(4, 3), null, F32(2, 5)));
    [Test] public void LinearBiasLength() => ThrowsNaming("bias", () => _cpu.Primitives.Linear(F32(2, 3), Of(DType.F16, 4, 3), F32(5), F32(2, 4)));
    [Test] public void LinearBiasMustBeF32() => ThrowsNaming("bias", () => _cpu.Primitives.Linear(F32(2, 3), F32(4, 3), Of(DType.F16, 4), F32(2, 4)));
    [Test] public void LinearBiasRank() => ThrowsNaming("bias", () => _cpu.Primitives.Linear(F32(2, 3), F32(4, 3), F32(1, 4), F32(2, 4)));
    [Test] public void LinearWeightOnOtherBackend() => ThrowsNaming("w", () => _cpu.Primitives.Linear(F32(2, 3), _other.Zeros(4, 3), null, F32(2, 4)));

    [Test]
    public void LinearOutputOverlappingBias()
    {
        var buffer = _cpu.Allocate(DType.F32, 100);
        ThrowsNaming("y", () => _cpu.Primitives.Linear(F32(2, 3), F32(4, 3), new Tensor(buffer, 0, 4), new Tensor(buffer, 2, 2, 4)));
    }

    [Test] public void ScatterRowsSrcMustBeF32() => ThrowsNaming("src", () => _cpu.Primitives.ScatterRows(Of(DType.F16, 2, 3), Of(DType.I32, 2), F32(5, 3)));
    [Test] public void ScatterRowsRowsMustBeI32() => ThrowsNaming("rows", () => _cpu.Primitives.ScatterRows(F32(2, 3), F32(2), F32(5, 3)));
    [Test] public void ScatterRowsCountMismatch() => ThrowsNaming("src", () => _cpu.Primitives.ScatterRows(F32(2, 3), Of(DType.I32, 3), F32(5, 3)));
    [Test] public void ScatterRowsWidthMismatch() => ThrowsNaming("src", () => _cpu.Primitives.ScatterRows(F32(2, 3), Of(DType.I32, 2), F32(5, 4)));

    [Test]
    public void ScatterRowsOverlap()
    {
        var buffer = _cpu.Allocate(DType.F32, 100);
        ThrowsNaming("dst", () => _cpu.Primitives.ScatterRows(new Tensor(buffer, 0, 2, 3), Of(DType.I32, 2), new Tensor(buffer, 3, 5, 3)));
    }

    [Test]
    public void ScatterRowsOutsideDstThrowsBeforeWriting()
    {
        var dst = F32(5, 3);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            _cpu.Primitives.ScatterRows(_cpu.Tensor(new float[] { 1, 1, 1, 2, 2, 2 }, 2, 3), _cpu.Tensor(new[] { 1, 5 }, 2), dst));
        Assert.That(ex!.Message, Does.Contain("rows[1] = 5"));
        Assert.That(dst.ToArray<float>(), Is.All.EqualTo(0f), "row 1 was not written before the bad row was found");
    }

    [Test]
    public void ScatterRowsDuplicateRowThrows()
    {
        var ex = ThrowsNaming("rows", () => _cpu.Primitives.ScatterRows(F32(2, 3), _cpu.Tensor(new[] { 4, 4 }, 2), F32(5, 3)));
        Assert.That(ex.Message, Does.Contain("twice"));
    }

    [Test] public void EmbeddingTableMustBeFloating() => ThrowsNaming("table", () => _cpu.Primitives.Embedding(Of(DType.I32, 2), Of(DType.I8, 4, 3), F32(2, 3)));
    [Test] public void EmbeddingHalfTableWidthMismatch() => ThrowsNaming("y", () => _cpu.Primitives.Embedding(Of(DType.I32, 2), Of(DType.BF16, 4, 3), F32(2, 4)));

    [Test]
    public void EmbeddingHalfTableIdOutOfRange() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => _cpu.Primitives.Embedding(_cpu.Tensor(new[] { 0, 4 }, 2), Of(DType.F16, 4, 3), F32(2, 3)));
}
