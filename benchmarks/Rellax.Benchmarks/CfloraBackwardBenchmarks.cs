using BenchmarkDotNet.Attributes;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;
using BFloat16 = Rellax.Kernels.BFloat16;

namespace Rellax.Benchmarks;

/// <summary>
/// The CFLoRA backward at the Llama shape of <c>benchmarks/results/scoring-cpu.md</c>: one adapted projection
/// (q_proj or v_proj), d_in = d_out = 2048, W0 f32 or bf16, r = 8, T = 8 prompts × 512 tokens = 4096 rows, S = 8 samples,
/// 2 threads. Two training modes, as ReLLa / ReLLaX train:
/// <list type="bullet">
/// <item><c>Gate</c> (ReLLaX: A, B frozen, the generator trains): dX and dG, a dense G per sample;</item>
/// <item><c>Lora</c> (ReLLa: identity G): dX, dA and dB.</item>
/// </list>
/// Ours: <see cref="CfloraLinear.Forward(Tensor, CfloraModule, CfloraBatch)"/> and <see cref="CfloraLinear.Backward"/>.
/// TorchSharp: the unfused forward of <see cref="CfloraBenchmarks"/> with autograd on the trained tensors and x,
/// <c>loss = (y ⊙ dY).sum()</c>, so <c>backward()</c> receives dY; W0 in f32 (bf16 W0 is widened once at setup, as torch
/// on the CPU has no bf16 GEMM worth timing). Forward and forward + backward are timed separately on both sides; the
/// backward / forward ratio is (forward + backward) / forward − 1.
/// </summary>
[WarmupCount(1), IterationCount(5)] // seconds per call on the shared 2-core machine: the global 3 + 15 would take an hour
public class CfloraBackwardBenchmarks
{
    /// <summary>Hidden size of the benchmark model.</summary>
    public const int D = 2048;

    /// <summary>Token rows: 8 prompts of 512 tokens.</summary>
    public const int T = 4096;

    /// <summary>Samples (prompts) in the batch.</summary>
    public const int S = 8;

    /// <summary>Adapter rank.</summary>
    public const int R = 8;

    /// <summary>Training mode: "gate" (dX + dG) or "lora" (dX + dA + dB).</summary>
    [Params("gate", "lora")]
    public string Mode { get; set; } = "gate";

    /// <summary>Dtype of W0.</summary>
    [Params(DType.F32, DType.BF16)]
    public DType Weights { get; set; } = DType.F32;

    private CpuBackend _cpu = null!;
    private readonly List<DeviceBuffer> _buffers = [];
    private Tensor _x, _dx;
    private CfloraModule _forward;
    private CfloraBackwardModule _backward;
    private CfloraBatch _batch = null!;
    private torch.Tensor _tx = null!, _tW0T = null!, _tAT = null!, _tBT = null!, _tG = null!, _tRows = null!, _tDy = null!;
    private float _scale;

    /// <summary>Allocates and fills both libraries' inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(42);
        float[] Fill(long n, float scale = 1f) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (rng.NextSingle() * 2 - 1) * scale; return a; }
        float[] x = Fill((long)T * D), w0 = Fill((long)D * D), a = Fill((long)R * D, 0.02f), b = Fill((long)D * R, 0.3f), dy = Fill((long)T * D);
        bool gate = Mode == "gate";
        float[] g = gate ? Fill((long)S * R * R) : CfloraInteractions.Identity(S, R);
        if (Weights == DType.BF16) for (int i = 0; i < w0.Length; i++) w0[i] = (float)(BFloat16)w0[i];
        int[] rows = new int[T];
        for (int i = 0; i < T; i++) rows[i] = i * S / T;
        _scale = 16f / R;

        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        Tensor Up(float[] data, params int[] shape) { var buf = _cpu.Upload<float>(data); _buffers.Add(buf); return buf.AsTensor(shape); }
        Tensor Zeros(params int[] shape) { var buf = _cpu.Allocate(DType.F32, shape); _buffers.Add(buf); return buf.AsTensor(shape); }
        Tensor w0t;
        if (Weights == DType.BF16)
        {
            var buf = _cpu.Upload<BFloat16>(w0.Select(v => (BFloat16)v).ToArray());
            _buffers.Add(buf);
            w0t = buf.AsTensor(D, D);
        }
        else w0t = Up(w0, D, D);
        _x = Up(x, T, D);
        _dx = Zeros(T, D);
        Tensor at = Up(a, R, D), bt = Up(b, D, R), gt = Up(g, S, R, R);
        _forward = new CfloraModule(w0t, null, at, bt, gt, _scale, Zeros(T, D));
        _backward = gate
            ? new CfloraBackwardModule(w0t, at, bt, gt, _scale, Up(dy, T, D), DG: Zeros(S, R, R))
            : new CfloraBackwardModule(w0t, at, bt, null, _scale, Up(dy, T, D), DA: Zeros(R, D), DB: Zeros(D, R));
        _batch = CfloraBatch.FromRowIndex(rows, S);

        torch.set_num_threads(GemmBenchmarks.Threads);
        _tx = torch.tensor(x, [T, D]).requires_grad_();
        _tW0T = torch.tensor(w0, [D, D]).t();
        _tAT = torch.tensor(a, [R, D]).t().contiguous().requires_grad_(!gate);
        _tBT = torch.tensor(b, [D, R]).t().contiguous().requires_grad_(!gate);
        _tG = torch.tensor(g, [S, R, R]).requires_grad_(gate);
        _tRows = torch.tensor(rows.Select(v => (long)v).ToArray(), [T]);
        _tDy = torch.tensor(dy, [T, D]);
    }

    /// <summary>Frees both libraries' buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var tt in new[] { _tx, _tW0T, _tAT, _tBT, _tG, _tRows, _tDy }) tt.Dispose();
        _batch.Dispose();
        foreach (var b in _buffers) b.Dispose();
        _cpu.Dispose();
    }

    private torch.Tensor TorchY()
    {
        var y = _tx.mm(_tW0T);
        var xa = _tx.mm(_tAT);
        var gRows = _tG.index_select(0, _tRows);
        var t2 = torch.bmm(xa.unsqueeze(1), gRows).squeeze(1);
        return y + t2.mm(_tBT) * _scale;
    }

    /// <summary>
    /// <c>--cflora-backward-phases</c>: medians of 5 runs, back to back (so they see the same machine load), of our
    /// forward, backward, backward without dX (the rank-r parts alone) and the plain base GEMM at the dX shape, per mode,
    /// W0 f32: where the backward's time goes.
    /// </summary>
    public static void PrintPhases()
    {
        foreach (var mode in new[] { "gate", "lora" })
        {
            var b = new CfloraBackwardBenchmarks { Mode = mode, Weights = DType.F32 };
            b.Setup();
            try
            {
                var noDx = b._backward;
                double Median(Action run)
                {
                    run();
                    var times = new double[5];
                    for (int i = 0; i < times.Length; i++)
                    {
                        var sw = System.Diagnostics.Stopwatch.StartNew();
                        run();
                        times[i] = sw.Elapsed.TotalMilliseconds;
                    }
                    Array.Sort(times);
                    return times[2];
                }
                double fwd = Median(b.OursForward);
                double bwd = Median(() => b._cpu.Cflora.Backward(b._x, [b._backward], b._batch, b._dx));
                double rank = Median(() => b._cpu.Cflora.Backward(b._x, [noDx], b._batch, null));
                double gemm = Median(() => b._cpu.Primitives.MatMul(b._x, b._forward.W0, b._dx));
                Console.WriteLine($"{mode}: forward {fwd:F1} ms, backward {bwd:F1} ms (backward/forward {bwd / fwd:F2}), " +
                    $"backward without dX {rank:F1} ms, plain GEMM x·W0ᵀ at the same shape {gemm:F1} ms");
            }
            finally
            {
                b.Cleanup();
            }
        }
    }

    /// <summary>TorchSharp forward only (no graph kept).</summary>
    [Benchmark(Baseline = true)]
    public void TorchForward()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        TorchY();
    }

    /// <summary>TorchSharp forward, then autograd backward of (y ⊙ dY).sum().</summary>
    [Benchmark]
    public void TorchForwardBackward()
    {
        using var scope = torch.NewDisposeScope();
        var loss = (TorchY() * _tDy).sum();
        loss.backward();
        foreach (var p in new[] { _tx, _tAT, _tBT, _tG })
            if (p.grad is { } grad) { grad.Dispose(); p.grad = null; }
    }

    /// <summary>Rellax fused forward.</summary>
    [Benchmark]
    public void OursForward() => _cpu.Cflora.Forward(_x, _forward, _batch);

    /// <summary>Rellax fused forward, then the backward (dX plus the mode's parameter gradients).</summary>
    [Benchmark]
    public void OursForwardBackward()
    {
        _cpu.Cflora.Forward(_x, _forward, _batch);
        _cpu.Cflora.Backward(_x, [_backward], _batch, _dx);
    }

}
