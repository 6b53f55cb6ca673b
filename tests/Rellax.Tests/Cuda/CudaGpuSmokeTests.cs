using NUnit.Framework;
using Rellax.Interop;
using Rellax.Kernels;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>
/// End-to-end on a real GPU: load the kernels into the primary context, run RMSNorm, compare with the scalar
/// reference. Ignored where no CUDA device is present (the numerics team owns the full GPU sweep).
/// </summary>
[TestFixture]
public class CudaGpuSmokeTests
{
    [TestCase(3, 7)]
    [TestCase(4, 768)]
    [TestCase(2, 4096)]
    public void RmsNormMatchesReference(int rows, int n)
    {
        var probe = CudaAvailability.Probe();
        if (!probe.Available)
        {
            Assert.Ignore($"No CUDA device: {probe.Reason}");
        }

        var rng = new Random(rows * 31 + n);
        var x = Enumerable.Range(0, rows * n).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        var w = Enumerable.Range(0, n).Select(_ => (float)(0.5 + rng.NextDouble())).ToArray();
        var expected = new float[rows * n];
        PrimitivesReference.RmsNorm(x, w, 1e-5f, expected, n);

        using var primary = CudaDriver.RetainPrimaryContext(CudaDriver.GetDevice(0));
        using var scope = CudaDriver.Enter(primary.Context);
        using var library = CudaKernelLibrary.Load(primary.Context, new NvrtcCompiler(new CudaKernelCache(NvrtcTestSupport.NewTempDirectory())), usePrebuiltFatbin: false);
        TestContext.Out.WriteLine($"{probe.DeviceName} sm_{probe.ComputeCapability!.Value.Number}: {library.Origin}");
        var rmsNorm = new CudaRmsNorm(library);
        using var dx = CudaDriver.Allocate((ulong)x.Length * sizeof(float));
        using var dw = CudaDriver.Allocate((ulong)w.Length * sizeof(float));
        using var dy = CudaDriver.Allocate((ulong)x.Length * sizeof(float));
        CudaDriver.CopyToDevice<float>(dx.Pointer, x);
        CudaDriver.CopyToDevice<float>(dw.Pointer, w);

        rmsNorm.Launch(IntPtr.Zero, dx.Pointer, dw.Pointer, dy.Pointer, rows, n, 1e-5f);
        CudaDriver.SynchronizeStream(IntPtr.Zero);

        var actual = new float[rows * n];
        CudaDriver.CopyToHost<float>(actual, dy.Pointer);
        for (var i = 0; i < actual.Length; i++)
        {
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5f + 1e-5f * Math.Abs(expected[i])), $"element {i}");
        }
    }
}
