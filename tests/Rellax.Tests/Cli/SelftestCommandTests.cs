using System.Diagnostics;
using System.Text.Json;
using NUnit.Framework;
using Rellax.Cli;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Kernels.Ilgpu;
using Rellax.Runtime;

namespace Rellax.Tests.Cli;

/// <summary>
/// <c>rellax selftest</c> (issue 20): the kernel checks pass on the CPU and on ILGPU's CPU emulator at size small, a
/// deliberately broken backend makes the run fail and names the op, <c>--json</c> has its documented shape, and the
/// <c>--output</c> files hold the benchmark inputs and outputs consistently (checked here against the double reference,
/// and by the Python checker in its plain-Python mode when python3 is present).
/// </summary>
[TestFixture]
public sealed class SelftestCommandTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("rellax-selftest-test-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>Ops the emulator may lack (the CPU-only backward ops and the int8 linear layer); anything else must pass there.</summary>
    private static bool MayBeMissingOnIlgpu(string op) => op == "linear.int8" || op == "attention.fp32.backward" || op.StartsWith("backward.", StringComparison.Ordinal);

    [Test]
    public void EveryOpPassesOnTheCpu()
    {
        using var cpu = new CpuBackend(2);
        var rows = KernelSelftest.Check([cpu], SelftestSize.Small);
        Assert.That(rows.Select(r => r.Op), Is.EqualTo(KernelSelftest.OpNames));
        Assert.That(KernelSelftest.OpNames, Has.Count.GreaterThanOrEqualTo(30));
        foreach (var r in rows)
        {
            Assert.That(r.Status, Is.EqualTo(SelftestStatus.Pass), SelftestCommand.Format(r));
            Assert.That(r.MaxAbsVsCpu, Is.EqualTo(0), "the CPU row is compared with itself");
            Assert.That(double.IsFinite(r.MaxAbsError) && double.IsFinite(r.Milliseconds), Is.True, SelftestCommand.Format(r));
        }
        // The families the issue names are all there.
        foreach (string family in new[] { "matmul", "linear.f32", "linear.f16", "linear.bf16", "linear.int8", "rmsnorm", "rope", "swiglu", "gelu",
                     "embedding.f16", "attention.fp32.prefill", "attention.int8.prefill", "attention.int8.decode", "cflora.forward.f16",
                     "cflora.backward", "cflora.generator", "subr.f32", "subr.f16", "subr.i8" })
            Assert.That(KernelSelftest.OpNames, Does.Contain(family));
    }

    [Test]
    public void EveryImplementedOpPassesOnTheEmulatorAndTheRestIsListedAsNotImplemented()
    {
        using var cpu = new CpuBackend(2);
        using var emulator = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        var rows = KernelSelftest.Check([cpu, emulator], SelftestSize.Small);
        Assert.That(rows, Has.Count.EqualTo(2 * KernelSelftest.OpNames.Count), "one row per op and backend: nothing is skipped");
        foreach (var r in rows.Where(r => r.Backend == emulator.Name))
        {
            if (r.Status == SelftestStatus.NotImplemented)
            {
                Assert.That(MayBeMissingOnIlgpu(r.Op), Is.True, $"{r.Op} should be implemented on ILGPU");
                Assert.That(r.Note, Does.Contain("not implemented"));
                continue;
            }
            Assert.That(r.Status, Is.EqualTo(SelftestStatus.Pass), SelftestCommand.Format(r));
            Assert.That(r.MaxAbsVsCpu, Is.LessThan(1e-3), SelftestCommand.Format(r));
        }
        Assert.That(rows.Count(r => r.Backend == emulator.Name && r.Status == SelftestStatus.Pass), Is.GreaterThanOrEqualTo(20));
    }

    /// <summary>The emulator's kernels with GELU broken: one output element off by 1e-3 (a realistic indexing slip).</summary>
    private sealed class BrokenGelu(IlgpuBackend backend) : IlgpuPrimitiveKernels(backend)
    {
        public override void Gelu(Tensor x, Tensor y)
        {
            base.Gelu(x, y);
            var values = new float[y.ElementCount];
            y.Buffer.CopyTo<float>(values, y.Offset);
            values[values.Length / 2] += 1e-3f;
            y.Buffer.CopyFrom<float>(values, y.Offset);
        }
    }

    [Test]
    public void ABrokenBackendFailsTheRunAndTheOpIsNamed()
    {
        using var broken = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator, 0, b => new BrokenGelu(b));
        var log = new StringWriter();
        int code = SelftestCommand.Run([new SelftestCommand.Entry("ilgpu", broken, "broken on purpose", false)], SelftestSize.Small,
            bench: false, json: false, outputDir: null, log, CancellationToken.None, only: op => op is "gelu" or "swiglu" or "matmul", compareText: false);
        string text = log.ToString();
        Assert.That(code, Is.EqualTo(SelftestCommand.FailedExitCode), text);
        Assert.That(text, Does.Contain($"FAILED: gelu on {broken.Name}"), text);
        var geluLine = text.Split('\n').Single(l => l.StartsWith("gelu ", StringComparison.Ordinal));
        Assert.That(geluLine, Does.Contain("FAIL").And.Contain("worst element"), geluLine);
        Assert.That(text, Does.Contain("2 passed, 1 failed"), text);
    }

    [Test]
    public void JsonIsOneObjectWithEveryCheckTheTextAndTheCounts()
    {
        var (code, stdout, stderr) = RellaxCommandTests.Run("selftest", "--backend", "cpu", "--json");
        Assert.That(code, Is.EqualTo(0), stderr + stdout);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.That(root.GetProperty("ok").GetBoolean(), Is.True);
        Assert.That(root.GetProperty("size").GetString(), Is.EqualTo("small"));
        Assert.That(root.GetProperty("failed").GetInt32(), Is.EqualTo(0));
        var checks = root.GetProperty("checks").EnumerateArray().ToList();
        Assert.That(checks, Has.Count.EqualTo(KernelSelftest.OpNames.Count));
        foreach (var c in checks)
        {
            Assert.That(c.GetProperty("backend").GetString(), Is.EqualTo("cpu"));
            Assert.That(c.GetProperty("status").GetString(), Is.EqualTo("pass"));
            foreach (string field in new[] { "op", "shape", "tolerance", "note" }) Assert.That(c.GetProperty(field).ValueKind, Is.EqualTo(JsonValueKind.String));
            foreach (string field in new[] { "max_abs_error", "max_rel_error", "max_abs_vs_cpu", "ms" }) Assert.That(c.GetProperty(field).ValueKind, Is.EqualTo(JsonValueKind.Number), field);
        }
        var text = root.GetProperty("text").EnumerateArray().ToList();
        Assert.That(text.Select(t => t.GetProperty("attention").GetString()), Is.EquivalentTo(new[] { "fp32", "int8" }));
        foreach (var t in text)
        {
            Assert.That(t.GetProperty("same_as_cpu").GetBoolean(), Is.True);
            Assert.That(t.GetProperty("text").GetString(), Does.StartWith(", there was a little girl named Lily"));
        }
        Assert.That(root.GetProperty("passed").GetInt32(), Is.EqualTo(checks.Count + text.Count));
        Assert.That(root.GetProperty("bench").GetArrayLength(), Is.EqualTo(0), "no --bench, no timings");
    }

    [Test]
    public void OutputHoldsTheBenchmarkInputsAndOutputsConsistently()
    {
        string output = Path.Combine(_dir, "out");
        var (code, stdout, stderr) = RellaxCommandTests.Run("selftest", "--backend", "cpu", "--output", output, "--json");
        Assert.That(code, Is.EqualTo(0), stderr + stdout);
        using var doc = JsonDocument.Parse(stdout);
        var bench = doc.RootElement.GetProperty("bench").EnumerateArray().ToList();
        Assert.That(bench.Select(b => b.GetProperty("op").GetString()), Is.EquivalentTo(new[] { "cflora.f16", "subr.f32", "subr.f16", "subr.i8", "attention.int8", "attention.fp32" }));
        foreach (var b in bench) Assert.That(b.GetProperty("achieved").GetDouble(), Is.GreaterThan(0));
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "selftest.json")));
        var files = manifest.RootElement.GetProperty("files").EnumerateArray().Select(f => f.GetString()!).ToList();
        Assert.That(files, Is.EquivalentTo(new[] { "cpu-cflora-T64.safetensors", "cpu-subr-L300.safetensors", "cpu-attention-T64.safetensors" }));
        Assert.That(Directory.GetFiles(output).Select(Path.GetFileName), Is.EquivalentTo(files.Append("selftest.json")), "nothing else, no temporary files");

        // The CFLoRA file: our output against the double reference recomputed from the inputs in the file.
        using (var f = SafeTensorsFile.Open(Path.Combine(output, "cpu-cflora-T64.safetensors")))
        {
            int t = int.Parse(f.Metadata["T"]), d = int.Parse(f.Metadata["d"]), r = int.Parse(f.Metadata["r"]);
            float scale = float.Parse(f.Metadata["scale"], System.Globalization.CultureInfo.InvariantCulture);
            var sampleOfRow = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(f.GetBytes("sample_of_row")).ToArray();
            var expected = new float[t * d];
            CfloraReference.Forward(f.ReadFloat32("x"), f.ReadFloat32("w0"), [], f.ReadFloat32("a"), f.ReadFloat32("b"), f.ReadFloat32("g"),
                sampleOfRow, scale, expected, d, d, r);
            var y = f.ReadFloat32("y");
            for (int i = 0; i < y.Length; i++) Assert.That(y[i], Is.EqualTo(expected[i]).Within(1e-4 + 1e-4 * Math.Abs(expected[i])), $"y[{i}]");
            Assert.That(f.Info("w0").DType, Is.EqualTo(SafeTensorDType.F16));
        }
        // The attention file: both outputs against exact attention on the inputs in the file.
        using (var f = SafeTensorsFile.Open(Path.Combine(output, "cpu-attention-T64.safetensors")))
        {
            int hq = int.Parse(f.Metadata["Hq"]), hkv = int.Parse(f.Metadata["Hkv"]), t = int.Parse(f.Metadata["T"]), d = int.Parse(f.Metadata["D"]);
            var s = new AttentionShape(1, hq, hkv, t, d, AttentionLayout.HeadMajor);
            var exact = AttentionReference.Exact(f.ReadFloat32("q"), f.ReadFloat32("k"), f.ReadFloat32("v"), s, [t], 1f / MathF.Sqrt(d), causal: true);
            var (cosine, _) = KernelSelftest.Similarity(f.ReadFloat32("o_int8"), exact);
            Assert.That(cosine, Is.GreaterThanOrEqualTo(0.999));
            Assert.That(Attention.AttentionCheck.MaxAbs(f.ReadFloat32("o_fp32"), exact), Is.LessThan(5e-5));
        }

        // The Python checker reads the same folder; without torch it runs its plain-Python references.
        string script = Path.Combine(RepoRoot(), "benchmarks", "gpu", "check_torch.py");
        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { script, output, "--no-torch" }) psi.ArgumentList.Add(a);
        Process? p;
        try { p = Process.Start(psi); }
        catch (System.ComponentModel.Win32Exception) { Assert.Ignore("python3 is not installed: the Python checker was not run"); return; }
        using (p)
        {
            var pout = p!.StandardOutput.ReadToEndAsync();
            var perr = p.StandardError.ReadToEndAsync();
            Assert.That(p.WaitForExit(TimeSpan.FromMinutes(5)), Is.True, "check_torch.py did not finish in 5 minutes");
            Assert.That(p.ExitCode, Is.EqualTo(0), pout.Result + perr.Result);
            Assert.That(pout.Result, Does.Contain("0 failed").And.Not.Contain("skipped in pure mode"), pout.Result);
        }
    }

    [Test]
    public void AnUnavailableBackendOrAForeignOutputFolderIsOneLineAndExitCodeOne()
    {
        if (!Kernels.Cuda.CudaAvailability.Probe().Available)
        {
            var (code, stdout, stderr) = RellaxCommandTests.Run("selftest", "--backend", "cuda");
            Assert.That(code, Is.EqualTo(1), stdout);
            Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1), stderr);
            Assert.That(stderr, Does.StartWith("rellax: ").And.Contain("CUDA"));
        }
        string foreign = Path.Combine(_dir, "foreign");
        Directory.CreateDirectory(foreign);
        File.WriteAllText(Path.Combine(foreign, "keep.txt"), "mine");
        var (code2, _, stderr2) = RellaxCommandTests.Run("selftest", "--backend", "cpu", "--output", foreign);
        Assert.That(code2, Is.EqualTo(1));
        Assert.That(stderr2, Does.Contain("--output").And.Contain("not an earlier selftest output"));
        Assert.That(Directory.GetFiles(foreign).Select(Path.GetFileName), Is.EqualTo(new[] { "keep.txt" }));
        Assert.That(File.ReadAllText(Path.Combine(foreign, "keep.txt")), Is.EqualTo("mine"));
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Kernels.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("the repository root (Kernels.sln) was not found above the test directory");
    }
}
