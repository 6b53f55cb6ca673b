using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Cpu;

/// <summary>The checked <see cref="Primitives"/> front rejects wrong dtypes, shapes and backends, naming the argument.</summary>
[TestFixture]
public sealed class PrimitivesArgumentTests
{
    private CpuBackend _cpu = null!, _other = null!;

    [OneTimeSetUp] public void Create() { _cpu = new CpuBackend(1); _other = new CpuBackend(1); }
    [OneTimeTearDown] public void Dispose() { _cpu.Dispose(); _other.Dispose(); }

    private Tensor F32(params int[] shape) => _cpu.Zeros(shape);

    private static void ThrowsNaming(string param, Action call)
    {
        var ex = Assert.Catch<ArgumentException>(() => call());
        Assert.That(ex!.ParamName, Is.EqualTo(param), ex.Message);
    }

    [Test] public void MatMulWrongDtype() => ThrowsNaming("x", () => _cpu.Primitives.MatMul(_cpu.Tensor(new int[6], 2, 3), F32(4, 3), F32(2, 4)));
    [Test] public void MatMulInnerDimensionMismatch() => ThrowsNaming("w", () => _cpu.Primitives.MatMul(F32(2, 3), F32(4, 5), F32(2, 4)));
    [Test] public void MatMulWrongOutputShape() => ThrowsNaming("w", () => _cpu.Primitives.MatMul(F32(2, 3), F32(4, 3), F32(2, 5)));
    [Test] public void MatMulWrongRank() => ThrowsNaming("y", () => _cpu.Primitives.MatMul(F32(2, 3), F32(4, 3), F32(8)));
    [Test] public void MatMulOtherBackend() => ThrowsNaming("y", () => _cpu.Primitives.MatMul(F32(2, 3), F32(4, 3), _other.Zeros(2, 4)));

    [Test]
    public void MatMulOutputOverlappingInput()
    {
        var buffer = _cpu.Allocate(DType.F32, 100);
        ThrowsNaming("y", () => _cpu.Primitives.MatMul(new Tensor(buffer, 0, 2, 3), F32(4, 3), new Tensor(buffer, 4, 2, 4)));
    }

    [Test] public void RmsNormWeightLength() => ThrowsNaming("weight", () => _cpu.Primitives.RmsNorm(F32(2, 3), F32(4), 1e-5f, F32(2, 3)));
    [Test] public void RmsNormOutputShape() => ThrowsNaming("y", () => _cpu.Primitives.RmsNorm(F32(2, 3), F32(3), 1e-5f, F32(3, 2)));
    [Test] public void RmsNormNegativeEps() => ThrowsNaming("eps", () => _cpu.Primitives.RmsNorm(F32(2, 3), F32(3), -1f, F32(2, 3)));
    [Test] public void LayerNormBiasLength() => ThrowsNaming("bias", () => _cpu.Primitives.LayerNorm(F32(2, 3), F32(3), F32(2), 1e-5f, F32(2, 3)));
    [Test] public void RopeOddHeadDim() => ThrowsNaming("x", () => _cpu.Primitives.Rope(F32(2, 1, 3), _cpu.Tensor(new int[2], 2), F32(4, 1), F32(4, 1)));
    [Test] public void RopePositionsDtype() => ThrowsNaming("positions", () => _cpu.Primitives.Rope(F32(2, 1, 4), F32(2), F32(4, 2), F32(4, 2)));
    [Test] public void RopeTableWidth() => ThrowsNaming("cos", () => _cpu.Primitives.Rope(F32(2, 1, 4), _cpu.Tensor(new int[2], 2), F32(4, 3), F32(4, 3)));
    [Test] public void SwiGluShapeMismatch() => ThrowsNaming("up", () => _cpu.Primitives.SwiGlu(F32(2, 3), F32(3, 2), F32(2, 3)));
    [Test] public void GeluOtherBackend() => ThrowsNaming("x", () => _cpu.Primitives.Gelu(_other.Zeros(3), F32(3)));
    [Test] public void SoftmaxShapeMismatch() => ThrowsNaming("y", () => _cpu.Primitives.Softmax(F32(2, 3), F32(2, 4)));
    [Test] public void EmbeddingIdsDtype() => ThrowsNaming("ids", () => _cpu.Primitives.Embedding(F32(2), F32(4, 3), F32(2, 3)));
    [Test] public void EmbeddingOutputShape() => ThrowsNaming("y", () => _cpu.Primitives.Embedding(_cpu.Tensor(new int[2], 2), F32(4, 3), F32(2, 4)));
    [Test] public void AddShapeMismatch() => ThrowsNaming("b", () => _cpu.Primitives.Add(F32(4), F32(5), F32(4)));
}
