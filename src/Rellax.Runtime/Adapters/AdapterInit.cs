namespace Rellax.Runtime;

/// <summary>What a new adapter made by <see cref="AdapterInit.Create"/> holds (the <c>rellax train</c> options
/// <c>--r --alpha --target-modules --cflora --spa --seed</c>).</summary>
public sealed record AdapterInitOptions
{
    /// <summary>LoRA rank r, at least 1 (the reference: 8).</summary>
    public int Rank { get; init; } = 8;

    /// <summary><c>lora_alpha</c>, finite and &gt; 0 (the reference: 16); the adapter scale is alpha / r.</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>The adapted modules of every adapted layer (the reference: <c>q_proj</c>, <c>v_proj</c>), distinct, at
    /// least one.</summary>
    public IReadOnlyList<LlamaModule> TargetModules { get; init; } = [LlamaModule.QProj, LlamaModule.VProj];

    /// <summary>The adapted decoder layers (<c>layers_to_transform</c>), or null for every layer.</summary>
    public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>d_h, the length of the CRM user state h_u: when set, every target gets a CFLoRA generator
    /// (<c>lora_gate</c>); null: plain LoRA.</summary>
    public int? InstanceDim { get; init; }

    /// <summary>E, the length of a CRM item embedding: when set, the adapter gets an SPA projector
    /// (<c>ctr_input_embedding_prj</c>); null: no SPA.</summary>
    public int? CrmEmbedDim { get; init; }

    /// <summary>The seed: the same seed and options give the same adapter, bit for bit.</summary>
    public int Seed { get; init; } = 42;
}

/// <summary>
/// Makes a new, untrained ReLLaX adapter the way the reference code initialises one (SPEC §9), so that training starts
/// where PEFT and ReLLaX start:
/// <list type="bullet">
/// <item>LoRA A [r, d_in]: <c>kaiming_uniform_(A, a=√5)</c> as PEFT does, i.e. U(−1/√d_in, 1/√d_in); B [d_out, r]: zero,
/// so the adapted model starts as the base model.</item>
/// <item>CFLoRA generator (<c>modeling_rella_plus_new.py</c>): LayerNorm(d_h) with PyTorch's default weight 1, bias 0;
/// both Linear weights <c>kaiming_uniform_(a=√5)</c>, U(±1/√fan_in) with fan_in = d_h and 2r²; both biases zero. The
/// initial gate is a random r×r matrix, not the identity (the reference's choice).</item>
/// <item>SPA projector: Xavier-normal weights (gain 1: N(0, 2 / (fan_in + fan_out))) and zero biases, as SPEC §9 records
/// of the reference's <c>weight_init</c>.</item>
/// </list>
/// Values are drawn from one <see cref="GaussianSource"/> seeded with <see cref="AdapterInitOptions.Seed"/> (the same
/// numbers on every .NET version), in a fixed order: for each target in layer-then-module order its A, then its generator's W1 and W2; the
/// projector's W1 and W2 last. The numbers are not PyTorch's (its generator is another), only their distributions.
/// </summary>
public static class AdapterInit
{
    /// <summary>Creates the adapter for <paramref name="model"/>.</summary>
    /// <param name="model">The base model's config (dimensions and layer count).</param>
    /// <param name="options">Rank, alpha, modules, layers, the optional generators and projector, the seed.</param>
    /// <param name="name">What <see cref="RellaxAdapter.Directory"/> reports until the adapter is saved.</param>
    /// <returns>An adapter that passes the same checks as a loaded one (<see cref="RellaxAdapter.Create"/>).</returns>
    /// <exception cref="ArgumentException">An option is out of range (a rank below 1, alpha not finite and positive, no or
    /// repeated modules, a layer outside the model, d_h or E below 1); the message names the option.</exception>
    public static RellaxAdapter Create(LlamaConfig model, AdapterInitOptions options, string name = "(new adapter)")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(name);
        int r = options.Rank;
        if (r < 1) throw new ArgumentOutOfRangeException(nameof(options), r, $"the LoRA rank r must be at least 1, got {r}");
        if (!(options.Alpha > 0) || !double.IsFinite(options.Alpha))
            throw new ArgumentOutOfRangeException(nameof(options), options.Alpha, $"lora_alpha must be finite and > 0, got {options.Alpha}");
        var modules = options.TargetModules ?? throw new ArgumentException("the target modules are null", nameof(options));
        if (modules.Count == 0) throw new ArgumentException("at least one target module is needed (e.g. q_proj, v_proj)", nameof(options));
        if (modules.Distinct().Count() != modules.Count)
            throw new ArgumentException($"a target module is listed twice: {string.Join(", ", modules.Select(LlamaModules.PeftName))}", nameof(options));
        int[] layers = options.Layers is { } given ? [.. given.Distinct().Order()] : [.. Enumerable.Range(0, model.NumHiddenLayers)];
        if (layers.Length == 0) throw new ArgumentException("at least one layer is needed", nameof(options));
        foreach (int l in layers)
            if (l < 0 || l >= model.NumHiddenLayers)
                throw new ArgumentOutOfRangeException(nameof(options), l, $"layer {l} is outside the model's {model.NumHiddenLayers} layers (0 to {model.NumHiddenLayers - 1})");
        if (options.InstanceDim is int dh && dh < 1) throw new ArgumentOutOfRangeException(nameof(options), dh, $"d_h (instance_dim) must be at least 1, got {dh}");
        if (options.CrmEmbedDim is int ee && ee < 1) throw new ArgumentOutOfRangeException(nameof(options), ee, $"E (crm_embed_dim) must be at least 1, got {ee}");

        var rng = new GaussianSource(options.Seed);
        var targets = new List<LoraTarget>(layers.Length * modules.Count);
        foreach (int layer in layers)
            foreach (var module in modules.Order())
            {
                var (outF, inF) = AdapterTensorNames.BaseShape(module, model);
                float[] a = KaimingUniform(rng, r, inF);
                var generator = options.InstanceDim is int d ? NewGenerator(rng, r, d) : null;
                targets.Add(new LoraTarget(layer, module, inF, outF, a, new float[outF * r], generator));
            }

        var projector = options.CrmEmbedDim is int e ? NewProjector(rng, model.HiddenSize, e) : null;
        var config = new AdapterConfig
        {
            Rank = r, Alpha = options.Alpha, TargetModules = [.. modules.Order()],
            LayersToTransform = options.Layers is null ? null : layers,
            InstanceDim = options.InstanceDim, CrmEmbedDim = options.CrmEmbedDim,
            BaseModelName = string.IsNullOrEmpty(model.SourceName) ? null : model.SourceName,
        };
        return RellaxAdapter.Create(config, targets, projector, model, name);
    }

    /// <summary>
    /// ReLLaX's second stage (<c>finetune_rella_plus_new.py</c>): the adapter <paramref name="lora"/> with new, untrained
    /// CFLoRA generators on every target (when <paramref name="instanceDim"/> is given) and a new SPA projector (when
    /// <paramref name="crmEmbedDim"/> is given), initialised as <see cref="Create"/> initialises them; LoRA A and B are
    /// kept as they are (the reference freezes them and trains only the new parts).
    /// </summary>
    /// <param name="model">The base model's config.</param>
    /// <param name="lora">The trained adapter to extend; it must not have the parts asked for already.</param>
    /// <param name="instanceDim">d_h, the CRM user-state length, to add generators; null to add none.</param>
    /// <param name="crmEmbedDim">E, the CRM item-embedding length, to add a projector; null to add none.</param>
    /// <param name="seed">The seed of the new parts (generators in target order, then the projector).</param>
    /// <param name="name">What <see cref="RellaxAdapter.Directory"/> reports until the adapter is saved.</param>
    /// <exception cref="ArgumentException">Neither part is asked for, a part is asked for that <paramref name="lora"/>
    /// already has, or a size is below 1 (the message names it).</exception>
    public static RellaxAdapter Extend(LlamaConfig model, RellaxAdapter lora, int? instanceDim, int? crmEmbedDim, int seed = 42, string name = "(extended adapter)")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(lora);
        ArgumentNullException.ThrowIfNull(name);
        if (instanceDim is null && crmEmbedDim is null)
            throw new ArgumentException("nothing to add: give d_h (generators) or E (projector)", nameof(instanceDim));
        if (instanceDim is int dh && dh < 1) throw new ArgumentOutOfRangeException(nameof(instanceDim), dh, $"d_h (instance_dim) must be at least 1, got {dh}");
        if (crmEmbedDim is int ee && ee < 1) throw new ArgumentOutOfRangeException(nameof(crmEmbedDim), ee, $"E (crm_embed_dim) must be at least 1, got {ee}");
        if (instanceDim is not null && lora.HasGenerators)
            throw new ArgumentException($"adapter '{lora.Directory}' already has CFLoRA generators (lora_gate)", nameof(instanceDim));
        if (crmEmbedDim is not null && lora.Projector is not null)
            throw new ArgumentException($"adapter '{lora.Directory}' already has an SPA projector (ctr_input_embedding_prj)", nameof(crmEmbedDim));
        var rng = new GaussianSource(seed);
        int r = lora.Config.Rank;
        var targets = lora.Targets.Select(t => instanceDim is int d ? t with { Generator = NewGenerator(rng, r, d) } : t).ToArray();
        var projector = crmEmbedDim is int e ? NewProjector(rng, model.HiddenSize, e) : lora.Projector;
        var config = lora.Config with
        {
            InstanceDim = instanceDim ?? lora.Config.InstanceDim,
            CrmEmbedDim = crmEmbedDim ?? lora.Config.CrmEmbedDim,
        };
        return RellaxAdapter.Create(config, targets, projector, model, name);
    }

    /// <summary>A generator as the reference initialises one: LayerNorm(d_h) weight 1, bias 0; Kaiming-uniform Linear
    /// weights (fan_in d_h, then 2r²), zero biases. Draws W1 then W2 from <paramref name="rng"/>.</summary>
    private static CfloraGeneratorWeights NewGenerator(GaussianSource rng, int r, int d)
    {
        int r2 = r * r;
        var lnWeight = new float[d];
        Array.Fill(lnWeight, 1f);
        return new CfloraGeneratorWeights(lnWeight, new float[d], KaimingUniform(rng, 2 * r2, d), new float[2 * r2],
            KaimingUniform(rng, r2, 2 * r2), new float[r2]);
    }

    /// <summary>A projector as SPEC §9 records the reference's init: Xavier-normal weights, zero biases. Draws W1 then W2.</summary>
    private static SpaProjectorWeights NewProjector(GaussianSource rng, int h, int e) =>
        new(XavierNormal(rng, h, e), new float[h], XavierNormal(rng, h, h), new float[h]);

    /// <summary><c>kaiming_uniform_(w, a=√5)</c> of a [rows, fanIn] weight: U(−1/√fanIn, 1/√fanIn), row-major.</summary>
    private static float[] KaimingUniform(GaussianSource rng, int rows, int fanIn)
    {
        // gain = √(2 / (1 + a²)) = √(1/3); bound = gain · √(3 / fan_in) = 1 / √fan_in.
        double bound = 1 / Math.Sqrt(fanIn);
        var w = new float[(long)rows * fanIn];
        for (long i = 0; i < w.Length; i++) w[i] = (float)((2 * rng.NextUniform() - 1) * bound);
        return w;
    }

    /// <summary><c>xavier_normal_(w)</c> of a [rows, fanIn] weight (gain 1): N(0, 2 / (fanIn + rows)), row-major.</summary>
    private static float[] XavierNormal(GaussianSource rng, int rows, int fanIn)
    {
        double std = Math.Sqrt(2.0 / (fanIn + rows));
        var w = new float[(long)rows * fanIn];
        for (long i = 0; i < w.Length; i++) w[i] = (float)(std * rng.NextGaussian());
        return w;
    }
}
