using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Attention;

/// <summary>Bad input to <see cref="FlashAttention"/> gets an exception that names the argument and the shapes.</summary>
public sealed class AttentionArgumentTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp] public void Create() => _cpu = new CpuBackend(1);
    [OneTimeTearDown] public void Dispose() => _cpu.Dispose();

    private Tensor F32(params int[] shape) => _cpu.Zeros(shape);

    [Test]
    public void MismatchedHeadsAreRefused()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(F32(1, 6, 8, 64), F32(1, 4, 8, 64), F32(1, 4, 8, 64), default, F32(1, 6, 8, 64)));
        Assert.That(ex!.Message, Does.Contain("query heads (6)").And.Contain("KV heads (4)"));
        Assert.That(ex.ParamName, Is.EqualTo("k"));
    }

    [TestCase(12)]
    [TestCase(4)]
    [TestCase(264)]
    public void UnsupportedHeadDimensionsAreRefused(int d)
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(F32(1, 2, 4, d), F32(1, 2, 4, d), F32(1, 2, 4, d), default, F32(1, 2, 4, d)));
        Assert.That(ex!.Message, Does.Contain($"D = {d} is not supported"));
    }

    [Test]
    public void LengthsBeyondTAreRefused()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            _cpu.Attention.Prefill(F32(2, 2, 4, 8), F32(2, 2, 4, 8), F32(2, 2, 4, 8), [4, 5], F32(2, 2, 4, 8)));
        Assert.That(ex!.Message, Does.Contain("lengths[1] = 5").And.Contain("T = 4"));
        var count = Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(F32(2, 2, 4, 8), F32(2, 2, 4, 8), F32(2, 2, 4, 8), [4], F32(2, 2, 4, 8)));
        Assert.That(count!.Message, Does.Contain("1 values for a batch of 2"));
    }

    [Test]
    public void MismatchedTokensDtypeRankAndOverlapAreRefused()
    {
        Assert.That(Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(F32(1, 2, 4, 8), F32(1, 2, 5, 8), F32(1, 2, 5, 8), default, F32(1, 2, 4, 8)))!.Message,
            Does.Contain("must agree on B, T and D"));
        // Token-major reads T from axis 1: the same tensors are then a mismatch of T (2 vs 2) and heads (4 vs 5).
        Assert.That(Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(F32(1, 2, 4, 8), F32(1, 2, 5, 8), F32(1, 2, 5, 8), default, F32(1, 2, 4, 8),
                new AttentionOptions { Layout = AttentionLayout.TokenMajor }))!.Message, Does.Contain("query heads (4)"));
        var i32 = _cpu.Allocate(DType.I32, 64).AsTensor(1, 2, 4, 8);
        Assert.That(Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(i32, F32(1, 2, 4, 8), F32(1, 2, 4, 8), default, F32(1, 2, 4, 8)))!.ParamName, Is.EqualTo("q"));
        Assert.That(Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(F32(2, 4, 8), F32(1, 2, 4, 8), F32(1, 2, 4, 8), default, F32(2, 4, 8)))!.Message, Does.Contain("rank 4"));
        var q = F32(1, 2, 4, 8);
        Assert.That(Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(q, F32(1, 2, 4, 8), F32(1, 2, 4, 8), default, q))!.Message, Does.Contain("overlaps"));
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            _cpu.Attention.Prefill(q, F32(1, 2, 4, 8), F32(1, 2, 4, 8), default, F32(1, 2, 4, 8), new AttentionOptions { Scale = float.NaN }));
    }

    [Test]
    public void CacheMisuseIsRefused()
    {
        using var cache = _cpu.Attention.CreateKvCache(2, 2, 8, 5);
        var k = F32(2, 2, 4, 8);
        _cpu.Attention.Append(cache, k, F32(2, 2, 4, 8), [4, 2]);
        Assert.That(cache.Count, Is.EqualTo(4));
        Assert.That(cache.PaddingOf(1), Is.EqualTo(2));
        Assert.That(Assert.Throws<ArgumentException>(() => _cpu.Attention.Append(cache, F32(2, 2, 1, 8), F32(2, 2, 1, 8), [1, 1]))!.Message,
            Does.Contain("only be given to the first append"));
        Assert.That(Assert.Throws<InvalidOperationException>(() => _cpu.Attention.Append(cache, F32(2, 2, 2, 8), F32(2, 2, 2, 8)))!.Message,
            Does.Contain("overflow"));
        Assert.That(Assert.Throws<ArgumentException>(() => _cpu.Attention.Append(cache, F32(2, 3, 1, 8), F32(2, 3, 1, 8)))!.Message,
            Does.Contain("for a cache of 2 sequences x 2 KV heads"));
        Assert.That(Assert.Throws<ArgumentException>(() => _cpu.Attention.Decode(F32(2, 2, 5, 8), cache, F32(2, 2, 5, 8)))!.Message,
            Does.Contain("5 query tokens but the cache holds 4"));
        Assert.That(Assert.Throws<ArgumentException>(() => _cpu.Attention.Decode(F32(2, 3, 1, 8), cache, F32(2, 3, 1, 8)))!.Message,
            Does.Contain("query heads (3)"));
        Assert.Throws<ArgumentException>(() => _cpu.Attention.Decode(F32(2, 2, 1, 8), cache, F32(2, 2, 1, 8),
            new AttentionOptions { Precision = AttentionPrecision.Fp32 }));
        Assert.Throws<ArgumentException>(() => _cpu.Attention.CreateKvCache(1, 1, 12, 4));
        using var other = new CpuBackend(1);
        Assert.That(Assert.Throws<ArgumentException>(() => other.Attention.Decode(other.Zeros(2, 2, 1, 8), cache, other.Zeros(2, 2, 1, 8)))!.Message,
            Does.Contain("lives on backend"));
        cache.Reset();
        Assert.That(cache.Count, Is.EqualTo(0));
        cache.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _cpu.Attention.Append(cache, k, k));
    }
}
