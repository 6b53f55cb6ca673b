using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests.Cpu;

/// <summary>
/// The per-CPU blocking of the fp32 GEMM (<see cref="GemmBlocking"/>, issue 19 item 5): the rule's choices for the families it
/// names, CPUID detection on this machine, and the blocked path under other families' blockings (Sapphire Rapids' and a tiny
/// one that crosses many MC and NC blocks) against the double reference.
/// </summary>
[TestFixture]
public sealed class CpuGemmBlockingTests
{
    private static CpuInfo Zen5 => new("AuthenticAMD", 26, 2, "AMD EPYC", 48 << 10, 1 << 20, 32L << 20);

    private static CpuInfo SapphireRapids => new("GenuineIntel", 6, 143, "Intel(R) Xeon(R) Platinum 8480+", 48 << 10, 2 << 20, 105L << 20);

    [Test]
    public void ZenAndUnknownCpusKeepTheMeasuredBlocking()
    {
        Assert.That(GemmBlocking.For(Zen5, avx512: true), Is.EqualTo(GemmBlocking.Default));
        Assert.That(GemmBlocking.Default.Mc, Is.EqualTo(128));
        Assert.That(GemmBlocking.Default.Nc, Is.EqualTo(2048));
        Assert.That(GemmBlocking.For(new CpuInfo("", 0, 0, "", 0, 0, 0), avx512: false), Is.EqualTo(GemmBlocking.Default));
    }

    [Test]
    public void IntelAvx512ServerCoresBlockForTheirL2()
    {
        var spr = GemmBlocking.For(SapphireRapids, avx512: true);
        Assert.That((spr.Mc, spr.Nc), Is.EqualTo((512, 1024)), spr.Reason);    // x block 512 KiB, w block 1 MiB of the 2 MiB L2
        var icx = GemmBlocking.For(SapphireRapids with { Model = 106, L2Bytes = 1280 << 10 }, avx512: true);
        Assert.That((icx.Mc, icx.Nc), Is.EqualTo((320, 640)), icx.Reason);     // Ice Lake-SP, 1.25 MiB L2
        Assert.That(icx.Mc % CpuGemm.MR, Is.Zero);
        Assert.That(icx.Nc % CpuGemm.NR, Is.Zero);
        // Without the 512-bit kernel, or with a small client L2, the Zen blocking stays.
        Assert.That(GemmBlocking.For(SapphireRapids, avx512: false), Is.EqualTo(GemmBlocking.Default));
        Assert.That(GemmBlocking.For(SapphireRapids with { L2Bytes = 512 << 10 }, avx512: true), Is.EqualTo(GemmBlocking.Default));
    }

    [Test]
    public void DetectsThisCpu()
    {
        var cpu = CpuInfo.Current;
        if (!System.Runtime.Intrinsics.X86.X86Base.IsSupported) Assert.Ignore("not an x86 machine");
        Assert.That(cpu.Vendor, Has.Length.EqualTo(12), cpu.ToString());
        Assert.That(cpu.Family, Is.GreaterThan(0), cpu.ToString());
        // /proc/cpuinfo says the same vendor where it exists.
        if (File.Exists("/proc/cpuinfo"))
        {
            string? vendorLine = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("vendor_id", StringComparison.Ordinal));
            if (vendorLine is not null) Assert.That(vendorLine.Split(':')[1].Trim(), Is.EqualTo(cpu.Vendor));
        }
        using var backend = new CpuBackend(1);
        Assert.That(backend.Blocking, Is.EqualTo(GemmBlocking.For(cpu, System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)));
        TestContext.Out.WriteLine($"{cpu}; {backend.Blocking.Reason}");
    }

    private static IEnumerable<TestCaseData> Blockings()
    {
        yield return new TestCaseData(0, 0, new[] { 520, 8 }, new[] { 1030, 33 }).SetArgDisplayNames("sapphire-rapids");
        yield return new TestCaseData(16, 64, new[] { 5, 16, 17, 41 }, new[] { 1, 63, 64, 65, 200 }).SetArgDisplayNames("tiny");
    }

    [TestCaseSource(nameof(Blockings))]
    public void BlockedPathMatchesReferenceUnderAnotherBlocking(int mc, int nc, int[] ms, int[] ns)
    {
        // 0, 0: Sapphire Rapids' blocking as the rule picks it (MC 512, NC 1024).
        var blocking = mc == 0 ? GemmBlocking.For(SapphireRapids, avx512: true) : new GemmBlocking(mc, nc, $"MC {mc}, NC {nc}");
        using var backend = new CpuBackend(new CpuBackendOptions { Threads = 2, Blocking = blocking });
        Assert.That(backend.Blocking, Is.EqualTo(blocking));
        foreach (int m in ms)
            foreach (int n in ns)
                foreach (int k in new[] { 7, 257 })
                {
                    float[] x = RandomData.Uniform(m * k, m * 1000 + k), w = RandomData.Uniform(n * k, n * 1000 + k + 1);
                    var y = backend.Zeros(m, n);
                    backend.Primitives.MatMul(backend.Tensor(x, m, k), backend.Tensor(w, n, k), y);
                    var expected = new float[m * n];
                    PrimitivesReference.MatMul(x, w, expected, m, k, n);
                    RandomData.AssertClose(y.ToArray<float>(), expected, 1e-5 * Math.Sqrt(k), 0, $"{blocking.Reason}: MatMul m={m} k={k} n={n}");
                }
    }
}
