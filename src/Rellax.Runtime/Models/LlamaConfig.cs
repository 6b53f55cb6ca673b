using System.Text.Json;

namespace Rellax.Runtime;

/// <summary>
/// Llama-3 style RoPE frequency scaling (<c>rope_scaling</c> with <c>rope_type</c>/<c>type</c> = <c>"llama3"</c>).
/// </summary>
/// <param name="Type">The scaling type; only <c>"llama3"</c> is produced by the parser.</param>
/// <param name="Factor">Wavelength scale for low frequencies (e.g. 8 for Llama 3.1).</param>
/// <param name="LowFreqFactor">Low-frequency factor (e.g. 1).</param>
/// <param name="HighFreqFactor">High-frequency factor (e.g. 4).</param>
/// <param name="OriginalMaxPositionEmbeddings">Context length the model was pre-trained with (e.g. 8192).</param>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>
/// A Hugging Face <c>config.json</c> for a Llama-family decoder (LlamaForCausalLM, MistralForCausalLM,
/// Qwen2ForCausalLM), validated and with HF defaults applied.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>Architectures this runtime can run.</summary>
    public static IReadOnlyList<string> SupportedArchitectures { get; } = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

    /// <summary>Architecture class name, e.g. <c>"LlamaForCausalLM"</c>.</summary>
    public required string Architecture { get; init; }
    /// <summary>Model width d (<c>hidden_size</c>).</summary>
    public required int HiddenSize { get; init; }
    /// <summary>SwiGLU inner width (<c>intermediate_size</c>).</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>Number of decoder layers (<c>num_hidden_layers</c>).</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary>Query heads (<c>num_attention_heads</c>).</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary>Key/value heads (<c>num_key_value_heads</c>; default: <see cref="NumAttentionHeads"/>). Divides <see cref="NumAttentionHeads"/>.</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary>Per-head width (<c>head_dim</c>; default: hidden_size / num_attention_heads). Even (RoPE rotates pairs).</summary>
    public required int HeadDim { get; init; }
    /// <summary>Vocabulary rows of the embedding and lm_head (<c>vocab_size</c>).</summary>
    public required int VocabSize { get; init; }
    /// <summary>Maximum context in tokens (<c>max_position_embeddings</c>; default 2048).</summary>
    public required int MaxPositionEmbeddings { get; init; }
    /// <summary>RMSNorm epsilon (<c>rms_norm_eps</c>), &gt; 0.</summary>
    public required double RmsNormEps { get; init; }
    /// <summary>RoPE base θ (<c>rope_theta</c>; default 10000).</summary>
    public required double RopeTheta { get; init; }
    /// <summary>Whether lm_head reuses the token embedding (<c>tie_word_embeddings</c>; default false).</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Whether q/k/v (and for Llama also o) projections have biases (<c>attention_bias</c>; default false, true for Qwen2).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>Begin-of-sequence id (<c>bos_token_id</c>), if any.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>End-of-sequence ids (<c>eos_token_id</c>, an int or a list in HF configs); empty when absent.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>Llama-3 RoPE scaling, or <see langword="null"/> for plain RoPE.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>MLP activation (<c>hidden_act</c>); always <c>"silu"</c> after validation.</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Mistral sliding-window attention span in tokens (<c>sliding_window</c>), or <see langword="null"/> for full attention.
    /// (Extra member; Qwen2 only when <c>use_sliding_window</c> is true.)</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Where the config came from (file path or caller-chosen name), for messages.</summary>
    public string SourceName { get; init; } = "";

    /// <summary>Reads and validates a <c>config.json</c>.</summary>
    /// <param name="path">The file, or a model directory containing <c>config.json</c>.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="LlamaConfigException">Invalid JSON, a missing or invalid field, an unsupported
    /// architecture, activation or rope_scaling type; the message names the file and the field.</exception>
    public static LlamaConfig Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = System.IO.Path.GetFullPath(path);
        if (System.IO.Directory.Exists(full)) full = System.IO.Path.Combine(full, "config.json");
        if (!File.Exists(full))
            throw new FileNotFoundException($"Model config not found: '{full}'.", full);
        return Parse(InputPaths.ReadAllText(full, "model config", InputPaths.MaxConfigBytes), full);
    }

    /// <summary>Parses and validates config JSON text.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="sourceName">Name used in error messages (usually the file path).</param>
    /// <exception cref="LlamaConfigException">As for <see cref="Load"/>.</exception>
    public static LlamaConfig Parse(string json, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new LlamaConfigException(sourceName, null, $"not valid JSON ({e.Message}).", e); }
        using (doc)
        {
            JsonElement r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object)
                throw new LlamaConfigException(sourceName, null, "the config must be a JSON object.");
            var p = new Reader(r, sourceName);

            string arch = ReadArchitecture(p, r, sourceName);
            bool isQwen2 = arch == "Qwen2ForCausalLM";

            int hidden = p.RequiredInt("hidden_size");
            int inter = p.RequiredInt("intermediate_size");
            int layers = p.RequiredInt("num_hidden_layers");
            int heads = p.RequiredInt("num_attention_heads");
            int vocab = p.RequiredInt("vocab_size");
            double eps = p.RequiredDouble("rms_norm_eps");
            int kvHeads = p.OptionalInt("num_key_value_heads") ?? heads;
            int maxPos = p.OptionalInt("max_position_embeddings") ?? 2048;
            double theta = p.OptionalDouble("rope_theta") ?? 10000.0;

            foreach ((string field, int value) in new[] { ("hidden_size", hidden), ("intermediate_size", inter), ("num_hidden_layers", layers),
                         ("num_attention_heads", heads), ("num_key_value_heads", kvHeads), ("vocab_size", vocab), ("max_position_embeddings", maxPos) })
                if (value <= 0) throw new LlamaConfigException(sourceName, field, $"must be positive, got {value}.");
            if (!(eps > 0) || double.IsInfinity(eps))
                throw new LlamaConfigException(sourceName, "rms_norm_eps", $"must be a finite number > 0, got {eps}.");
            if (!(theta > 0) || double.IsInfinity(theta))
                throw new LlamaConfigException(sourceName, "rope_theta", $"must be a finite number > 0, got {theta}.");
            if (heads % kvHeads != 0)
                throw new LlamaConfigException(sourceName, "num_key_value_heads", $"{kvHeads} does not divide num_attention_heads = {heads}.");

            int headDim;
            int? hd = p.OptionalInt("head_dim");
            if (hd is int explicitHd)
            {
                if (explicitHd <= 0) throw new LlamaConfigException(sourceName, "head_dim", $"must be positive, got {explicitHd}.");
                headDim = explicitHd;
            }
            else
            {
                if (hidden % heads != 0)
                    throw new LlamaConfigException(sourceName, "head_dim", $"absent, and hidden_size = {hidden} is not divisible by num_attention_heads = {heads}.");
                headDim = hidden / heads;
            }
            if (headDim % 2 != 0)
                throw new LlamaConfigException(sourceName, "head_dim", $"must be even for RoPE, got {headDim}.");

            string act = p.OptionalString("hidden_act") ?? "silu";
            if (act != "silu")
                throw new LlamaConfigException(sourceName, "hidden_act", $"'{act}' is not supported; Llama-family models use \"silu\" (SwiGLU).");
            if (p.OptionalBool("mlp_bias") == true)
                throw new LlamaConfigException(sourceName, "mlp_bias", "true is not supported (MLP projections without bias only).");

            int? bos = p.OptionalInt("bos_token_id");
            IReadOnlyList<int> eos = ReadEos(r, sourceName);

            int? sliding = null;
            if (arch == "MistralForCausalLM" || (isQwen2 && p.OptionalBool("use_sliding_window") == true))
            {
                sliding = p.OptionalInt("sliding_window");
                if (sliding is <= 0) throw new LlamaConfigException(sourceName, "sliding_window", $"must be positive, got {sliding}.");
            }

            return new LlamaConfig
            {
                Architecture = arch,
                HiddenSize = hidden,
                IntermediateSize = inter,
                NumHiddenLayers = layers,
                NumAttentionHeads = heads,
                NumKeyValueHeads = kvHeads,
                HeadDim = headDim,
                VocabSize = vocab,
                MaxPositionEmbeddings = maxPos,
                RmsNormEps = eps,
                RopeTheta = theta,
                TieWordEmbeddings = p.OptionalBool("tie_word_embeddings") ?? false,
                AttentionBias = p.OptionalBool("attention_bias") ?? isQwen2,
                BosTokenId = bos,
                EosTokenIds = eos,
                RopeScaling = ReadRopeScaling(r, sourceName),
                HiddenAct = act,
                SlidingWindow = sliding,
                SourceName = sourceName,
            };
        }
    }

    private static string ReadArchitecture(Reader p, JsonElement r, string source)
    {
        string? arch = null;
        if (r.TryGetProperty("architectures", out JsonElement a) && a.ValueKind != JsonValueKind.Null)
        {
            if (a.ValueKind != JsonValueKind.Array || a.GetArrayLength() == 0 || a[0].ValueKind != JsonValueKind.String)
                throw new LlamaConfigException(source, "architectures", "must be a non-empty array of strings.");
            arch = a[0].GetString();
        }
        else
        {
            arch = p.OptionalString("model_type") switch
            {
                "llama" => "LlamaForCausalLM",
                "mistral" => "MistralForCausalLM",
                "qwen2" => "Qwen2ForCausalLM",
                null => throw new LlamaConfigException(source, "architectures", "missing (and no model_type to infer it from)."),
                string other => throw new LlamaConfigException(source, "model_type",
                    $"'{other}' is not supported; supported architectures: {string.Join(", ", SupportedArchitectures)}."),
            };
        }
        if (!SupportedArchitectures.Contains(arch!))
            throw new LlamaConfigException(source, "architectures",
                $"'{arch}' is not supported; supported architectures: {string.Join(", ", SupportedArchitectures)}.");
        return arch!;
    }

    private static IReadOnlyList<int> ReadEos(JsonElement r, string source)
    {
        if (!r.TryGetProperty("eos_token_id", out JsonElement e) || e.ValueKind == JsonValueKind.Null) return [];
        if (e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int single)) return [single];
        if (e.ValueKind == JsonValueKind.Array)
        {
            var list = new List<int>();
            foreach (JsonElement x in e.EnumerateArray())
            {
                if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt32(out int id))
                    throw new LlamaConfigException(source, "eos_token_id", $"list element {x.GetRawText()} is not an integer.");
                list.Add(id);
            }
            return list;
        }
        throw new LlamaConfigException(source, "eos_token_id", $"must be an integer or a list of integers, got {e.GetRawText()}.");
    }

    private static RopeScaling? ReadRopeScaling(JsonElement r, string source)
    {
        if (!r.TryGetProperty("rope_scaling", out JsonElement s) || s.ValueKind == JsonValueKind.Null) return null;
        if (s.ValueKind != JsonValueKind.Object)
            throw new LlamaConfigException(source, "rope_scaling", "must be an object or null.");
        var p = new Reader(s, source, "rope_scaling.");
        string? type = p.OptionalString("rope_type") ?? p.OptionalString("type");
        if (type is null)
            throw new LlamaConfigException(source, "rope_scaling.rope_type", "missing (neither 'rope_type' nor 'type' given).");
        if (type == "default") return null;
        if (type != "llama3")
            throw new LlamaConfigException(source, "rope_scaling.rope_type", $"'{type}' is not supported (supported: \"llama3\", \"default\").");
        var scaling = new RopeScaling(type, p.RequiredDouble("factor"), p.RequiredDouble("low_freq_factor"),
            p.RequiredDouble("high_freq_factor"), p.RequiredInt("original_max_position_embeddings"));
        if (!(scaling.Factor > 0)) throw new LlamaConfigException(source, "rope_scaling.factor", $"must be > 0, got {scaling.Factor}.");
        if (!(scaling.LowFreqFactor > 0)) throw new LlamaConfigException(source, "rope_scaling.low_freq_factor", $"must be > 0, got {scaling.LowFreqFactor}.");
        if (!(scaling.HighFreqFactor > scaling.LowFreqFactor))
            throw new LlamaConfigException(source, "rope_scaling.high_freq_factor", $"must exceed low_freq_factor ({scaling.LowFreqFactor}), got {scaling.HighFreqFactor}.");
        if (scaling.OriginalMaxPositionEmbeddings <= 0)
            throw new LlamaConfigException(source, "rope_scaling.original_max_position_embeddings", $"must be positive, got {scaling.OriginalMaxPositionEmbeddings}.");
        return scaling;
    }

    /// <summary>Typed field access with messages that name the source and the field.</summary>
    private readonly struct Reader(JsonElement obj, string source, string prefix = "")
    {
        private bool TryGet(string name, out JsonElement e) =>
            obj.TryGetProperty(name, out e) && e.ValueKind != JsonValueKind.Null;

        public int RequiredInt(string name) =>
            OptionalInt(name) ?? throw new LlamaConfigException(source, prefix + name, "required field is missing.");

        public double RequiredDouble(string name) =>
            OptionalDouble(name) ?? throw new LlamaConfigException(source, prefix + name, "required field is missing.");

        public int? OptionalInt(string name)
        {
            if (!TryGet(name, out JsonElement e)) return null;
            if (e.ValueKind == JsonValueKind.Number)
            {
                if (e.TryGetInt32(out int v)) return v;
                // Some writers emit 4096.0; accept integral doubles.
                if (e.TryGetDouble(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
            }
            throw new LlamaConfigException(source, prefix + name, $"must be an integer, got {e.GetRawText()}.");
        }

        public double? OptionalDouble(string name)
        {
            if (!TryGet(name, out JsonElement e)) return null;
            if (e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double v)) return v;
            throw new LlamaConfigException(source, prefix + name, $"must be a number, got {e.GetRawText()}.");
        }

        public bool? OptionalBool(string name)
        {
            if (!TryGet(name, out JsonElement e)) return null;
            return e.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new LlamaConfigException(source, prefix + name, $"must be true or false, got {e.GetRawText()}."),
            };
        }

        public string? OptionalString(string name)
        {
            if (!TryGet(name, out JsonElement e)) return null;
            return e.ValueKind == JsonValueKind.String
                ? e.GetString()
                : throw new LlamaConfigException(source, prefix + name, $"must be a string, got {e.GetRawText()}.");
        }
    }
}

/// <summary>
/// A model <c>config.json</c> is invalid or unsupported. The message names the file and the field.
/// </summary>
public sealed class LlamaConfigException : Exception
{
    /// <summary>Creates the exception; the message is composed from the parts.</summary>
    /// <param name="sourceName">The config file (or name given to <see cref="LlamaConfig.Parse"/>).</param>
    /// <param name="field">The JSON field concerned, or <see langword="null"/>.</param>
    /// <param name="problem">What is wrong.</param>
    /// <param name="inner">Underlying error, if any.</param>
    public LlamaConfigException(string sourceName, string? field, string problem, Exception? inner = null)
        : base(field is null ? $"Invalid model config '{sourceName}': {problem}" : $"Invalid model config '{sourceName}', field '{field}': {problem}", inner)
    {
        SourceName = sourceName;
        Field = field;
    }

    /// <summary>The config file or source name.</summary>
    public string SourceName { get; }

    /// <summary>The field concerned, or <see langword="null"/>.</summary>
    public string? Field { get; }
}
