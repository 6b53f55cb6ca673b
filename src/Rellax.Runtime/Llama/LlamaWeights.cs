using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>
/// One decoder layer's weights on a backend, HF layout ([out, in] for linear layers). Linear weights keep the
/// checkpoint's dtype (f32, f16 or bf16; <see cref="Primitives.Linear"/> and <see cref="CfloraLinear"/> widen on the
/// fly); norms and biases are f32.
/// </summary>
internal sealed class LlamaLayerWeights
{
    public required DeviceBuffer InputNorm { get; init; }        // [H]
    public required DeviceBuffer Q { get; init; }                // [Hq·D, H]
    public required DeviceBuffer K { get; init; }                // [Hkv·D, H]
    public required DeviceBuffer V { get; init; }                // [Hkv·D, H]
    public DeviceBuffer? QBias { get; init; }                    // [Hq·D] f32, Qwen2 (attention_bias)
    public DeviceBuffer? KBias { get; init; }                    // [Hkv·D] f32
    public DeviceBuffer? VBias { get; init; }                    // [Hkv·D] f32
    public required DeviceBuffer O { get; init; }                // [H, Hq·D]
    public required DeviceBuffer PostAttentionNorm { get; init; } // [H]
    public required DeviceBuffer Gate { get; init; }             // [I, H]
    public required DeviceBuffer Up { get; init; }               // [I, H]
    public required DeviceBuffer Down { get; init; }             // [H, I]
}

/// <summary>All weights of a Llama-family decoder on one backend; owns (and disposes) every buffer.</summary>
internal sealed class LlamaWeights : IDisposable
{
    private readonly List<DeviceBuffer> _owned = [];

    public required DeviceBuffer Embedding { get; init; }  // [V, H]
    public required DeviceBuffer FinalNorm { get; init; }  // [H]
    public required DeviceBuffer LmHead { get; init; }     // [V, H]; the embedding itself when tied
    public required LlamaLayerWeights[] Layers { get; init; }
    public DeviceBuffer RopeCos { get; init; } = null!;   // [P, D/2]
    public DeviceBuffer RopeSin { get; init; } = null!;   // [P, D/2]

    /// <summary>Reads every tensor the config names from the checkpoint, converting F16/BF16 to f32 once, and uploads it.</summary>
    public static LlamaWeights Load(SafeTensorsCheckpoint checkpoint, LlamaConfig config, ComputeBackend backend)
    {
        var owned = new List<DeviceBuffer>();
        try
        {
            int h = config.HiddenSize, d = config.HeadDim, hq = config.NumAttentionHeads, hkv = config.NumKeyValueHeads;
            DeviceBuffer Load(string name, params int[] shape)
            {
                if (!checkpoint.Contains(name))
                    throw new InvalidDataException($"checkpoint has no tensor '{name}' (needed by {config.Architecture})");
                var info = checkpoint.Info(name);
                if (!info.Shape.SequenceEqual(shape))
                    throw new InvalidDataException($"tensor '{name}' has shape [{string.Join(", ", info.Shape)}], config.json implies [{string.Join(", ", shape)}]");
                var buffer = backend.Upload<float>(checkpoint.ReadFloat32(name));
                owned.Add(buffer);
                return buffer;
            }

            var embedding = Load("model.embed_tokens.weight", config.VocabSize, h);
            var layers = new LlamaLayerWeights[config.NumHiddenLayers];
            for (int i = 0; i < layers.Length; i++)
            {
                string p = $"model.layers.{i}.";
                layers[i] = new LlamaLayerWeights
                {
                    InputNorm = Load(p + "input_layernorm.weight", h),
                    Q = Load(p + "self_attn.q_proj.weight", hq * d, h),
                    K = Load(p + "self_attn.k_proj.weight", hkv * d, h),
                    V = Load(p + "self_attn.v_proj.weight", hkv * d, h),
                    O = Load(p + "self_attn.o_proj.weight", h, hq * d),
                    PostAttentionNorm = Load(p + "post_attention_layernorm.weight", h),
                    Gate = Load(p + "mlp.gate_proj.weight", config.IntermediateSize, h),
                    Up = Load(p + "mlp.up_proj.weight", config.IntermediateSize, h),
                    Down = Load(p + "mlp.down_proj.weight", h, config.IntermediateSize),
                };
            }
            var finalNorm = Load("model.norm.weight", h);
            // Tied checkpoints omit lm_head (save_pretrained drops the duplicate); an untied one must have it.
            var lmHead = config.TieWordEmbeddings && !checkpoint.Contains("lm_head.weight")
                ? embedding
                : Load("lm_head.weight", config.VocabSize, h);

            var invFreq = RopeTables.InverseFrequencies(d, config.RopeTheta);
            if (config.RopeScaling is { } rs)
                RopeTables.ApplyLlama3Scaling(invFreq, rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositionEmbeddings);
            var (cos, sin) = RopeTables.Build(invFreq, config.MaxPositionEmbeddings);
            var cosBuffer = backend.Upload<float>(cos); owned.Add(cosBuffer);
            var sinBuffer = backend.Upload<float>(sin); owned.Add(sinBuffer);

            var weights = new LlamaWeights
            {
                Embedding = embedding, FinalNorm = finalNorm, LmHead = lmHead, Layers = layers,
                RopeCos = cosBuffer, RopeSin = sinBuffer,
            };
            weights._owned.AddRange(owned);
            return weights;
        }
        catch
        {
            foreach (var b in owned) b.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
    }
}
