using NUnit.Framework;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>
/// Base of the GPU-only fixtures: one <see cref="CudaBackend"/> for the fixture when a CUDA device is usable;
/// <see cref="Backend"/> ignores the test (with the probe's reason) when none is.
/// </summary>
public abstract class CudaDeviceFixture
{
    private CudaBackend? _backend;

    [OneTimeSetUp]
    public void CreateBackend()
    {
        if (CudaAvailability.Probe().Available) _backend = CudaBackend.Create();
    }

    [OneTimeTearDown]
    public void DisposeBackend() => _backend?.Dispose();

    /// <summary>The fixture's CUDA backend; ignores the calling test when there is no device.</summary>
    protected CudaBackend Backend
    {
        get
        {
            if (_backend is null) Assert.Ignore($"No CUDA device: {CudaAvailability.Probe().Reason}");
            return _backend!;
        }
    }
}
