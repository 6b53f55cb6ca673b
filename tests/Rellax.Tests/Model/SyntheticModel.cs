using System.Text.Json;

namespace Rellax.Tests.Model;

/// <summary>
/// The shape of a tiny random Hugging Face decoder written by the tests. Every family uses stories260K's
/// <c>tokenizer.json</c> (vocab 512), so <see cref="Vocab"/> stays 512.
/// </summary>
/// <param name="Architecture">config.json <c>architectures[0]</c>: LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM.</param>
/// <param name="ModelType">config.json <c>model_type</c>.</param>
/// <param name="Hidden">hidden_size H.</param>
/// <param name="Heads">num_attention_heads Hq.</param>
/// <param name="KvHeads">num_key_value_heads Hkv.</param>
/// <param name="HeadDim">head_dim D (written to config.json).</param>
/// <param name="Intermediate">intermediate_size I.</param>
/// <param name="Layers">num_hidden_layers.</param>
/// <param name="RopeTheta">rope_theta.</param>
/// <param name="Tied">tie_word_embeddings (no lm_head.weight written when true).</param>
/// <param name="AttentionBias">attention_bias: q/k/v biases (Qwen2).</param>
/// <param name="SlidingWindow">sliding_window (Mistral), or null.</param>
/// <param name="MaxPositions">max_position_embeddings.</param>
public sealed record SyntheticModelSpec(string Architecture, string ModelType, int Hidden, int Heads, int KvHeads, int HeadDim,
    int Intermediate, int Layers, double RopeTheta, bool Tied, bool AttentionBias = false, int? SlidingWindow = null, int MaxPositions = 512,
    float QkAmplitude = 0.5f)
{
    /// <summary>vocab_size: stories260K's tokenizer's 512 ids.</summary>
    public const int Vocab = 512;

    /// <summary>rms_norm_eps.</summary>
    public const double RmsEps = 1e-5;

    /// <inheritdoc/>
    public override string ToString() => ModelType;

    /// <summary>The grouped-query Llama of <see cref="LlamaTorchOracleTests"/>: odd sizes, untied head, D = 4.</summary>
    public static SyntheticModelSpec TinyLlama { get; } = new("LlamaForCausalLM", "llama", 24, 6, 2, 4, 37, 2, 10000, Tied: false, MaxPositions: 64);

    /// <summary>Qwen2-style: q/k/v biases, GQA 4:2, untied lm_head, rope_theta 1e6, D = 16 (int8 attention works).</summary>
    public static SyntheticModelSpec Qwen2 { get; } = new("Qwen2ForCausalLM", "qwen2", 64, 4, 2, 16, 96, 2, 1e6, Tied: false, AttentionBias: true, QkAmplitude: 0.25f);

    /// <summary>Mistral-style: GQA 4:1, sliding_window 480 (longer than the test prompts, which reach about 400 tokens), untied lm_head, D = 16.</summary>
    public static SyntheticModelSpec Mistral { get; } = new("MistralForCausalLM", "mistral", 64, 4, 1, 16, 80, 2, 1e6, Tied: false, SlidingWindow: 480, QkAmplitude: 0.25f);
}

/// <summary>Writes random tiny models (config.json, model.safetensors, stories260K's tokenizer) for the model tests.</summary>
internal static class SyntheticModel
{
    /// <summary>
    /// Random weights for <paramref name="spec"/>: uniform values around 0 (norm gains around 1), each made exactly
    /// representable in <paramref name="dtype"/> (F32, F16, BF16) so a checkpoint in that dtype holds the same numbers.
    /// </summary>
    public static OracleWeights RandomWeights(SyntheticModelSpec spec, int seed, string dtype = "F32")
    {
        var rng = new Random(seed);
        var w = new OracleWeights();
        void Add(string name, float scale, float bias, params int[] shape)
        {
            var data = new float[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++)
                data[i] = Representable(bias + scale * (float)(rng.NextDouble() * 2 - 1), dtype);
            w[name] = (shape, data);
        }
        int h = spec.Hidden, q = spec.Heads * spec.HeadDim, kv = spec.KvHeads * spec.HeadDim;
        Add("model.embed_tokens.weight", 1f, 0, SyntheticModelSpec.Vocab, h);
        for (int l = 0; l < spec.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", 0.3f, 1, h);
            Add(p + "self_attn.q_proj.weight", spec.QkAmplitude, 0, q, h);
            Add(p + "self_attn.k_proj.weight", spec.QkAmplitude, 0, kv, h);
            Add(p + "self_attn.v_proj.weight", 0.5f, 0, kv, h);
            if (spec.AttentionBias)
            {
                Add(p + "self_attn.q_proj.bias", spec.QkAmplitude, 0, q);
                Add(p + "self_attn.k_proj.bias", spec.QkAmplitude, 0, kv);
                Add(p + "self_attn.v_proj.bias", 0.5f, 0, kv);
            }
            Add(p + "self_attn.o_proj.weight", 0.3f, 0, h, q);
            Add(p + "post_attention_layernorm.weight", 0.3f, 1, h);
            Add(p + "mlp.gate_proj.weight", 0.4f, 0, spec.Intermediate, h);
            Add(p + "mlp.up_proj.weight", 0.4f, 0, spec.Intermediate, h);
            Add(p + "mlp.down_proj.weight", 0.3f, 0, h, spec.Intermediate);
        }
        Add("model.norm.weight", 0.3f, 1, h);
        if (!spec.Tied) Add("lm_head.weight", 0.3f, 0, SyntheticModelSpec.Vocab, h);
        return w;
    }

    /// <summary>The nearest value of <paramref name="dtype"/> (F16 rounds, BF16 rounds to nearest even), as f32.</summary>
    public static float Representable(float v, string dtype) =>
        dtype switch { "F16" => (float)(Half)v, "BF16" => (float)(Rellax.Kernels.BFloat16)v, "F32" => v, _ => throw new ArgumentException(dtype) };

    /// <summary>Writes config.json, model.safetensors (in <paramref name="dtype"/>), and stories260K's tokenizer files.</summary>
    public static void Write(string dir, SyntheticModelSpec spec, OracleWeights weights, string dtype = "F32")
    {
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), weights, dtype);
        var config = new Dictionary<string, object>
        {
            ["architectures"] = new[] { spec.Architecture }, ["model_type"] = spec.ModelType,
            ["hidden_size"] = spec.Hidden, ["intermediate_size"] = spec.Intermediate, ["num_hidden_layers"] = spec.Layers,
            ["num_attention_heads"] = spec.Heads, ["num_key_value_heads"] = spec.KvHeads, ["head_dim"] = spec.HeadDim,
            ["vocab_size"] = SyntheticModelSpec.Vocab, ["max_position_embeddings"] = spec.MaxPositions, ["rms_norm_eps"] = SyntheticModelSpec.RmsEps,
            ["rope_theta"] = spec.RopeTheta, ["tie_word_embeddings"] = spec.Tied, ["hidden_act"] = "silu", ["bos_token_id"] = 1, ["eos_token_id"] = 2,
            ["torch_dtype"] = dtype switch { "F16" => "float16", "BF16" => "bfloat16", _ => "float32" },
        };
        if (spec.AttentionBias) config["attention_bias"] = true;
        if (spec.SlidingWindow is { } window) config["sliding_window"] = window;
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(config));
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(ModelPaths.Stories260K, f), Path.Combine(dir, f));
    }

    /// <summary>Writes a random model of <paramref name="spec"/> into a new temporary directory and returns it with its weights.</summary>
    public static (string Dir, OracleWeights Weights) WriteTemp(SyntheticModelSpec spec, int seed, string dtype = "F32")
    {
        string dir = Directory.CreateTempSubdirectory("rellax-" + spec.ModelType).FullName;
        var weights = RandomWeights(spec, seed, dtype);
        Write(dir, spec, weights, dtype);
        return (dir, weights);
    }
}
