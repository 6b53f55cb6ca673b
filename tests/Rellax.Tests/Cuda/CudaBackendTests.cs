using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>The cuda backend as users reach it: by name, with a clean refusal where no GPU is present.</summary>
[TestFixture]
public sealed class CudaBackendTests
{
    [Test]
    public void CreatingTheCudaBackendWithoutAGpuSaysWhyOrWorksWithOne()
    {
        var probe = CudaAvailability.Probe();
        if (probe.Available)
        {
            using var backend = Backends.Create("cuda");
            Assert.That(backend, Is.InstanceOf<CudaBackend>());
            Assert.That(((CudaBackend)backend).KernelOrigin, Is.Not.Empty);
            return;
        }
        Assert.That(() => Backends.Create("cuda"),
            Throws.InvalidOperationException.With.Message.Contains("not available").And.Message.Contains(probe.Reason));
    }

    [Test]
    public void DescribeListsEveryBackendAndNeverThrows()
    {
        var rows = Backends.Describe();
        Assert.That(rows.Select(r => r.Name), Is.EqualTo(Backends.Names));
        Assert.That(rows.Single(r => r.Name == "cpu").Available, Is.True);
        Assert.That(rows.Single(r => r.Name == "ilgpu").Available, Is.True, "the ILGPU CPU emulator is always there");
        Assert.That(rows.All(r => !string.IsNullOrWhiteSpace(r.Detail)), Is.True);
    }

    [Test]
    public void UnknownBackendNamesAreRejectedWithTheList()
    {
        Assert.That(() => Backends.Create("tpu"), Throws.ArgumentException.With.Message.Contains("tpu").And.Message.Contains("auto or one of: cpu, ilgpu, cuda"));
    }
}
