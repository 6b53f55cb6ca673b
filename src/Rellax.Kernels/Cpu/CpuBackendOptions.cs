using System.Runtime.Intrinsics.X86;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// The most capable integer dot-product instructions the CPU backend's int8 kernels may use (int8 attention, the int8
/// linear layer, SUBR over i8 tables). Ordered: each value allows every instruction set below it. A request is clamped to
/// the CPU (<see cref="CpuBackendOptions.InstructionSet"/>); the fp32 kernels are not affected.
/// </summary>
public enum CpuInstructionSet
{
    /// <summary>Plain C# integer loops (any CPU; the reference the SIMD paths are checked against).</summary>
    Scalar,

    /// <summary>AVX2 (ymm <c>vpmaddubsw</c>/<c>vpmaddwd</c>): SUBR's i8 scorer; int8 attention and the int8 linear layer have no
    /// AVX2 path and run their scalar loops.</summary>
    Avx2,

    /// <summary>AVX-512BW (with BMI2): zmm <c>vpmaddwd</c> on i16-widened operands.</summary>
    Avx512,

    /// <summary>AVX-VNNI: ymm <c>vpdpbusd</c> (u8 × s8 → s32). The fastest where present (measured on Zen 5), hence the top.</summary>
    AvxVnni,
}

/// <summary>
/// Immutable settings of one <see cref="CpuBackend"/>. Every kernel reads them from the backend it runs on, so two backends
/// in one process may differ (there is no process-wide switch). <c>new CpuBackendOptions()</c> is the default backend.
/// </summary>
public sealed record CpuBackendOptions
{
    /// <summary>Worker threads kernels split their work over; 0 (default): one per core. Must not be negative.</summary>
    public int Threads { get; init; }

    /// <summary>
    /// Cap on the integer dot-product instructions (default <see cref="CpuInstructionSet.AvxVnni"/>: the best this CPU has).
    /// A request above what the CPU supports is clamped, not refused: the backend uses the highest supported set at or
    /// below it, which <see cref="CpuBackend.InstructionSet"/> reports (e.g. <see cref="CpuInstructionSet.Avx512"/> on a CPU
    /// with AVX2 only gives <see cref="CpuInstructionSet.Avx2"/>). Results are the same exact integers on every set.
    /// </summary>
    public CpuInstructionSet InstructionSet { get; init; } = CpuInstructionSet.AvxVnni;

    /// <summary>
    /// Whether buffers of 4 MiB or more are 2 MiB aligned and advised <c>MADV_HUGEPAGE</c> on Linux (default true; best
    /// effort, see <see cref="CpuBackend.Allocate"/>). Off: plain 64-byte aligned allocations with 4 KiB pages.
    /// </summary>
    public bool HugePages { get; init; } = true;

    /// <summary>fp32 GEMM MC/NC blocking; null (default): <see cref="GemmBlocking.For"/> this CPU. Tests and benchmarks set it.</summary>
    internal GemmBlocking? Blocking { get; init; }

    /// <summary>SUBR prefetch instruction for table rows: 0 = prefetcht0 (default), 1 = t1, 2 = t2, 3 = nta.</summary>
    internal int SubrPrefetchHint { get; init; }

    /// <summary>
    /// SUBR: at most this many bytes of each row are prefetched, the rest being left to the hardware prefetchers; 0 (default):
    /// only the first line of rows of ≥ 2 KiB, whole rows otherwise (measured: f32 d = 512 gathers 42–48 GB/s with the
    /// first line only against 37–41 GB/s with every line; i8 512-byte rows lose half their speed with the first line only).
    /// </summary>
    internal int SubrPrefetchMaxBytesPerRow { get; init; }

    /// <summary>SUBR: how far ahead (in bytes of table rows) rows are prefetched, at least one row; 0 (default): 8 KiB for rows of ≥ 2 KiB, else 16 KiB.</summary>
    internal int SubrPrefetchBytes { get; init; }

    /// <summary>Whether this CPU has <paramref name="set"/>.</summary>
    internal static bool Supports(CpuInstructionSet set) => set switch
    {
        CpuInstructionSet.Scalar => true,
        CpuInstructionSet.Avx2 => Avx2.IsSupported,
        CpuInstructionSet.Avx512 => Avx512BW.IsSupported && Bmi2.X64.IsSupported,
        CpuInstructionSet.AvxVnni => AvxVnni.IsSupported,
        _ => false,
    };

    /// <summary>The highest set at or below <paramref name="requested"/> that this CPU has.</summary>
    internal static CpuInstructionSet Clamp(CpuInstructionSet requested)
    {
        for (var s = requested; s > CpuInstructionSet.Scalar; s--)
            if (Supports(s)) return s;
        return CpuInstructionSet.Scalar;
    }

    /// <summary>Checks the options; throws <see cref="ArgumentException"/> naming the bad option.</summary>
    internal void Validate(string paramName)
    {
        if (Threads < 0)
            throw new ArgumentException($"CpuBackendOptions.Threads must be 0 (one per core) or positive, got {Threads}", paramName);
        if (!Enum.IsDefined(InstructionSet))
            throw new ArgumentException($"CpuBackendOptions.InstructionSet {(int)InstructionSet} is not a CpuInstructionSet value", paramName);
        if (Blocking is { } b && (b.Mc <= 0 || b.Nc <= 0 || b.Mc % CpuGemm.MR != 0 || b.Nc % CpuGemm.NR != 0))
            throw new ArgumentException($"CpuBackendOptions.Blocking {b} must be positive multiples of MR and NR", paramName);
        if (SubrPrefetchHint is < 0 or > 3)
            throw new ArgumentException($"CpuBackendOptions.SubrPrefetchHint must be 0 to 3, got {SubrPrefetchHint}", paramName);
        if (SubrPrefetchBytes < 0 || SubrPrefetchMaxBytesPerRow < 0)
            throw new ArgumentException("CpuBackendOptions.SubrPrefetchBytes and SubrPrefetchMaxBytesPerRow must not be negative", paramName);
    }
}
