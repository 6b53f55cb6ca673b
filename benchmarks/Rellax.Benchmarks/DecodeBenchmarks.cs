using System.Numerics.Tensors;
using BenchmarkDotNet.Attributes;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Benchmarks;

/// <summary>
/// Generation speed with the fp32 KV cache (issue 17 item 1: <c>LlamaSession</c>'s fp32 attention moved from the
/// removed <c>Primitives.Attention</c> onto <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/>
/// with Tq &lt; Tk). Only public Runtime API is used, so the same file builds against the commit before the change for a
/// before/after comparison (results in <c>benchmarks/results/attention-cpu.md</c>).
/// <list type="bullet">
/// <item><see cref="Stories260KGreedy"/>: <c>models/stories260K</c>, a 4-token prompt, then <see cref="GreedyTokens"/>
/// greedy tokens one at a time (tokens/s = <see cref="GreedyTokens"/> / time).</item>
/// <item><see cref="MidModelDecodeStep"/>: one-token decode on a random Llama-shaped model (<see cref="Mid"/>: hidden
/// 1024, 4 layers, 16 query heads and 4 KV heads of D = 64, I = 2816, vocab 8192) whose cache holds 2048 positions
/// after the setup's prefill; each invocation appends one token, so a run covers positions 2048 to about 2350.</item>
/// </list>
/// </summary>
[WarmupCount(3)]
[IterationCount(15)]
[InvocationCount(16, 1)]
public class DecodeBenchmarks
{
    /// <summary>Greedy tokens per <see cref="Stories260KGreedy"/> invocation.</summary>
    public const int GreedyTokens = 200;

    /// <summary>Positions cached before the mid-size decode steps.</summary>
    public const int CachedPositions = 2048;

    /// <summary>The mid-size random model.</summary>
    public static RandomLlamaShape Mid { get; } = new(Hidden: 1024, Layers: 4, Heads: 16, KvHeads: 4, HeadDim: 64, Intermediate: 2816,
        Vocab: 8192, MaxPositions: 4096);

    private CpuBackend? _cpu;
    private LlamaModel? _model;
    private LlamaSession? _session;
    private int _token;

    /// <summary>Loads stories260K on <see cref="GemmBenchmarks.Threads"/> threads.</summary>
    [GlobalSetup(Target = nameof(Stories260KGreedy))]
    public void SetupStories()
    {
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        _model = LlamaModel.Load(ScoringBenchmarks.FindStories260K(), _cpu);
        _session = _model.CreateSession(maxPositions: 4 + GreedyTokens);
    }

    /// <summary>Writes (once) and loads the mid-size model, then fills the cache with 2048 random tokens.</summary>
    [GlobalSetup(Target = nameof(MidModelDecodeStep))]
    public void SetupMid()
    {
        string dir = Path.Combine(Path.GetTempPath(), "rellax-decode-bench");
        ScoringBenchmarks.EnsureModel(dir, Mid);
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        _model = LlamaModel.Load(dir, _cpu);
        _session = _model.CreateSession(maxPositions: Mid.MaxPositions);
        var rng = new Random(5);
        _session.Forward(Enumerable.Range(0, CachedPositions).Select(_ => rng.Next(1, Mid.Vocab)).ToArray());
        _token = 7;
    }

    /// <summary>Frees the session, model and backend.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _session?.Dispose();
        _model?.Dispose();
        _cpu?.Dispose();
    }

    /// <summary>A 4-token prompt and <see cref="GreedyTokens"/> greedy tokens on stories260K; returns the last token.</summary>
    [Benchmark]
    public int Stories260KGreedy()
    {
        var session = _session!;
        session.Reset();
        var logits = session.Forward([1, 403, 407, 261]);
        int token = 0;
        for (int i = 0; i < GreedyTokens; i++)
        {
            token = TensorPrimitives.IndexOfMax(logits);
            if (i + 1 < GreedyTokens) logits = session.Forward([token]);
        }
        return token;
    }

    /// <summary>One token through the mid-size model after ≥ 2048 cached positions; returns the argmax.</summary>
    [Benchmark]
    public int MidModelDecodeStep()
    {
        var logits = _session!.Forward([_token]);
        _token = 1 + TensorPrimitives.IndexOfMax(logits) % (Mid.Vocab - 1);
        return _token;
    }
}

/// <summary>
/// <c>--decode-quick</c>: <see cref="DecodeBenchmarks"/>' two cases timed with a Stopwatch in one process (for running the
/// builds before and after a change alternately on a shared machine): stories260K greedy tokens/s (best and median of
/// <c>RELLAX_DECODE_REPS</c>, default 7, runs of <see cref="DecodeBenchmarks.GreedyTokens"/> tokens), stories260K prefill
/// tokens/s (as many one-pass prompts of its whole 512-token context, pseudo-random ids), the mid-size
/// model's 2048-token prefill, and the median and best of 64 one-token decode steps after it.
/// </summary>
public static class DecodeQuick
{
    /// <summary>Runs both cases and prints one line each.</summary>
    public static void Run()
    {
        int reps = Environment.GetEnvironmentVariable("RELLAX_DECODE_REPS") is { Length: > 0 } r ? int.Parse(r) : 7;
        var bench = new DecodeBenchmarks();
        bench.SetupStories();
        bench.Stories260KGreedy();
        var greedy = Times(reps, () => bench.Stories260KGreedy());
        bench.Cleanup();
        Console.WriteLine($"stories260K greedy: {DecodeBenchmarks.GreedyTokens / greedy.Min():F0} tokens/s best, " +
            $"{DecodeBenchmarks.GreedyTokens / Median(greedy):F0} median ({reps} runs of {DecodeBenchmarks.GreedyTokens} tokens, {GemmBenchmarks.Threads} threads)");

        using (var cpu = new CpuBackend(GemmBenchmarks.Threads))
        using (var model = LlamaModel.Load(ScoringBenchmarks.FindStories260K(), cpu))
        using (var session = model.CreateSession())
        {
            // One prefill pass of the whole context (fixed pseudo-random ids), logits of the last token included.
            int n = model.Config.MaxPositionEmbeddings;
            var rng = new Random(11);
            var prompt = Enumerable.Range(0, n).Select(_ => rng.Next(3, model.Config.VocabSize)).ToArray();
            void Prefill() { session.Reset(); session.Forward(prompt); }
            Prefill();
            var prefill = Times(reps, Prefill);
            Console.WriteLine($"stories260K prefill: {n / prefill.Min():F0} tokens/s best, {n / Median(prefill):F0} median " +
                $"({reps} prompts of {n} tokens, {GemmBenchmarks.Threads} threads)");
        }

        var watch = System.Diagnostics.Stopwatch.StartNew();
        bench.SetupMid();
        double setup = watch.Elapsed.TotalSeconds;
        bench.MidModelDecodeStep();
        var steps = Times(64, () => bench.MidModelDecodeStep());
        bench.Cleanup();
        Console.WriteLine($"mid-size decode step after {DecodeBenchmarks.CachedPositions} positions: {Median(steps) * 1e3:F2} ms median, " +
            $"{steps.Min() * 1e3:F2} ms best of 64 ({1 / Median(steps):F1} tokens/s); setup with the {DecodeBenchmarks.CachedPositions}-token prefill {setup:F2} s");
    }

    private static double[] Times(int n, Action body)
    {
        var times = new double[n];
        for (int i = 0; i < n; i++)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            body();
            times[i] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        return times;
    }

    private static double Median(double[] x)
    {
        var sorted = x.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}

/// <summary>
/// The attention of one decoding step alone (fp32, B = 1, Tq = 1, all positions real), at the shapes of
/// <see cref="DecodeBenchmarks"/>: <see cref="FlashAttention"/> (work items (sequence, KV head), the group's query heads
/// as rows, keys scored in place) against the loop of the removed <c>Primitives.Attention</c> CPU kernel, kept here
/// verbatim as <see cref="LegacyAttention"/> only to be the baseline (one item per (token, query head), three passes).
/// </summary>
[WarmupCount(3)]
[IterationCount(15)]
public unsafe class AttentionDecodeBenchmarks
{
    /// <summary>(Hq, Hkv, D, cached keys S): stories260K at 256 and 512 positions, the mid-size model at 2048 and 4096.</summary>
    [Params("8/4/8/256", "8/4/8/512", "16/4/64/2048", "16/4/64/4096")]
    public string Shape { get; set; } = "16/4/64/2048";

    private CpuBackend? _cpu;
    private Kernels.Tensor _q, _k, _v, _o;
    private int _hq, _hkv, _d, _s;
    private AttentionOptions _options = null!;

    /// <summary>Random q [1, Hq, D] and a cache of S positions [S, Hkv, D] on <see cref="GemmBenchmarks.Threads"/> threads.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var p = Shape.Split('/').Select(int.Parse).ToArray();
        (_hq, _hkv, _d, _s) = (p[0], p[1], p[2], p[3]);
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        var rng = new Random(3);
        Kernels.Tensor Random(params int[] shape)
        {
            var data = new float[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++) data[i] = rng.NextSingle() * 2 - 1;
            var buffer = _cpu.Upload<float>(data);
            return buffer.AsTensor(shape);
        }
        _q = Random(1, 1, _hq, _d);
        _k = Random(1, _s, _hkv, _d);
        _v = Random(1, _s, _hkv, _d);
        _o = _cpu.Allocate(DType.F32, _hq * _d).AsTensor(1, 1, _hq, _d);
        _options = new AttentionOptions { Precision = AttentionPrecision.Fp32, Layout = AttentionLayout.TokenMajor, Scale = 1f / MathF.Sqrt(_d) };
    }

    /// <summary>Frees the backend (and its buffers).</summary>
    [GlobalCleanup]
    public void Cleanup() => _cpu?.Dispose();

    /// <summary>The removed <c>Primitives.Attention</c> loop.</summary>
    [Benchmark(Baseline = true)]
    public void Legacy() => LegacyAttention(_cpu!, _q.Reshape(1, _hq, _d), _k.Reshape(_s, _hkv, _d), _v.Reshape(_s, _hkv, _d),
        _o.Reshape(1, _hq, _d), 1f / MathF.Sqrt(_d), causal: true);

    /// <summary>Fp32 <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/>, Tq = 1, Tk = S.</summary>
    [Benchmark]
    public void Flash() => _cpu!.Attention.Prefill(_q, _k, _v, default, _o, _options);

    /// <summary>
    /// <c>--attention-decode-quick</c>: for every <see cref="Shape"/>, <c>RELLAX_DECODE_CALLS</c> (default 2000) calls of
    /// <see cref="Legacy"/> and <see cref="Flash"/> alternated one by one (so load on a shared machine falls on both
    /// alike), then each one's median and best time and the ratio of the medians, after checking they agree.
    /// </summary>
    public static void Interleaved()
    {
        int calls = Environment.GetEnvironmentVariable("RELLAX_DECODE_CALLS") is { Length: > 0 } c ? int.Parse(c) : 2000;
        foreach (string shape in new[] { "8/4/8/256", "8/4/8/512", "16/4/64/2048", "16/4/64/4096" })
        {
            var bench = new AttentionDecodeBenchmarks { Shape = shape };
            bench.Setup();
            bench.Legacy();
            var legacy = bench._o.ToArray<float>();
            bench.Flash();
            var flash = bench._o.ToArray<float>();
            double worst = legacy.Zip(flash, (a, b) => Math.Abs(a - b)).Max();
            var tl = new double[calls];
            var tf = new double[calls];
            for (int i = 0; i < calls; i++)
            {
                long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                bench.Legacy();
                long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
                bench.Flash();
                long t2 = System.Diagnostics.Stopwatch.GetTimestamp();
                tl[i] = (t1 - t0) * 1e6 / System.Diagnostics.Stopwatch.Frequency;
                tf[i] = (t2 - t1) * 1e6 / System.Diagnostics.Stopwatch.Frequency;
            }
            bench.Cleanup();
            double ml = tl.Order().ElementAt(calls / 2), mf = tf.Order().ElementAt(calls / 2);
            Console.WriteLine($"Hq/Hkv/D/S {shape}: legacy {ml:F1} us median ({tl.Min():F1} best), flash {mf:F1} us median ({tf.Min():F1} best); " +
                $"legacy/flash {ml / mf:F2}x; max |diff| {worst:E1}; {GemmBenchmarks.Threads} threads, {calls} alternated calls");
        }
    }

    /// <summary>
    /// The CPU kernel of the removed <c>Primitives.Attention</c> (q [T, Hq, D], k/v [S, Hkv, D], query t at position
    /// S − T + t), as it was at commit 43b05eb: per (token, query head) item, scores, then exp and sum, then Σ p·v.
    /// </summary>
    private static void LegacyAttention(CpuBackend backend, Kernels.Tensor q, Kernels.Tensor k, Kernels.Tensor v, Kernels.Tensor o, float scale, bool causal)
    {
        int t = q.Dim(0), s = k.Dim(0), hq = q.Dim(1), hkv = k.Dim(1), d = q.Dim(2), group = hq / hkv;
        nint qp = (nint)CpuBackend.Ptr<float>(q), kp = (nint)CpuBackend.Ptr<float>(k), vp = (nint)CpuBackend.Ptr<float>(v), op = (nint)CpuBackend.Ptr<float>(o);
        CpuSimd.ForChunks(backend, t * hq, 4L * s * d, (i0, count) =>
        {
            float[] scores = new float[s];
            for (int item = i0; item < i0 + count; item++)
            {
                int ti = item / hq, h = item % hq, kvh = h / group;
                int keys = causal ? s - t + ti + 1 : s;
                float* qRow = (float*)qp + (long)item * d;
                float* oRow = (float*)op + (long)item * d;
                for (int j = 0; j < keys; j++)
                    scores[j] = CpuSimd.Dot(qRow, (float*)kp + ((long)j * hkv + kvh) * d, d) * scale;
                var p = scores.AsSpan(0, keys);
                float max = TensorPrimitives.Max(p);
                TensorPrimitives.Subtract(p, max, p);
                TensorPrimitives.Exp(p, p);
                float inv = 1f / TensorPrimitives.Sum(p);
                var oSpan = new Span<float>(oRow, d);
                oSpan.Clear();
                for (int j = 0; j < keys; j++)
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>((float*)vp + ((long)j * hkv + kvh) * d, d), p[j], oSpan, oSpan);
                TensorPrimitives.Multiply(oSpan, inv, oSpan);
            }
        });
    }
}
