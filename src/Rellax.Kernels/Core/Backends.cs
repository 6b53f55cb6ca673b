using Rellax.Kernels.Cpu;
using Rellax.Kernels.Cuda;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Kernels;

/// <summary>One line of <see cref="Backends.Describe"/>: a backend name, whether it can be created here, and on what.</summary>
/// <param name="Name">The name <see cref="Backends.Create"/> accepts.</param>
/// <param name="Available">Whether <see cref="Backends.Create"/> would succeed.</param>
/// <param name="Detail">The device it would run on, or why it is not available.</param>
public sealed record BackendDescription(string Name, bool Available, string Detail);

/// <summary>Creates backends by name, as the command line and configuration files spell them.</summary>
public static class Backends
{
    /// <summary>
    /// Names accepted by <see cref="Create"/>: <c>cpu</c> (SIMD C#), <c>ilgpu</c> (best ILGPU device: CUDA, OpenCL,
    /// else the slow CPU emulator), <c>cuda</c> (ILGPU on CUDA plus the hand-written kernels). <c>auto</c> is also
    /// accepted: the fastest backend present (cuda when a CUDA device is usable, else cpu).
    /// </summary>
    public static IReadOnlyList<string> Names { get; } = ["cpu", "ilgpu", "cuda"];

    /// <summary>Creates the backend called <paramref name="name"/>.</summary>
    /// <param name="name">One of <see cref="Names"/> (case-insensitive).</param>
    /// <param name="threads">CPU worker threads (0: one per core); ignored by GPU backends.</param>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    /// <exception cref="InvalidOperationException">The backend exists but cannot run here (e.g. no CUDA driver); the message says why.</exception>
    public static ComputeBackend Create(string name, int threads = 0)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.ToLowerInvariant() switch
        {
            "auto" => CudaAvailability.Probe().Available ? CudaBackend.Create() : new CpuBackend(threads),
            "cpu" => new CpuBackend(threads),
            "ilgpu" => IlgpuBackend.CreateBest(),
            "cuda" => CudaBackend.Create(),
            _ => throw new ArgumentException($"unknown backend '{name}'; expected auto or one of: {string.Join(", ", Names)}", nameof(name)),
        };
    }

    /// <summary>What each backend would run on here. Never throws for missing drivers or devices.</summary>
    public static IReadOnlyList<BackendDescription> Describe()
    {
        var ilgpu = IlgpuBackend.Probe();
        var best = ilgpu.Devices.FirstOrDefault();
        var cuda = CudaAvailability.Probe();
        return
        [
            new("cpu", true, $"{Environment.ProcessorCount} threads, {(System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "Vector512" : "Vector256")}; " +
                $"int8 instruction set {CpuBackendOptions.Clamp(new CpuBackendOptions().InstructionSet)}; {CpuBackend.Int8Paths}; " +
                $"{CpuInfo.Current}, fp32 GEMM blocking {GemmBlocking.For(CpuInfo.Current, System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated).Reason}"),
            new("ilgpu", best is not null, best is not null ? $"{best}; int8 linear: dp4a on CUDA devices, plain int32 elsewhere" : string.Join("; ", ilgpu.Problems)),
            new("cuda", cuda.Available, cuda.Available ? $"{cuda.DeviceName} (sm_{cuda.ComputeCapability?.Number}); int8 linear: ILGPU kernel with PTX dp4a" : cuda.Reason),
        ];
    }
}
