using System.Text;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Reports;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Rellax.Benchmarks;

/// <summary>
/// Prefill throughput of CTR scoring (issue 6 "Benchmarks"): a Llama-shaped random model (H = 2048, 4 layers, 16 heads of
/// D = 128, I = 5632, vocab 32000, untied lm_head, F32 safetensors written once to <see cref="ModelDir"/>), a CFLoRA
/// adapter on q_proj and v_proj (r = 8, d_h = 64, alpha 16), <see cref="PromptCount"/> prompts of about 512 tokens
/// (template none), batches of 8 prompts. <see cref="CtrScorer"/> with fp32 and int8 attention against the same forward in
/// TorchSharp (float32; left-padded batches with a boolean SDPA mask; unfused LoRA with one bmm per module for the per-sample
/// G; lm_head on the two answer rows at the last position, as ours). Both sides on <see cref="GemmBenchmarks.Threads"/>
/// threads. One pass takes tens of seconds: 1 warmup and 3 measured iterations of one invocation each.
/// </summary>
/// <remarks>Environment: <c>RELLAX_SCORING_PROMPTS</c> (default 64) shrinks the prompt count for a quick run;
/// <c>RELLAX_SCORING_MODEL_DIR</c> (default <c>$TMPDIR/rellax-scoring-bench</c>) where the 1.4 GB model is written and
/// reused.</remarks>
[MemoryDiagnoser]
[WarmupCount(1)]
[IterationCount(3)]
[InvocationCount(1, 1)]
public class ScoringBenchmarks
{
    /// <summary>Model shape.</summary>
    public const int Hidden = 2048, Layers = 4, Heads = 16, HeadDim = 128, Intermediate = 5632, Vocab = 32000;

    /// <summary>Adapter shape.</summary>
    public const int Rank = 8, InstanceDim = 64;

    /// <summary>Prompts per forward batch (both sides).</summary>
    public const int BatchSize = 8;

    /// <summary>Number of prompts scored per invocation.</summary>
    public static int PromptCount => Environment.GetEnvironmentVariable("RELLAX_SCORING_PROMPTS") is { Length: > 0 } s ? int.Parse(s) : 64;

    /// <summary>Where the random model is written (once) and read from.</summary>
    public static string ModelDir => Environment.GetEnvironmentVariable("RELLAX_SCORING_MODEL_DIR") is { Length: > 0 } s
        ? s : Path.Combine(Path.GetTempPath(), "rellax-scoring-bench");

    private CpuBackend? _cpu;
    private LlamaModel? _model;
    private LlamaModel? _modelW8;
    private RellaxAdapter? _adapter;
    private List<CtrRequest> _requests = [];
    private TorchScoringForward? _torch;

    /// <summary>Loads our model and adapter.</summary>
    [GlobalSetup(Targets = [nameof(OursFp32), nameof(OursInt8)])]
    public void SetupOurs()
    {
        EnsureModel(ModelDir);
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        _model = LlamaModel.Load(ModelDir, _cpu);
        _adapter = RandomAdapter(_model.Config);
        _requests = Prompts(_model.Tokenizer, PromptCount);
    }

    /// <summary>Loads our model with int8 weights (quantized at load) and the adapter.</summary>
    [GlobalSetup(Target = nameof(OursW8))]
    public void SetupOursW8()
    {
        EnsureModel(ModelDir);
        _cpu = new CpuBackend(GemmBenchmarks.Threads);
        _modelW8 = LlamaModel.Load(ModelDir, _cpu, new ModelLoadOptions { Weights = WeightFormat.Int8 });
        Console.WriteLine($"int8 weights: quantized in {_modelW8.WeightConversionTime.TotalSeconds:F2} s, {_modelW8.WeightBytes / 1e6:F1} MB");
        _adapter = RandomAdapter(_modelW8.Config);
        _requests = Prompts(_modelW8.Tokenizer, PromptCount);
    }

    /// <summary>Loads the TorchSharp weights (and nothing of ours but the tokenizer and the adapter's host arrays).</summary>
    [GlobalSetup(Target = nameof(Torch))]
    public void SetupTorch()
    {
        EnsureModel(ModelDir);
        var tokenizer = LlamaTokenizer.Load(ModelDir);
        _adapter = RandomAdapter(LlamaConfig.Load(Path.Combine(ModelDir, "config.json")));
        _requests = Prompts(tokenizer, PromptCount);
        _torch = new TorchScoringForward(ModelDir, tokenizer, _adapter, _requests);
        GC.Collect(); // the f32 arrays read from the file were copied into torch tensors
    }

    /// <summary>Frees everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _torch?.Dispose(); _torch = null;
        _model?.Dispose(); _model = null;
        _modelW8?.Dispose(); _modelW8 = null;
        _cpu?.Dispose(); _cpu = null;
    }

    /// <summary>TorchSharp float32, batched with left padding (Baseline).</summary>
    [Benchmark(Baseline = true)]
    public double Torch() => _torch!.ScoreAll().Sum();

    /// <summary><see cref="CtrScorer"/> with fp32 attention.</summary>
    [Benchmark]
    public double OursFp32() => Score(AttentionPrecision.Fp32);

    /// <summary><see cref="CtrScorer"/> with int8 attention.</summary>
    [Benchmark]
    public double OursInt8() => Score(AttentionPrecision.Int8);

    /// <summary><see cref="CtrScorer"/> with int8 weights (LLM.int8()-style linear layers, fp32 CFLoRA adapter) and fp32 attention.</summary>
    [Benchmark]
    public double OursW8() => Score(AttentionPrecision.Fp32, _modelW8);

    private double Score(AttentionPrecision attention, LlamaModel? model = null)
    {
        using var scorer = new CtrScorer(model ?? _model!, _adapter, Options(attention));
        return scorer.Score(_requests).Sum(s => s.PYes);
    }

    private static ScoringOptions Options(AttentionPrecision attention) =>
        new() { Template = PromptTemplate.None, Attention = attention, BatchSize = BatchSize, MaxBatchTokens = BatchSize * 640 };

    /// <summary>
    /// <paramref name="count"/> prompts of 480 to 544 tokens (in steps of 8 across the list, ~512 on average), each with a random
    /// h_u [d_h]. Made of movie-list sentences as in SPEC §1, cut at the token count.
    /// </summary>
    public static List<CtrRequest> Prompts(LlamaTokenizer tokenizer, int count)
    {
        string[] titles = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Jumanji (1995)", "Sabrina (1995)", "Balto (1995)",
            "Nixon (1995)", "GoldenEye (1995)", "Sense and Sensibility (1995)", "Four Rooms (1995)", "Get Shorty (1995)"];
        var rng = new Random(5);
        var list = new List<CtrRequest>();
        for (int p = 0; p < count; p++)
        {
            int target = 480 + 8 * (p % 9);
            var text = new StringBuilder("The user watched the following movies in order in the past, and rated them: [");
            int item = 0;
            while (tokenizer.Encode(text.ToString()).Count < target)
                text.Append($"'{item++}. {titles[rng.Next(titles.Length)]} ({1 + rng.Next(5)} stars)', ");
            // Trim to the target length in tokens by decoding the first target tokens back (BOS included in the count).
            var ids = tokenizer.Encode(text.ToString());
            string prompt = tokenizer.Decode(ids.Take(target));
            var hu = new float[InstanceDim];
            for (int i = 0; i < hu.Length; i++) hu[i] = (float)(rng.NextDouble() * 2 - 1);
            list.Add(new CtrRequest(prompt, hu));
        }
        return list;
    }

    /// <summary>A CFLoRA adapter on q_proj and v_proj of every layer, uniform values scaled by 1/√fan_in.</summary>
    public static RellaxAdapter RandomAdapter(LlamaConfig config)
    {
        var rng = new Random(9);
        float[] U(int n, double a) { var x = new float[n]; for (int i = 0; i < n; i++) x[i] = (float)(a * (rng.NextDouble() * 2 - 1)); return x; }
        float[] Ones(int n) => Enumerable.Repeat(1f, n).ToArray();
        int h = config.HiddenSize, q = config.NumAttentionHeads * config.HeadDim, kv = config.NumKeyValueHeads * config.HeadDim, rr = Rank * Rank;
        var targets = new List<LoraTarget>();
        for (int l = 0; l < config.NumHiddenLayers; l++)
            foreach (var (m, dout) in new[] { (LlamaModule.QProj, q), (LlamaModule.VProj, kv) })
                targets.Add(new LoraTarget(l, m, h, dout, U(Rank * h, 1 / Math.Sqrt(h)), U(dout * Rank, 1 / Math.Sqrt(Rank)),
                    new CfloraGeneratorWeights(Ones(InstanceDim), new float[InstanceDim], U(2 * rr * InstanceDim, 1 / Math.Sqrt(InstanceDim)),
                        U(2 * rr, 0.1), U(rr * 2 * rr, 1 / Math.Sqrt(2 * rr)), U(rr, 0.1))));
        var adapterConfig = new AdapterConfig
        {
            Rank = Rank, Alpha = 16, TargetModules = [LlamaModule.QProj, LlamaModule.VProj], InstanceDim = InstanceDim,
            BaseModelName = "scoring benchmark",
        };
        return RellaxAdapter.Create(adapterConfig, targets, null, config, "scoring benchmark adapter");
    }

    /// <summary>
    /// Writes the random model (config.json, F32 model.safetensors streamed tensor by tensor, stories260K's tokenizer files)
    /// unless <paramref name="dir"/> already holds one of this shape. Weights are uniform with standard deviation 1/√fan_in
    /// (norm gains 1, embeddings ±1).
    /// </summary>
    public static void EnsureModel(string dir)
    {
        string configPath = Path.Combine(dir, "config.json"), weightsPath = Path.Combine(dir, "model.safetensors");
        string config = $$"""
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": {{Hidden}}, "intermediate_size": {{Intermediate}},
             "num_hidden_layers": {{Layers}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{Heads}}, "head_dim": {{HeadDim}},
             "vocab_size": {{Vocab}}, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
             "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
            """;
        if (File.Exists(configPath) && File.ReadAllText(configPath) == config && File.Exists(weightsPath)) return;
        Directory.CreateDirectory(dir);
        var tensors = new List<(string Name, int[] Shape, float Amplitude, float Offset)> { ("model.embed_tokens.weight", [Vocab, Hidden], 1, 0) };
        float Fan(int fanIn) => (float)Math.Sqrt(3.0 / fanIn);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            tensors.Add((p + "input_layernorm.weight", [Hidden], 0, 1));
            foreach (var m in new[] { "q_proj", "k_proj", "v_proj" }) tensors.Add((p + "self_attn." + m + ".weight", [Heads * HeadDim, Hidden], Fan(Hidden), 0));
            tensors.Add((p + "self_attn.o_proj.weight", [Hidden, Heads * HeadDim], Fan(Heads * HeadDim), 0));
            tensors.Add((p + "post_attention_layernorm.weight", [Hidden], 0, 1));
            tensors.Add((p + "mlp.gate_proj.weight", [Intermediate, Hidden], Fan(Hidden), 0));
            tensors.Add((p + "mlp.up_proj.weight", [Intermediate, Hidden], Fan(Hidden), 0));
            tensors.Add((p + "mlp.down_proj.weight", [Hidden, Intermediate], Fan(Intermediate), 0));
        }
        tensors.Add(("model.norm.weight", [Hidden], 0, 1));
        tensors.Add(("lm_head.weight", [Vocab, Hidden], Fan(Hidden), 0));

        var header = new StringBuilder("{");
        long offset = 0;
        foreach (var (name, shape, _, _) in tensors)
        {
            long bytes = 4L * shape.Aggregate(1L, (a, b) => a * b);
            header.Append($"\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{offset},{offset + bytes}]}},");
            offset += bytes;
        }
        header.Append("\"__metadata__\":{\"format\":\"pt\"}}");
        var json = Encoding.UTF8.GetBytes(header.ToString());
        string temp = weightsPath + ".tmp";
        var rng = new Random(1);
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            stream.Write(BitConverter.GetBytes((ulong)json.Length));
            stream.Write(json);
            var buffer = new float[1 << 20];
            foreach (var (_, shape, amplitude, bias) in tensors)
            {
                long n = shape.Aggregate(1L, (a, b) => a * b);
                for (long done = 0; done < n;)
                {
                    int chunk = (int)Math.Min(buffer.Length, n - done);
                    for (int i = 0; i < chunk; i++) buffer[i] = bias + amplitude * (rng.NextSingle() * 2 - 1);
                    stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(buffer.AsSpan(0, chunk)));
                    done += chunk;
                }
            }
        }
        File.Move(temp, weightsPath, overwrite: true);
        string stories = FindStories260K();
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(stories, f), Path.Combine(dir, f), overwrite: true);
        File.WriteAllText(configPath, config);
    }

    internal static string FindStories260K()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "models", "stories260K");
            if (File.Exists(Path.Combine(candidate, "tokenizer.json"))) return candidate;
        }
        throw new DirectoryNotFoundException("models/stories260K not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Prompt tokens scored per invocation (with the answers' common prefix), as the torch side counts them.</summary>
    public static long TokensPerPass(LlamaTokenizer tokenizer, IReadOnlyList<CtrRequest> requests) =>
        requests.Sum(r => (long)TorchScoringForward.PromptIds(tokenizer, r.Prompt).Length);

    /// <summary>
    /// Useful FLOPs of one prompt of <paramref name="t"/> tokens: per layer and token 2·(4·H·Hq·D + 3·H·I) for the GEMMs,
    /// 2·r·(2·H + Hq·D + Hkv·D) + 4·r² for the two CFLoRA terms, 4·Hq·D·(t + 1)/2 for causal attention (scores and P·V over
    /// the visible keys); plus lm_head on two rows at the last position.
    /// </summary>
    public static double Flops(long t)
    {
        double perToken = 2.0 * (4.0 * Hidden * Heads * HeadDim + 3.0 * Hidden * Intermediate) + 2.0 * Rank * (2.0 * Hidden + 2.0 * Heads * HeadDim) + 4.0 * Rank * Rank;
        double attention = 4.0 * Heads * HeadDim * t * (t + 1) / 2.0;
        return Layers * (perToken * t + attention) + 2.0 * 2 * Hidden;
    }

    /// <summary>After a run: tokens/s, speed-up over TorchSharp and achieved GFLOP/s from per-iteration medians.</summary>
    internal static void PrintReport(IReadOnlyList<Summary> summaries)
    {
        var rows = new List<(string Method, double Ns, long? Allocated)>();
        foreach (var s in summaries)
            foreach (var r in s.Reports)
                if (r.BenchmarkCase.Descriptor.Type == typeof(ScoringBenchmarks) && r.ResultStatistics is { } st)
                    rows.Add((r.BenchmarkCase.Descriptor.WorkloadMethod.Name, st.Median, r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase)));
        if (rows.Count == 0) return;
        EnsureModel(ModelDir);
        var tokenizer = LlamaTokenizer.Load(ModelDir);
        var requests = Prompts(tokenizer, PromptCount);
        long tokens = TokensPerPass(tokenizer, requests);
        double flops = requests.Sum(r => Flops(TorchScoringForward.PromptIds(tokenizer, r.Prompt).Length));
        Console.WriteLine($"\n{requests.Count} prompts, {tokens} tokens, {flops / tokens / 1e9:F3} GFLOP per token (at their lengths), " +
            $"{flops / 1e12:F2} TFLOP per pass");
        Console.WriteLine("| method | median (s) | tokens/s | speed-up over TorchSharp | GFLOP/s | managed alloc per pass (MB) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        double torchNs = rows.FirstOrDefault(r => r.Method == nameof(Torch)).Ns;
        foreach (var (method, ns, alloc) in rows)
            Console.WriteLine($"| {method} | {ns / 1e9:F2} | {tokens / (ns / 1e9):F0} | {(torchNs > 0 ? $"{torchNs / ns:F2}x" : "-")} | " +
                $"{flops / ns:F1} | {(alloc is { } a ? $"{a / 1e6:F1}" : "-")} |");
    }

    /// <summary>
    /// <c>--int8-accuracy</c>: scores the benchmark prompts (with the adapter) with the F32 model and with int8 weights, and prints
    /// the largest |Δp_yes|, the mean, the weight bytes of both and the quantization time.
    /// </summary>
    internal static void Int8Accuracy()
    {
        EnsureModel(ModelDir);
        using var cpu = new CpuBackend(GemmBenchmarks.Threads);
        using var fp32 = LlamaModel.Load(ModelDir, cpu);
        using var w8 = LlamaModel.Load(ModelDir, cpu, new ModelLoadOptions { Weights = WeightFormat.Int8 });
        var adapter = RandomAdapter(fp32.Config);
        var requests = Prompts(fp32.Tokenizer, PromptCount);
        foreach (var withAdapter in new[] { false, true })
        {
            double[] Run(LlamaModel m)
            {
                using var scorer = new CtrScorer(m, withAdapter ? adapter : null, Options(AttentionPrecision.Fp32));
                return [.. scorer.Score(requests).Select(s => s.PYes)];
            }
            var a = Run(fp32);
            var b = Run(w8);
            var d = a.Zip(b, (x, y) => Math.Abs(x - y)).ToArray();
            Console.WriteLine($"{(withAdapter ? "with" : "without")} the CFLoRA adapter, {requests.Count} prompts: max |p_yes int8 - fp32| = {d.Max():E2}, " +
                $"mean {d.Average():E2}; fp32 p_yes range [{a.Min():F4}, {a.Max():F4}]");
        }
        Console.WriteLine($"weights: F32 {fp32.WeightBytes / 1e6:F1} MB (mapped), int8 {w8.WeightBytes / 1e6:F1} MB " +
            $"({(double)fp32.WeightBytes / w8.WeightBytes:F2}x smaller), quantized in {w8.WeightConversionTime.TotalSeconds:F2} s");
    }

    /// <summary>
    /// <c>--scoring-memory torch|fp32|int8|w8</c>: in a fresh process, loads only that side, scores once, and prints the
    /// process's resident set (VmRSS) after loading, then resets the peak (<c>5 &gt; /proc/self/clear_refs</c>) and prints the
    /// peak resident set during the pass (VmHWM), from <c>/proc/self/status</c>. Resident pages of the memory-mapped weights
    /// count (our CPU backend reads F32 weights in place from the mapping).
    /// </summary>
    internal static void MeasureMemory(string which)
    {
        static string Status(string key) =>
            File.ReadLines("/proc/self/status").First(l => l.StartsWith(key + ":", StringComparison.Ordinal)).Split(':')[1].Trim();
        static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");
        Console.WriteLine($"before loading: VmRSS {Status("VmRSS")}, VmHWM {Status("VmHWM")}");
        var bench = new ScoringBenchmarks();
        var start = DateTime.UtcNow;
        double sum;
        if (which == "torch")
        {
            bench.SetupTorch();
            Console.WriteLine($"after loading: VmRSS {Status("VmRSS")}, peak while loading VmHWM {Status("VmHWM")}");
            ResetPeak();
            start = DateTime.UtcNow;
            sum = bench.Torch();
        }
        else if (which == "w8")
        {
            bench.SetupOursW8();
            Console.WriteLine($"after loading: VmRSS {Status("VmRSS")}, peak while loading VmHWM {Status("VmHWM")}");
            ResetPeak();
            start = DateTime.UtcNow;
            sum = bench.OursW8();
        }
        else
        {
            bench.SetupOurs();
            Console.WriteLine($"after loading: VmRSS {Status("VmRSS")}, peak while loading VmHWM {Status("VmHWM")}");
            ResetPeak();
            start = DateTime.UtcNow;
            sum = which == "int8" ? bench.OursInt8() : bench.OursFp32();
        }
        Console.WriteLine($"{which}: one pass {(DateTime.UtcNow - start).TotalSeconds:F1} s (Σp_yes {sum:F4}); " +
            $"after the pass: VmRSS {Status("VmRSS")}, peak during the pass VmHWM {Status("VmHWM")}; managed heap {GC.GetTotalMemory(false) / 1e6:F0} MB");
        bench.Cleanup();
    }
}

/// <summary>
/// The scoring forward in TorchSharp float32 (the benchmark's baseline): HF Llama with left-padded batches, a boolean SDPA mask
/// (causal and key-padding; padding queries see themselves only), positions restarting at 0 for each prompt, and the CFLoRA term
/// unfused: <c>linear(bmm(linear(x, A), G_b), B) · scale</c> with G from the generator per sample.
/// </summary>
internal sealed class TorchScoringForward : IDisposable
{
    private readonly Dictionary<string, Tensor> _w = [];
    private readonly Dictionary<(int, LlamaModule), (Tensor A, Tensor B, Tensor LnW, Tensor LnB, Tensor W1, Tensor B1, Tensor W2, Tensor B2)> _lora = [];
    private readonly float _scale;
    private readonly List<(long[][] Ids, Tensor Instances)> _batches = [];
    private readonly Tensor _answerRows;
    private readonly Tensor _invFreq;

    public TorchScoringForward(string dir, LlamaTokenizer tokenizer, RellaxAdapter adapter, IReadOnlyList<CtrRequest> requests)
    {
        torch.set_num_threads(GemmBenchmarks.Threads);
        using (var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors")))
            foreach (var (name, info) in file.Tensors)
                _w[name] = torch.tensor(file.ReadFloat32(name), [.. info.Shape.Select(x => (long)x)]);
        foreach (var t in adapter.Targets)
        {
            var g = t.Generator!;
            int r = adapter.Config.Rank, dh = g.LnWeight.Length;
            _lora[(t.Layer, t.Module)] = (torch.tensor(t.A, [r, t.InFeatures]), torch.tensor(t.B, [t.OutFeatures, r]),
                torch.tensor(g.LnWeight), torch.tensor(g.LnBias), torch.tensor(g.W1, [2 * r * r, dh]), torch.tensor(g.B1),
                torch.tensor(g.W2, [r * r, 2 * r * r]), torch.tensor(g.B2));
        }
        _scale = (float)(adapter.Config.Alpha / adapter.Config.Rank);
        var (_, yes, no) = AnswerTokens(tokenizer, "");
        using (var head = _w["lm_head.weight"])
        {
            _answerRows = head.index_select(0, torch.tensor(new long[] { no, yes }));
            _w.Remove("lm_head.weight");
        }
        _invFreq = torch.pow(10000.0, -torch.arange(0, ScoringBenchmarks.HeadDim, 2, ScalarType.Float32) / ScoringBenchmarks.HeadDim);
        // Batches as the scorer packs them: sorted by length, BatchSize prompts each.
        var order = Enumerable.Range(0, requests.Count).Select(i => (i, Ids: PromptIds(tokenizer, requests[i].Prompt))).OrderBy(p => p.Ids.Length).ToArray();
        for (int b = 0; b < order.Length; b += ScoringBenchmarks.BatchSize)
        {
            var chunk = order.Skip(b).Take(ScoringBenchmarks.BatchSize).ToArray();
            var inst = chunk.SelectMany(c => requests[c.i].Instance!).ToArray();
            _batches.Add(([.. chunk.Select(c => c.Ids.Select(x => (long)x).ToArray())], torch.tensor(inst, [chunk.Length, ScoringBenchmarks.InstanceDim])));
        }
    }

    /// <summary>BOS + prompt tokens + the answers' common prefix (template none).</summary>
    public static int[] PromptIds(LlamaTokenizer tokenizer, string prompt) => [.. tokenizer.Encode(prompt), .. AnswerTokens(tokenizer, prompt).Prefix];

    private static (int[] Prefix, int Yes, int No) AnswerTokens(LlamaTokenizer tokenizer, string prompt)
    {
        int n = tokenizer.Encode(prompt).Count;
        int[] y = [.. tokenizer.Encode(prompt + " Yes").Skip(n)], no = [.. tokenizer.Encode(prompt + " No").Skip(n)];
        int c = 0;
        while (y[c] == no[c]) c++;
        return (y[..c], y[c], no[c]);
    }

    /// <summary>Scores every batch; returns p_yes per prompt (in batch order).</summary>
    public List<double> ScoreAll()
    {
        var result = new List<double>();
        foreach (var (ids, instances) in _batches)
        {
            using var scope = torch.NewDisposeScope();
            var logits = Forward(ids, instances);                           // [B, 2]: no, yes
            result.AddRange(logits.softmax(-1).select(1, 1).data<float>().ToArray().Select(v => (double)v));
        }
        return result;
    }

    private Tensor Forward(long[][] batch, Tensor instances)
    {
        const int h = ScoringBenchmarks.Hidden, nh = ScoringBenchmarks.Heads, d = ScoringBenchmarks.HeadDim;
        int b = batch.Length, t = batch.Max(x => x.Length);
        var flat = new long[b * t];
        var pads = new long[b];
        for (int i = 0; i < b; i++)
        {
            pads[i] = t - batch[i].Length;
            batch[i].CopyTo(flat, i * t + (int)pads[i]);
        }
        var pad = torch.tensor(pads).unsqueeze(1);                                       // [B, 1]
        var ar = torch.arange(t, ScalarType.Int64).unsqueeze(0);                         // [1, T]
        var positions = (ar - pad).clamp_min(0).to_type(ScalarType.Float32);             // [B, T]
        var angles = positions.unsqueeze(-1) * _invFreq;                                 // [B, T, D/2]
        var cos = torch.cat([angles.cos(), angles.cos()], -1).unsqueeze(1);              // [B, 1, T, D]
        var sin = torch.cat([angles.sin(), angles.sin()], -1).unsqueeze(1);
        var valid = ar >= pad;                                                           // [B, T]
        var causal = torch.ones(t, t, ScalarType.Bool).tril();
        var mask = (causal.unsqueeze(0) & valid.unsqueeze(1)) | torch.eye(t, t, ScalarType.Bool).unsqueeze(0); // [B, T, T]
        mask = mask.unsqueeze(1);                                                        // [B, 1, T, T]

        var x = _w["model.embed_tokens.weight"].index_select(0, torch.tensor(flat)).view(b, t, h);
        for (int l = 0; l < ScoringBenchmarks.Layers; l++)
        {
            // Each layer's temporaries are freed at its end (as PyTorch's reference counting would), only x survives.
            using var layerScope = torch.NewDisposeScope();
            string p = $"model.layers.{l}.";
            var n = Rms(x, _w[p + "input_layernorm.weight"]);
            var q = Proj(n, l, LlamaModule.QProj, p + "self_attn.q_proj.weight", instances).view(b, t, nh, d).transpose(1, 2);
            var k = Proj(n, l, LlamaModule.KProj, p + "self_attn.k_proj.weight", instances).view(b, t, nh, d).transpose(1, 2);
            var v = Proj(n, l, LlamaModule.VProj, p + "self_attn.v_proj.weight", instances).view(b, t, nh, d).transpose(1, 2);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
            var o = torch.nn.functional.scaled_dot_product_attention(q, k, v, mask).transpose(1, 2).reshape(b, t, h);
            x = x + torch.nn.functional.linear(o, _w[p + "self_attn.o_proj.weight"]);
            n = Rms(x, _w[p + "post_attention_layernorm.weight"]);
            var act = torch.nn.functional.silu(torch.nn.functional.linear(n, _w[p + "mlp.gate_proj.weight"])) * torch.nn.functional.linear(n, _w[p + "mlp.up_proj.weight"]);
            x = (x + torch.nn.functional.linear(act, _w[p + "mlp.down_proj.weight"])).MoveToOuterDisposeScope();
        }
        var last = Rms(x.select(1, -1), _w["model.norm.weight"]);                         // [B, H]
        return torch.nn.functional.linear(last, _answerRows);                            // [B, 2]
    }

    private Tensor Proj(Tensor x, int layer, LlamaModule module, string weight, Tensor instances)
    {
        var y = torch.nn.functional.linear(x, _w[weight]);
        if (!_lora.TryGetValue((layer, module), out var a)) return y;
        int r = (int)a.A.shape[0], dh = (int)a.LnW.shape[0];
        var hu = torch.nn.functional.layer_norm(instances, [dh], a.LnW, a.LnB, 1e-5);
        var g = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(hu, a.W1, a.B1)), a.W2, a.B2).view(-1, r, r); // [B, r, r]
        var xa = torch.nn.functional.linear(x, a.A);                                     // [B, T, r]
        return y + torch.nn.functional.linear(torch.bmm(xa, g), a.B) * _scale;            // t'_j = Σ_i t_i G[i][j]
    }

    private static Tensor Rms(Tensor x, Tensor g) => x * torch.rsqrt(x.pow(2).mean([-1L], keepdim: true) + 1e-5) * g;

    private static Tensor RotateHalf(Tensor x)
    {
        var halves = x.chunk(2, -1);
        return torch.cat([-halves[1], halves[0]], -1);
    }

    public void Dispose()
    {
        foreach (var w in _w.Values) w.Dispose();
        foreach (var a in _lora.Values) foreach (var t in new[] { a.A, a.B, a.LnW, a.LnB, a.W1, a.B1, a.W2, a.B2 }) t.Dispose();
        foreach (var (_, inst) in _batches) inst.Dispose();
        _answerRows.Dispose();
        _invFreq.Dispose();
    }
}
