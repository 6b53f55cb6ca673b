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
        // k may hold more positions than q (Tk ≥ Tq), never fewer.
        Assert.That(Assert.Throws<ArgumentException>(() =>
            _cpu.Attention.Prefill(F32(1, 2, 5, 8), F32(1, 2, 4, 8), F32(1, 2, 4, 8), default, F32(1, 2, 5, 8)))!.Message,
            Does.Contain("must agree on B and D, and k must hold at least q's T positions"));
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

    private static void ThrowsNaming(string param, Action call)
    {
        var ex = Assert.Catch<ArgumentException>(() => call());
        Assert.That(ex!.ParamName, Is.EqualTo(param), ex.Message);
    }

    // The argument checks of the former Primitives.Attention ([T, H, D] tensors), on fp32 FlashAttention (token-major B = 1).
    private static readonly AttentionOptions Fp32 = new() { Precision = AttentionPrecision.Fp32, Layout = AttentionLayout.TokenMajor, Scale = 0.5f };
    [Test] public void AttentionHeadsNotMultiple() => ThrowsNaming("k", () => _cpu.Attention.Prefill(F32(1, 1, 3, 4), F32(1, 2, 2, 4), F32(1, 2, 2, 4), default, F32(1, 1, 3, 4), Fp32));
    [Test] public void AttentionFewerKeysThanQueries() => ThrowsNaming("k", () => _cpu.Attention.Prefill(F32(1, 3, 2, 4), F32(1, 2, 2, 4), F32(1, 2, 2, 4), default, F32(1, 3, 2, 4), Fp32));
    [Test] public void AttentionBadScale() => ThrowsNaming("options", () => _cpu.Attention.Prefill(F32(1, 1, 2, 4), F32(1, 2, 2, 4), F32(1, 2, 2, 4), default, F32(1, 1, 2, 4), Fp32 with { Scale = 0f }));

    [Test]
    public void LengthsCountKeyPositions()
    {
        // q of 2 tokens against k of 6 positions: lengths range over [0, Tk].
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            _cpu.Attention.Prefill(F32(1, 2, 2, 8), F32(1, 2, 6, 8), F32(1, 2, 6, 8), [7], F32(1, 2, 2, 8)));
        Assert.That(ex!.Message, Does.Contain("lengths[0] = 7").And.Contain("T = 6"));
        Assert.DoesNotThrow(() => _cpu.Attention.Prefill(F32(1, 2, 2, 8), F32(1, 2, 6, 8), F32(1, 2, 6, 8), [6], F32(1, 2, 2, 8)));
    }

    [Test]
    public void BackwardNeedsQueriesAndKeysOfTheSameLength()
    {
        var o = F32(1, 2, 2, 8);
        var ex = Assert.Throws<ArgumentException>(() => _cpu.Attention.Backward(F32(1, 2, 2, 8), F32(1, 2, 6, 8), F32(1, 2, 6, 8), o, F32(1, 2, 2, 8),
            F32(1, 2, 2), default, F32(1, 2, 2, 8), F32(1, 2, 6, 8), F32(1, 2, 6, 8), new AttentionOptions { Precision = AttentionPrecision.Fp32 }));
        Assert.That(ex!.Message, Does.Contain("same T"));
        Assert.That(ex.ParamName, Is.EqualTo("k"));
    }

    [Test]
    public void Fp32TakesAnyHeadDimensionUpTo256ButInt8DoesNot()
    {
        foreach (int d in new[] { 1, 4, 10, 12, 256 })
            Assert.DoesNotThrow(() => _cpu.Attention.Prefill(F32(1, 2, 3, d), F32(1, 2, 3, d), F32(1, 2, 3, d), default, F32(1, 2, 3, d),
                new AttentionOptions { Precision = AttentionPrecision.Fp32 }), $"fp32 D = {d}");
        Assert.That(Assert.Throws<ArgumentException>(() => _cpu.Attention.Prefill(F32(1, 2, 3, 264), F32(1, 2, 3, 264), F32(1, 2, 3, 264), default,
            F32(1, 2, 3, 264), new AttentionOptions { Precision = AttentionPrecision.Fp32 }))!.Message, Does.Contain("D = 264 is not supported"));
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
