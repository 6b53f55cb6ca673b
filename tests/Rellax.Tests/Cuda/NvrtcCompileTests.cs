using System.Text;
using NUnit.Framework;
using Rellax.Interop;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>Every embedded kernel compiles with NVRTC (no GPU needed) and exposes its entry points.</summary>
[TestFixture]
public class NvrtcCompileTests
{
    private static IEnumerable<TestCaseData> SourcesAndArchitectures() =>
        from source in CudaKernelSources.SourceNames
        from arch in new[] { 80, 90 }
        select new TestCaseData(source, arch).SetName($"CompilesToPtx({source}, compute_{arch})");

    [TestCaseSource(nameof(SourcesAndArchitectures))]
    public void CompilesToPtx(string source, int arch)
    {
        NvrtcTestSupport.RequireNvrtc();
        var compiler = new NvrtcCompiler(cache: null);
        var entryPoints = CudaKernelSources.FindEntryPoints(CudaKernelSources.Read(source));
        Assert.That(entryPoints, Is.Not.Empty, $"{source} defines no extern \"C\" __global__ kernel");

        var image = compiler.CompileEmbedded(source, CudaArchitecture.FromNumber(arch), CudaImageKind.Ptx);

        var ptx = Encoding.UTF8.GetString(image.Bytes);
        Assert.Multiple(() =>
        {
            Assert.That(image.FromCache, Is.False);
            Assert.That(ptx, Does.Contain($".target sm_{arch}"));
            foreach (var name in entryPoints)
            {
                Assert.That(ptx, Does.Contain($".entry {name}("), $"PTX of {source} for compute_{arch} lacks entry {name}");
            }
        });
    }

    [Test]
    public void CompilesToCubinForSm90()
    {
        NvrtcTestSupport.RequireNvrtc();
        var compiler = new NvrtcCompiler(cache: null);
        foreach (var source in CudaKernelSources.SourceNames)
        {
            var image = compiler.CompileEmbedded(source, CudaArchitecture.Sm90, CudaImageKind.Cubin);
            Assert.That(image.Bytes.AsSpan(0, 4).ToArray(), Is.EqualTo(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }), $"{source}: cubin is not ELF");
        }
    }

    [Test]
    public void CompileErrorCarriesTheLogLine()
    {
        NvrtcTestSupport.RequireNvrtc();
        var compiler = new NvrtcCompiler(cache: null);
        const string Bad = "#include \"rellax_common.cuh\"\nextern \"C\" __global__ void broken(float* p) {\n  p[0] = rellax_no_such_symbol;\n}\n";

        var e = Assert.Throws<NvrtcException>(() => compiler.Compile("bad.cu", Bad, CudaArchitecture.Sm80, CudaImageKind.Ptx));

        Assert.Multiple(() =>
        {
            Assert.That(e!.Result, Is.EqualTo(NvrtcResult.Compilation));
            Assert.That(e.Call, Does.StartWith("nvrtcCompileProgram(bad.cu"));
            Assert.That(e.Log, Does.Contain("bad.cu(3)").And.Contain("rellax_no_such_symbol"));
            Assert.That(e.Message, Does.Contain("NVRTC_ERROR_COMPILATION").And.Contain("rellax_no_such_symbol"));
        });
    }

    [Test]
    public void MissingHeaderIsACompileError()
    {
        NvrtcTestSupport.RequireNvrtc();
        var compiler = new NvrtcCompiler(cache: null);
        var e = Assert.Throws<NvrtcException>(() => compiler.Compile("noheader.cu", "#include \"rellax_missing.cuh\"\n",
            CudaArchitecture.Sm80, CudaImageKind.Ptx, headers: []));
        Assert.That(e!.Log, Does.Contain("rellax_missing.cuh"));
    }

    [Test]
    public void ChoosesCubinForKnownArchitecturesAndPtxForNewerOnes()
    {
        NvrtcTestSupport.RequireNvrtc();
        var compiler = new NvrtcCompiler(cache: null);
        var newest = compiler.SupportedArchitectures[^1];
        Assert.Multiple(() =>
        {
            Assert.That(compiler.SupportedArchitectures, Does.Contain(CudaArchitecture.Sm80).And.Contain(CudaArchitecture.Sm90));
            Assert.That(compiler.ChooseTarget(CudaArchitecture.Sm90), Is.EqualTo((CudaArchitecture.Sm90, CudaImageKind.Cubin)));
            Assert.That(compiler.ChooseTarget(new CudaArchitecture(newest.Major + 3, 0)), Is.EqualTo((newest, CudaImageKind.Ptx)));
            Assert.Throws<NotSupportedException>(() => compiler.ChooseTarget(new CudaArchitecture(1, 0)));
        });
    }

    [Test]
    public void ReportsVersion()
    {
        NvrtcTestSupport.RequireNvrtc();
        var (major, minor) = Nvrtc.Version;
        TestContext.Out.WriteLine($"NVRTC {major}.{minor} from {NativeLibraryResolver.LoadedNvrtc}");
        Assert.That(major, Is.GreaterThanOrEqualTo(11));
    }
}
