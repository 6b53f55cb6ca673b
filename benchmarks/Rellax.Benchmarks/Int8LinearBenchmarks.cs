using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Benchmarks;

/// <summary>
/// The linear layer at the Llama-shaped scoring model's prefill shapes (8 prompts × 512 tokens = 4096 rows, hidden 2048,
/// intermediate 5632): our fp32 <see cref="Primitives.Linear"/> (baseline) against <see cref="Primitives.LinearInt8"/>
/// (int8 weights, activations quantized per call, LLM.int8() outlier columns: none here, inputs in [-1, 1]), both on
/// <see cref="CpuBackend"/> with 2 threads.
/// </summary>
public class Int8LinearBenchmarks
{
    /// <summary>(M, K, N) shapes: q/k/v/o, gate/up, down.</summary>
    public IEnumerable<GemmShape> Shapes() => [new(4096, 2048, 2048), new(4096, 2048, 5632), new(4096, 5632, 2048)];

    /// <summary>The shape under test.</summary>
    [ParamsSource(nameof(Shapes))]
    public GemmShape Shape { get; set; } = new(1, 1, 1);

    private CpuBackend _cpu = null!;
    private DeviceBuffer _x = null!, _w = null!, _y = null!;
    private Int8Weights _w8 = null!;
    private Tensor _xt, _wt, _yt;

    /// <summary>Random inputs; the int8 weight is quantized from the f32 one.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var (m, k, n) = (Shape.M, Shape.K, Shape.N);
        var rng = new Random(42);
        float[] x = new float[m * k], w = new float[(long)n * k];
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextSingle() * 2 - 1;
        for (long i = 0; i < w.Length; i++) w[i] = (rng.NextSingle() * 2 - 1) * 0.05f;
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        _x = _cpu.Upload<float>(x); _w = _cpu.Upload<float>(w); _y = _cpu.Allocate(DType.F32, m, n);
        _xt = _x.AsTensor(m, k); _wt = _w.AsTensor(n, k); _yt = _y.AsTensor(m, n);
        _w8 = _cpu.Primitives.QuantizeInt8(_wt);
    }

    /// <summary>Frees the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _w8.Dispose(); _x.Dispose(); _w.Dispose(); _y.Dispose(); _cpu.Dispose();
    }

    /// <summary>fp32 weights: <c>Primitives.Linear</c>.</summary>
    [Benchmark(Baseline = true)]
    public void Fp32() => _cpu.Primitives.Linear(_xt, _wt, null, _yt);

    /// <summary>int8 weights: <c>Primitives.LinearInt8</c>.</summary>
    [Benchmark]
    public void Int8() => _cpu.Primitives.LinearInt8(_xt, _w8, null, _yt);

    /// <summary>A quick Stopwatch pass over every shape (best of 5), for development: fp32 and int8 at activation groups of
    /// 32, 64 (the default), 128 and 256 columns, and W8A32 (every column an outlier column: the fp32 GEMM over the
    /// dequantized weight, training's exact mode), interleaved per shape.</summary>
    public static void Quick()
    {
        Console.WriteLine($"CPU: {CpuBackend.Int8Paths}");
        foreach (var shape in new Int8LinearBenchmarks().Shapes())
        {
            var b = new Int8LinearBenchmarks { Shape = shape };
            b.Setup();
            double Best(Action a) { a(); double best = double.MaxValue; for (int i = 0; i < 5; i++) { var sw = Stopwatch.StartNew(); a(); best = Math.Min(best, sw.Elapsed.TotalMilliseconds); } return best; }
            double f = Best(b.Fp32);
            var line = $"{shape}: fp32 {f:F1} ms ({shape.Flops / f / 1e6:F0} GFLOP/s)";
            foreach (int group in new[] { 32, 64, 128, 256 })
            {
                using var w8 = b._cpu.Primitives.QuantizeInt8(b._wt, group);
                double q = Best(() => b._cpu.Primitives.LinearInt8(b._xt, w8, null, b._yt));
                line += $", int8 G{group} {q:F1} ms ({f / q:F2}x)";
            }
            double a32 = Best(() => b._cpu.Primitives.LinearInt8(b._xt, b._w8, null, b._yt, 1e-30f));
            line += $", int8 weights with fp32 activations (threshold 1e-30, W8A32) {a32:F1} ms ({f / a32:F2}x)";
            Console.WriteLine(line);
            b.Cleanup();
        }
    }
}
