using System.Diagnostics;
using System.Text;
using BenchmarkDotNet.Attributes;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using Rellax.Runtime.Training;
using Rellax.Tests.Model;
using Rellax.Tests.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Rellax.Benchmarks;

/// <summary>
/// Whole-model adapter training on the CPU (issue 17 item 6): the Llama-shaped model of <see cref="ScoringBenchmarks"/>
/// (H = 2048, 4 layers, 16 heads of D = 128, I = 5632, vocab 32000, F32), its CFLoRA adapter on q_proj and v_proj
/// (r = 8, d_h = 64) plus an SPA projector (E = <see cref="CrmDim"/>), <see cref="BatchSize"/> prompts of about 512 tokens
/// with a <c>[hist]</c> marker after each history item and a <c>[target]</c> marker, BCE loss. One train step = forward +
/// backward + AdamW over the batch, in <c>lora</c> mode (A, B trained) or <c>gate,projector</c> mode (generators and
/// projector trained).
/// <list type="bullet">
/// <item><b>Ours</b>: <see cref="AdapterTrainer.ComputeGradients"/> then <see cref="AdamW.Step"/> (with and without
/// <see cref="AdapterTrainingOptions.Recompute"/>); <b>OursForward</b>: <see cref="AdapterTrainer.Score"/> of the same batch
/// (the forward alone, no activations kept).</item>
/// <item><b>Torch</b>: the same model and adapter in TorchSharp float32 autograd: the tests' oracle
/// (<c>TorchLlamaOracle</c>/<c>TorchAdapterOracle</c>, linked, not copied) with <see cref="ScalarType.Float32"/> and
/// <c>scaled_dot_product_attention</c>, <c>requires_grad</c> on the mode's tensors only, <c>loss.backward()</c>,
/// <c>torch.optim.AdamW</c>.</item>
/// </list>
/// Both on <see cref="GemmBenchmarks.Threads"/> threads. A step takes tens of seconds: 1 warm-up and 3 measured iterations.
/// </summary>
[WarmupCount(1)]
[IterationCount(3)]
[InvocationCount(1, 1)]
public class TrainingBenchmarks
{
    /// <summary>Prompts per step (one micro-batch).</summary>
    public const int BatchSize = 8;

    /// <summary>E of the SPA projector.</summary>
    public const int CrmDim = 64;

    /// <summary>The trained parts: <c>lora</c> or <c>gate,projector</c>.</summary>
    [Params("lora", "gate,projector")]
    public string Mode { get; set; } = "lora";

    private CpuBackend? _cpu;
    private LlamaModel? _model;
    private AdapterTrainer? _trainer, _trainerRecompute;
    private AdamW? _adamW, _adamWRecompute;
    private List<CtrExample> _examples = [];
    private TorchTrainer? _torch;

    private static AdapterParts Parts(string mode) => mode == "lora" ? AdapterParts.Lora : AdapterParts.Gate | AdapterParts.Projector;

    /// <summary>Loads our model and builds both trainers.</summary>
    [GlobalSetup(Targets = [nameof(OursStep), nameof(OursStepRecompute), nameof(OursForward)])]
    public void SetupOurs()
    {
        ScoringBenchmarks.EnsureModel(ScoringBenchmarks.ModelDir);
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        _model = LlamaModel.Load(ScoringBenchmarks.ModelDir, _cpu);
        var adapter = Adapter(_model.Config);
        _examples = Examples(_model.Tokenizer, BatchSize, 512, seed: 3);
        _trainer = new AdapterTrainer(_model, adapter, _examples, null, Options(Parts(Mode), recompute: false));
        _trainerRecompute = new AdapterTrainer(_model, adapter, _examples, null, Options(Parts(Mode), recompute: true));
        _adamW = new AdamW(0);
        _adamWRecompute = new AdamW(0);
    }

    /// <summary>Builds the TorchSharp trainer.</summary>
    [GlobalSetup(Target = nameof(TorchStep))]
    public void SetupTorch()
    {
        ScoringBenchmarks.EnsureModel(ScoringBenchmarks.ModelDir);
        var config = LlamaConfig.Load(Path.Combine(ScoringBenchmarks.ModelDir, "config.json"));
        var tokenizer = LlamaTokenizer.Load(ScoringBenchmarks.ModelDir);
        _examples = Examples(tokenizer, BatchSize, 512, seed: 3);
        _torch = new TorchTrainer(ScoringBenchmarks.ModelDir, tokenizer, Adapter(config), _examples, Parts(Mode));
    }

    /// <summary>Frees everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _torch?.Dispose(); _torch = null;
        _trainer?.Dispose(); _trainer = null;
        _trainerRecompute?.Dispose(); _trainerRecompute = null;
        _model?.Dispose(); _model = null;
        _cpu?.Dispose(); _cpu = null;
    }

    /// <summary>TorchSharp float32 autograd + torch.optim.AdamW (Baseline).</summary>
    [Benchmark(Baseline = true)]
    public double TorchStep() => _torch!.Step();

    /// <summary>Our train step, activations kept.</summary>
    [Benchmark]
    public double OursStep() => Step(_trainer!, _adamW!);

    /// <summary>Our train step with activation checkpointing.</summary>
    [Benchmark]
    public double OursStepRecompute() => Step(_trainerRecompute!, _adamWRecompute!);

    /// <summary>Our forward alone over the same batch (scoring, nothing saved).</summary>
    [Benchmark]
    public double OursForward() => _trainer!.Score([.. _examples.Select(e => e.Request)]).Sum();

    private static readonly int[] All = [.. Enumerable.Range(0, BatchSize)];

    private static double Step(AdapterTrainer trainer, AdamW adamW)
    {
        double loss = trainer.ComputeGradients(All);
        adamW.Step(trainer.Parameters, 1e-4f);
        return loss;
    }

    internal static AdapterTrainingOptions Options(AdapterParts parts, bool recompute) => new()
    {
        Trainable = parts, Recompute = recompute,
        Scoring = new ScoringOptions { Template = PromptTemplate.None, BatchSize = BatchSize, MaxBatchTokens = BatchSize * 640 },
    };

    /// <summary><see cref="ScoringBenchmarks.RandomAdapter"/> (CFLoRA r = 8 on q, v) with a random SPA projector [H, E], [H, H] added.</summary>
    internal static RellaxAdapter Adapter(LlamaConfig config)
    {
        var cflora = ScoringBenchmarks.RandomAdapter(config);
        var rng = new Random(13);
        int h = config.HiddenSize;
        float[] U(int n, double a) { var x = new float[n]; for (int i = 0; i < n; i++) x[i] = (float)(a * (rng.NextDouble() * 2 - 1)); return x; }
        var projector = new SpaProjectorWeights(U(h * CrmDim, 1 / Math.Sqrt(CrmDim)), U(h, 0.1), U(h * h, 1 / Math.Sqrt(h)), U(h, 0.1));
        return RellaxAdapter.Create(cflora.Config with { CrmEmbedDim = CrmDim }, cflora.Targets, projector, config, "training benchmark adapter");
    }

    /// <summary>
    /// <paramref name="count"/> labelled SPA prompts of about <paramref name="tokens"/> tokens (± 4 %, different lengths):
    /// movie-list items each followed by <c>[hist]</c>, then a question about a target with <c>[target]</c>; random h_u [64] and
    /// CRM embeddings [<see cref="CrmDim"/>]; labels alternate.
    /// </summary>
    internal static List<CtrExample> Examples(LlamaTokenizer tokenizer, int count, int tokens, int seed)
    {
        string[] titles = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Jumanji (1995)", "Sabrina (1995)", "Balto (1995)",
            "Nixon (1995)", "GoldenEye (1995)", "Sense and Sensibility (1995)", "Four Rooms (1995)", "Get Shorty (1995)"];
        var rng = new Random(seed);
        float[] U(int n) { var x = new float[n]; for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1); return x; }
        var list = new List<CtrExample>();
        for (int p = 0; p < count; p++)
        {
            int target = tokens * (96 + p % 9) / 100;
            string question = $"] Will the user like ***{titles[rng.Next(titles.Length)]}***[target]? Answer yes or no.";
            var text = new StringBuilder("The user watched the following movies in order in the past, and rated them: [");
            int items = 0;
            while (tokenizer.EncodeWithMarkers(text + question, ["[hist]", "[target]"]).Length < target)
            {
                text.Append($"'{items}. {titles[rng.Next(titles.Length)]} ({1 + rng.Next(5)} stars)'[hist], ");
                items++;
            }
            var hist = Enumerable.Range(0, items).Select(_ => U(CrmDim)).ToList();
            list.Add(new CtrExample(new CtrRequest(text + question, U(ScoringBenchmarks.InstanceDim), hist, U(CrmDim)), p % 2));
        }
        return list;
    }

    /// <summary>Real prompt tokens of the examples (with the answers' common prefix), as our trainer counts them.</summary>
    internal static long Tokens(AdapterTrainer trainer, IReadOnlyList<CtrExample> examples)
    {
        long before = trainer.TokensProcessed;
        trainer.ComputeGradients([.. Enumerable.Range(0, examples.Count)]);
        return trainer.TokensProcessed - before;
    }

    private static string Status(string key) =>
        File.ReadLines("/proc/self/status").First(l => l.StartsWith(key + ":", StringComparison.Ordinal)).Split(':')[1].Trim();

    private static double Load() => double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// <c>--training-steps MODE [STEPS]</c>: one process, back to back: a warm-up step then STEPS (default 2) timed steps of ours
    /// (activations kept; with recompute), our forward alone, and TorchSharp's; prints medians, our forward/backward split
    /// (<see cref="AdapterTrainer.Seconds"/>), tokens/s, the ratios and the load average.
    /// </summary>
    internal static void PrintSteps(string mode, int steps)
    {
        var bench = new TrainingBenchmarks { Mode = mode };
        Console.WriteLine($"mode {mode}, {BatchSize} prompts per step, {GemmBenchmarks.Threads} threads, load average {Load():F0} at the start");
        bench.SetupOurs();
        long tokens = Tokens(bench._trainer!, bench._examples);
        Console.WriteLine($"prompt tokens per step {tokens} (lengths {string.Join(" ", bench._examples.Select(e => bench._model!.Tokenizer.EncodeWithMarkers(e.Request.Prompt, ["[hist]", "[target]"]).Length))})");
        double Median(Func<double> run)
        {
            var times = new List<double>();
            for (int i = 0; i < steps; i++)
            {
                var clock = Stopwatch.StartNew();
                run();
                times.Add(clock.Elapsed.TotalSeconds);
            }
            times.Sort();
            return times[times.Count / 2];
        }
        var (f0, b0) = bench._trainer!.Seconds;
        double ours = Median(bench.OursStep);
        var (f1, b1) = bench._trainer!.Seconds;
        double forwardInStep = (f1 - f0) / steps, backwardInStep = (b1 - b0) / steps;
        Console.WriteLine($"ours step {ours:F2} s (forward {forwardInStep:F2} s, backward {backwardInStep:F2} s per step; load {Load():F0})");
        bench.OursStepRecompute();
        double oursRecompute = Median(bench.OursStepRecompute);
        Console.WriteLine($"ours step, recompute {oursRecompute:F2} s (load {Load():F0})");
        bench.OursForward();
        double forward = Median(bench.OursForward);
        Console.WriteLine($"ours forward alone {forward:F2} s (load {Load():F0})");
        long peak = bench._trainer.PeakActivationBytes, peakRecompute = bench._trainerRecompute!.PeakActivationBytes;
        bench.Cleanup();
        bench.SetupTorch();
        bench.TorchStep();
        double torchStep = Median(bench.TorchStep);
        Console.WriteLine($"torch step {torchStep:F2} s (load {Load():F0})");
        bench.Cleanup();
        Console.WriteLine();
        Console.WriteLine("| mode | torch step (s) | ours step (s) | **torch / ours** | ours step, recompute (s) | ours forward alone (s) | ours fwd / bwd in the step (s) | **backward / forward** | tokens/s ours / torch | PeakActivationBytes (MB), recompute (MB) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        Console.WriteLine($"| {mode} | {torchStep:F2} | {ours:F2} | **{torchStep / ours:F2}x** | {oursRecompute:F2} | {forward:F2} | {forwardInStep:F2} / {backwardInStep:F2} | " +
            $"**{backwardInStep / forward:F2}** (vs forward alone), {backwardInStep / forwardInStep:F2} (vs the step's forward) | {tokens / ours:F0} / {tokens / torchStep:F0} | {peak / 1e6:F0}, {peakRecompute / 1e6:F0} |");
    }

    /// <summary>
    /// <c>--training-memory torch|ours|ours-recompute MODE</c>: in a fresh process, sets up that side, runs one warm-up step,
    /// resets the peak resident set (<c>5 &gt; /proc/self/clear_refs</c>), runs one step and prints VmRSS before and VmHWM
    /// (peak) during it, and our <see cref="AdapterTrainer.PeakActivationBytes"/>.
    /// </summary>
    internal static void PrintMemory(string side, string mode)
    {
        var bench = new TrainingBenchmarks { Mode = mode };
        Func<double> step;
        if (side == "torch") { bench.SetupTorch(); step = bench.TorchStep; }
        else { bench.SetupOurs(); step = side == "ours-recompute" ? bench.OursStepRecompute : bench.OursStep; }
        step();
        string rss = Status("VmRSS");
        File.WriteAllText("/proc/self/clear_refs", "5");
        var clock = Stopwatch.StartNew();
        step();
        Console.WriteLine($"{side} {mode}: step {clock.Elapsed.TotalSeconds:F1} s; VmRSS before the step {rss}, peak during it VmHWM {Status("VmHWM")}" +
            (side == "torch" ? "" : $"; PeakActivationBytes {(side == "ours-recompute" ? bench._trainerRecompute! : bench._trainer!).PeakActivationBytes / 1e6:F0} MB"));
        bench.Cleanup();
    }

    /// <summary>
    /// <c>--training-stories</c>: training tokens/s on stories260K (CFLoRA r = 8 on q, v, d_h 64, SPA projector, 32 prompts of
    /// ~200 tokens, steps of 8, AdamW): ours in gate,projector and lora modes, and TorchSharp float32 autograd, after a warm-up
    /// epoch, over 2 epochs (8 steps).
    /// </summary>
    internal static void PrintStories()
    {
        string dir = ScoringBenchmarks.FindStories260K();
        using var cpu = new CpuBackend(GemmBenchmarks.Threads);
        using var model = LlamaModel.Load(dir, cpu);
        var adapter = Adapter(model.Config);
        var examples = Examples(model.Tokenizer, 32, 200, seed: 4);
        Console.WriteLine($"stories260K, {examples.Count} prompts, {GemmBenchmarks.Threads} threads, load average {Load():F0}");
        foreach (var parts in new[] { AdapterParts.Gate | AdapterParts.Projector, AdapterParts.Lora })
        {
            using var trainer = new AdapterTrainer(model, adapter, examples, null, Options(parts, recompute: false));
            var adamW = new AdamW(0);
            void Epoch() { for (int s = 0; s < examples.Count; s += BatchSize) { trainer.ComputeGradients([.. Enumerable.Range(s, BatchSize)]); adamW.Step(trainer.Parameters, 1e-4f); } }
            Epoch();
            long before = trainer.TokensProcessed;
            var clock = Stopwatch.StartNew();
            Epoch(); Epoch();
            double seconds = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"ours {parts}: {(trainer.TokensProcessed - before) / seconds:F0} training tokens/s ({seconds / 8 * 1000:F0} ms per step of 8 prompts)");
        }
        using (var torchTrainer = new TorchTrainer(dir, model.Tokenizer, adapter, examples.Take(BatchSize).ToList(), AdapterParts.Gate | AdapterParts.Projector))
        {
            torchTrainer.Step();
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < 8; i++) torchTrainer.Step();
            double seconds = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"torch gate,projector: {8 * torchTrainer.Tokens / seconds:F0} training tokens/s ({seconds / 8 * 1000:F0} ms per step of 8 prompts)");
        }
    }
}

/// <summary>
/// The TorchSharp float32 autograd baseline: the tests' <see cref="TorchAdapterOracle"/> in <see cref="ScalarType.Float32"/> with
/// SDPA, the mode's tensors as <c>Parameter</c>s (<c>requires_grad</c>), BCE over the whole batch as one left-padded batch,
/// <c>backward()</c>, <c>torch.optim.AdamW</c> (weight decay 0, lr 1e-4).
/// </summary>
internal sealed class TorchTrainer : IDisposable
{
    private readonly TorchAdapterOracle _oracle;
    private readonly List<OracleExample> _batch;
    private readonly Dictionary<string, TorchSharp.Modules.Parameter> _parameters;
    private readonly TorchSharp.Modules.AdamW _adamW;

    public TorchTrainer(string dir, LlamaTokenizer tokenizer, RellaxAdapter adapter, IReadOnlyList<CtrExample> examples, AdapterParts parts)
    {
        torch.set_num_threads(GemmBenchmarks.Threads);
        _oracle = new TorchAdapterOracle(OracleConfig.Read(dir), OracleWeights.Read(dir), adapter.Config, adapter.Targets, adapter.Projector,
            ScalarType.Float32, fusedAttention: true);
        var options = TrainingBenchmarks.Options(parts, recompute: false);
        _batch = [.. examples.Select(e => _oracle.Prepare(tokenizer, e, CtrLoss.Bce, options))];
        _parameters = _oracle.Train(_oracle.Names(parts));
        _adamW = torch.optim.AdamW(_parameters.Values, lr: 1e-4, weight_decay: 0);
    }

    /// <summary>Real tokens of the batch as the oracle runs it (prompt and the answers' common prefix).</summary>
    public long Tokens => _batch.Sum(e => (long)e.Sample.Ids.Length);

    /// <summary>One step: forward, backward, AdamW; returns the loss.</summary>
    public double Step()
    {
        using var scope = torch.NewDisposeScope();
        _adamW.zero_grad();
        var loss = _oracle.LossTensor(_batch, CtrLoss.Bce);
        loss.backward();
        _adamW.step();
        return loss.item<float>();
    }

    public void Dispose()
    {
        _oracle.Model.Overrides = null;
        foreach (var p in _parameters.Values) p.Dispose();
        _adamW.Dispose();
    }
}
