using BenchmarkDotNet.Attributes;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using TorchSharp;

namespace Rellax.Benchmarks;

/// <summary>
/// The fp32 attention backward at the training shape of <c>benchmarks/results/scoring-cpu.md</c>: a batch of 8
/// left-padded prompts (lengths 480 to 512 of T = 512), 16 query heads of D = 128 (the model's MHA; Hkv = 4 for a GQA
/// variant), causal, head-major, 2 threads. Ours: <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, Tensor, AttentionOptions?)"/>
/// (saving the log-sum-exp) and <see cref="FlashAttention.Backward"/>. TorchSharp: <c>scaled_dot_product_attention</c>
/// with a boolean mask (causal and key padding; padding query rows see their own position), GQA by
/// <c>repeat_interleave</c>, autograd on q, k, v with <c>loss = (o ⊙ dO).sum()</c>.
/// </summary>
[WarmupCount(1), IterationCount(5)] // seconds per call on the shared 2-core machine: the global 3 + 15 would take an hour
public class AttentionBackwardBenchmarks
{
    /// <summary>Sequences in the batch.</summary>
    public const int B = 8;

    /// <summary>Query heads.</summary>
    public const int QueryHeads = 16;

    /// <summary>Head dimension.</summary>
    public const int D = 128;

    /// <summary>Padded tokens per sequence.</summary>
    public const int T = 512;

    /// <summary>Key/value heads: 16 (MHA, the scoring model) or 4 (GQA).</summary>
    [Params(16, 4)]
    public int KvHeads { get; set; } = 16;

    private CpuBackend _cpu = null!;
    private readonly List<DeviceBuffer> _buffers = [];
    private Tensor _q, _k, _v, _o, _lse, _dO, _dq, _dk, _dv;
    private int[] _lengths = [];
    private torch.Tensor _tq = null!, _tk = null!, _tv = null!, _tMask = null!, _tDo = null!;
    private static readonly AttentionOptions Options = new() { Precision = AttentionPrecision.Fp32 };

    /// <summary>Allocates and fills both libraries' inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(7);
        float[] Normal(long n)
        {
            var a = new float[n];
            for (long i = 0; i < n; i++) a[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
            return a;
        }
        int hkv = KvHeads;
        float[] q = Normal((long)B * QueryHeads * T * D), k = Normal((long)B * hkv * T * D), v = Normal((long)B * hkv * T * D);
        float[] dO = Normal((long)B * QueryHeads * T * D);
        _lengths = Enumerable.Range(0, B).Select(b => T - b * 32 / B * 4 % 33).ToArray(); // 512 down to ~484
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        Tensor Up(float[] data, params int[] shape) { var buf = _cpu.Upload<float>(data); _buffers.Add(buf); return buf.AsTensor(shape); }
        Tensor Zeros(params int[] shape) { var buf = _cpu.Allocate(DType.F32, shape); _buffers.Add(buf); return buf.AsTensor(shape); }
        _q = Up(q, B, QueryHeads, T, D); _k = Up(k, B, hkv, T, D); _v = Up(v, B, hkv, T, D); _dO = Up(dO, B, QueryHeads, T, D);
        _o = Zeros(B, QueryHeads, T, D); _lse = Zeros(B, QueryHeads, T);
        _dq = Zeros(B, QueryHeads, T, D); _dk = Zeros(B, hkv, T, D); _dv = Zeros(B, hkv, T, D);
        _cpu.Attention.Prefill(_q, _k, _v, _lengths, _o, _lse, Options);

        torch.set_num_threads(GemmBenchmarks.Threads);
        var visible = new bool[B * T * T];
        for (int b = 0; b < B; b++)
        {
            int pad = T - _lengths[b];
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++) visible[((long)b * T + i) * T + j] = (j >= pad && j <= i) || (i < pad && j == i);
        }
        _tMask = torch.tensor(visible, [B, 1, T, T]);
        _tq = torch.tensor(q, [B, QueryHeads, T, D]).requires_grad_();
        _tk = torch.tensor(k, [B, hkv, T, D]).requires_grad_();
        _tv = torch.tensor(v, [B, hkv, T, D]).requires_grad_();
        _tDo = torch.tensor(dO, [B, QueryHeads, T, D]);
    }

    /// <summary>Frees both libraries' buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _tq, _tk, _tv, _tMask, _tDo }) t.Dispose();
        foreach (var b in _buffers) b.Dispose();
        _cpu.Dispose();
    }

    private torch.Tensor TorchO()
    {
        int group = QueryHeads / KvHeads;
        var k = group == 1 ? _tk : _tk.repeat_interleave(group, dim: 1);
        var v = group == 1 ? _tv : _tv.repeat_interleave(group, dim: 1);
        return torch.nn.functional.scaled_dot_product_attention(_tq, k, v, _tMask);
    }

    /// <summary>TorchSharp SDPA forward (no graph).</summary>
    [Benchmark(Baseline = true)]
    public void TorchForward()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        TorchO();
    }

    /// <summary>TorchSharp SDPA forward, then autograd backward.</summary>
    [Benchmark]
    public void TorchForwardBackward()
    {
        using var scope = torch.NewDisposeScope();
        (TorchO() * _tDo).sum().backward();
        foreach (var p in new[] { _tq, _tk, _tv })
            if (p.grad is { } grad) { grad.Dispose(); p.grad = null; }
    }

    /// <summary>Our fp32 forward, saving the log-sum-exp.</summary>
    [Benchmark]
    public void OursForward() => _cpu.Attention.Prefill(_q, _k, _v, _lengths, _o, _lse, Options);

    /// <summary>Our forward, then the backward.</summary>
    [Benchmark]
    public void OursForwardBackward()
    {
        _cpu.Attention.Prefill(_q, _k, _v, _lengths, _o, _lse, Options);
        _cpu.Attention.Backward(_q, _k, _v, _o, _dO, _lse, _lengths, _dq, _dk, _dv, Options);
    }

}
