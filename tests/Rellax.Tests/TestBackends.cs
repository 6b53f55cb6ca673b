using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Kernels.Cuda;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Tests;

/// <summary>
/// A named way to create a fresh backend; the name shows up in test names. <paramref name="Emulated"/> marks
/// ILGPU's CPU emulator, which runs GPU kernels correctly but thousands of times slower than a device: long
/// end-to-end loops use fewer steps there.
/// </summary>
public sealed record BackendFactory(string Name, Func<ComputeBackend> Create, bool Emulated = false)
{
    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>
/// Every backend the backend-generic fixtures (e.g. <see cref="Oracle.PrimitivesOracleTests"/>) run on.
/// Adding a backend is one line in <see cref="Factories"/>.
/// </summary>
public static class TestBackends
{
    /// <summary>The backends under test.</summary>
    public static IEnumerable<BackendFactory> Factories()
    {
        yield return new BackendFactory("cpu-1-thread", () => new CpuBackend(threads: 1));
        yield return new BackendFactory("cpu-2-threads", () => new CpuBackend(threads: 2));
        // ILGPU's kernels on its CPU emulator run everywhere (slowly); on a GPU machine the real devices join in.
        yield return new BackendFactory("ilgpu-emulator", () => new IlgpuBackend(IlgpuDeviceKind.CpuEmulator), Emulated: true);
        if (IlgpuBackend.ListDevices().Any(d => d.Kind == IlgpuDeviceKind.Cuda))
            yield return new BackendFactory("ilgpu-cuda", () => new IlgpuBackend(IlgpuDeviceKind.Cuda));
        if (CudaAvailability.Probe().Available)
            yield return new BackendFactory("cuda", () => CudaBackend.Create());
    }

    /// <summary>The factories as fixture arguments for <c>[TestFixtureSource]</c>.</summary>
    public static IEnumerable<TestFixtureData> All() =>
        Factories().Select(f => new TestFixtureData(f).SetArgDisplayNames(f.Name));
}
