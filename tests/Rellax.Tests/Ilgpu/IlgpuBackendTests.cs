using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Tests.Ilgpu;

/// <summary>Device discovery, buffers and disposal of the ILGPU backend (CPU emulator; GPU kinds when present).</summary>
[TestFixture]
public sealed class IlgpuBackendTests
{
    [Test]
    public void ListDevicesDoesNotThrowAndIncludesTheCpuEmulator()
    {
        IlgpuProbe probe = null!;
        Assert.DoesNotThrow(() => probe = IlgpuBackend.Probe());
        TestContext.Out.WriteLine(string.Join("\n", probe.Devices.Select(d => d.ToString()).Concat(probe.Problems)));
        var emulator = probe.Devices.Where(d => d.Kind == IlgpuDeviceKind.CpuEmulator).ToList();
        Assert.That(emulator, Has.Count.EqualTo(1));
        Assert.That(emulator[0].MaxThreadsPerGroup, Is.GreaterThanOrEqualTo(256), "the emulator must run 256-thread groups");
        Assert.That(emulator[0].MemoryBytes, Is.GreaterThan(0).And.LessThan(long.MaxValue), "host memory, not ILGPU's placeholder");
        Assert.That(probe.Devices.Where(d => d.Kind != IlgpuDeviceKind.CpuEmulator).Select(d => d.MemoryBytes), Is.All.GreaterThan(0));
        Assert.That(IlgpuBackend.ListDevices(), Is.EqualTo(probe.Devices));
        // Preference order: CUDA before OpenCL before the emulator.
        var kinds = probe.Devices.Select(d => (int)d.Kind).ToList();
        Assert.That(kinds, Is.Ordered);
    }

    [Test]
    public void CreateBestPicksTheFirstListedKind()
    {
        var first = IlgpuBackend.ListDevices()[0].Kind;
        using var backend = IlgpuBackend.CreateBest();
        Assert.That(backend.Kind, Is.EqualTo(first));
        Assert.That(backend.Name, Does.StartWith($"ilgpu:{first}:"));
    }

    [Test]
    public void MissingDeviceIndexThrowsInvalidOperation()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => new IlgpuBackend(IlgpuDeviceKind.CpuEmulator, 5).Dispose());
        Assert.That(ex!.Message, Does.Contain("device 5"));
    }

    [Test]
    public void EmulatorGroupSizesComeFromTheAccelerator()
    {
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        Assert.That(backend.Accelerator.MaxNumThreadsPerGroup, Is.GreaterThanOrEqualTo(256));
        var kernels = backend.IlgpuKernels;
        Assert.That(kernels.RowGroupSize, Is.EqualTo(256));
        Assert.That(kernels.MinRowGroupSize, Is.EqualTo(backend.Accelerator.WarpSize));
        Assert.That(kernels.RowConfig(5, 3).GroupDim.X, Is.EqualTo(kernels.MinRowGroupSize), "short rows get one warp");
        Assert.That(kernels.RowConfig(5, 100).GroupDim.X, Is.EqualTo(128));
        Assert.That(kernels.RowConfig(5, 4097).GroupDim.X, Is.EqualTo(256), "long rows get the largest group");
        Assert.That(kernels.RowConfig(5, 4097).GridDim.X, Is.EqualTo(5));
    }

    [Test]
    public void EveryDTypeRoundTrips()
    {
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        var rng = new Random(7);
        const int n = 37;
        RoundTrip(backend, Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() * 200 - 100).ToArray());
        RoundTrip(backend, Enumerable.Range(0, n).Select(_ => (Half)(rng.NextDouble() * 20 - 10)).ToArray());
        RoundTrip(backend, Enumerable.Range(0, n).Select(_ => (BFloat16)(float)(rng.NextDouble() * 20 - 10)).ToArray());
        RoundTrip(backend, Enumerable.Range(0, n).Select(_ => (sbyte)rng.Next(-128, 128)).ToArray());
        RoundTrip(backend, Enumerable.Range(0, n).Select(_ => rng.Next(int.MinValue, int.MaxValue)).ToArray());
    }

    private static void RoundTrip<T>(IlgpuBackend backend, T[] data) where T : unmanaged, IEquatable<T>
    {
        using var buffer = backend.Upload<T>(data);
        Assert.That(buffer, Is.InstanceOf<IlgpuBuffer>());
        Assert.That(buffer.DType, Is.EqualTo(DTypeInfo.Of<T>()));
        var back = new T[data.Length];
        buffer.CopyTo<T>(back);
        Assert.That(back, Is.EqualTo(data), typeof(T).Name);

        // Partial copies at an element offset touch only their range.
        var part = data[5..12];
        Array.Reverse(part);
        buffer.CopyFrom<T>(part, 5);
        var expected = (T[])data.Clone();
        part.CopyTo(expected, 5);
        var middle = new T[9];
        buffer.CopyTo<T>(middle, 4);
        Assert.That(middle, Is.EqualTo(expected[4..13]), $"{typeof(T).Name} at offset");
    }

    [Test]
    public void NewBuffersAreZeroed()
    {
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        // Dirty memory first so a non-zeroing allocator that reuses it would be caught.
        using (var dirty = backend.Upload<int>(Enumerable.Repeat(-1, 1000).ToArray())) { }
        using var buffer = backend.Allocate(DType.I32, 1000);
        var back = new int[1000];
        buffer.CopyTo<int>(back);
        Assert.That(back, Is.All.EqualTo(0));
        using var empty = backend.Allocate(DType.F32, 0);
        Assert.That(empty.Length, Is.Zero);
    }

    [Test]
    public void DisposalIsCleanAndIdempotent()
    {
        var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        var a = backend.Allocate(DType.F32, 16);
        var b = backend.Allocate(DType.BF16, 16);
        a.Dispose();
        Assert.DoesNotThrow(a.Dispose, "disposing a buffer twice is a no-op");
        Assert.That(a.IsDisposed, Is.True);
        Assert.Throws<ObjectDisposedException>(() => a.CopyTo<float>(new float[1]));

        backend.Dispose();
        Assert.DoesNotThrow(backend.Dispose, "disposing the backend twice is a no-op");
        Assert.DoesNotThrow(b.Dispose, "a buffer outlived by its backend disposes quietly");
        Assert.DoesNotThrow(b.Dispose);
        Assert.Throws<ObjectDisposedException>(() => backend.Allocate(DType.F32, 1));
        Assert.Throws<ObjectDisposedException>(backend.Synchronize);
    }
}

/// <summary>The hook the CUDA backend uses: a kernel factory whose subclass replaces some kernels and inherits the rest.</summary>
[TestFixture]
public sealed class IlgpuKernelReplacementTests
{
    private sealed class ReplacedAdd(IlgpuBackend backend) : IlgpuPrimitiveKernels(backend)
    {
        public int AddCalls;

        public override void Add(Tensor a, Tensor b, Tensor y)
        {
            AddCalls++;
            base.Add(b, b, y); // observable: y = 2b instead of a + b
        }
    }

    [Test]
    public void ASubclassFactoryReplacesOnlyTheKernelsItOverrides()
    {
        ReplacedAdd? kernels = null;
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator, 0, b => kernels = new ReplacedAdd(b));
        Assert.That(backend.IlgpuKernels, Is.SameAs(kernels));
        using var a = backend.Upload<float>([1f, 2f, 3f]);
        using var b = backend.Upload<float>([10f, 20f, 30f]);
        using var y = backend.Allocate(DType.F32, 3);
        backend.Primitives.Add(a.AsTensor(3), b.AsTensor(3), y.AsTensor(3));
        Assert.That(y.AsTensor(3).ToArray<float>(), Is.EqualTo(new[] { 20f, 40f, 60f }));
        Assert.That(kernels!.AddCalls, Is.EqualTo(1));
        backend.Primitives.Gelu(a.AsTensor(3), y.AsTensor(3)); // inherited kernel still works
        var gelu = new float[3];
        PrimitivesReference.Gelu([1f, 2f, 3f], gelu);
        Assert.That(y.AsTensor(3).ToArray<float>(), Is.EqualTo(gelu).Within(1e-5f));
    }
}
