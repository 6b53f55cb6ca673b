using System.Runtime.InteropServices;
using NUnit.Framework;
using Rellax.Interop;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>CUDA pieces that need neither a GPU nor NVRTC.</summary>
[TestFixture]
public class CudaHostTests
{
    [Test]
    public void ProbeNeverThrowsAndExplainsAbsence()
    {
        CudaProbeResult result = null!;
        Assert.DoesNotThrow(() => result = CudaAvailability.Probe());
        TestContext.Out.WriteLine(result);
        if (result.Available)
        {
            Assert.That(result.DeviceName, Is.Not.Empty);
            Assert.That(result.ComputeCapability!.Value.Major, Is.GreaterThanOrEqualTo(3));
            return;
        }

        Assert.That(result.Reason, Is.Not.Empty);
        Assert.That(result.DeviceName, Is.Null);
        if (!NativeLibrary.TryLoad("libcuda.so.1", out var h))
        {
            Assert.That(result.Reason, Does.Contain("CUDA driver (libcuda.so.1) not found"));
            Assert.That(CudaDriver.IsAvailable, Is.False);
            Assert.That(CudaDriver.TryInitialize(out var again), Is.False);
            Assert.That(again, Is.EqualTo(result.Reason));
        }
        else
        {
            NativeLibrary.Free(h);
        }
    }

    [Test]
    public void ProbeOfMissingOrdinalIsNotAvailable()
    {
        var result = CudaAvailability.Probe(ordinal: 1000);
        Assert.That(result.Available, Is.False);
        Assert.That(result.Reason, Is.Not.Empty);
    }

    [Test]
    public void EmbeddedSourcesArePresent()
    {
        Assert.That(CudaKernelSources.SourceNames, Does.Contain("rmsnorm.cu"));
        Assert.That(CudaKernelSources.HeaderNames, Does.Contain("rellax_common.cuh"));
        Assert.That(CudaKernelSources.Headers.Single(h => h.Key == "rellax_common.cuh").Value, Does.Contain("rellax_block_reduce_sum"));
        Assert.That(CudaKernelSources.FindSourceOf(CudaRmsNorm.EntryPoint), Is.EqualTo("rmsnorm.cu"));
        Assert.Throws<FileNotFoundException>(() => CudaKernelSources.Read("nope.cu"));
    }

    [Test]
    public void KernelSourcesIncludeNoToolkitHeaders()
    {
        // NVRTC without a toolkit has no system headers, and the CI NVRTC 11.8 has no built-in cuda_fp16.h.
        foreach (var name in CudaKernelSources.SourceNames.Concat(CudaKernelSources.HeaderNames))
        {
            var text = CudaKernelSources.Read(name);
            Assert.That(text, Does.Not.Match(@"#\s*include\s*<"), $"{name} includes a system header");
            Assert.That(text, Does.Not.Match(@"#\s*include\s*""cuda_fp16\.h"""), name);
        }
    }

    [Test]
    public void FindsEntryPointsAndIgnoresComments()
    {
        const string Source = """
            // extern "C" __global__ void commented_out(int x)
            /* extern "C" __global__ void also_commented(int x) */
            extern "C" __global__ void first_kernel(const float* x /* [n] */, int n) {}
            extern "C"
            __global__ void __launch_bounds__(256) second_kernel(float* y) {}
            __global__ void mangled_kernel(float* y) {}
            extern "C" __device__ float helper(float v) { return v; }
            """;
        Assert.That(CudaKernelSources.FindEntryPoints(Source), Is.EqualTo(new[] { "first_kernel", "second_kernel" }));
    }

    [TestCase(1, 32)]
    [TestCase(128, 32)]
    [TestCase(129, 64)]
    [TestCase(768, 192)]
    [TestCase(4096, 1024)]
    [TestCase(100_000, 1024)]
    public void RmsNormBlockSize(int n, int expected)
    {
        var block = CudaRmsNorm.BlockSizeFor(n);
        Assert.That(block, Is.EqualTo(expected));
        Assert.That(block % 32, Is.Zero);
    }

    [Test]
    public void FatbinVariableNamingAMissingFileIsAnError()
    {
        var old = Environment.GetEnvironmentVariable(CudaKernelLibrary.FatbinVariable);
        try
        {
            Environment.SetEnvironmentVariable(CudaKernelLibrary.FatbinVariable, "/nonexistent/rellax_kernels.fatbin");
            var e = Assert.Throws<FileNotFoundException>(() => CudaKernelLibrary.FindPrebuiltFatbin());
            Assert.That(e!.Message, Does.Contain("RELLAX_CUDA_FATBIN").And.Contain("/nonexistent/rellax_kernels.fatbin"));
            Environment.SetEnvironmentVariable(CudaKernelLibrary.FatbinVariable, null);
            Assert.That(CudaKernelLibrary.FindPrebuiltFatbin(), Is.Null);
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaKernelLibrary.FatbinVariable, old);
        }
    }

    [Test]
    public void CudaExceptionNamesCallAndError()
    {
        var e = new CudaException("cuModuleLoadDataEx(rmsnorm.cu)", CUresult.InvalidPtx, "ptxas fatal: line 3");
        Assert.That(e.Message, Does.Contain("cuModuleLoadDataEx(rmsnorm.cu)").And.Contain("INVALID_PTX").And.Contain("218").And.Contain("ptxas fatal"));
    }

    [Test]
    public void DevicePointerHelpers()
    {
        var p = CUdeviceptr.FromIntPtr(new IntPtr(0x7000_0000_1000L));
        Assert.That(p.Offset(16).Value, Is.EqualTo(0x7000_0000_1010UL));
        Assert.That(CUdeviceptr.Null.IsNull, Is.True);
        Assert.That(p.ToString(), Is.EqualTo("0x700000001000"));
    }
}
