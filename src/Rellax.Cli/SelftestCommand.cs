using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Kernels.Cuda;
using Rellax.Kernels.Ilgpu;
using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax selftest</c>: every op family on every available backend against the double reference and the CPU
/// (<see cref="KernelSelftest.Check"/>), stories260K's greedy text per backend against the CPU's, and with
/// <c>--bench</c> the benchmark shapes timed against the device's peak (<see cref="KernelSelftest.Bench"/>), their
/// inputs and outputs written as safetensors with <c>--output</c> for an outside check (benchmarks/gpu/check_torch.py).
/// Exit codes: 0 all passed, 2 a check failed, 1 bad input or a backend that was asked for and cannot run here.
/// </summary>
internal static class SelftestCommand
{
    /// <summary>The exit code of a run in which some check failed.</summary>
    public const int FailedExitCode = 2;

    /// <summary>Tokens generated per backend for the text comparison (the emulator makes the first <see cref="EmulatorTextTokens"/>:
    /// each of its kernel launches costs milliseconds, and the CI runs it on two cores).</summary>
    private const int TextTokens = 40, EmulatorTextTokens = 6;

    public static Command Create()
    {
        var backend = CommonOptions.Choice("--backend", "Which backends to check: all (every one available here), cpu, ilgpu or cuda.", "all", "all", "cpu", "ilgpu", "cuda");
        var size = CommonOptions.Choice("--size", "Shapes of the checks: small (seconds, also on the ILGPU emulator), medium or large; with --bench, large times the GPU shapes of issue 20.", "small", "small", "medium", "large");
        var bench = new Option<bool>("--bench") { Description = "Also time the benchmark shapes (CFLoRA, SUBR, attention) and report GB/s or TFLOP/s against the device's peak." };
        var json = CommonOptions.Json();
        var threads = CommonOptions.Threads();
        var output = new Option<string?>("--output") { HelpName = "DIR", Description = "Write the benchmark shapes' inputs and outputs as safetensors into DIR (implies --bench; DIR must be new, empty or an earlier selftest output)." };
        var cmd = new Command("selftest", """
        Check every kernel (GEMM/Linear per weight dtype, int8 linear, norms, RoPE, SwiGLU, GELU, softmax, embedding, flash attention, CFLoRA, SUBR, backward ops) on random odd shapes against the double-precision reference and the CPU backend, then compare stories260K's greedy text on each backend with the CPU's. Exits 0 when everything passes, 2 when a check fails; an op a backend does not implement is listed, not failed.

        Examples:
          rellax selftest
          rellax selftest --backend cuda --size medium
          rellax selftest --backend cuda --bench --size large --output /tmp/selftest-out --json
        """) { backend, size, bench, json, output, threads };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Run(r.GetValue(backend)!, ParseSize(r.GetValue(size)!), r.GetValue(bench),
            r.GetValue(json), r.GetValue(output), Console.Out, cancel, r.GetValue(threads))));
        return cmd;
    }

    private static SelftestSize ParseSize(string value) => value switch
    {
        "small" => SelftestSize.Small,
        "medium" => SelftestSize.Medium,
        _ => SelftestSize.Large,
    };

    /// <summary>An existing --output folder may be replaced when it is empty or an earlier selftest output.</summary>
    private static string? RefuseReason(string folder) =>
        Directory.EnumerateFileSystemEntries(folder).Any() && !File.Exists(Path.Combine(folder, ManifestName))
            ? $"exists, is not empty and is not an earlier selftest output (no {ManifestName})"
            : null;

    private const string ManifestName = "selftest.json";

    /// <summary>One backend of the run: created, or why not (and whether that is a failure: asked-for or probed-usable backends that fail to start are).</summary>
    internal sealed record Entry(string Name, ComputeBackend? Backend, string Detail, bool Failed);

    /// <summary>One text comparison; <paramref name="Ran"/> is false when it was not run (the emulator at size small), which is
    /// neither a pass nor a failure.</summary>
    private sealed record TextRow(string Backend, string Attention, string Text, bool SameAsCpu, int Tokens, double Milliseconds, string Note, bool Ran = true);

    internal static int Run(string backendChoice, SelftestSize size, bool bench, bool json, string? outputDir, TextWriter log, CancellationToken cancel,
        int threads = 0)
    {
        if (outputDir is not null) OutputFile.CheckFolder(outputDir, "--output", RefuseReason);
        var entries = OpenBackends(backendChoice, threads);
        try
        {
            return Run(entries, size, bench, json, outputDir, log, cancel);
        }
        finally
        {
            foreach (var e in entries) e.Backend?.Dispose();
        }
    }

    /// <summary>The run over backends already opened (tests pass their own, e.g. a deliberately broken one); <paramref name="only"/>
    /// limits the kernel checks to some ops and <paramref name="compareText"/> turns the model text on or off.</summary>
    internal static int Run(IReadOnlyList<Entry> entries, SelftestSize size, bool bench, bool json, string? outputDir, TextWriter log,
        CancellationToken cancel, Func<string, bool>? only = null, bool compareText = true)
    {
        bench |= outputDir is not null;
        {
            var text = json ? TextWriter.Null : log;
            var backends = entries.Where(e => e.Backend is not null).Select(e => e.Backend!).ToList();
            text.WriteLine($"rellax selftest: size {size.ToString().ToLowerInvariant()}, {Environment.ProcessorCount} CPU threads");
            foreach (var e in entries) text.WriteLine($"  {e.Name,-6} {(e.Backend is null ? e.Failed ? "FAILED TO START" : "unavailable" : "checked"),-15} {e.Detail}");
            text.WriteLine();
            text.WriteLine(CheckHeader);
            var checks = KernelSelftest.Check(backends, size, row => text.WriteLine(Format(row)), 20, only, cancel);
            text.WriteLine();
            var texts = compareText ? CompareText(backends, size, text, cancel) : [];
            var peaks = new List<(string Backend, SelftestPeak Peak)>();
            var benchRows = new List<SelftestBenchResult>();
            if (bench)
            {
                void RunBench(string? folder)
                {
                    foreach (var b in backends)
                    {
                        if (b is IlgpuBackend { Kind: IlgpuDeviceKind.CpuEmulator })
                        {
                            text.WriteLine($"bench: {b.Name} skipped: the ILGPU CPU emulator runs GPU kernels thousands of times slower than a device; its times mean nothing");
                            continue;
                        }
                        var peak = KernelSelftest.Peak(b);
                        peaks.Add((b.Name, peak));
                        text.WriteLine($"bench on {b.Name}: peak fp32 {peak.Fp32TflopsPerSecond:F2} TFLOP/s, tensor {peak.TensorTflopsPerSecond:F2} TFLOP/s, {peak.GigabytesPerSecond:F0} GB/s ({peak.Source})");
                        text.WriteLine(BenchHeader);
                        Action<SelftestCapture>? capture = folder is null ? null : c => Save(folder, c);
                        benchRows.AddRange(KernelSelftest.Bench(b, size, row => text.WriteLine(Format(row)), capture, cancel));
                        text.WriteLine();
                    }
                    if (folder is not null) WriteManifest(folder, size, entries, peaks, benchRows);
                }
                if (outputDir is null) RunBench(null);
                else OutputFile.WriteFolder(outputDir, RefuseReason, RunBench, cancel);
            }
            int passed = checks.Count(c => c.Status == SelftestStatus.Pass) + texts.Count(t => t.Ran && t.SameAsCpu);
            int failed = checks.Count(c => c.Status == SelftestStatus.Fail) + texts.Count(t => t.Ran && !t.SameAsCpu) + entries.Count(e => e.Failed);
            int notImplemented = checks.Count(c => c.Status == SelftestStatus.NotImplemented), notRun = texts.Count(t => !t.Ran);
            var failures = checks.Where(c => c.Status == SelftestStatus.Fail).Select(c => $"{c.Op} on {c.Backend}")
                .Concat(texts.Where(t => t.Ran && !t.SameAsCpu).Select(t => $"text ({t.Attention} attention) on {t.Backend}"))
                .Concat(entries.Where(e => e.Failed).Select(e => $"backend {e.Name} did not start")).ToList();
            if (json)
                log.WriteLine(JsonSerializer.Serialize(new
                {
                    size = size.ToString().ToLowerInvariant(),
                    backends = entries.Select(e => new { name = e.Name, backend = e.Backend?.Name, checked_ = e.Backend is not null, failed = e.Failed, detail = e.Detail }),
                    checks = checks.Select(c => new
                    {
                        op = c.Op, shape = c.Shape, backend = c.Backend, status = StatusName(c.Status), max_abs_error = Num(c.MaxAbsError),
                        max_rel_error = Num(c.MaxRelError), tolerance = c.Tolerance, max_abs_vs_cpu = Num(c.MaxAbsVsCpu), ms = Num(c.Milliseconds), note = c.Note,
                    }),
                    text = texts.Select(t => new { backend = t.Backend, attention = t.Attention, ran = t.Ran, text = t.Text, same_as_cpu = t.SameAsCpu, tokens = t.Tokens, ms = Num(t.Milliseconds), note = t.Note }),
                    peaks = peaks.Select(p => PeakJson(p.Backend, p.Peak)),
                    bench = benchRows.Select(BenchJson),
                    output = outputDir,
                    passed,
                    failed,
                    not_implemented = notImplemented,
                    not_run = notRun,
                    failures,
                    ok = failed == 0,
                }, JsonOptions));
            else
            {
                if (outputDir is not null) log.WriteLine($"wrote the benchmark inputs and outputs to {outputDir} (check them with benchmarks/gpu/check_torch.py)");
                log.WriteLine($"selftest: {passed} passed, {failed} failed, {notImplemented} not implemented" + (notRun > 0 ? $", {notRun} not run" : "") +
                    (failures.Count > 0 ? $"; FAILED: {string.Join(", ", failures)}" : ""));
            }
            return failed == 0 ? 0 : FailedExitCode;
        }
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = new TrailingUnderscorePolicy() };

    /// <summary>Keeps names as written, dropping a trailing underscore (C# keywords: <c>checked_</c>).</summary>
    private sealed class TrailingUnderscorePolicy : JsonNamingPolicy
    {
        public override string ConvertName(string name) => name.TrimEnd('_');
    }

    /// <summary>The backends to check. An explicitly named backend that cannot run here is an error (exit 1); with
    /// <c>all</c>, one that is absent is listed as unavailable, and one the probe found but that fails to start is a failure.</summary>
    private static List<Entry> OpenBackends(string choice, int threads)
    {
        var entries = new List<Entry>();
        try
        {
            if (choice != "all")
            {
                var b = Backends.Create(choice, threads);
                entries.Add(new Entry(choice, b, Describe(b), false));
                return entries;
            }
            var cpu = (Kernels.Cpu.CpuBackend)Backends.Create("cpu", threads);
            entries.Add(new Entry("cpu", cpu, $"{cpu.Threads} threads; {Kernels.Cpu.CpuBackend.Int8Paths}", false));
            var probe = IlgpuBackend.Probe();
            if (probe.Devices.Count == 0) entries.Add(new Entry("ilgpu", null, string.Join("; ", probe.Problems), false));
            else entries.Add(TryOpen("ilgpu", IlgpuBackend.CreateBest));
            var cuda = CudaAvailability.Probe();
            entries.Add(cuda.Available ? TryOpen("cuda", () => CudaBackend.Create()) : new Entry("cuda", null, cuda.Reason ?? "no CUDA device", false));
            return entries;
        }
        catch
        {
            foreach (var e in entries) e.Backend?.Dispose();
            throw;
        }
    }

    private static Entry TryOpen(string name, Func<ComputeBackend> create)
    {
        try
        {
            var b = create();
            return new Entry(name, b, Describe(b), false);
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or IOException or DllNotFoundException
                                     or ILGPU.Runtime.Cuda.CudaException or Interop.CudaException or Interop.NvrtcException)
        {
            return new Entry(name, null, CommonOptions.MessageOf(e), true);
        }
    }

    private static string Describe(ComputeBackend b) => b switch
    {
        CudaBackend c => $"{c.Name}; kernels: {c.KernelOrigin}",
        IlgpuBackend { Kind: IlgpuDeviceKind.CpuEmulator } => $"{b.Name} (ILGPU's CPU emulator: correct but very slow; for testing)",
        _ => b.Name,
    };

    /// <summary>Greedy text from the embedded stories260K on each backend, fp32 and int8 attention, against the CPU's.</summary>
    private static List<TextRow> CompareText(IReadOnlyList<ComputeBackend> backends, SelftestSize size, TextWriter text, CancellationToken cancel)
    {
        var rows = new List<TextRow>();
        if (backends.Count == 0) return rows;
        string modelDir = CommonOptions.DefaultModelDirectory();
        var cpuText = new Dictionary<AttentionPrecision, int[]>();
        using (var cpu = new Kernels.Cpu.CpuBackend())
            foreach (var attention in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
                cpuText[attention] = Generate(modelDir, cpu, attention, TextTokens, cancel).Ids;
        text.WriteLine($"stories260K greedy text ({TextTokens} tokens after \"Once upon a time\"; {EmulatorTextTokens} on the ILGPU emulator) against the CPU's:");
        foreach (var b in backends)
            foreach (var attention in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
            {
                cancel.ThrowIfCancellationRequested();
                string name = CommonOptions.Name(attention);
                bool emulator = b is IlgpuBackend { Kind: IlgpuDeviceKind.CpuEmulator };
                TextRow row;
                if (emulator && size == SelftestSize.Small)
                {
                    // Every forward pass is ~70 kernel launches, each costing milliseconds of emulated threads: minutes on two
                    // cores, past the CI's budget. Listed, not hidden; the kernels themselves were checked above.
                    row = new TextRow(b.Name, name, "", false, 0, double.NaN, "not run on the ILGPU emulator at size small (minutes of emulated launches; use --size medium)", Ran: false);
                    rows.Add(row);
                    text.WriteLine($"  {row.Backend,-32} {row.Attention,-5} not run  {row.Note}");
                    continue;
                }
                try
                {
                    int tokens = emulator ? EmulatorTextTokens : TextTokens;
                    var (ids, decoded, ms) = Generate(modelDir, b, attention, tokens, cancel);
                    var expected = cpuText[attention].Take(tokens).ToArray();
                    int diverge = Enumerable.Range(0, Math.Min(ids.Length, expected.Length)).FirstOrDefault(i => ids[i] != expected[i], -1);
                    bool same = ids.SequenceEqual(expected);
                    row = new TextRow(b.Name, name, decoded, same, ids.Length, ms,
                        same ? "same tokens as the CPU" : diverge >= 0 ? $"differs from the CPU from token {diverge}" : $"{ids.Length} tokens, the CPU made {expected.Length}");
                }
                catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
                {
                    row = new TextRow(b.Name, name, "", false, 0, double.NaN, CommonOptions.MessageOf(e));
                }
                rows.Add(row);
                text.WriteLine($"  {row.Backend,-32} {row.Attention,-5} {(row.SameAsCpu ? "PASS" : "FAIL")} {row.Milliseconds,9:F1} ms  {row.Note}: {Quote(row.Text)}");
            }
        text.WriteLine();
        return rows;
    }

    private static (int[] Ids, string Text, double Milliseconds) Generate(string modelDir, ComputeBackend backend, AttentionPrecision attention, int tokens, CancellationToken cancel)
    {
        using var model = LlamaModel.Load(modelDir, backend);
        var prompt = model.Tokenizer.Encode("Once upon a time", addSpecialTokens: true);
        using var session = model.CreateSession(attention: attention);
        var clock = Stopwatch.StartNew();
        var ids = new List<int>();
        foreach (int id in GreedyGenerator.Generate(session, prompt, tokens, model.Config.EosTokenIds.ToHashSet()))
        {
            cancel.ThrowIfCancellationRequested();
            ids.Add(id);
        }
        return ([.. ids], model.Tokenizer.Decode(ids), clock.Elapsed.TotalMilliseconds);
    }

    private static string Quote(string s) => "\"" + (s.Length > 70 ? s[..70] + "..." : s).ReplaceLineEndings(" ") + "\"";

    private static void Save(string folder, SelftestCapture capture)
    {
        var writer = new SafeTensorsWriter();
        foreach (var (key, value) in capture.Metadata) writer.Metadata[key] = value;
        foreach (var (name, data, shape) in capture.Tensors)
            switch (data)
            {
                case float[] f: writer.Add<float>(name, SafeTensorDType.F32, shape, f); break;
                case Half[] h: writer.Add<Half>(name, SafeTensorDType.F16, shape, h); break;
                case sbyte[] q: writer.Add<sbyte>(name, SafeTensorDType.I8, shape, q); break;
                case int[] i: writer.Add<int>(name, SafeTensorDType.I32, shape, i); break;
                default: throw new InvalidOperationException($"capture {capture.Name}: tensor {name} has an unsupported element type {data.GetType().Name}");
            }
        writer.Save(Path.Combine(folder, capture.Name + ".safetensors"));
    }

    private static void WriteManifest(string folder, SelftestSize size, IReadOnlyList<Entry> entries, List<(string Backend, SelftestPeak Peak)> peaks, List<SelftestBenchResult> rows)
    {
        var manifest = new
        {
            format = "rellax-selftest",
            size = size.ToString().ToLowerInvariant(),
            backends = entries.Where(e => e.Backend is not null).Select(e => e.Backend!.Name),
            peaks = peaks.Select(p => PeakJson(p.Backend, p.Peak)),
            bench = rows.Select(BenchJson),
            files = Directory.EnumerateFiles(folder, "*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal),
        };
        string json = JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true });
        OutputFile.Write(Path.Combine(folder, ManifestName), stream => stream.Write(System.Text.Encoding.UTF8.GetBytes(json + "\n")));
    }

    private static object PeakJson(string backend, SelftestPeak p) => new
    {
        backend, fp32_tflops = Num(p.Fp32TflopsPerSecond), tensor_tflops = Num(p.TensorTflopsPerSecond), gb_per_s = Num(p.GigabytesPerSecond), source = p.Source,
    };

    private static object BenchJson(SelftestBenchResult r) => new
    {
        op = r.Op, shape = r.Shape, backend = r.Backend, ms = Num(r.Milliseconds), flops = r.Flops, bytes = r.Bytes, metric = r.Metric,
        achieved = Num(r.Achieved), peak_fraction = Num(r.PeakFraction), note = r.Note,
    };

    private static double? Num(double x) => double.IsFinite(x) ? x : null;

    private static string StatusName(SelftestStatus s) => s switch
    {
        SelftestStatus.Pass => "pass",
        SelftestStatus.Fail => "fail",
        _ => "not implemented",
    };

    private static string G(double x, string format = "0.0e0") => double.IsNaN(x) ? "-" : x.ToString(format, CultureInfo.InvariantCulture);

    private static readonly string CheckHeader =
        $"{"op",-24} {"shape",-52} {"backend",-32} {"max abs",8} {"max rel",8} {"tolerance",-24} {"vs cpu",8} {"ms",9}  result";

    internal static string Format(SelftestCheck c) =>
        $"{c.Op,-24} {c.Shape,-52} {c.Backend,-32} {G(c.MaxAbsError),8} {G(c.MaxRelError),8} {c.Tolerance,-24} {G(c.MaxAbsVsCpu),8} {G(c.Milliseconds, "0.000"),9}  " +
        (c.Status switch { SelftestStatus.Pass => "PASS", SelftestStatus.Fail => "FAIL", _ => "not implemented" }) +
        (c.Note.Length > 0 && c.Status != SelftestStatus.NotImplemented ? $"  ({c.Note})" : "");

    private static readonly string BenchHeader = $"{"op",-16} {"shape",-44} {"ms",10} {"achieved",16} {"of peak",8}  note";

    private static string Format(SelftestBenchResult r) =>
        $"{r.Op,-16} {r.Shape,-44} {G(r.Milliseconds, "0.000"),10} {G(r.Achieved, "0.00") + " " + r.Metric,16} {(double.IsNaN(r.PeakFraction) ? "-" : (100 * r.PeakFraction).ToString("0.0", CultureInfo.InvariantCulture) + "%"),8}  {r.Note}";
}
