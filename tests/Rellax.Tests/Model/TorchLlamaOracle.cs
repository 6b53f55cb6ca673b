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

    /// <summary>
    /// A copy with every matrix (2-D tensor, embedding included) replaced by q · scale_row, the int8 weight quantizer's
    /// q and per-row scale rounded to f32 as the kernels read them: the model an int8 base computes with fp32 activations.
    /// </summary>
    public OracleWeights Dequantized()
    {
        var result = new OracleWeights();
        foreach (var (name, (shape, data)) in this)
        {
            var copy = (float[])data.Clone();
            if (shape.Length == 2)
            {
                var q = new sbyte[shape[1]];
                for (int r = 0; r < shape[0]; r++)
                {
                    float scale = Rellax.Kernels.PrimitivesReference.QuantizeRowInt8(data.AsSpan(r * shape[1], shape[1]), q);
                    for (int c = 0; c < shape[1]; c++) copy[r * shape[1] + c] = q[c] * scale;
                }
            }
            result[name] = (shape, copy);
        }
        return result;
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
/// An independent TorchSharp implementation (float64 by default) of the ReLLaX scoring forward over HF
/// <c>LlamaForCausalLM</c> / <c>MistralForCausalLM</c> / <c>Qwen2ForCausalLM</c> weights, on one prompt or on a left-padded
/// batch of prompts (positions restart at 0 after each prompt's padding; padding keys are masked, a padding query sees
/// itself only, so nothing is NaN and no real row sees a padding row):
/// embeddings with SPA slots overwritten by <c>projector(e) = W2·GELU(W1·e + b1) + b2</c>; per layer RMSNorm,
/// q/k/v (+ biases when the checkpoint has them) and every linear layer with its LoRA/CFLoRA term
/// <c>y = W0·x + scale · B·(Gᵀ·(A·x))</c>, <c>G = reshape(W2·GELU(W1·LayerNorm(h_u) + b1) + b2, r, r)</c> per sample (G = I
/// without a generator), RoPE (rotate_half, rope_theta), causal GQA attention (and Mistral's sliding window), o_proj,
/// SwiGLU MLP; final RMSNorm and lm_head (tied or not). GELU is exact (erf); LayerNorm eps is 1e-5.
/// </summary>
/// <remarks>
/// Every weight and adapter array enters the graph through one conversion (<see cref="Overrides"/> first): an array
/// listed there is replaced by the given tensor, so a caller can make adapter tensors autograd leaves
/// (<c>requires_grad</c>) or perturb them for finite differences without touching the arrays.
/// </remarks>
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
    /// <param name="precision">Float64 (the oracle) or Float32 (a baseline of the same code).</param>
    public TorchLlamaOracle(OracleConfig config, OracleWeights weights, IEnumerable<LoraTarget>? targets = null,
        SpaProjectorWeights? projector = null, double loraScale = 0, ScalarType precision = ScalarType.Float64)
    {
        _c = config;
        _w = weights;
        foreach (var t in targets ?? [])
            _lora[(t.Layer, Modules[(int)t.Module])] = t;
        _projector = projector;
        _scale = loraScale;
        Precision = precision;
    }

    /// <summary>The oracle over the model in <paramref name="directory"/> (config.json + model.safetensors), no adapter.</summary>
    public static TorchLlamaOracle FromDirectory(string directory) => new(OracleConfig.Read(directory), OracleWeights.Read(directory));

    /// <summary>The same model with an adapter.</summary>
    public TorchLlamaOracle WithAdapter(IEnumerable<LoraTarget> targets, SpaProjectorWeights? projector, double loraScale) =>
        new(_c, _w, targets, projector, loraScale, Precision) { _tensors = _tensors };

    /// <summary>The model's hyper-parameters.</summary>
    public OracleConfig Config => _c;

    /// <summary>The floating-point type of every tensor of the forward.</summary>
    public ScalarType Precision { get; }

    /// <summary>
    /// Attention through <c>scaled_dot_product_attention</c> with a boolean mask (the same mask) instead of the explicit
    /// softmax(q·kᵀ/√D + mask)·v: for a Float32 baseline, where it is what a PyTorch user would run.
    /// </summary>
    public bool FusedAttention { get; init; }

    /// <summary>
    /// Arrays (by reference) replaced by the given tensors of <see cref="Precision"/> and the array's length (any shape),
    /// or null: how trained tensors become autograd leaves.
    /// </summary>
    public Dictionary<float[], TorchTensor>? Overrides { get; set; }

    /// <summary>Logits at every position of one prompt, [T][V], float64.</summary>
    public double[][] Logits(OracleSample sample)
    {
        using var scope = torch.NewDisposeScope();
        var logits = Hidden(sample).matmul(LmHead().t()).to_type(ScalarType.Float64);
        var flat = logits.contiguous().data<double>().ToArray();
        int t = sample.Ids.Length;
        return [.. Enumerable.Range(0, t).Select(i => flat.AsSpan(i * _c.Vocab, _c.Vocab).ToArray())];
    }

    /// <summary>Logits at the last position, [V], float64.</summary>
    public double[] LastLogits(OracleSample sample) => Logits(sample)[^1];

    /// <summary>lm_head [V, H] (the embedding when tied), in the caller's dispose scope.</summary>
    public TorchTensor LmHead() => Weight(_c.Tied && !_w.ContainsKey("lm_head.weight") ? "model.embed_tokens.weight" : "lm_head.weight");

    /// <summary>Final-norm hidden states of one prompt, [T, H] (a tensor in the caller's dispose scope).</summary>
    public TorchTensor Hidden(OracleSample sample) => Hidden([sample])[0];

    /// <summary>
    /// Final-norm hidden states of a left-padded batch, [B, T, H] with T the longest prompt; prompt j's tokens are rows
    /// T - len_j .. T - 1 of batch row j (a tensor in the caller's dispose scope).
    /// </summary>
    public TorchTensor Hidden(IReadOnlyList<OracleSample> batch)
    {
        int b = batch.Count, t = batch.Max(s => s.Ids.Length), group = _c.Heads / _c.KvHeads, d = _c.HeadDim, hidden = _c.Hidden;
        var ids = new long[b * t];
        var pads = new long[b];
        var slotRows = new List<long>();
        var slotValues = new List<TorchTensor>();
        for (int j = 0; j < b; j++)
        {
            var s = batch[j];
            int padding = t - s.Ids.Length, histUsed = 0;
            pads[j] = padding;
            for (int i = 0; i < s.Ids.Length; i++)
            {
                int row = j * t + padding + i;
                if (s.Ids[i] >= 0) { ids[row] = s.Ids[i]; continue; }
                if (_projector is null) throw new ArgumentException("marker slot without a projector");
                float[] e = s.Ids[i] == -1 ? s.HistEmbeddings![histUsed++] : s.TargetEmbedding!;
                slotRows.Add(row);
                slotValues.Add(AsTensor(e, e.Length));
            }
            if (s.HistEmbeddings is { } hist && histUsed != hist.Count)
                throw new ArgumentException($"{hist.Count} history embeddings for {histUsed} history slots");
        }
        var h = Weight("model.embed_tokens.weight").index_select(0, torch.tensor(ids));                  // [B·T, H]
        if (slotRows.Count > 0) h = h.index_copy(0, torch.tensor(slotRows.ToArray()), Project(torch.stack(slotValues)));
        h = h.view(b, t, hidden);

        var pad = torch.tensor(pads).unsqueeze(1);                                                        // [B, 1]
        var index = torch.arange(t, ScalarType.Int64).unsqueeze(0);                                       // [1, T]
        var positions = (index - pad).clamp_min(0).to_type(Precision);                                    // [B, T]
        var invFreq = torch.pow(_c.RopeTheta, -torch.arange(0, d, 2, ScalarType.Float64) / d).to_type(Precision); // [D/2]
        var angles = positions.unsqueeze(-1) * invFreq;                                                   // [B, T, D/2]
        var cos = torch.cat([angles.cos(), angles.cos()], -1).unsqueeze(1);                               // [B, 1, T, D]
        var sin = torch.cat([angles.sin(), angles.sin()], -1).unsqueeze(1);
        // Query i sees key j iff j <= i, j is no padding (and i - j < sliding_window, as HF Mistral); padding queries see themselves.
        var qi = torch.arange(t, ScalarType.Int64).unsqueeze(1);
        var kj = torch.arange(t, ScalarType.Int64).unsqueeze(0);
        var causal = kj <= qi;
        if (_c.SlidingWindow is { } window) causal = causal & (qi - kj < window);
        var visible = (causal.unsqueeze(0) & (index >= pad).unsqueeze(1)) | torch.eye(t, t, ScalarType.Bool).unsqueeze(0); // [B, T, T]
        var mask = FusedAttention ? null : torch.zeros(b, t, t, Precision).masked_fill(visible.logical_not(), double.NegativeInfinity).unsqueeze(1); // [B, 1, T, T]
        var instances = _lora.Values.Any(x => x.Generator is not null) ? torch.stack(batch.Select(Instance)) : null; // [B, d_h]

        for (int l = 0; l < _c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var x = Rms(h, Weight(p + "input_layernorm.weight"));
            var q = Linear(x, l, "q_proj", "self_attn.", instances).view(b, t, _c.Heads, d).transpose(1, 2);     // [B, Hq, T, D]
            var k = Linear(x, l, "k_proj", "self_attn.", instances).view(b, t, _c.KvHeads, d).transpose(1, 2);   // [B, Hkv, T, D]
            var v = Linear(x, l, "v_proj", "self_attn.", instances).view(b, t, _c.KvHeads, d).transpose(1, 2);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
            k = k.repeat_interleave(group, 1);
            v = v.repeat_interleave(group, 1);
            var o = FusedAttention
                ? torch.nn.functional.scaled_dot_product_attention(q, k, v, visible.unsqueeze(1))
                : (q.matmul(k.transpose(2, 3)) / Math.Sqrt(d) + mask!).softmax(-1).matmul(v);                   // [B, Hq, T, D]
            o = o.transpose(1, 2).reshape(b, t, _c.Heads * d);
            h = h + Linear(o, l, "o_proj", "self_attn.", instances);
            x = Rms(h, Weight(p + "post_attention_layernorm.weight"));
            var act = torch.nn.functional.silu(Linear(x, l, "gate_proj", "mlp.", instances)) * Linear(x, l, "up_proj", "mlp.", instances);
            h = h + Linear(act, l, "down_proj", "mlp.", instances);
        }
        return Rms(h, Weight("model.norm.weight"));
    }

    private TorchTensor Instance(OracleSample s) =>
        s.Instance is { } hu ? AsTensor(hu, hu.Length) : throw new ArgumentException("CFLoRA target without an instance vector");

    private TorchTensor Weight(string name) => AsTensor(_w[name].Data, [.. _w[name].Shape.Select(s => (long)s)]);

    /// <summary>
    /// <paramref name="data"/> as a tensor of <see cref="Precision"/> and <paramref name="shape"/>: its
    /// <see cref="Overrides"/> entry when there is one, else converted once per array and kept outside any dispose scope
    /// (the oracle lives for one test; the arrays are not modified meanwhile).
    /// </summary>
    private TorchTensor AsTensor(float[] data, params long[] shape)
    {
        if (Overrides is { } o && o.TryGetValue(data, out var replaced)) return replaced.reshape(shape);
        if (!_tensors.TryGetValue(data, out var t))
        {
            using (torch.NewDisposeScope())
                t = torch.tensor(data).to_type(Precision).DetachFromDisposeScope();
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

    /// <summary>SPA projector on CRM embeddings [S, E]: [S, H].</summary>
    private TorchTensor Project(TorchTensor e)
    {
        var p = _projector!;
        int hidden = p.B1.Length, crm = (int)e.shape[1];
        var z = e.matmul(AsTensor(p.W1, hidden, crm).t()) + AsTensor(p.B1, hidden);
        return torch.nn.functional.gelu(z).matmul(AsTensor(p.W2, hidden, hidden).t()) + AsTensor(p.B2, hidden);
    }

    /// <summary>
    /// x [B, T, d_in] through the named linear layer: W0 (+ bias) + the LoRA/CFLoRA term when adapted, with G per sample from
    /// <paramref name="instances"/> [B, d_h].
    /// </summary>
    private TorchTensor Linear(TorchTensor x, int layer, string module, string prefix, TorchTensor? instances)
    {
        string name = $"model.layers.{layer}.{prefix}{module}";
        var y = x.matmul(Weight(name + ".weight").t());
        if (_w.ContainsKey(name + ".bias")) y = y + Weight(name + ".bias");
        if (!_lora.TryGetValue((layer, module), out var target)) return y;
        int r = target.A.Length / target.InFeatures;
        var t = x.matmul(AsTensor(target.A, r, target.InFeatures).t());                                  // [B, T, r] = A·x per row
        if (target.Generator is { } gen)
        {
            int dh = gen.LnWeight.Length;
            var ln = torch.nn.functional.layer_norm(instances!, [dh], AsTensor(gen.LnWeight, dh), AsTensor(gen.LnBias, dh), 1e-5);
            var hidden = torch.nn.functional.gelu(ln.matmul(AsTensor(gen.W1, 2 * r * r, dh).t()) + AsTensor(gen.B1, 2 * r * r));
            var g = (hidden.matmul(AsTensor(gen.W2, r * r, 2 * r * r).t()) + AsTensor(gen.B2, r * r)).reshape(-1, r, r); // [B, r, r]: G[i][j] = g[i·r + j]
            t = t.matmul(g);                                                                          // t'_j = Σ_i t_i G[i][j]
        }
        return y + _scale * t.matmul(AsTensor(target.B, target.OutFeatures, r).t());
    }
}
