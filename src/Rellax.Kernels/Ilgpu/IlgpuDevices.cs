using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace Rellax.Kernels.Ilgpu;

/// <summary>The kinds of ILGPU accelerator the <see cref="IlgpuBackend"/> can run on.</summary>
public enum IlgpuDeviceKind
{
    /// <summary>An NVIDIA GPU through ILGPU's PTX backend and the CUDA driver.</summary>
    Cuda,
    /// <summary>An OpenCL 2.0+ device (GPU or CPU) through ILGPU's OpenCL C backend.</summary>
    OpenCL,
    /// <summary>ILGPU's CPU emulator: GPU threads simulated with OS threads. Correct but slow; for tests.</summary>
    CpuEmulator,
}

/// <summary>One device ILGPU can create an accelerator for.</summary>
/// <param name="Kind">Accelerator family.</param>
/// <param name="Index">Index among the devices of the same <paramref name="Kind"/>; pass it to <see cref="IlgpuBackend(IlgpuDeviceKind, int)"/>.</param>
/// <param name="Name">Device name as the driver reports it.</param>
/// <param name="MemoryBytes">Device memory in bytes (for the CPU emulator: the host memory available to this process).</param>
/// <param name="MaxThreadsPerGroup">Largest group (thread block) the device accepts.</param>
/// <param name="WarpSize">Threads per warp (SIMD width).</param>
public sealed record IlgpuDeviceInfo(IlgpuDeviceKind Kind, int Index, string Name, long MemoryBytes, int MaxThreadsPerGroup, int WarpSize)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Kind}[{Index}] {Name} ({MemoryBytes / (1024 * 1024)} MiB, {MaxThreadsPerGroup} threads/group, warp {WarpSize})";
}

/// <summary>What <see cref="IlgpuBackend.Probe"/> found: usable devices and, for each family that could not be queried, why.</summary>
/// <param name="Devices">Devices in preference order: CUDA, then OpenCL, then the CPU emulator (always present).</param>
/// <param name="Problems">One line per accelerator family whose probing failed (missing driver, ...). Empty when all went well.</param>
public sealed record IlgpuProbe(IReadOnlyList<IlgpuDeviceInfo> Devices, IReadOnlyList<string> Problems);

/// <summary>Device discovery and accelerator creation for the ILGPU backend.</summary>
internal static class IlgpuDevices
{
    /// <summary>
    /// Threads per warp, warps per multiprocessor and multiprocessors of the CPU emulator. ILGPU's default CPU
    /// device allows only 16 threads per group; this one allows 256 (8 warps of 32, like an NVIDIA GPU), so the
    /// 256-thread kernels run unchanged. One multiprocessor: groups run one after another, each on 256 OS threads.
    /// </summary>
    public const int EmulatorWarpSize = 32, EmulatorWarpsPerMultiprocessor = 8, EmulatorMultiprocessors = 1;

    public static CPUDevice CreateEmulatorDevice() =>
        new(EmulatorWarpSize, EmulatorWarpsPerMultiprocessor, EmulatorMultiprocessors);

    /// <summary>Builds a context that knows only the devices of <paramref name="kind"/>; algorithms (XMath) enabled.</summary>
    public static Context CreateContext(IlgpuDeviceKind kind) => kind switch
    {
        IlgpuDeviceKind.Cuda => Context.Create(b => b.Cuda().EnableAlgorithms()),
        IlgpuDeviceKind.OpenCL => Context.Create(b => b.OpenCL().EnableAlgorithms()),
        IlgpuDeviceKind.CpuEmulator => Context.Create(b => b.CPU(CreateEmulatorDevice()).EnableAlgorithms()),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown ILGPU device kind"),
    };

    public static IReadOnlyList<Device> DevicesOf(Context context, IlgpuDeviceKind kind)
    {
        var type = kind switch
        {
            IlgpuDeviceKind.Cuda => AcceleratorType.Cuda,
            IlgpuDeviceKind.OpenCL => AcceleratorType.OpenCL,
            _ => AcceleratorType.CPU,
        };
        return context.Devices.Where(d => d.AcceleratorType == type).ToArray();
    }

    public static IlgpuProbe Probe()
    {
        var devices = new List<IlgpuDeviceInfo>();
        var problems = new List<string>();
        foreach (var kind in new[] { IlgpuDeviceKind.Cuda, IlgpuDeviceKind.OpenCL, IlgpuDeviceKind.CpuEmulator })
        {
            try
            {
                using var context = CreateContext(kind);
                var found = DevicesOf(context, kind);
                for (int i = 0; i < found.Count; i++)
                {
                    var d = found[i];
                    // ILGPU reports long.MaxValue bytes for the CPU emulator; what it can really use is host memory.
                    long memory = kind == IlgpuDeviceKind.CpuEmulator ? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes : d.MemorySize;
                    devices.Add(new IlgpuDeviceInfo(kind, i, d.Name, memory, d.MaxNumThreadsPerGroup, d.WarpSize));
                }
            }
            // Probing must never throw: a machine without a driver (DllNotFoundException, TypeInitializationException,
            // driver-specific exceptions) simply has no device of that kind.
            catch (Exception e)
            {
                problems.Add($"{kind}: {e.GetType().Name}: {e.Message}");
            }
        }
        return new IlgpuProbe(devices, problems);
    }
}
