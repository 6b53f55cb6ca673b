using System.Text;
using System.Text.Json;

namespace Rellax.Runtime;

/// <summary>
/// Reads and writes <c>adapter_config.json</c> (SPEC §6): the PEFT <c>LoraConfig</c> fields this runtime applies, the
/// PEFT features it refuses, and the ReLLaX <c>"rellax"</c> object.
/// </summary>
/// <remarks>
/// Applied: <c>peft_type</c> (must be <c>"LORA"</c>), <c>r</c>, <c>lora_alpha</c>, <c>target_modules</c> (a list of
/// <c>q_proj</c> ... <c>down_proj</c>, or <c>"all-linear"</c>, which for these decoders is all seven; lm_head is never
/// adapted), <c>use_rslora</c>, <c>layers_to_transform</c> (an int or a list; <c>layers_pattern</c> must then be absent,
/// null or <c>"layers"</c>), <c>base_model_name_or_path</c> (for messages).
/// Ignored: <c>lora_dropout</c> (training only), <c>task_type</c>, <c>inference_mode</c>, <c>init_lora_weights</c>,
/// <c>loftq_config</c>, <c>eva_config</c>, <c>corda_config</c>, <c>lora_ga_config</c> (initialisation only),
/// <c>runtime_config</c>, <c>revision</c>, <c>auto_mapping</c>, <c>megatron_*</c> and any other field.
/// Refused with <see cref="NotSupportedException"/> (they change the forward pass in ways this runtime does not apply):
/// another <c>peft_type</c>, <c>fan_in_fan_out</c> true, <c>bias</c> other than <c>"none"</c>, non-empty
/// <c>modules_to_save</c>, <c>rank_pattern</c>, <c>alpha_pattern</c>, <c>exclude_modules</c>,
/// <c>trainable_token_indices</c> or <c>target_parameters</c>, non-null <c>layer_replication</c>,
/// <c>alora_invocation_tokens</c>, <c>use_bdlora</c>, <c>arrow_config</c>, <c>velora_config</c> or
/// <c>monteclora_config</c>, <c>use_dora</c>,
/// <c>lora_bias</c> or <c>use_qalora</c> true, <c>target_modules</c> given as a regular expression or naming a module
/// other than the seven linear layers.
/// Malformed JSON, a missing required field (<c>peft_type</c>, <c>r</c>, <c>lora_alpha</c>, <c>target_modules</c>) or a
/// value of the wrong type or range is an <see cref="InvalidDataException"/>. Every message names the file and the field.
/// </remarks>
internal static class AdapterConfigFile
{
    /// <summary>Parses config JSON text.</summary>
    /// <param name="json">The text of <c>adapter_config.json</c>.</param>
    /// <param name="source">The file path, for messages.</param>
    /// <exception cref="InvalidDataException">Malformed or missing fields.</exception>
    /// <exception cref="NotSupportedException">A PEFT feature this runtime does not apply.</exception>
    public static AdapterConfig Parse(string json, string source)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new InvalidDataException($"Adapter config '{source}': not valid JSON ({e.Message}).", e); }
        using (doc)
        {
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"Adapter config '{source}': the config must be a JSON object, got {root.ValueKind}.");
            var f = new Fields(root, source, "");

            string peftType = f.RequiredString("peft_type");
            if (peftType != "LORA")
                throw f.Unsupported("peft_type", $"'{peftType}' is not supported; only \"LORA\" adapters can be applied.");

            int rank = f.RequiredInt("r");
            if (rank < 1) throw f.Invalid("r", $"must be at least 1, got {rank}.");
            double alpha = f.RequiredDouble("lora_alpha");
            if (!double.IsFinite(alpha)) throw f.Invalid("lora_alpha", $"must be a finite number, got {alpha}.");

            IReadOnlyList<LlamaModule> targets = ReadTargetModules(root, f);

            if (f.OptionalBool("fan_in_fan_out") == true)
                throw f.Unsupported("fan_in_fan_out", "true is not supported (Llama-family linear layers store W as [out, in]; fan_in_fan_out is for GPT-2 style Conv1D).");
            string bias = f.OptionalString("bias") ?? "none";
            if (bias != "none")
                throw f.Unsupported("bias", $"'{bias}' is not supported; only \"none\" (no trained biases) can be applied.");
            foreach (string flag in new[] { "use_dora", "lora_bias", "use_qalora" })
                if (f.OptionalBool(flag) == true)
                    throw f.Unsupported(flag, "true is not supported by this runtime.");
            foreach (string list in new[] { "modules_to_save", "exclude_modules", "target_parameters", "trainable_token_indices" })
                f.RequireEmpty(list, $"is not supported: this runtime applies only the LoRA factors of the target modules.");
            foreach (string map in new[] { "rank_pattern", "alpha_pattern" })
                f.RequireEmpty(map, "is not supported: every target must use the one r and lora_alpha of the config.");
            f.RequireEmpty("layer_replication", "is not supported.");
            // Newer PEFT variants that change the forward pass when set (activated LoRA, block-diagonal LoRA, Arrow routing, ...).
            foreach (string variant in new[] { "alora_invocation_tokens", "use_bdlora", "arrow_config", "velora_config", "monteclora_config" })
                f.RequireEmpty(variant, "is not supported: this runtime applies plain LoRA (B·A, or B·C·A with CFLoRA) only.");

            IReadOnlyList<int>? layers = ReadLayersToTransform(root, f);

            int? instanceDim = null, crmEmbedDim = null;
            string hist = "[hist]", target = "[target]";
            if (root.TryGetProperty("rellax", out JsonElement rellax) && rellax.ValueKind != JsonValueKind.Null)
            {
                if (rellax.ValueKind != JsonValueKind.Object)
                    throw f.Invalid("rellax", $"must be an object, got {rellax.GetRawText()}.");
                var rf = new Fields(rellax, source, "rellax.");
                instanceDim = rf.OptionalInt("instance_dim");
                if (instanceDim is < 1) throw rf.Invalid("instance_dim", $"must be at least 1, got {instanceDim}.");
                crmEmbedDim = rf.OptionalInt("crm_embed_dim");
                if (crmEmbedDim is < 1) throw rf.Invalid("crm_embed_dim", $"must be at least 1, got {crmEmbedDim}.");
                hist = rf.OptionalString("hist_token") ?? hist;
                target = rf.OptionalString("target_token") ?? target;
                if (hist.Length == 0) throw rf.Invalid("hist_token", "must not be empty.");
                if (target.Length == 0) throw rf.Invalid("target_token", "must not be empty.");
                if (hist == target) throw rf.Invalid("target_token", $"must differ from hist_token (both are '{hist}').");
            }

            return new AdapterConfig
            {
                Rank = rank,
                Alpha = alpha,
                UseRsLora = f.OptionalBool("use_rslora") ?? false,
                TargetModules = targets,
                LayersToTransform = layers,
                InstanceDim = instanceDim,
                CrmEmbedDim = crmEmbedDim,
                HistToken = hist,
                TargetToken = target,
                BaseModelName = f.OptionalString("base_model_name_or_path"),
            };
        }
    }

    private static IReadOnlyList<LlamaModule> ReadTargetModules(JsonElement root, Fields f)
    {
        if (!root.TryGetProperty("target_modules", out JsonElement t) || t.ValueKind == JsonValueKind.Null)
            throw f.Invalid("target_modules", "required field is missing (a list such as [\"q_proj\", \"v_proj\"], or \"all-linear\").");
        if (t.ValueKind == JsonValueKind.String)
        {
            string s = t.GetString()!;
            if (s == "all-linear") return Enum.GetValues<LlamaModule>();
            throw f.Unsupported("target_modules",
                $"the string '{s}' is a regular expression in PEFT, which is not supported; give a list of module names or \"all-linear\".");
        }
        if (t.ValueKind != JsonValueKind.Array)
            throw f.Invalid("target_modules", $"must be a list of module names or \"all-linear\", got {t.GetRawText()}.");
        var set = new SortedSet<LlamaModule>();
        foreach (JsonElement e in t.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String)
                throw f.Invalid("target_modules", $"entries must be strings, got {e.GetRawText()}.");
            string name = e.GetString()!;
            if (!LlamaModules.TryParse(name, out LlamaModule m))
                throw f.Unsupported("target_modules",
                    $"'{name}' is not a module this runtime adapts; supported: {string.Join(", ", Enum.GetValues<LlamaModule>().Select(LlamaModules.PeftName))}.");
            set.Add(m);
        }
        return set.ToArray();
    }

    private static IReadOnlyList<int>? ReadLayersToTransform(JsonElement root, Fields f)
    {
        if (!root.TryGetProperty("layers_to_transform", out JsonElement l) || l.ValueKind == JsonValueKind.Null) return null;
        var set = new SortedSet<int>();
        if (l.ValueKind == JsonValueKind.Number)
            set.Add(f.IntValue("layers_to_transform", l));
        else if (l.ValueKind == JsonValueKind.Array)
            foreach (JsonElement e in l.EnumerateArray()) set.Add(f.IntValue("layers_to_transform", e));
        else
            throw f.Invalid("layers_to_transform", $"must be an integer or a list of integers, got {l.GetRawText()}.");
        if (set.Count == 0) throw f.Invalid("layers_to_transform", "is an empty list (use null for every layer).");
        if (set.Min < 0) throw f.Invalid("layers_to_transform", $"layer indices must be >= 0, got {set.Min}.");
        if (root.TryGetProperty("layers_pattern", out JsonElement p) && p.ValueKind != JsonValueKind.Null)
        {
            bool ok = (p.ValueKind == JsonValueKind.String && p.GetString() == "layers")
                || (p.ValueKind == JsonValueKind.Array && p.GetArrayLength() == 1 && p[0].ValueKind == JsonValueKind.String && p[0].GetString() == "layers");
            if (!ok)
                throw f.Unsupported("layers_pattern", $"{p.GetRawText()} is not supported; Llama-family decoders number their layers under 'layers'.");
        }
        return set.ToArray();
    }

    /// <summary>Writes <paramref name="config"/> as PEFT-style <c>adapter_config.json</c> text (indented, UTF-8).</summary>
    public static string Write(AdapterConfig config)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("peft_type", "LORA");
            w.WriteString("task_type", "CAUSAL_LM");
            if (config.BaseModelName is null) w.WriteNull("base_model_name_or_path");
            else w.WriteString("base_model_name_or_path", config.BaseModelName);
            w.WriteNumber("r", config.Rank);
            w.WriteNumber("lora_alpha", config.Alpha);
            w.WriteBoolean("use_rslora", config.UseRsLora);
            w.WriteStartArray("target_modules");
            foreach (LlamaModule m in config.TargetModules) w.WriteStringValue(LlamaModules.PeftName(m));
            w.WriteEndArray();
            if (config.LayersToTransform is null) w.WriteNull("layers_to_transform");
            else
            {
                w.WriteStartArray("layers_to_transform");
                foreach (int layer in config.LayersToTransform) w.WriteNumberValue(layer);
                w.WriteEndArray();
            }
            w.WriteNumber("lora_dropout", 0);
            w.WriteString("bias", "none");
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("use_dora", false);
            w.WriteNull("modules_to_save");
            w.WriteStartObject("rank_pattern");
            w.WriteEndObject();
            w.WriteStartObject("alpha_pattern");
            w.WriteEndObject();
            w.WriteBoolean("inference_mode", true);
            w.WriteStartObject("rellax");
            if (config.InstanceDim is int dh) w.WriteNumber("instance_dim", dh);
            if (config.CrmEmbedDim is int e) w.WriteNumber("crm_embed_dim", e);
            w.WriteString("hist_token", config.HistToken);
            w.WriteString("target_token", config.TargetToken);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <summary>Typed field access whose errors name the file and the field.</summary>
    private readonly struct Fields(JsonElement obj, string source, string prefix)
    {
        public InvalidDataException Invalid(string field, string problem) =>
            new($"Adapter config '{source}', field '{prefix}{field}': {problem}");

        public NotSupportedException Unsupported(string field, string problem) =>
            new($"Adapter config '{source}', field '{prefix}{field}': {problem}");

        private bool TryGet(string name, out JsonElement e) => obj.TryGetProperty(name, out e) && e.ValueKind != JsonValueKind.Null;

        public string RequiredString(string name) => OptionalString(name) ?? throw Invalid(name, "required field is missing.");

        public int RequiredInt(string name) => OptionalInt(name) ?? throw Invalid(name, "required field is missing.");

        public double RequiredDouble(string name)
        {
            if (!TryGet(name, out JsonElement e)) throw Invalid(name, "required field is missing.");
            if (e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double v)) return v;
            throw Invalid(name, $"must be a number, got {e.GetRawText()}.");
        }

        public int? OptionalInt(string name) => TryGet(name, out JsonElement e) ? IntValue(name, e) : null;

        public int IntValue(string name, JsonElement e)
        {
            if (e.ValueKind == JsonValueKind.Number)
            {
                if (e.TryGetInt32(out int v)) return v;
                if (e.TryGetDouble(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
            }
            throw Invalid(name, $"must be an integer, got {e.GetRawText()}.");
        }

        public bool? OptionalBool(string name)
        {
            if (!TryGet(name, out JsonElement e)) return null;
            return e.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Invalid(name, $"must be true or false, got {e.GetRawText()}."),
            };
        }

        public string? OptionalString(string name)
        {
            if (!TryGet(name, out JsonElement e)) return null;
            return e.ValueKind == JsonValueKind.String ? e.GetString() : throw Invalid(name, $"must be a string, got {e.GetRawText()}.");
        }

        /// <summary>The field must be absent, null, an empty list, an empty object or an empty string.</summary>
        public void RequireEmpty(string name, string problem)
        {
            if (!TryGet(name, out JsonElement e)) return;
            bool empty = e.ValueKind switch
            {
                JsonValueKind.Array => e.GetArrayLength() == 0,
                JsonValueKind.Object => !e.EnumerateObject().Any(),
                JsonValueKind.String => e.GetString()!.Length == 0,
                _ => false,
            };
            if (!empty)
            {
                string raw = e.GetRawText();
                if (raw.Length > 200) raw = raw[..200] + "...";
                throw Unsupported(name, $"{raw} {problem}");
            }
        }
    }
}
