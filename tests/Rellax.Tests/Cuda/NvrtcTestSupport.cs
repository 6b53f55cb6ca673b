using NUnit.Framework;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>Gate for tests that need NVRTC: ignored when it is missing, failed when CI requires it.</summary>
internal static class NvrtcTestSupport
{
    public const string RequireVariable = "RELLAX_REQUIRE_NVRTC";

    public static void RequireNvrtc()
    {
        if (NvrtcCompiler.IsAvailable(out var reason))
        {
            return;
        }

        var message = $"NVRTC not available ({reason}). To run the CUDA compile tests without a GPU: " +
                      "export RELLAX_NVRTC_PATH=$(.ci/fetch-nvrtc.sh ~/.cache/rellax/nvrtc) and rerun.";
        if (Environment.GetEnvironmentVariable(RequireVariable) == "1")
        {
            Assert.Fail($"{RequireVariable}=1 but {message}");
        }

        Assert.Ignore(message);
    }

    public static string NewTempDirectory()
    {
        var dir = Path.Combine(Path.GetTempPath(), "rellax-cuda-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
