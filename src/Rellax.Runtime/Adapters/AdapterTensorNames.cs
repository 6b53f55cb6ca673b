using System.Globalization;
using System.Text.RegularExpressions;

namespace Rellax.Runtime;

/// <summary>What one adapter tensor is: a LoRA factor, a CFLoRA generator part, or an SPA projector part.</summary>
internal enum AdapterTensorRole
{
    /// <summary><c>lora_A.weight</c> [r, d_in].</summary>
    LoraA,
    /// <summary><c>lora_B.weight</c> [d_out, r].</summary>
    LoraB,
    /// <summary><c>lora_gate.0.weight</c> (LayerNorm γ) [d_h].</summary>
    GateLnWeight,
    /// <summary><c>lora_gate.0.bias</c> (LayerNorm β) [d_h].</summary>
    GateLnBias,
    /// <summary><c>lora_gate.1.weight</c> [2r², d_h].</summary>
    GateW1,
    /// <summary><c>lora_gate.1.bias</c> [2r²].</summary>
    GateB1,
    /// <summary><c>lora_gate.3.weight</c> [r², 2r²].</summary>
    GateW2,
    /// <summary><c>lora_gate.3.bias</c> [r²].</summary>
    GateB2,
    /// <summary><c>ctr_input_embedding_prj.0.weight</c> [H, E].</summary>
    ProjW1,
    /// <summary><c>ctr_input_embedding_prj.0.bias</c> [H].</summary>
    ProjB1,
    /// <summary><c>ctr_input_embedding_prj.2.weight</c> [H, H].</summary>
    ProjW2,
    /// <summary><c>ctr_input_embedding_prj.2.bias</c> [H].</summary>
    ProjB2,
}

/// <summary>A parsed adapter tensor name. <see cref="Layer"/> and <see cref="Module"/> are meaningful for per-layer roles only.</summary>
/// <param name="Role">What the tensor is.</param>
/// <param name="Layer">Decoder layer index (per-layer roles), or -1 for the projector.</param>
/// <param name="Module">The adapted linear layer (per-layer roles).</param>
internal readonly record struct AdapterTensorKey(AdapterTensorRole Role, int Layer, LlamaModule Module)
{
    /// <summary>True for the SPA projector's tensors, which belong to no layer.</summary>
    public bool IsProjector => Role >= AdapterTensorRole.ProjW1;

    /// <summary>True for the CFLoRA generator's tensors.</summary>
    public bool IsGenerator => Role is >= AdapterTensorRole.GateLnWeight and <= AdapterTensorRole.GateB2;
}

/// <summary>
/// The tensor names of SPEC §6 (PEFT conventions). Accepted on reading:
/// <list type="bullet">
/// <item><c>base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}[.default].weight</c>;</item>
/// <item><c>base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_gate.{0|1|3}.{weight|bias}</c>;</item>
/// <item><c>ctr_input_embedding_prj.{0|2}.{weight|bias}</c>;</item>
/// <item>the per-layer names above with an extra leading <c>LM.</c>: the ReLLaX reference code
/// (<c>modeling_rella_plus_new.py</c>, class <c>ReLLaModel</c>) holds the PEFT model as attribute <c>LM</c> and saves
/// <c>ReLLaModel.state_dict()</c> filtered to the <c>lora_gate</c> and <c>ctr_input_embedding_prj</c> entries, so its
/// generator tensors are named <c>LM.base_model.model.model.layers.{i}.self_attn.{q_proj|v_proj}.lora_gate.{0,1,3}.*</c>
/// while its projector sits at the top level as <c>ctr_input_embedding_prj.{0,2}.*</c> (never under
/// <c>base_model.model.</c>, which is therefore not accepted for it).</item>
/// </list>
/// Written names (<see cref="Canonical(AdapterTensorKey)"/>) never carry <c>LM.</c> or <c>.default</c>.
/// </summary>
internal static partial class AdapterTensorNames
{
    /// <summary><c>self_attn</c> for q/k/v/o, <c>mlp</c> for gate/up/down.</summary>
    public static string Section(LlamaModule module) => module <= LlamaModule.OProj ? "self_attn" : "mlp";

    /// <summary>The shape of the base layer's weight, [d_out, d_in], for <paramref name="module"/> of <paramref name="model"/>.</summary>
    public static (int Out, int In) BaseShape(LlamaModule module, LlamaConfig model)
    {
        int h = model.HiddenSize, q = model.NumAttentionHeads * model.HeadDim, kv = model.NumKeyValueHeads * model.HeadDim;
        int i = model.IntermediateSize;
        return module switch
        {
            LlamaModule.QProj => (q, h),
            LlamaModule.KProj or LlamaModule.VProj => (kv, h),
            LlamaModule.OProj => (h, q),
            LlamaModule.GateProj or LlamaModule.UpProj => (i, h),
            LlamaModule.DownProj => (h, i),
            _ => throw new ArgumentOutOfRangeException(nameof(module), module, "Unknown module."),
        };
    }

    /// <summary>Explains where d_out and d_in of <paramref name="module"/> come from in the base config, for messages.</summary>
    public static string BaseShapeOrigin(LlamaModule module, LlamaConfig model)
    {
        string h = $"hidden_size {model.HiddenSize}";
        string q = $"num_attention_heads·head_dim {model.NumAttentionHeads}·{model.HeadDim}";
        string kv = $"num_key_value_heads·head_dim {model.NumKeyValueHeads}·{model.HeadDim}";
        string i = $"intermediate_size {model.IntermediateSize}";
        (string o, string n) = module switch
        {
            LlamaModule.QProj => (q, h),
            LlamaModule.KProj or LlamaModule.VProj => (kv, h),
            LlamaModule.OProj => (h, q),
            LlamaModule.GateProj or LlamaModule.UpProj => (i, h),
            _ => (h, i),
        };
        return $"{LlamaModules.PeftName(module)} of the base model '{model.SourceName}' is [d_out, d_in] = [{o}, {n}]";
    }

    /// <summary>The name this runtime writes for <paramref name="key"/> (no <c>.default</c>, no <c>LM.</c>).</summary>
    public static string Canonical(AdapterTensorKey key)
    {
        if (key.IsProjector)
        {
            return key.Role switch
            {
                AdapterTensorRole.ProjW1 => "ctr_input_embedding_prj.0.weight",
                AdapterTensorRole.ProjB1 => "ctr_input_embedding_prj.0.bias",
                AdapterTensorRole.ProjW2 => "ctr_input_embedding_prj.2.weight",
                _ => "ctr_input_embedding_prj.2.bias",
            };
        }
        string prefix = $"base_model.model.model.layers.{key.Layer.ToString(CultureInfo.InvariantCulture)}.{Section(key.Module)}.{LlamaModules.PeftName(key.Module)}.";
        return prefix + key.Role switch
        {
            AdapterTensorRole.LoraA => "lora_A.weight",
            AdapterTensorRole.LoraB => "lora_B.weight",
            AdapterTensorRole.GateLnWeight => "lora_gate.0.weight",
            AdapterTensorRole.GateLnBias => "lora_gate.0.bias",
            AdapterTensorRole.GateW1 => "lora_gate.1.weight",
            AdapterTensorRole.GateB1 => "lora_gate.1.bias",
            AdapterTensorRole.GateW2 => "lora_gate.3.weight",
            _ => "lora_gate.3.bias",
        };
    }

    /// <summary>Canonical name of a per-layer tensor.</summary>
    public static string Canonical(AdapterTensorRole role, int layer, LlamaModule module) => Canonical(new AdapterTensorKey(role, layer, module));

    /// <summary>Canonical name of a projector tensor.</summary>
    public static string Canonical(AdapterTensorRole role) => Canonical(new AdapterTensorKey(role, -1, default));

    /// <summary>The accepted name patterns, for the unknown-name message.</summary>
    public const string AcceptedPatterns =
        "base_model.model.model.layers.{i}.self_attn.{q_proj|k_proj|v_proj|o_proj}.lora_{A|B}[.default].weight, "
        + "base_model.model.model.layers.{i}.mlp.{gate_proj|up_proj|down_proj}.lora_{A|B}[.default].weight, "
        + "...{module}.lora_gate.{0|1|3}.{weight|bias} (optionally with the reference code's leading 'LM.'), "
        + "ctr_input_embedding_prj.{0|2}.{weight|bias}";

    /// <summary>Parses <paramref name="name"/>; false when it matches none of the accepted patterns.</summary>
    /// <param name="name">A tensor name from the file.</param>
    /// <param name="key">The parsed key.</param>
    /// <param name="layerOverflow">Set when the name is well formed but its layer index does not fit an int.</param>
    public static bool TryParse(string name, out AdapterTensorKey key, out bool layerOverflow)
    {
        key = default;
        layerOverflow = false;
        Match p = ProjectorRegex().Match(name);
        if (p.Success)
        {
            bool weight = p.Groups[2].Value == "weight";
            AdapterTensorRole role = p.Groups[1].Value == "0"
                ? (weight ? AdapterTensorRole.ProjW1 : AdapterTensorRole.ProjB1)
                : (weight ? AdapterTensorRole.ProjW2 : AdapterTensorRole.ProjB2);
            key = new AdapterTensorKey(role, -1, default);
            return true;
        }
        Match m = LayerRegex().Match(name);
        if (!m.Success) return false;
        if (!LlamaModules.TryParse(m.Groups["module"].Value, out LlamaModule module)) return false;
        if (m.Groups["section"].Value != Section(module)) return false;
        AdapterTensorRole r;
        if (m.Groups["lora"].Success)
        {
            // The reference code's 'LM.' prefix only ever appears on generator tensors (it saved A/B through PEFT); accept it
            // for A/B too, since a merged reference checkpoint would carry it on every per-layer tensor.
            r = m.Groups["lora"].Value == "A" ? AdapterTensorRole.LoraA : AdapterTensorRole.LoraB;
        }
        else
        {
            bool weight = m.Groups["kind"].Value == "weight";
            r = m.Groups["gate"].Value switch
            {
                "0" => weight ? AdapterTensorRole.GateLnWeight : AdapterTensorRole.GateLnBias,
                "1" => weight ? AdapterTensorRole.GateW1 : AdapterTensorRole.GateB1,
                _ => weight ? AdapterTensorRole.GateW2 : AdapterTensorRole.GateB2,
            };
        }
        if (!int.TryParse(m.Groups["layer"].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
        {
            layerOverflow = true;
            return false;
        }
        key = new AdapterTensorKey(r, layer, module);
        return true;
    }

    [GeneratedRegex(@"^ctr_input_embedding_prj\.(0|2)\.(weight|bias)$", RegexOptions.CultureInvariant)]
    private static partial Regex ProjectorRegex();

    [GeneratedRegex(@"^(?:LM\.)?base_model\.model\.model\.layers\.(?<layer>0|[1-9][0-9]*)\.(?<section>self_attn|mlp)\.(?<module>[a-z_]+)\."
        + @"(?:lora_(?<lora>A|B)(?<default>\.default)?\.weight|lora_gate\.(?<gate>0|1|3)\.(?<kind>weight|bias))$", RegexOptions.CultureInvariant)]
    private static partial Regex LayerRegex();
}
