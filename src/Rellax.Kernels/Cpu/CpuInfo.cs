using System.Runtime.Intrinsics.X86;
using System.Text;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// What the GEMM blocking depends on, read once from CPUID: vendor, family and model (with the extended fields folded in, as
/// the vendors' manuals define them), the brand string, and the per-core data cache sizes (CPUID leaf 4 on Intel, 0x8000001D
/// on AMD: ways · partitions · line size · sets; the legacy leaves 0x80000005/6 where those are hidden). Zero where the CPU
/// (or a non-x86 machine) does not say.
/// </summary>
/// <param name="Vendor">"GenuineIntel", "AuthenticAMD", another CPUID vendor string, or "" off x86.</param>
/// <param name="Family">Display family (base + extended).</param>
/// <param name="Model">Display model (extended model · 16 + model on families 6 and 15+).</param>
/// <param name="Name">Brand string, trimmed.</param>
/// <param name="L1DataBytes">L1 data cache of one core in bytes.</param>
/// <param name="L2Bytes">L2 cache in bytes (one core's on every CPU this targets).</param>
/// <param name="L3Bytes">L3 cache in bytes (shared: per socket on Intel, per CCX/CCD on AMD).</param>
internal sealed record CpuInfo(string Vendor, int Family, int Model, string Name, long L1DataBytes, long L2Bytes, long L3Bytes)
{
    /// <summary>This machine's CPU.</summary>
    public static CpuInfo Current { get; } = Detect();

    /// <summary>True for Intel.</summary>
    public bool IsIntel => Vendor == "GenuineIntel";

    /// <summary>True for AMD.</summary>
    public bool IsAmd => Vendor == "AuthenticAMD";

    /// <summary>One line: name, vendor family/model and the cache sizes.</summary>
    public override string ToString() =>
        $"{(Name.Length > 0 ? Name : "unknown CPU")} ({(Vendor.Length > 0 ? Vendor : "no CPUID")} family {Family} model {Model}; " +
        $"L1d {L1DataBytes >> 10} KiB, L2 {L2Bytes >> 10} KiB, L3 {L3Bytes >> 20} MiB)";

    private static CpuInfo Detect()
    {
        if (!X86Base.IsSupported) return new CpuInfo("", 0, 0, "", 0, 0, 0);
        var (maxLeaf, b0, c0, d0) = X86Base.CpuId(0, 0);
        var vendor = new StringBuilder();
        foreach (int r in new[] { b0, d0, c0 })
            for (int i = 0; i < 4; i++) vendor.Append((char)((r >> (8 * i)) & 0xff));
        int eax1 = maxLeaf >= 1 ? X86Base.CpuId(1, 0).Eax : 0;
        int baseFamily = (eax1 >> 8) & 0xf, baseModel = (eax1 >> 4) & 0xf;
        int family = baseFamily == 0xf ? baseFamily + ((eax1 >> 20) & 0xff) : baseFamily;
        int model = baseFamily is 6 or 0xf ? baseModel + (((eax1 >> 16) & 0xf) << 4) : baseModel;

        uint maxExt = (uint)X86Base.CpuId(unchecked((int)0x80000000), 0).Eax;
        var name = new StringBuilder();
        if (maxExt >= 0x80000004)
            for (uint leaf = 0x80000002; leaf <= 0x80000004; leaf++)
            {
                var (a, b, c, d) = X86Base.CpuId(unchecked((int)leaf), 0);
                foreach (int r in new[] { a, b, c, d })
                    for (int i = 0; i < 4; i++) { char ch = (char)((r >> (8 * i)) & 0xff); if (ch != '\0') name.Append(ch); }
            }

        string v = vendor.ToString();
        // Deterministic cache parameters: Intel leaf 4, AMD leaf 0x8000001D (same register layout), one subleaf per cache.
        int cacheLeaf = v == "AuthenticAMD" && maxExt >= 0x8000001D ? unchecked((int)0x8000001D) : v == "GenuineIntel" && maxLeaf >= 4 ? 4 : 0;
        long l1 = 0, l2 = 0, l3 = 0;
        for (int sub = 0; cacheLeaf != 0 && sub < 16; sub++)
        {
            var (a, b, c, _) = X86Base.CpuId(cacheLeaf, sub);
            int type = a & 0x1f, level = (a >> 5) & 7;
            if (type == 0) break;
            long bytes = (long)(((b >> 22) & 0x3ff) + 1) * (((b >> 12) & 0x3ff) + 1) * ((b & 0xfff) + 1) * ((long)(uint)c + 1);
            if (level == 1 && type == 1) l1 = bytes;
            else if (level == 2 && type != 2) l2 = bytes;
            else if (level == 3 && type != 2) l3 = bytes;
        }
        // Some hypervisors hide the deterministic leaves (this project's Zen 5 VMs return none): fall back to the legacy
        // extended leaves, which both vendors define for L2 (0x80000006 ECX[31:16], KiB) and AMD for L1d (0x80000005
        // ECX[31:24], KiB) and L3 (0x80000006 EDX[31:18], 512 KiB units).
        if (l2 == 0 && maxExt >= 0x80000006)
        {
            var (_, _, c6, d6) = X86Base.CpuId(unchecked((int)0x80000006), 0);
            l2 = (long)(((uint)c6 >> 16) & 0xffff) << 10;
            if (v == "AuthenticAMD")
            {
                l3 = (long)(((uint)d6 >> 18) & 0x3fff) * (512 << 10);
                l1 = (long)(((uint)X86Base.CpuId(unchecked((int)0x80000005), 0).Ecx >> 24) & 0xff) << 10;
            }
        }
        return new CpuInfo(v, family, model, name.ToString().Trim(), l1, l2, l3);
    }
}

/// <summary>
/// Cache blocking of the fp32 GEMM's blocked path (<see cref="CpuGemm"/>), chosen per CPU family from published
/// microarchitecture facts. KC (= <see cref="CpuGemm.KC"/>, 256) and the 8×32 zmm microkernel are the same everywhere: a
/// packed KC × NR w strip is 32 KiB and stays in the 48 KiB L1d of both Zen 5 and Golden Cove / Raptor Cove; the tile's 16
/// independent accumulators cover two 512-bit FMA pipes × 4 cycles of latency on both (8 needed), and its 2 vector loads and 8
/// broadcasts per 16 FMAs fit both cores' two 512-bit loads per cycle (5 cycles of loads per 8 of FMAs).
/// </summary>
/// <param name="Mc">Rows of x per packed block (MC × KC floats stay in L2).</param>
/// <param name="Nc">Rows of w per packed block (KC × NC floats).</param>
/// <param name="Reason">Which rule chose it, for <c>rellax backends</c> and results files.</param>
internal readonly record struct GemmBlocking(int Mc, int Nc, string Reason)
{
    /// <summary>
    /// Zen (AMD, and any CPU not recognised): MC 128 (a 128 KiB x block, an eighth of Zen 5's 1 MiB L2), NC 2048 (a 2 MiB w
    /// block in the L3, 32 MiB per CCD and fast): the values measured in <c>gemm-cpu.md</c>.
    /// </summary>
    public static readonly GemmBlocking Default = new(128, 2048, "MC 128, NC 2048 (w block in L3; tuned on Zen 5)");

    /// <summary>
    /// For <paramref name="cpu"/>: Intel server cores with AVX-512 and an L2 of at least 1 MiB (Skylake-SP and Cascade Lake 1 MiB,
    /// Ice Lake-SP 1.25 MiB, Sapphire/Emerald/Granite Rapids 2 MiB) keep both blocks in the private L2, because their L3 is a
    /// mesh-connected, non-inclusive slice of about 1.5 to 2 MiB per core, slower per core than Zen's: the w block takes half of
    /// L2 (NC = L2 / (8 · KC), 1024 on Sapphire Rapids), the x block a quarter (MC = L2 / (16 · KC), 512 there). Everything
    /// else gets <see cref="Default"/>. <paramref name="avx512"/>: whether the 512-bit microkernel runs.
    /// </summary>
    public static GemmBlocking For(CpuInfo cpu, bool avx512)
    {
        if (cpu.IsIntel && cpu.L2Bytes >= 1 << 20 && avx512)
        {
            int nc = (int)Math.Min(4096, cpu.L2Bytes / (8L * CpuGemm.KC)) / CpuGemm.NR * CpuGemm.NR;
            int mc = (int)Math.Min(1024, cpu.L2Bytes / (16L * CpuGemm.KC)) / CpuGemm.MR * CpuGemm.MR;
            return new GemmBlocking(mc, nc, $"MC {mc}, NC {nc} (x and w blocks in the {cpu.L2Bytes >> 10} KiB L2; Intel AVX-512 rule)");
        }
        return Default;
    }
}
