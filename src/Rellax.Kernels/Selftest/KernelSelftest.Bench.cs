using System.Diagnostics;
using System.Runtime.Intrinsics;
using ILGPU.Runtime.Cuda;

namespace Rellax.Kernels;

public static partial class KernelSelftest
{
    /// <summary>
    /// Times the benchmark shapes on <paramref name="backend"/>: at <see cref="SelftestSize.Large"/> the issue's GPU shapes
    /// (CFLoRA T ∈ {256, 1024, 4096}, d = 4096, r = 8 with f16 W0, against the base f16 GEMM; SUBR B = 1024,
    /// L ∈ {2000, 20000}, d = 512, K = 50 for f32, f16 and i8 tables; causal int8 and fp32 flash attention
    /// T ∈ {1024, 2048, 4096, 8192}, D = 128, 32 query and 8 KV heads), smaller ones at the other sizes. Each time is
    /// the median of up to three synchronized calls after a warm-up call; rates are compared with <see cref="Peak"/>.
    /// </summary>
    /// <param name="backend">The backend to time.</param>
    /// <param name="size">Which set of shapes.</param>
    /// <param name="onRow">Called with each row as soon as it is known, or null.</param>
    /// <param name="capture">Given each shape's inputs and outputs (for <c>--output</c>), or null to keep nothing.</param>
    /// <param name="cancellationToken">Checked between shapes.</param>
    public static IReadOnlyList<SelftestBenchResult> Bench(ComputeBackend backend, SelftestSize size, Action<SelftestBenchResult>? onRow = null,
        Action<SelftestCapture>? capture = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (!Enum.IsDefined(size)) throw new ArgumentOutOfRangeException(nameof(size), size, "unknown size");
        var peak = Peak(backend);
        var rows = new List<SelftestBenchResult>();
        void Add(SelftestBenchResult row) { rows.Add(row); onRow?.Invoke(row); }
        int Pick(int small, int medium, int large) => size switch { SelftestSize.Small => small, SelftestSize.Medium => medium, _ => large };
        foreach (int t in size switch { SelftestSize.Small => [64], SelftestSize.Medium => [256, 1024], _ => new[] { 256, 1024, 4096 } })
        {
            cancellationToken.ThrowIfCancellationRequested();
            BenchCflora(backend, t, Pick(128, 1024, 4096), peak, Add, capture);
        }
        foreach (int l in size switch { SelftestSize.Small => [300], SelftestSize.Medium => [2000], _ => new[] { 2000, 20000 } })
        {
            cancellationToken.ThrowIfCancellationRequested();
            BenchSubr(backend, Pick(16, 256, 1024), l, Pick(64, 512, 512), Pick(4096, 65536, 65536), peak, Add, capture);
        }
        foreach (int t in size switch { SelftestSize.Small => [64], SelftestSize.Medium => [1024, 2048], _ => new[] { 1024, 2048, 4096, 8192 } })
        {
            cancellationToken.ThrowIfCancellationRequested();
            BenchAttention(backend, t, Pick(4, 8, 32), Pick(64, 128, 128), peak, Add, capture);
        }
        return rows;
    }

    /// <summary>Median synchronized wall time of <paramref name="op"/>, ms: one warm-up call, then 3 timed calls (1 when a call takes over a second).</summary>
    private static double Median(ComputeBackend backend, Action op)
    {
        double Once()
        {
            backend.Synchronize();
            long start = Stopwatch.GetTimestamp();
            op();
            backend.Synchronize();
            return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        double first = Once();
        var times = Enumerable.Range(0, first > 1000 ? 1 : 3).Select(_ => Once()).Order().ToArray();
        return times[times.Length / 2];
    }

    private static SelftestBenchResult Row(string op, string shape, ComputeBackend backend, double ms, double flops, double bytes,
        bool computeBound, double peakRate, string note)
    {
        double achieved = computeBound ? flops / (ms * 1e-3) / 1e12 : bytes / (ms * 1e-3) / 1e9;
        return new SelftestBenchResult(op, shape, backend.Name, ms, flops, bytes, computeBound ? "TFLOP/s" : "GB/s", achieved,
            peakRate > 0 ? achieved / peakRate : double.NaN, note);
    }

    private static Dictionary<string, string> Meta(string op, ComputeBackend backend, params (string Key, object Value)[] items)
    {
        var meta = new Dictionary<string, string> { ["op"] = op, ["backend"] = backend.Name };
        foreach (var (key, value) in items)
            meta[key] = Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "";
        return meta;
    }

    private static void BenchCflora(ComputeBackend backend, int t, int d, SelftestPeak peak, Action<SelftestBenchResult> add, Action<SelftestCapture>? capture)
    {
        const int r = 8;
        const float scale = 2f;
        int samples = Math.Max(1, t / 128);
        var data = new Data(t);
        var x = data.Uniform(t * d);
        var w0 = data.Uniform(d * d, -0.05f, 0.05f).Select(v => (Half)v).ToArray();
        var a = data.Uniform(r * d, -0.05f, 0.05f); var b = data.Uniform(d * r, -0.05f, 0.05f); var g = data.Uniform(samples * r * r);
        var sampleOfRow = Enumerable.Range(0, t).Select(i => i * samples / t).ToArray();
        using var run = new SelftestRun(backend);
        var batch = run.Own(CfloraBatch.FromRowIndex(sampleOfRow, samples));
        var xt = run.Up(x, t, d);
        var module = new CfloraModule(run.Up(w0, d, d), null, run.Up(a, r, d), run.Up(b, d, r), run.Up(g, samples, r, r), scale, run.Zeros(t, d));
        var yBase = run.Zeros(t, d);
        double fused = Median(backend, () => backend.Cflora.Forward(xt, module, batch));
        double baseMs = Median(backend, () => backend.Primitives.Linear(xt, module.W0, null, yBase));
        double flops = 2.0 * t * d * d + 4.0 * t * r * d + 2.0 * t * r * r;
        double bytes = 2.0 * d * d + 8.0 * t * d;
        string shape = $"T={t} d={d} r={r} S={samples} W0 f16";
        add(Row("cflora.f16", shape, backend, fused, flops, bytes, computeBound: true, peak.Fp32TflopsPerSecond,
            $"base GEMM {baseMs:F3} ms; adapter overhead {100 * (fused / baseMs - 1):F1}% (target <= 10%)"));
        capture?.Invoke(new SelftestCapture($"{FileSafe(backend.Name)}-cflora-T{t}",
            Meta("cflora", backend, ("T", t), ("d", d), ("r", r), ("S", samples), ("scale", scale), ("ms", fused), ("base_ms", baseMs)),
            [("x", x, [t, d]), ("w0", w0, [d, d]), ("a", a, [r, d]), ("b", b, [d, r]), ("g", g, [samples, r, r]),
             ("sample_of_row", sampleOfRow, [t]), ("y", module.Y.ToArray<float>(), [t, d]), ("y_base", yBase.ToArray<float>(), [t, d])]));
    }

    private static void BenchSubr(ComputeBackend backend, int batch, int l, int dim, int rows, SelftestPeak peak,
        Action<SelftestBenchResult> add, Action<SelftestCapture>? capture)
    {
        const int k = 50;
        var data = new Data(l);
        var vectors = data.Uniform(rows * dim);
        var history = data.Ints(batch * l, rows); var targets = data.Ints(batch, rows);
        var offsets = Enumerable.Range(0, batch + 1).Select(i => i * l).ToArray();
        var tensors = new List<(string, Array, int[])> { ("history", history, [batch * l]), ("offsets", offsets, [batch + 1]), ("targets", targets, [batch]) };
        var meta = Meta("subr", backend, ("B", batch), ("L", l), ("d", dim), ("N", rows), ("K", k), ("order", "chronological"));
        foreach (var storage in new[] { DType.F32, DType.F16, DType.I8 })
        {
            using var run = new SelftestRun(backend);
            var table = run.Own(SubrTable.Create(backend, vectors, rows, dim, storage));
            var queries = run.Own(SubrQueries.Create(history, offsets, targets));
            var (positions, scores) = (run.Zeros(DType.I32, batch, k), run.Zeros(batch, k));
            double ms = Median(backend, () => backend.Subr.Run(table, queries, k, SubrOrder.Chronological, positions, scores));
            int elem = storage.SizeInBytes();
            double bytes = (double)batch * l * (dim * elem + 4 + (storage == DType.I8 ? 4 : 0));
            double flops = 2.0 * batch * l * dim;
            string name = Name(storage);
            add(Row($"subr.{name}", $"B={batch} L={l} d={dim} N={rows} K={k}", backend, ms, flops, bytes, computeBound: false, peak.GigabytesPerSecond,
                "bytes = gathered rows + ids (+ i8 scales)"));
            meta[$"ms_{name}"] = ms.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
            if (capture is null) continue;
            var stored = new byte[(long)rows * dim * elem];
            var scales = new float[storage == DType.I8 ? rows : 0];
            table.CopyStoredTo(stored, scales);
            Array tableData = storage switch
            {
                DType.F32 => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(stored).ToArray(),
                DType.F16 => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(stored).ToArray(),
                _ => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(stored).ToArray(),
            };
            tensors.Add(($"table_{name}", tableData, [rows, dim]));
            if (storage == DType.I8) tensors.Add(("scales_i8", scales, [rows]));
            tensors.Add(($"positions_{name}", positions.ToArray<int>(), [batch, k]));
            tensors.Add(($"scores_{name}", scores.ToArray<float>(), [batch, k]));
        }
        capture?.Invoke(new SelftestCapture($"{FileSafe(backend.Name)}-subr-L{l}", meta, tensors));
    }

    private static void BenchAttention(ComputeBackend backend, int t, int hq, int hd, SelftestPeak peak, Action<SelftestBenchResult> add, Action<SelftestCapture>? capture)
    {
        int hkv = hq / 4;
        var s = new AttentionShape(1, hq, hkv, t, hd, AttentionLayout.HeadMajor);
        var data = new Data(t + 7);
        var q = data.Normal(hq * t * hd); var k = data.Normal(hkv * t * hd); var v = data.Normal(hkv * t * hd);
        using var run = new SelftestRun(backend);
        var (qt, kt, vt) = (run.Up(q, s.ShapeOf(hq)), run.Up(k, s.ShapeOf(hkv)), run.Up(v, s.ShapeOf(hkv)));
        double flops = 4.0 * hq * hd * (t * (t + 1.0) / 2);
        double bytes = 4.0 * (2 * hq + 2 * hkv) * t * hd;
        string shape = $"B=1 Hq={hq} Hkv={hkv} T={t} D={hd} causal";
        var meta = Meta("attention", backend, ("B", 1), ("Hq", hq), ("Hkv", hkv), ("T", t), ("D", hd), ("causal", "true"), ("layout", "head-major"));
        var tensors = new List<(string, Array, int[])> { ("q", q, s.ShapeOf(hq)), ("k", k, s.ShapeOf(hkv)), ("v", v, s.ShapeOf(hkv)) };
        foreach (var precision in new[] { AttentionPrecision.Int8, AttentionPrecision.Fp32 })
        {
            var o = run.Zeros(s.ShapeOf(hq));
            var options = new AttentionOptions { Precision = precision };
            double ms = Median(backend, () => backend.Attention.Prefill(qt, kt, vt, [], o, options));
            string name = precision == AttentionPrecision.Int8 ? "int8" : "fp32";
            add(Row($"attention.{name}", shape, backend, ms, flops, bytes, computeBound: true, peak.TensorTflopsPerSecond,
                "FLOPs = 4·Hq·D·T(T+1)/2 (causal); peak = dense fp16 tensor (CPU: fp32 SIMD)"));
            meta[$"ms_{name}"] = ms.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
            if (capture is not null) tensors.Add(($"o_{name}", o.ToArray<float>(), s.ShapeOf(hq)));
        }
        capture?.Invoke(new SelftestCapture($"{FileSafe(backend.Name)}-attention-T{t}", meta, tensors));
    }

    private static string FileSafe(string name) => new(name.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '_').ToArray());

    /// <summary>
    /// The peak rates of <paramref name="backend"/>'s device. CUDA: fp32 = SMs × FP32 lanes per SM (64 on sm_80, 128 on
    /// sm_86 and later) × 2 × the SM clock; dense fp16 tensor = SMs × (2048 FLOP/clock on sm_80/86/89, 4096 on sm_90) ×
    /// the clock; bandwidth = 2 × the memory clock × the bus width (as the driver reports them: boost clocks, so the
    /// achieved fraction is conservative). CPU: threads × 64 FLOP/clock (two 512-bit FMA pipes, Zen 4/5 and recent Xeons; 32
    /// with 256-bit vectors) × the clock /proc/cpuinfo reports, and a memory read bandwidth measured here (a parallel sum
    /// over 256 MiB, best of three), since a VM's DRAM peak is not knowable from inside it. Other devices: unknown (NaN).
    /// </summary>
    public static SelftestPeak Peak(ComputeBackend backend)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (backend is Cpu.CpuBackend cpu)
        {
            double ghz = CpuClockGhz();
            int perClock = Vector512.IsHardwareAccelerated ? 64 : 32;
            double tflops = cpu.Threads * ghz * perClock / 1e3;
            double gbs = MeasureReadBandwidth(cpu);
            return new SelftestPeak(tflops, tflops, gbs,
                $"CPU: {cpu.Threads} threads x {ghz:F2} GHz (/proc/cpuinfo) x {perClock} FLOP/clock ({(perClock == 64 ? "two 512-bit FMA pipes" : "256-bit FMA")}); " +
                $"bandwidth measured here: {gbs:F1} GB/s (parallel read of 256 MiB, best of 3)");
        }
        if (backend is Ilgpu.IlgpuBackend { Accelerator: CudaAccelerator acc })
        {
            int major = acc.Architecture.Major, minor = acc.Architecture.Minor;
            double clockGhz = acc.ClockRate / 1e6;
            int lanes = major == 8 && minor == 0 ? 64 : 128;
            int tensorPerClock = major >= 9 ? 4096 : 2048;
            double fp32 = acc.NumMultiprocessors * lanes * 2.0 * clockGhz / 1e3;
            double tensor = acc.NumMultiprocessors * (double)tensorPerClock * clockGhz / 1e3;
            double gbs = 2.0 * acc.MemoryClockRate * 1e3 * acc.MemoryBusWidth / 8 / 1e9;
            return new SelftestPeak(fp32, tensor, gbs,
                $"{acc.Name} sm_{major}{minor}: {acc.NumMultiprocessors} SMs x {clockGhz:F3} GHz; fp32 {lanes} lanes/SM, fp16 tensor {tensorPerClock} FLOP/clock/SM (dense); " +
                $"memory {acc.MemoryClockRate / 1e3:F0} MHz x {acc.MemoryBusWidth} bit x 2");
        }
        return new SelftestPeak(double.NaN, double.NaN, double.NaN, $"{backend.Name}: peak unknown");
    }

    private static double CpuClockGhz()
    {
        try
        {
            double mhz = File.ReadLines("/proc/cpuinfo")
                .Where(line => line.StartsWith("cpu MHz", StringComparison.Ordinal))
                .Select(line => double.Parse(line[(line.IndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture))
                .DefaultIfEmpty(double.NaN).Max();
            return mhz / 1e3;
        }
        catch (IOException)
        {
            return double.NaN;
        }
        catch (UnauthorizedAccessException)
        {
            return double.NaN;
        }
    }

    private static double MeasureReadBandwidth(Cpu.CpuBackend cpu)
    {
        const int count = 64 << 20; // 256 MiB of floats
        var data = new float[count];
        Array.Fill(data, 1f);
        int parts = cpu.Threads * 4;
        double best = 0;
        for (int rep = 0; rep < 3; rep++)
        {
            long start = Stopwatch.GetTimestamp();
            var sums = new float[parts];
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = cpu.Threads }, p =>
            {
                int chunk = count / parts;
                sums[p] = System.Numerics.Tensors.TensorPrimitives.Sum<float>(data.AsSpan(p * chunk, chunk));
            });
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (sums.Sum() != count) throw new InvalidOperationException("bandwidth probe summed wrong");
            best = Math.Max(best, 4.0 * count / seconds / 1e9);
        }
        return best;
    }
}
