using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Subr;

/// <summary>Every bad input to the SUBR table, queries and front gets an error that names what was wrong.</summary>
[TestFixture]
public sealed class SubrArgumentTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp] public void Create() => _cpu = new CpuBackend(1);
    [OneTimeTearDown] public void Dispose() => _cpu.Dispose();

    [TestCase(float.NaN)]
    [TestCase(float.PositiveInfinity)]
    public void NonFiniteRowIsRejectedAtBuildTimeNamingRowAndColumn(float bad)
    {
        var v = SubrCheck.Vectors(10, 4, 1);
        v[7 * 4 + 2] = bad;
        var e = Assert.Throws<ArgumentException>(() => SubrTable.Create(_cpu, v, 10, 4))!;
        Assert.That(e.Message, Does.Contain("row 7").And.Contain("column 2"));
        Assert.That(e.ParamName, Is.EqualTo("vectors"));
    }

    [Test]
    public void ShapeAndStorageErrors()
    {
        var v = SubrCheck.Vectors(10, 4, 1);
        Assert.That(() => SubrTable.Create(_cpu, v, 10, 5), Throws.ArgumentException.With.Message.Contain("[10, 5]"));
        Assert.That(() => SubrTable.Create(_cpu, v, 0, 4), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contain("rows"));
        Assert.That(() => SubrTable.Create(_cpu, v, 10, 4, DType.BF16), Throws.ArgumentException.With.Message.Contain("bf16"));
        Assert.That(() => SubrTable.Create(_cpu, new float[SubrTable.MaxInt8Dim + 1], 1, SubrTable.MaxInt8Dim + 1, DType.I8),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contain("i8"));
        var big = new float[8];
        big[5] = 1e6f;
        Assert.That(() => SubrTable.Create(_cpu, big, 2, 4, DType.F16, SubrSimilarity.Dot),
            Throws.ArgumentException.With.Message.Contain("row 1").And.Message.Contain("f16 range"));
    }

    [Test]
    public void StoredTablesAreCheckedToo()
    {
        Assert.That(() => SubrTable.FromStored(_cpu, DType.I8, new byte[8], [1f], 2, 4, SubrSimilarity.Cosine),
            Throws.ArgumentException.With.Message.Contain("one scale per row"));
        Assert.That(() => SubrTable.FromStored(_cpu, DType.I8, new byte[8], [1f, float.NaN], 2, 4, SubrSimilarity.Cosine),
            Throws.ArgumentException.With.Message.Contain("scales[1]"));
        var nan = BitConverter.GetBytes(float.NaN);
        var bytes = new byte[32];
        nan.CopyTo(bytes, 20);
        Assert.That(() => SubrTable.FromStored(_cpu, DType.F32, bytes, [], 2, 4, SubrSimilarity.Cosine),
            Throws.ArgumentException.With.Message.Contain("row 1, column 1"));
        Assert.That(() => SubrTable.FromStored(_cpu, DType.F32, new byte[31], [], 2, 4, SubrSimilarity.Cosine),
            Throws.ArgumentException.With.Message.Contain("31 bytes"));
    }

    [Test]
    public void CosineTablesHoldUnitRowsAndZeroRowsStayZero()
    {
        var v = SubrCheck.Vectors(3, 5, 2);
        Array.Clear(v, 5, 5);
        using var table = SubrTable.Create(_cpu, v, 3, 5);
        Assert.That(table.ReadRow(0).Sum(x => (double)x * x), Is.EqualTo(1).Within(1e-6));
        Assert.That(table.ReadRow(1), Is.All.EqualTo(0f));
        using var dot = SubrTable.Create(_cpu, v, 3, 5, similarity: SubrSimilarity.Dot);
        Assert.That(dot.ReadRow(2), Is.EqualTo(v[10..15]));
    }

    [Test]
    public void Int8QuantisationIsSymmetricPerRow()
    {
        float[] row = [0.5f, -1f, 0.25f, 0f];
        var q = new sbyte[4];
        float scale = SubrTable.Quantize(row, q);
        Assert.That(scale, Is.EqualTo(1f / 127));
        Assert.That(q, Is.EqualTo(new sbyte[] { 64, -127, 32, 0 }));
    }

    [Test]
    public void QueriesAreValidatedWithTheSampleNamed()
    {
        Assert.That(() => SubrQueries.Create([1, 2], [0, 1], [0, 0]), Throws.ArgumentException.With.Message.Contain("B + 1"));
        Assert.That(() => SubrQueries.Create([1, 2], [0, 2, 1], [0, 0]), Throws.ArgumentException.With.Message.Contain("must not decrease"));
        Assert.That(() => SubrQueries.Create([1, 2], [0, 1, 3], [0, 0]), Throws.ArgumentException.With.Message.Contain("history length"));
        Assert.That(() => SubrQueries.Create([1, -2], [0, 1, 2], [0, 0]), Throws.ArgumentException.With.Message.Contain("sample 1").And.Message.Contain("-2"));
        Assert.That(() => SubrQueries.Create([1, 2], [0, 1, 2], [0, -1]), Throws.ArgumentException.With.Message.Contain("sample 1").And.Message.Contain("target"));
    }

    [Test]
    public void UnknownRowsAreNamedBySampleAndRow()
    {
        using var table = SubrTable.Create(_cpu, SubrCheck.Vectors(10, 4, 1), 10, 4);
        using var badHistory = SubrQueries.FromHistories([[1, 2], [3, 10, 4]], [0, 1]);
        Assert.That(() => _cpu.Subr.Retrieve(table, badHistory, 3),
            Throws.ArgumentException.With.Message.Contain("sample 1").And.Message.Contain("position 1").And.Message.Contain("row 10"));
        using var badTarget = SubrQueries.FromHistories([[1, 2]], [12]);
        Assert.That(() => _cpu.Subr.Retrieve(table, badTarget, 3), Throws.ArgumentException.With.Message.Contain("sample 0").And.Message.Contain("target row 12"));
    }

    [Test]
    public void FrontChecksKOutputsAndBackend()
    {
        using var table = SubrTable.Create(_cpu, SubrCheck.Vectors(10, 4, 1), 10, 4);
        using var queries = SubrQueries.FromHistories([[1, 2]], [0]);
        Assert.That(() => _cpu.Subr.Retrieve(table, queries, 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contain("k"));
        Assert.That(() => _cpu.Subr.Retrieve(table, queries, SubrTopK.MaxK + 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
        using var other = new CpuBackend(1);
        Assert.That(() => other.Subr.Retrieve(table, queries, 2), Throws.ArgumentException.With.Message.Contain("backend"));
        using var p = _cpu.Allocate(DType.I32, 4);
        using var s = _cpu.Allocate(DType.F32, 4);
        Assert.That(() => _cpu.Subr.Run(table, queries, 2, SubrOrder.Score, p.AsTensor(2, 2), s.AsTensor(2, 2)),
            Throws.ArgumentException.With.Message.Contain("[1, 2]"));
        Assert.That(() => _cpu.Subr.Run(table, queries, 2, SubrOrder.Score, s.AsTensor(4).Reshape(1, 4).Slice(0, 1).Reshape(1, 4), s.AsTensor(1, 4)),
            Throws.ArgumentException.With.Message.Contain("i32"));
    }
}
