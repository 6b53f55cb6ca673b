namespace Rellax.Runtime;

/// <summary>A linear layer of a Llama-family decoder layer that an adapter can target (PEFT <c>target_modules</c> names).</summary>
public enum LlamaModule
{
    /// <summary><c>self_attn.q_proj</c>: [Hq·D, H].</summary>
    QProj,
    /// <summary><c>self_attn.k_proj</c>: [Hkv·D, H].</summary>
    KProj,
    /// <summary><c>self_attn.v_proj</c>: [Hkv·D, H].</summary>
    VProj,
    /// <summary><c>self_attn.o_proj</c>: [H, Hq·D].</summary>
    OProj,
    /// <summary><c>mlp.gate_proj</c>: [I, H].</summary>
    GateProj,
    /// <summary><c>mlp.up_proj</c>: [I, H].</summary>
    UpProj,
    /// <summary><c>mlp.down_proj</c>: [H, I].</summary>
    DownProj,
}

/// <summary>
/// The PEFT names of <see cref="LlamaModule"/> (<c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>o_proj</c>,
/// <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c>): the spelling of <c>adapter_config.json</c>'s
/// <c>target_modules</c> and of the adapter tensor names, for a service that reads or writes target modules as text.
/// </summary>
public static class LlamaModules
{
    /// <summary>The PEFT name of <paramref name="module"/>, e.g. <c>q_proj</c> for <see cref="LlamaModule.QProj"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="module"/> is not a defined value.</exception>
    public static string PeftName(LlamaModule module) => module switch
    {
        LlamaModule.QProj => "q_proj",
        LlamaModule.KProj => "k_proj",
        LlamaModule.VProj => "v_proj",
        LlamaModule.OProj => "o_proj",
        LlamaModule.GateProj => "gate_proj",
        LlamaModule.UpProj => "up_proj",
        LlamaModule.DownProj => "down_proj",
        _ => throw new ArgumentOutOfRangeException(nameof(module), module, "Unknown module."),
    };

    /// <summary>Parses a PEFT module name, exactly as <see cref="PeftName"/> writes it (case-sensitive, no
    /// <c>self_attn.</c>/<c>mlp.</c> prefix).</summary>
    /// <param name="peftName">The name, e.g. <c>v_proj</c>; null is not a name.</param>
    /// <param name="module">The module, or <see cref="LlamaModule.QProj"/> when the name is not one.</param>
    /// <returns>Whether <paramref name="peftName"/> names a module.</returns>
    public static bool TryParse(string? peftName, out LlamaModule module)
    {
        foreach (LlamaModule m in Enum.GetValues<LlamaModule>())
        {
            if (PeftName(m) == peftName)
            {
                module = m;
                return true;
            }
        }
        module = default;
        return false;
    }
}

/// <summary>
/// The parsed <c>adapter_config.json</c> (SPEC §6): PEFT LoRA fields plus the ReLLaX additions in its
/// <c>"rellax"</c> object.
/// </summary>
public sealed record AdapterConfig
{
    /// <summary>LoRA rank r (<c>r</c>), at least 1.</summary>
    public required int Rank { get; init; }

    /// <summary><c>lora_alpha</c>.</summary>
    public required double Alpha { get; init; }

    /// <summary><c>use_rslora</c>: the scale is alpha/√r instead of alpha/r.</summary>
    public bool UseRsLora { get; init; }

    /// <summary>The modules named by <c>target_modules</c> (a list, or the string <c>"all-linear"</c>).</summary>
    public required IReadOnlyList<LlamaModule> TargetModules { get; init; }

    /// <summary>
    /// <c>layers_to_transform</c>: the decoder layers whose target modules are adapted (ascending, distinct), or null for every
    /// layer. (Added beside the issue-6 contract so that such PEFT adapters load and save round-trip.)
    /// </summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }

    /// <summary><c>rellax.instance_dim</c>: d_h, the length of the CRM vector h_u (CFLoRA); null without generators.</summary>
    public int? InstanceDim { get; init; }

    /// <summary><c>rellax.crm_embed_dim</c>: E, the length of a CRM item embedding (SPA); null without a projector.</summary>
    public int? CrmEmbedDim { get; init; }

    /// <summary>The history-item marker of SPA prompts (<c>rellax.hist_token</c>, default <c>[hist]</c>).</summary>
    public string HistToken { get; init; } = "[hist]";

    /// <summary>The target-item marker of SPA prompts (<c>rellax.target_token</c>, default <c>[target]</c>).</summary>
    public string TargetToken { get; init; } = "[target]";

    /// <summary><c>base_model_name_or_path</c>, for messages; not checked against the model.</summary>
    public string? BaseModelName { get; init; }

    /// <summary>The factor applied to B·C·A: alpha / r, or alpha / √r with rsLoRA.</summary>
    public float Scale => (float)(UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank);
}

/// <summary>
/// The CFLoRA generator of one adapted module (SPEC §4, <c>lora_gate.*</c>):
/// <c>g = W2 · GELU(W1 · LayerNorm(h) + b1) + b2</c>, read row-major as G [r, r]. LayerNorm eps is PyTorch's 1e-5.
/// </summary>
/// <param name="LnWeight"><c>lora_gate.0.weight</c> [d_h].</param>
/// <param name="LnBias"><c>lora_gate.0.bias</c> [d_h].</param>
/// <param name="W1"><c>lora_gate.1.weight</c> [2r², d_h], row-major.</param>
/// <param name="B1"><c>lora_gate.1.bias</c> [2r²].</param>
/// <param name="W2"><c>lora_gate.3.weight</c> [r², 2r²], row-major.</param>
/// <param name="B2"><c>lora_gate.3.bias</c> [r²].</param>
public sealed record CfloraGeneratorWeights(float[] LnWeight, float[] LnBias, float[] W1, float[] B1, float[] W2, float[] B2);

/// <summary>One adapted linear layer: LoRA factors and, for CFLoRA, its generator. f32, row-major, host memory.</summary>
/// <param name="Layer">Decoder layer index, in [0, num_hidden_layers).</param>
/// <param name="Module">Which linear layer of it.</param>
/// <param name="InFeatures">d_in of the base layer.</param>
/// <param name="OutFeatures">d_out of the base layer.</param>
/// <param name="A"><c>lora_A.weight</c> [r, d_in].</param>
/// <param name="B"><c>lora_B.weight</c> [d_out, r].</param>
/// <param name="Generator">The CFLoRA generator, or null for plain LoRA (C = I).</param>
public sealed record LoraTarget(int Layer, LlamaModule Module, int InFeatures, int OutFeatures, float[] A, float[] B, CfloraGeneratorWeights? Generator);

/// <summary>
/// The SPA projector (SPEC §3, <c>ctr_input_embedding_prj</c>): <c>Linear(E → H) → GELU → Linear(H → H)</c>,
/// turning a CRM item embedding into one soft token's input embedding. f32, row-major, host memory.
/// </summary>
/// <param name="W1"><c>ctr_input_embedding_prj.0.weight</c> [H, E].</param>
/// <param name="B1"><c>ctr_input_embedding_prj.0.bias</c> [H].</param>
/// <param name="W2"><c>ctr_input_embedding_prj.2.weight</c> [H, H].</param>
/// <param name="B2"><c>ctr_input_embedding_prj.2.bias</c> [H].</param>
public sealed record SpaProjectorWeights(float[] W1, float[] B1, float[] W2, float[] B2);

/// <summary>
/// A ReLLaX adapter directory (SPEC §6): any subset of PEFT LoRA factors, CFLoRA generators and the SPA projector,
/// parsed and validated against a base model's config. Holds host f32 copies of the (small) adapter tensors; a
/// <see cref="CtrScorer"/> uploads them to its backend.
/// </summary>
public sealed class RellaxAdapter
{
    /// <summary>Adapter config file name.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>Adapter weights file name.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    internal RellaxAdapter(string directory, AdapterConfig config, IReadOnlyList<LoraTarget> targets, SpaProjectorWeights? projector)
    {
        Directory = directory;
        Config = config;
        Targets = targets;
        Projector = projector;
    }

    /// <summary>Full path of the adapter directory (or a caller-chosen name for in-memory adapters).</summary>
    public string Directory { get; }

    /// <summary>The parsed config.</summary>
    public AdapterConfig Config { get; }

    /// <summary>Every adapted (layer, module), ordered by layer then module.</summary>
    public IReadOnlyList<LoraTarget> Targets { get; }

    /// <summary>The SPA projector, or null when the adapter has none (markers in prompts are then an error).</summary>
    public SpaProjectorWeights? Projector { get; }

    /// <summary>True when the LoRA targets carry CFLoRA generators (every sample then needs an instance vector h_u).</summary>
    public bool HasGenerators => Targets.Count > 0 && Targets[0].Generator is not null;

    /// <summary>
    /// Loads <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> from <paramref name="directory"/> and checks
    /// them against <paramref name="baseModel"/>: every tensor name is known (with or without PEFT's <c>.default</c>),
    /// every shape agrees with r, d_h, E and the base model's dimensions, layer indices are in range, LoRA targets come in
    /// complete A/B pairs, generators are all present or all absent, and the projector is complete.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="FileNotFoundException">A file is missing; when only a pickled <c>adapter_model.bin</c>/<c>.pt</c>/<c>.pth</c>/
    /// <c>.ckpt</c> (or <c>pytorch_model.bin</c>) is there, the message says it is refused (never unpickled) and gives the
    /// conversion command (<c>python -c "import torch, safetensors.torch as s; s.save_file(torch.load('adapter_model.bin'),
    /// 'adapter_model.safetensors')"</c>).</exception>
    /// <exception cref="InvalidDataException">A config field or tensor is missing, unknown, mis-shaped, holds NaN/±∞, or does
    /// not fit the base model (dimensions, layer count); the message names the file, the field or tensor, and the expected
    /// against the actual shape. Structural problems are reported before bad values.</exception>
    /// <exception cref="NotSupportedException">A PEFT feature this runtime does not apply (e.g. <c>rank_pattern</c>,
    /// <c>modules_to_save</c>, DoRA, bias training); the message names it.</exception>
    /// <remarks>
    /// Accepted names, refused PEFT features and the decisions on incomplete adapters are documented on the internal
    /// <c>AdapterTensorNames</c>, <c>AdapterConfigFile</c> and <c>AdapterValidation</c>. In short: every module listed in
    /// <c>target_modules</c> must be adapted in every layer (or every layer of <c>layers_to_transform</c>); generators are
    /// on all targets or none and then need <c>rellax.instance_dim</c>; the projector needs <c>rellax.crm_embed_dim</c>;
    /// NaN or infinite values are refused, naming the tensor. F16/BF16 tensors are widened to f32 exactly. The ReLLaX
    /// reference code's generator names with a leading <c>LM.</c> are accepted.
    /// </remarks>
    public static RellaxAdapter Load(string directory, LlamaConfig baseModel)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(baseModel);
        return AdapterFileReader.Read(directory, baseModel, checkValues: true);
    }

    /// <summary>
    /// <see cref="Load(string, LlamaConfig)"/> with every check except, when <paramref name="checkValues"/> is false, the
    /// refusal of NaN/±∞ values: for inspecting the names, shapes and config of a file whose values are broken (the shared
    /// gemma-2b-text-to-sql adapter is all NaN). Such an adapter must not be used for scoring.
    /// </summary>
    internal static RellaxAdapter Load(string directory, LlamaConfig baseModel, bool checkValues)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(baseModel);
        return AdapterFileReader.Read(directory, baseModel, checkValues);
    }

    /// <summary>
    /// Builds an adapter from tensors in memory (tests, demos, adapters trained elsewhere), with the same checks as
    /// <see cref="Load(string, LlamaConfig)"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor has the wrong length for its role, or the parts disagree (the message
    /// names the target and the tensor).</exception>
    /// <remarks>The arrays are copied, so later changes to the caller's arrays do not reach the adapter. Targets may come in any
    /// order; <see cref="Targets"/> is ordered by layer, then module.</remarks>
    public static RellaxAdapter Create(AdapterConfig config, IReadOnlyList<LoraTarget> targets, SpaProjectorWeights? projector,
        LlamaConfig baseModel, string name = "(in memory)")
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(name);
        AdapterValidation.CheckConfig(config, baseModel, msg => new ArgumentException($"Adapter '{name}': config {msg}", nameof(config)));
        IReadOnlyList<LoraTarget> ordered = AdapterValidation.CheckParts(config, targets, projector, baseModel, checkValues: true,
            msg => new ArgumentException($"Adapter '{name}': {msg}", nameof(targets)));
        static float[] Copy(float[] a) => (float[])a.Clone();
        LoraTarget[] copies = ordered.Select(t => t with
        {
            A = Copy(t.A),
            B = Copy(t.B),
            Generator = t.Generator is { } g ? new CfloraGeneratorWeights(Copy(g.LnWeight), Copy(g.LnBias), Copy(g.W1), Copy(g.B1), Copy(g.W2), Copy(g.B2)) : null,
        }).ToArray();
        SpaProjectorWeights? projectorCopy = projector is null ? null
            : new SpaProjectorWeights(Copy(projector.W1), Copy(projector.B1), Copy(projector.W2), Copy(projector.B2));
        AdapterConfig configCopy = config with
        {
            TargetModules = config.TargetModules.ToArray(),
            LayersToTransform = config.LayersToTransform?.ToArray(),
        };
        return new RellaxAdapter(name, configCopy, copies, projectorCopy);
    }

    /// <summary>
    /// Writes the adapter as <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> (F32, PEFT names without
    /// <c>.default</c>) into <paramref name="directory"/>, creating it if needed. Each file is written to a temporary name and
    /// renamed, so a failure leaves no half-written file.
    /// </summary>
    /// <remarks>The two files are each replaced atomically, weights first; a failure between them can leave a new weights file
    /// beside an old config, never a truncated file. Saving needs no base model: the shapes come from the targets.</remarks>
    /// <exception cref="IOException">A file could not be written.</exception>
    public void Save(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string dir = System.IO.Path.GetFullPath(directory);
        System.IO.Directory.CreateDirectory(dir);

        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = "pt";
        int r = Config.Rank, r2 = r * r;
        foreach (LoraTarget t in Targets)
        {
            string N(AdapterTensorRole role) => AdapterTensorNames.Canonical(role, t.Layer, t.Module);
            writer.Add<float>(N(AdapterTensorRole.LoraA), SafeTensorDType.F32, [r, t.InFeatures], t.A);
            writer.Add<float>(N(AdapterTensorRole.LoraB), SafeTensorDType.F32, [t.OutFeatures, r], t.B);
            if (t.Generator is not { } g) continue;
            int dh = g.LnWeight.Length;
            writer.Add<float>(N(AdapterTensorRole.GateLnWeight), SafeTensorDType.F32, [dh], g.LnWeight);
            writer.Add<float>(N(AdapterTensorRole.GateLnBias), SafeTensorDType.F32, [dh], g.LnBias);
            writer.Add<float>(N(AdapterTensorRole.GateW1), SafeTensorDType.F32, [2 * r2, dh], g.W1);
            writer.Add<float>(N(AdapterTensorRole.GateB1), SafeTensorDType.F32, [2 * r2], g.B1);
            writer.Add<float>(N(AdapterTensorRole.GateW2), SafeTensorDType.F32, [r2, 2 * r2], g.W2);
            writer.Add<float>(N(AdapterTensorRole.GateB2), SafeTensorDType.F32, [r2], g.B2);
        }
        if (Projector is { } p)
        {
            int h = p.B1.Length, e = p.W1.Length / h;
            writer.Add<float>(AdapterTensorNames.Canonical(AdapterTensorRole.ProjW1), SafeTensorDType.F32, [h, e], p.W1);
            writer.Add<float>(AdapterTensorNames.Canonical(AdapterTensorRole.ProjB1), SafeTensorDType.F32, [h], p.B1);
            writer.Add<float>(AdapterTensorNames.Canonical(AdapterTensorRole.ProjW2), SafeTensorDType.F32, [h, h], p.W2);
            writer.Add<float>(AdapterTensorNames.Canonical(AdapterTensorRole.ProjB2), SafeTensorDType.F32, [h], p.B2);
        }
        writer.Save(System.IO.Path.Combine(dir, WeightsFileName));

        OutputFile.Write(System.IO.Path.Combine(dir, ConfigFileName),
            stream => stream.Write(new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(AdapterConfigFile.Write(Config))));
    }
}
