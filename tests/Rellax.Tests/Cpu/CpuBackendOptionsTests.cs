using System.Runtime.Intrinsics.X86;
using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Cpu;

/// <summary>
/// <see cref="CpuBackendOptions"/> (issue 21 item 3): the instruction-set cap, huge pages and the internal tuning are per
/// backend, so two backends in one process run their own strategies side by side; a request above the CPU is clamped;
/// bad options are refused with an <see cref="ArgumentException"/> naming the option.
/// </summary>
[TestFixture]
public sealed class CpuBackendOptionsTests
{
    [Test]
    public void DefaultOptionsPickTheBestStrategiesAsBefore()
    {
        using var cpu = new CpuBackend(2);
        Assert.That(cpu.Threads, Is.EqualTo(2));
        Assert.That(cpu.Options.Threads, Is.EqualTo(2));
        Assert.That(cpu.Options.HugePages, Is.True);
        var expectedSet = AvxVnni.IsSupported ? CpuInstructionSet.AvxVnni
            : Avx512BW.IsSupported && Bmi2.X64.IsSupported ? CpuInstructionSet.Avx512
            : Avx2.IsSupported ? CpuInstructionSet.Avx2 : CpuInstructionSet.Scalar;
        Assert.That(cpu.InstructionSet, Is.EqualTo(expectedSet));
        Assert.That(cpu.Options.InstructionSet, Is.EqualTo(expectedSet));
        // The strategies the kernels took before the options existed (their static defaults).
        var attention = AvxVnni.IsSupported ? CpuAttention.DotStrategy.AvxVnni
            : Avx512BW.IsSupported ? CpuAttention.DotStrategy.Avx512BW : CpuAttention.DotStrategy.Scalar;
        Assert.That(cpu.AttentionDots, Is.EqualTo(attention));
        Assert.That(cpu.Int8Dots, Is.EqualTo(CpuInt8Linear.Best));
        Assert.That(cpu.Blocking, Is.EqualTo(GemmBlocking.For(CpuInfo.Current, System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)));
        using var zero = new CpuBackend(new CpuBackendOptions());
        Assert.That(zero.Threads, Is.EqualTo(Environment.ProcessorCount), "Threads = 0: one per core");
        Assert.That(zero.Options.Threads, Is.EqualTo(Environment.ProcessorCount));
    }

    [Test]
    public void TwoBackendsWithDifferentInstructionSetsKeepTheirOwnStrategies()
    {
        Assume.That(CpuBackendOptions.Supports(CpuInstructionSet.Avx512) || CpuBackendOptions.Supports(CpuInstructionSet.AvxVnni),
            "this CPU has only scalar int8 dots: nothing to tell apart");
        using var simd = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var scalar = new CpuBackend(new CpuBackendOptions { Threads = 2, InstructionSet = CpuInstructionSet.Scalar });
        Assert.That(scalar.InstructionSet, Is.EqualTo(CpuInstructionSet.Scalar));
        Assert.That(simd.InstructionSet, Is.Not.EqualTo(CpuInstructionSet.Scalar));
        Assert.That(scalar.Int8Dots, Is.EqualTo(CpuInt8Linear.DotStrategy.Scalar));
        Assert.That(simd.Int8Dots, Is.Not.EqualTo(CpuInt8Linear.DotStrategy.Scalar));
        Assert.That(scalar.AttentionDots, Is.EqualTo(CpuAttention.DotStrategy.Scalar));
        Assert.That(simd.AttentionDots, Is.Not.EqualTo(CpuAttention.DotStrategy.Scalar));

        // Interleaved int8 linear calls on both: each matches the reference (exact integer dots: bitwise equal outputs).
        const int m = 13, k = 259, n = 70;
        float[] x = CpuInt8LinearTests.InputWithOutliers(m, k, 5), w = RandomData.Uniform(n * k, 6), bias = RandomData.Uniform(n, 7);
        float[] Run(CpuBackend cpu)
        {
            using var q = cpu.Primitives.QuantizeInt8(cpu.Tensor(w, n, k));
            var y = cpu.Zeros(m, n);
            cpu.Primitives.LinearInt8(cpu.Tensor(x, m, k), q, cpu.Tensor(bias, n), y);
            return y.ToArray<float>();
        }
        var a = Run(simd);
        var b = Run(scalar);
        var a2 = Run(simd);
        using var ref_ = scalar.Primitives.QuantizeInt8(scalar.Tensor(w, n, k));
        var expected = new float[m * n];
        PrimitivesReference.LinearInt8(x, ref_.ReadValues(), ref_.ReadScales(), bias, expected, m, k, n, Primitives.DefaultOutlierThreshold);
        RandomData.AssertClose(a, expected, 1e-5 * Math.Sqrt(k), 1e-5, $"{simd.InstructionSet} backend");
        RandomData.AssertClose(b, expected, 1e-5 * Math.Sqrt(k), 1e-5, "scalar backend");
        Assert.That(a, Is.EqualTo(b).AsCollection, "SIMD and scalar dots give the same exact integers");
        Assert.That(a2, Is.EqualTo(a).AsCollection, "the SIMD backend is unaffected by the scalar one");
        Assert.That(simd.InstructionSet, Is.Not.EqualTo(scalar.InstructionSet), "options stay per backend");
    }

    [Test]
    public void RequestsAboveTheCpuAreClamped()
    {
        foreach (var set in Enum.GetValues<CpuInstructionSet>())
        {
            using var cpu = new CpuBackend(new CpuBackendOptions { Threads = 1, InstructionSet = set });
            Assert.That(cpu.InstructionSet, Is.LessThanOrEqualTo(set), $"asked for {set}");
            Assert.That(CpuBackendOptions.Supports(cpu.InstructionSet), Is.True, $"asked for {set}, got {cpu.InstructionSet}");
            if (CpuBackendOptions.Supports(set)) Assert.That(cpu.InstructionSet, Is.EqualTo(set));
            Assert.That(cpu.Options.InstructionSet, Is.EqualTo(cpu.InstructionSet), "Options reports the effective set");
        }
    }

    [Test]
    public void HugePagesIsPerBackend()
    {
        using var off = new CpuBackend(new CpuBackendOptions { Threads = 1, HugePages = false });
        using var on = new CpuBackend(1);
        Assert.That(off.Options.HugePages, Is.False);
        Assert.That(on.Options.HugePages, Is.True);
        // A buffer above the huge-page threshold works either way (zeroed, writable).
        foreach (var cpu in new[] { off, on })
        {
            using var buffer = cpu.Allocate(DType.F32, (AlignedMemoryHandle.HugePageThreshold / 4) + 16);
            var t = buffer.AsTensor([(int)buffer.Length]);
            Assert.That(t.ToArray<float>().All(v => v == 0f), Is.True);
        }
    }

    [Test]
    public void BadOptionsAreRefusedNamingTheOption()
    {
        var e = Assert.Throws<ArgumentException>(() => new CpuBackend(new CpuBackendOptions { Threads = -1 }))!;
        Assert.That(e.Message, Does.Contain("Threads"));
        Assert.That(e.ParamName, Is.EqualTo("options"));
        e = Assert.Throws<ArgumentException>(() => new CpuBackend(new CpuBackendOptions { InstructionSet = (CpuInstructionSet)42 }))!;
        Assert.That(e.Message, Does.Contain("InstructionSet"));
        e = Assert.Throws<ArgumentException>(() => new CpuBackend(new CpuBackendOptions { SubrPrefetchHint = 4 }))!;
        Assert.That(e.Message, Does.Contain("SubrPrefetchHint"));
        e = Assert.Throws<ArgumentException>(() => new CpuBackend(new CpuBackendOptions { Blocking = new GemmBlocking(0, 64, "bad") }))!;
        Assert.That(e.Message, Does.Contain("Blocking"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CpuBackend(-1));
        Assert.Throws<ArgumentNullException>(() => new CpuBackend((CpuBackendOptions)null!));
    }
}
