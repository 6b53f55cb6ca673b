using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Rellax.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Model;

/// <summary>Weights by Hugging Face tensor name: shape and row-major f32 data (exact values of the checkpoint's dtype).</summary>
internal sealed class OracleWeights : Dictionary<string, (int[] Shape, float[] Data)>
{
    /// <summary>
    /// Reads every tensor of <c>model.safetensors</c> in <paramref name="directory"/> with a parser of its own (8-byte
    /// little-endian header length, JSON header, raw little-endian data; F32, F16 and BF16), independent of the library's
    /// reader.
    /// </summary>
    public static OracleWeights Read(string directory)
    {
        byte[] file = File.ReadAllBytes(Path.Combine(directory, "model.safetensors"));
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(file);
        using var header = JsonDocument.Parse(Encoding.UTF8.GetString(file, 8, (int)headerLength));
        int dataStart = 8 + (int)headerLength;
        var weights = new OracleWeights();
        foreach (var entry in header.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__") continue;
            string dtype = entry.Value.GetProperty("dtype").GetString()!;
            int[] shape = [.. entry.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())];
            var offsets = entry.Value.GetProperty("data_offsets");
            int begin = dataStart + (int)offsets[0].GetInt64();
            int count = shape.Aggregate(1, (a, b) => a * b);
            var data = new float[count];
            for (int i = 0; i < count; i++)
            {
                data[i] = dtype switch
                {
                    "F32" => BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan(begin + 4 * i)),
                    "F16" => (float)BinaryPrimitives.ReadHalfLittleEndian(file.AsSpan(begin + 2 * i)),
                    "BF16" => BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan(begin + 2 * i)) << 16),
                    _ => throw new NotSupportedException($"oracle reader: dtype {dtype} of {entry.Name}"),
                };
            }
            weights[entry.Name] = (shape, data);
        }
        return weights;
    }
}

/// <summary>The model hyper-parameters the oracle needs, read from <c>config.json</c> with its own JSON code.</summary>
internal sealed record OracleConfig(int Hidden, int Layers, int Heads, int KvHeads, int HeadDim, int Vocab, double RmsEps, double RopeTheta,
    bool Tied, int? SlidingWindow)
{
    public static OracleConfig Read(string directory)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(directory, "config.json")));
        var r = doc.RootElement;
        int Int(string name) => r.GetProperty(name).GetInt32();
        bool Has(string name) => r.TryGetProperty(name, out var e) && e.ValueKind != JsonValueKind.Null;
        if (Has("rope_scaling"))
            throw new NotSupportedException("the oracle does not implement rope_scaling");
        int hidden = Int("hidden_size"), heads = Int("num_attention_heads");
        return new OracleConfig(hidden, Int("num_hidden_layers"), heads,
            Has("num_key_value_heads") ? Int("num_key_value_heads") : heads,
            Has("head_dim") ? Int("head_dim") : hidden / heads,
            Int("vocab_size"), r.GetProperty("rms_norm_eps").GetDouble(),
            Has("rope_theta") ? r.GetProperty("rope_theta").GetDouble() : 10000.0,
            !Has("tie_word_embeddings") || r.GetProperty("tie_word_embeddings").GetBoolean(),
            Has("sliding_window") ? Int("sliding_window") : null);
    }
}

/// <summary>
/// One prompt for the oracle: token ids in which negative entries are SPA slots (<c>-1</c> = history marker, filled in order
/// from <paramref name="HistEmbeddings"/>; <c>-2</c> = target marker, filled with <paramref name="TargetEmbedding"/>), and the
/// CRM vector h_u for CFLoRA.
/// </summary>
internal sealed record OracleSample(int[] Ids, float[]? Instance = null, IReadOnlyList<float[]>? HistEmbeddings = null, float[]? TargetEmbedding = null);

/// <summary>
/// An independent float64 TorchSharp implementation of the ReLLaX scoring forward over HF <c>LlamaForCausalLM</c> /
/// <c>MistralForCausalLM</c> / <c>Qwen2ForCausalLM</c> weights, one unpadded prompt at a time:
/// embeddings with SPA slots overwritten by <c>projector(e) = W2·GELU(W1·e + b1) + b2</c>; per layer RMSNorm,
/// q/k/v (+ biases when the checkpoint has them) and every linear layer with its LoRA/CFLoRA term
/// <c>y = W0·x + scale · B·(Gᵀ·(A·x))</c>, <c>G = reshape(W2·GELU(W1·LayerNorm(h_u) + b1) + b2, r, r)</c> (C = I without a
/// generator), RoPE (rotate_half, rope_theta), causal GQA attention (and Mistral's sliding window), o_proj, SwiGLU MLP;
/// final RMSNorm and lm_head (tied or not). GELU is exact (erf); LayerNorm eps is 1e-5.
/// </summary>
internal sealed class TorchLlamaOracle
{
    private static readonly string[] Modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    private readonly OracleConfig _c;
    private readonly OracleWeights _w;
    private readonly Dictionary<(int Layer, string Module), LoraTarget> _lora = [];
    private readonly SpaProjectorWeights? _projector;
    private readonly double _scale;
    private System.Runtime.CompilerServices.ConditionalWeakTable<float[], TorchTensor> _tensors = [];

    /// <param name="config">Model hyper-parameters.</param>
    /// <param name="weights">The checkpoint's tensors by HF name.</param>
    /// <param name="targets">LoRA targets (A [r, d_in], B [d_out, r], optional CFLoRA generator), or none.</param>
    /// <param name="projector">The SPA projector, or null.</param>
    /// <param name="loraScale">alpha / r (computed by the caller from the adapter's own numbers).</param>
    public TorchLlamaOracle(OracleConfig config, OracleWeights weights, IEnumerable<LoraTarget>? targets = null,
        SpaProjectorWeights? projector = null, double loraScale = 0)
    {
        _c = config;
        _w = weights;
        foreach (var t in targets ?? [])
            _lora[(t.Layer, Modules[(int)t.Module])] = t;
        _projector = projector;
        _scale = loraScale;
    }

    /// <summary>The oracle over the model in <paramref name="directory"/> (config.json + model.safetensors), no adapter.</summary>
    public static TorchLlamaOracle FromDirectory(string directory) => new(OracleConfig.Read(directory), OracleWeights.Read(directory));

    /// <summary>The same model with an adapter.</summary>
    public TorchLlamaOracle WithAdapter(IEnumerable<LoraTarget> targets, SpaProjectorWeights? projector, double loraScale) =>
        new(_c, _w, targets, projector, loraScale) { _tensors = _tensors };

    /// <summary>Logits at every position of one prompt, [T][V], float64.</summary>
    public double[][] Logits(OracleSample sample)
    {
        using var scope = torch.NewDisposeScope();
        var logits = Hidden(sample).matmul(Weight(_c.Tied && !_w.ContainsKey("lm_head.weight") ? "model.embed_tokens.weight" : "lm_head.weight").t());
        var flat = logits.contiguous().data<double>().ToArray();
        int t = sample.Ids.Length;
        return [.. Enumerable.Range(0, t).Select(i => flat.AsSpan(i * _c.Vocab, _c.Vocab).ToArray())];
    }

    /// <summary>Logits at the last position, [V], float64.</summary>
    public double[] LastLogits(OracleSample sample) => Logits(sample)[^1];

    /// <summary>Final-norm hidden states, [T, H] (a float64 tensor in the caller's dispose scope).</summary>
    public TorchTensor Hidden(OracleSample sample)
    {
        int t = sample.Ids.Length, group = _c.Heads / _c.KvHeads, d = _c.HeadDim;
        var ids = torch.tensor(sample.Ids.Select(i => (long)Math.Max(i, 0)).ToArray());
        var h = Weight("model.embed_tokens.weight").index_select(0, ids);                         // [T, H]
        int histUsed = 0;
        for (int i = 0; i < t; i++)
        {
            if (sample.Ids[i] >= 0) continue;
            if (_projector is null) throw new ArgumentException("marker slot without a projector");
            float[] e = sample.Ids[i] == -1 ? sample.HistEmbeddings![histUsed++] : sample.TargetEmbedding!;
            h[i].copy_(Project(e));
        }
        if (sample.HistEmbeddings is { } hist && histUsed != hist.Count)
            throw new ArgumentException($"{hist.Count} history embeddings for {histUsed} history slots");

        var invFreq = torch.pow(_c.RopeTheta, -torch.arange(0, d, 2, ScalarType.Float64) / d);        // [D/2]
        var angles = torch.outer(torch.arange(t, ScalarType.Float64), invFreq);                        // [T, D/2]
        var cos = torch.cat([angles.cos(), angles.cos()], -1).unsqueeze(0);                            // [1, T, D]
        var sin = torch.cat([angles.sin(), angles.sin()], -1).unsqueeze(0);
        // Query i sees key j iff j <= i (and i - j < sliding_window, as HF Mistral).
        var qi = torch.arange(t, ScalarType.Int64).unsqueeze(1);
        var kj = torch.arange(t, ScalarType.Int64).unsqueeze(0);
        var visible = kj <= qi;
        if (_c.SlidingWindow is { } window) visible = visible & (qi - kj < window);
        var mask = torch.zeros(t, t, ScalarType.Float64).masked_fill(visible.logical_not(), double.NegativeInfinity);

        for (int l = 0; l < _c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var x = Rms(h, Weight(p + "input_layernorm.weight"));
            var q = Linear(x, l, "q_proj", "self_attn.", sample).view(t, _c.Heads, d).transpose(0, 1);      // [Hq, T, D]
            var k = Linear(x, l, "k_proj", "self_attn.", sample).view(t, _c.KvHeads, d).transpose(0, 1);    // [Hkv, T, D]
            var v = Linear(x, l, "v_proj", "self_attn.", sample).view(t, _c.KvHeads, d).transpose(0, 1);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
            k = k.repeat_interleave(group, 0);
            v = v.repeat_interleave(group, 0);
            var scores = q.matmul(k.transpose(1, 2)) / Math.Sqrt(d) + mask;                             // [Hq, T, T]
            var o = scores.softmax(-1).matmul(v).transpose(0, 1).reshape(t, _c.Heads * d);
            h = h + Linear(o, l, "o_proj", "self_attn.", sample);
            x = Rms(h, Weight(p + "post_attention_layernorm.weight"));
            var act = torch.nn.functional.silu(Linear(x, l, "gate_proj", "mlp.", sample)) * Linear(x, l, "up_proj", "mlp.", sample);
            h = h + Linear(act, l, "down_proj", "mlp.", sample);
        }
        return Rms(h, Weight("model.norm.weight"));
    }

    private TorchTensor Weight(string name) => F64(_w[name].Data, [.. _w[name].Shape.Select(s => (long)s)]);

    /// <summary>
    /// <paramref name="data"/> as a float64 tensor of <paramref name="shape"/>, converted once per array and kept outside any
    /// dispose scope (the oracle lives for one test; the arrays are not modified meanwhile).
    /// </summary>
    private TorchTensor F64(float[] data, params long[] shape)
    {
        if (!_tensors.TryGetValue(data, out var t))
        {
            using (torch.NewDisposeScope())
                t = torch.tensor(data).to_type(ScalarType.Float64).DetachFromDisposeScope();
            _tensors.Add(data, t);
        }
        return t.reshape(shape);
    }

    private TorchTensor Rms(TorchTensor x, TorchTensor g) => x * torch.rsqrt(x.pow(2).mean([-1L], keepdim: true) + _c.RmsEps) * g;

    private static TorchTensor RotateHalf(TorchTensor x)
    {
        var halves = x.chunk(2, -1);
        return torch.cat([-halves[1], halves[0]], -1);
    }

    /// <summary>SPA projector on one CRM embedding [E]: [H].</summary>
    private TorchTensor Project(float[] e)
    {
        var p = _projector!;
        int hidden = p.B1.Length, crm = e.Length;
        var z = F64(p.W1, hidden, crm).matmul(F64(e, crm)) + F64(p.B1, hidden);
        return F64(p.W2, hidden, hidden).matmul(torch.nn.functional.gelu(z)) + F64(p.B2, hidden);
    }

    /// <summary>x [T, d_in] through the named linear layer: W0 (+ bias) + the LoRA/CFLoRA term when adapted.</summary>
    private TorchTensor Linear(TorchTensor x, int layer, string module, string prefix, OracleSample sample)
    {
        string name = $"model.layers.{layer}.{prefix}{module}";
        var y = x.matmul(Weight(name + ".weight").t());
        if (_w.ContainsKey(name + ".bias")) y = y + Weight(name + ".bias");
        if (!_lora.TryGetValue((layer, module), out var target)) return y;
        int r = target.A.Length / target.InFeatures;
        var t = x.matmul(F64(target.A, r, target.InFeatures).t());                                  // [T, r] = A·x per row
        if (target.Generator is { } gen)
        {
            float[] hu = sample.Instance ?? throw new ArgumentException("CFLoRA target without an instance vector");
            int dh = hu.Length;
            var ln = torch.nn.functional.layer_norm(F64(hu, 1, dh), [dh], F64(gen.LnWeight, dh), F64(gen.LnBias, dh), 1e-5);
            var hidden = torch.nn.functional.gelu(ln.matmul(F64(gen.W1, 2 * r * r, dh).t()) + F64(gen.B1, 2 * r * r));
            var g = (hidden.matmul(F64(gen.W2, r * r, 2 * r * r).t()) + F64(gen.B2, r * r)).reshape(r, r);  // G[i][j] = g[i·r + j]
            t = t.matmul(g);                                                                          // t'_j = Σ_i t_i G[i][j]
        }
        return y + _scale * t.matmul(F64(target.B, target.OutFeatures, r).t());
    }
}
