using NUnit.Framework;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Model;

/// <summary>
/// The whole Llama forward pass against an independent TorchSharp implementation (float64) of HF
/// <c>LlamaForCausalLM</c>, on a random tiny model with odd sizes, grouped-query heads, an untied lm_head,
/// and F32 / F16 / BF16 checkpoints (loaded in that dtype). The same oracle with q/k/v biases is HF
/// <c>Qwen2ForCausalLM</c> (its config implies <c>attention_bias</c>); with an o_proj bias too it is Llama with
/// <c>attention_bias</c>. Tolerance: 2e-4 absolute on logits of magnitude ~1 (fp32 kernels).
/// </summary>
[TestFixture]
public sealed class LlamaTorchOracleTests
{
    private const int Hidden = 24, Heads = 6, KvHeads = 2, HeadDim = 4, Intermediate = 37, Layers = 2, Vocab = 512, MaxPos = 64;
    private const double Eps = 1e-5, Theta = 10000;

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var factory in TestBackends.Factories())
            foreach (var dtype in new[] { "F32", "F16", "BF16" })
                yield return new TestCaseData(factory, dtype).SetArgDisplayNames(factory.Name, dtype);
    }

    [TestCaseSource(nameof(Cases))]
    public void LogitsMatchTorchSharp(BackendFactory factory, string dtype)
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-llama").FullName;
        try
        {
            var weights = RandomWeights(seed: 7, dtype);
            WriteModel(dir, weights, dtype);
            int[] prompt = [1, 17, 300, 5, 5, 511, 42, 260, 3, 99, 128];

            using var backend = factory.Create();
            using var model = LlamaModel.Load(dir, backend);
            using var session = model.CreateSession();
            var ours = session.Forward(prompt.AsSpan(0, 8));
            var oursNext = session.Forward(prompt.AsSpan(8)); // continues against the KV cache

            var expectedAll = TorchLogits(weights, prompt);
            Assert.That(ours, Is.EqualTo(expectedAll[7]).Within(2e-4), "logits after the first chunk");
            Assert.That(oursNext, Is.EqualTo(expectedAll[^1]).Within(2e-4), "logits after continuing with the KV cache");
        }
        finally { Directory.Delete(dir, true); }
    }

    private static IEnumerable<TestCaseData> BiasCases()
    {
        foreach (var factory in TestBackends.Factories())
        {
            foreach (var dtype in new[] { "F32", "BF16" })
                yield return new TestCaseData(factory, dtype, "Qwen2ForCausalLM").SetArgDisplayNames(factory.Name, dtype, "qwen2");
            yield return new TestCaseData(factory, "F16", "LlamaForCausalLM").SetArgDisplayNames(factory.Name, "F16", "llama-attention-bias");
        }
    }

    [TestCaseSource(nameof(BiasCases))]
    public void AttentionBiasLogitsMatchTorchSharp(BackendFactory factory, string dtype, string architecture)
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-bias").FullName;
        try
        {
            bool llama = architecture == "LlamaForCausalLM";
            // Qwen2: q/k/v biases (attention_bias implied by the architecture); Llama with attention_bias: o_proj's too.
            var weights = RandomWeights(seed: 11, dtype, qkvBias: true, oBias: llama);
            WriteModel(dir, weights, dtype, architecture, llama ? new() { ["attention_bias"] = true } : null);
            int[] prompt = [1, 17, 300, 5, 5, 511, 42, 260, 3, 99, 128];

            using var backend = factory.Create();
            using var model = LlamaModel.Load(dir, backend);
            Assert.That(model.Weights.Layers[1].KBias, Is.Not.Null);
            Assert.That(model.Weights.Layers[1].OBias is not null, Is.EqualTo(llama));
            using var session = model.CreateSession();
            var ours = session.Forward(prompt.AsSpan(0, 8));
            var oursNext = session.Forward(prompt.AsSpan(8));

            var expectedAll = TorchLogits(weights, prompt);
            Assert.That(ours, Is.EqualTo(expectedAll[7]).Within(2e-4), "logits after the first chunk");
            Assert.That(oursNext, Is.EqualTo(expectedAll[^1]).Within(2e-4), "logits after continuing with the KV cache");
            // The biases matter: the same weights without them give clearly different logits.
            var unbiased = TorchLogits(weights.Where(kv => !kv.Key.EndsWith(".bias", StringComparison.Ordinal)).ToDictionary(), prompt);
            Assert.That(unbiased[^1].Zip(oursNext).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-2));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void BiasesAndAttentionBiasMustAgree()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-bias").FullName;
        try
        {
            using var backend = new Rellax.Kernels.Cpu.CpuBackend(1);
            // Biases in the file, attention_bias false in config.json: refused, not ignored.
            WriteModel(dir, RandomWeights(seed: 11, "F32", qkvBias: true), "F32", "LlamaForCausalLM");
            Assert.That(() => LlamaModel.Load(dir, backend), Throws.InstanceOf<InvalidDataException>()
                .With.Message.Contains("model.layers.0.self_attn.q_proj.bias").And.Message.Contains("attention_bias"));
            // Qwen2 (attention_bias implied) without its biases: the missing tensor is named.
            foreach (var f in Directory.GetFiles(dir)) File.Delete(f);
            WriteModel(dir, RandomWeights(seed: 11, "F32"), "F32", "Qwen2ForCausalLM");
            Assert.That(() => LlamaModel.Load(dir, backend), Throws.InstanceOf<InvalidDataException>()
                .With.Message.Contains("model.layers.0.self_attn.q_proj.bias"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MistralSlidingWindowIsExactUpToTheWindowAndRefusedBeyond()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-mistral").FullName;
        try
        {
            var weights = RandomWeights(seed: 13, "F32");
            WriteModel(dir, weights, "F32", "MistralForCausalLM", new() { ["sliding_window"] = 8 });
            int[] prompt = [1, 17, 300, 5, 5, 511, 42, 260, 3];
            using var backend = new Rellax.Kernels.Cpu.CpuBackend(1);
            using var model = LlamaModel.Load(dir, backend);
            using var session = model.CreateSession();
            // Within the window Mistral's attention is full causal attention: the Llama oracle applies.
            var ours = session.Forward(prompt.AsSpan(0, 8));
            Assert.That(ours, Is.EqualTo(TorchLogits(weights, prompt)[7]).Within(2e-4));
            Assert.That(() => session.Forward(prompt.AsSpan(8)), Throws.InstanceOf<NotSupportedException>()
                .With.Message.Contains("sliding_window = 8").And.Message.Contains("8 + 1 tokens"));
            Assert.That(session.Position, Is.EqualTo(8), "the refused call did not advance the session");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void Int8AttentionRefusesAHeadDimensionItCannotQuantize()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-llama").FullName;
        try
        {
            WriteModel(dir, RandomWeights(seed: 7, "F32"), "F32");
            using var backend = new Rellax.Kernels.Cpu.CpuBackend(1);
            using var model = LlamaModel.Load(dir, backend);
            Assert.That(() => model.CreateSession(attention: Rellax.Kernels.AttentionPrecision.Int8),
                Throws.ArgumentException.With.Message.Contains("head dimension").And.Message.Contains($"is {HeadDim}"));
            using var fp32 = model.CreateSession();
            Assert.That(fp32.Forward([1, 17]).All(float.IsFinite), "fp32 attention still works on the same model");
        }
        finally { Directory.Delete(dir, true); }
    }

    private static Dictionary<string, (int[] Shape, float[] Data)> RandomWeights(int seed, string dtype, bool qkvBias = false, bool oBias = false)
    {
        var rng = new Random(seed);
        var w = new Dictionary<string, (int[], float[])>();
        void Add(string name, float scale, float bias, params int[] shape)
        {
            var data = new float[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++)
            {
                float v = bias + scale * (float)(rng.NextDouble() * 2 - 1);
                // Make the value exactly representable in the checkpoint dtype, so both sides see the same weights.
                data[i] = dtype switch { "F16" => (float)(Half)v, "BF16" => (float)(Rellax.Kernels.BFloat16)v, _ => v };
            }
            w[name] = (shape, data);
        }
        Add("model.embed_tokens.weight", 1f, 0, Vocab, Hidden);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", 0.3f, 1, Hidden);
            Add(p + "self_attn.q_proj.weight", 0.5f, 0, Heads * HeadDim, Hidden);
            Add(p + "self_attn.k_proj.weight", 0.5f, 0, KvHeads * HeadDim, Hidden);
            Add(p + "self_attn.v_proj.weight", 0.5f, 0, KvHeads * HeadDim, Hidden);
            Add(p + "self_attn.o_proj.weight", 0.3f, 0, Hidden, Heads * HeadDim);
            if (qkvBias)
            {
                Add(p + "self_attn.q_proj.bias", 0.5f, 0, Heads * HeadDim);
                Add(p + "self_attn.k_proj.bias", 0.5f, 0, KvHeads * HeadDim);
                Add(p + "self_attn.v_proj.bias", 0.5f, 0, KvHeads * HeadDim);
            }
            if (oBias) Add(p + "self_attn.o_proj.bias", 0.3f, 0, Hidden);
            Add(p + "post_attention_layernorm.weight", 0.3f, 1, Hidden);
            Add(p + "mlp.gate_proj.weight", 0.4f, 0, Intermediate, Hidden);
            Add(p + "mlp.up_proj.weight", 0.4f, 0, Intermediate, Hidden);
            Add(p + "mlp.down_proj.weight", 0.3f, 0, Hidden, Intermediate);
        }
        Add("model.norm.weight", 0.3f, 1, Hidden);
        Add("lm_head.weight", 0.3f, 0, Vocab, Hidden);
        return w;
    }

    private static void WriteModel(string dir, Dictionary<string, (int[] Shape, float[] Data)> weights, string dtype,
        string architecture = "LlamaForCausalLM", Dictionary<string, object>? extra = null)
    {
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), weights, dtype);
        var config = new Dictionary<string, object>
        {
            ["architectures"] = new[] { architecture },
            ["model_type"] = architecture switch { "Qwen2ForCausalLM" => "qwen2", "MistralForCausalLM" => "mistral", _ => "llama" },
            ["hidden_size"] = Hidden, ["intermediate_size"] = Intermediate, ["num_hidden_layers"] = Layers,
            ["num_attention_heads"] = Heads, ["num_key_value_heads"] = KvHeads, ["head_dim"] = HeadDim,
            ["vocab_size"] = Vocab, ["max_position_embeddings"] = MaxPos, ["rms_norm_eps"] = Eps, ["rope_theta"] = Theta,
            ["tie_word_embeddings"] = false, ["hidden_act"] = "silu", ["bos_token_id"] = 1, ["eos_token_id"] = 2,
        };
        foreach (var (key, value) in extra ?? []) config[key] = value;
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(config));
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(ModelPaths.Stories260K, f), Path.Combine(dir, f));
    }

    /// <summary>
    /// HF LlamaForCausalLM in TorchSharp, float64: logits for every position, [T][V]. Projection biases present in
    /// <paramref name="w"/> are added (Qwen2's q/k/v, Llama attention_bias's o_proj too).
    /// </summary>
    private static float[][] TorchLogits(Dictionary<string, (int[] Shape, float[] Data)> w, int[] tokens)
    {
        using var scope = torch.NewDisposeScope();
        TorchTensor W(string name) => torch.tensor(w[name].Data).reshape(w[name].Shape.Select(d => (long)d).ToArray()).to_type(ScalarType.Float64);
        TorchTensor Proj(TorchTensor x, string module) =>
            w.ContainsKey(module + ".bias") ? x.matmul(W(module + ".weight").t()) + W(module + ".bias") : x.matmul(W(module + ".weight").t());
        TorchTensor Rms(TorchTensor x, TorchTensor g) => x * torch.rsqrt(x.pow(2).mean([-1L], keepdim: true) + Eps) * g;
        TorchTensor RotateHalf(TorchTensor x)
        {
            var halves = x.chunk(2, -1);
            return torch.cat([-halves[1], halves[0]], -1);
        }

        int t = tokens.Length, group = Heads / KvHeads;
        var ids = torch.tensor(tokens.Select(i => (long)i).ToArray());
        var h = W("model.embed_tokens.weight").index_select(0, ids);                                  // [T, H]
        var invFreq = torch.pow(Theta, -torch.arange(0, HeadDim, 2, ScalarType.Float64) / HeadDim);  // [D/2]
        var angles = torch.outer(torch.arange(t, ScalarType.Float64), invFreq);                       // [T, D/2]
        var cos = torch.cat([angles.cos(), angles.cos()], -1).unsqueeze(0);                           // [1, T, D]
        var sin = torch.cat([angles.sin(), angles.sin()], -1).unsqueeze(0);
        var mask = torch.triu(torch.full(t, t, double.NegativeInfinity, ScalarType.Float64), 1);       // [T, T]
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var x = Rms(h, W(p + "input_layernorm.weight"));
            var q = Proj(x, p + "self_attn.q_proj").view(t, Heads, HeadDim).transpose(0, 1);   // [Hq, T, D]
            var k = Proj(x, p + "self_attn.k_proj").view(t, KvHeads, HeadDim).transpose(0, 1); // [Hkv, T, D]
            var v = Proj(x, p + "self_attn.v_proj").view(t, KvHeads, HeadDim).transpose(0, 1);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
            k = k.repeat_interleave(group, 0);
            v = v.repeat_interleave(group, 0);
            var scores = q.matmul(k.transpose(1, 2)) / Math.Sqrt(HeadDim) + mask;                         // [Hq, T, T]
            var o = scores.softmax(-1).matmul(v).transpose(0, 1).reshape(t, Heads * HeadDim);
            h = h + Proj(o, p + "self_attn.o_proj");
            x = Rms(h, W(p + "post_attention_layernorm.weight"));
            var act = torch.nn.functional.silu(x.matmul(W(p + "mlp.gate_proj.weight").t())) * x.matmul(W(p + "mlp.up_proj.weight").t());
            h = h + act.matmul(W(p + "mlp.down_proj.weight").t());
        }
        var logits = Rms(h, W("model.norm.weight")).matmul(W("lm_head.weight").t()).to_type(ScalarType.Float32);
        var flat = logits.data<float>().ToArray();
        return Enumerable.Range(0, t).Select(i => flat.AsSpan(i * Vocab, Vocab).ToArray()).ToArray();
    }
}
