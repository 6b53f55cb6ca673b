namespace Rellax.Runtime;

/// <summary>
/// The checks shared by <see cref="RellaxAdapter.Load(string, LlamaConfig)"/> and <see cref="RellaxAdapter.Create"/>. Each takes a
/// <c>fail</c> factory that turns a message into the exception the caller documents (InvalidDataException naming the
/// file for Load, ArgumentException naming the adapter for Create).
/// </summary>
/// <remarks>
/// Decisions (documented here once):
/// <list type="bullet">
/// <item>Every module listed in <c>target_modules</c> must have LoRA factors in every adapted layer (all layers, or
/// those of <c>layers_to_transform</c>). A listed module with no tensors at all, or missing in some layers, is an
/// error, not a warning: PEFT saves every module it adapted, so a gap means a truncated or mismatched file, and
/// scoring without it would silently give different numbers.</item>
/// <item>Generators are on every target or on none. <c>rellax.instance_dim</c> is required when generators are present
/// (the message gives the value the tensors imply) and refused when they are absent; likewise
/// <c>rellax.crm_embed_dim</c> and the projector. The config is what callers read to size h_u and the CRM
/// embeddings, so it must agree with the tensors rather than be inferred from them.</item>
/// <item>A LoRA tensor for a module not in <c>target_modules</c>, or for a layer outside <c>layers_to_transform</c>, is an
/// error.</item>
/// <item>An adapter with neither LoRA targets nor a projector is an error.</item>
/// </list>
/// </remarks>
internal static class AdapterValidation
{
    /// <summary>Checks the config's own values and its layer indices against <paramref name="model"/>.</summary>
    public static void CheckConfig(AdapterConfig config, LlamaConfig model, Func<string, Exception> fail)
    {
        if (config.Rank < 1) throw fail($"field 'r' must be at least 1, got {config.Rank}.");
        if (!double.IsFinite(config.Alpha)) throw fail($"field 'lora_alpha' must be a finite number, got {config.Alpha}.");
        if (config.TargetModules is null) throw fail("field 'target_modules' is null.");
        var seen = new HashSet<LlamaModule>();
        foreach (LlamaModule m in config.TargetModules)
        {
            if (!Enum.IsDefined(m)) throw fail($"field 'target_modules' holds an undefined module value {(int)m}.");
            if (!seen.Add(m)) throw fail($"field 'target_modules' lists {LlamaModules.PeftName(m)} twice.");
        }
        if (config.InstanceDim is < 1) throw fail($"field 'rellax.instance_dim' must be at least 1, got {config.InstanceDim}.");
        if (config.CrmEmbedDim is < 1) throw fail($"field 'rellax.crm_embed_dim' must be at least 1, got {config.CrmEmbedDim}.");
        if (string.IsNullOrEmpty(config.HistToken)) throw fail("field 'rellax.hist_token' must not be empty.");
        if (string.IsNullOrEmpty(config.TargetToken)) throw fail("field 'rellax.target_token' must not be empty.");
        if (config.HistToken == config.TargetToken)
            throw fail($"fields 'rellax.hist_token' and 'rellax.target_token' must differ (both are '{config.HistToken}').");
        if (config.LayersToTransform is { } layers)
        {
            if (layers.Count == 0) throw fail("field 'layers_to_transform' is an empty list (use null for every layer).");
            var distinct = new HashSet<int>();
            foreach (int layer in layers)
            {
                if (layer < 0 || layer >= model.NumHiddenLayers)
                    throw fail($"field 'layers_to_transform' names layer {layer}, but the base model '{model.SourceName}' has "
                        + $"num_hidden_layers = {model.NumHiddenLayers} (layers 0..{model.NumHiddenLayers - 1}).");
                if (!distinct.Add(layer)) throw fail($"field 'layers_to_transform' lists layer {layer} twice.");
            }
        }
    }

    /// <summary>
    /// Checks the targets and projector against the config and the base model and returns the targets ordered by layer,
    /// then module.
    /// </summary>
    /// <param name="config">A config that passed <see cref="CheckConfig"/>.</param>
    /// <param name="targets">The LoRA targets, in any order.</param>
    /// <param name="projector">The SPA projector, or null.</param>
    /// <param name="model">The base model.</param>
    /// <param name="checkValues">Whether to scan every value for NaN/±∞ (the loader has already done so per tensor).</param>
    /// <param name="fail">Builds the exception for a message.</param>
    public static IReadOnlyList<LoraTarget> CheckParts(AdapterConfig config, IReadOnlyList<LoraTarget> targets, SpaProjectorWeights? projector,
        LlamaConfig model, bool checkValues, Func<string, Exception> fail)
    {
        if (targets is null) throw fail("the target list is null.");
        int r = config.Rank;
        long r2 = (long)r * r;
        var byKey = new Dictionary<(int, LlamaModule), LoraTarget>();
        LoraTarget? withGenerator = null, withoutGenerator = null;
        for (int t = 0; t < targets.Count; t++)
        {
            LoraTarget target = targets[t] ?? throw fail($"target {t} is null.");
            LlamaModule m = target.Module;
            if (!Enum.IsDefined(m)) throw fail($"target {t} has an undefined module value {(int)m}.");
            string label = $"target layer {target.Layer} {LlamaModules.PeftName(m)}";
            if (target.Layer < 0 || target.Layer >= model.NumHiddenLayers)
                throw fail($"{label}: layer index {target.Layer} is out of range for the base model '{model.SourceName}' "
                    + $"(num_hidden_layers = {model.NumHiddenLayers}).");
            if (!config.TargetModules.Contains(m))
                throw fail($"{label}: {LlamaModules.PeftName(m)} is not in target_modules "
                    + $"[{string.Join(", ", config.TargetModules.Select(LlamaModules.PeftName))}].");
            if (config.LayersToTransform is { } layers && !layers.Contains(target.Layer))
                throw fail($"{label}: layer {target.Layer} is not in layers_to_transform [{string.Join(", ", layers)}].");
            if (!byKey.TryAdd((target.Layer, m), target)) throw fail($"{label} appears twice.");

            (int outF, int inF) = AdapterTensorNames.BaseShape(m, model);
            if (target.InFeatures != inF || target.OutFeatures != outF)
                throw fail($"{label}: InFeatures × OutFeatures = {target.InFeatures} × {target.OutFeatures}, but "
                    + $"{AdapterTensorNames.BaseShapeOrigin(m, model)} = [{outF}, {inF}].");
            CheckArray(target.A, (long)r * inF, $"{label}: A ({Name(AdapterTensorRole.LoraA, target)})", $"r·d_in = {r}·{inF}", checkValues, fail);
            CheckArray(target.B, (long)outF * r, $"{label}: B ({Name(AdapterTensorRole.LoraB, target)})", $"d_out·r = {outF}·{r}", checkValues, fail);

            if (target.Generator is { } g)
            {
                withGenerator ??= target;
                if (config.InstanceDim is not int dh)
                    throw fail($"{label} has a CFLoRA generator, but the config has no rellax.instance_dim (d_h, the length of h_u); "
                        + $"its LayerNorm weight has {g.LnWeight?.Length ?? 0} elements.");
                CheckArray(g.LnWeight, dh, $"{label}: generator LnWeight ({Name(AdapterTensorRole.GateLnWeight, target)})", $"d_h = {dh}", checkValues, fail);
                CheckArray(g.LnBias, dh, $"{label}: generator LnBias ({Name(AdapterTensorRole.GateLnBias, target)})", $"d_h = {dh}", checkValues, fail);
                CheckArray(g.W1, 2 * r2 * dh, $"{label}: generator W1 ({Name(AdapterTensorRole.GateW1, target)})", $"2r²·d_h = {2 * r2}·{dh}", checkValues, fail);
                CheckArray(g.B1, 2 * r2, $"{label}: generator B1 ({Name(AdapterTensorRole.GateB1, target)})", $"2r² = {2 * r2}", checkValues, fail);
                CheckArray(g.W2, r2 * 2 * r2, $"{label}: generator W2 ({Name(AdapterTensorRole.GateW2, target)})", $"r²·2r² = {r2}·{2 * r2}", checkValues, fail);
                CheckArray(g.B2, r2, $"{label}: generator B2 ({Name(AdapterTensorRole.GateB2, target)})", $"r² = {r2}", checkValues, fail);
            }
            else
            {
                withoutGenerator ??= target;
            }
        }

        if (withGenerator is not null && withoutGenerator is not null)
            throw fail("CFLoRA generators must be on every LoRA target or on none: "
                + $"layer {withGenerator.Layer} {LlamaModules.PeftName(withGenerator.Module)} has one "
                + $"({Name(AdapterTensorRole.GateW1, withGenerator)}), layer {withoutGenerator.Layer} "
                + $"{LlamaModules.PeftName(withoutGenerator.Module)} has none (no {Name(AdapterTensorRole.GateW1, withoutGenerator)}).");
        if (withGenerator is null && config.InstanceDim is int d)
            throw fail($"rellax.instance_dim = {d} says the adapter is CFLoRA, but there are no generator (lora_gate) tensors.");

        // Completeness: every listed module in every adapted layer.
        IEnumerable<int> adaptedLayers = config.LayersToTransform ?? Enumerable.Range(0, model.NumHiddenLayers);
        foreach (LlamaModule m in config.TargetModules)
        {
            int[] missing = adaptedLayers.Where(l => !byKey.ContainsKey((l, m))).ToArray();
            if (missing.Length == 0) continue;
            string which = missing.Length == adaptedLayers.Count()
                ? "has no tensors at all"
                : $"is missing in layer(s) {string.Join(", ", missing.Take(10))}{(missing.Length > 10 ? ", ..." : "")}";
            throw fail($"target_modules lists {LlamaModules.PeftName(m)}, but it {which} "
                + $"(expected e.g. '{AdapterTensorNames.Canonical(AdapterTensorRole.LoraA, missing[0], m)}' and its lora_B); "
                + "every listed module must be adapted in every layer (or in every layer of layers_to_transform).");
        }

        if (projector is not null)
        {
            if (config.CrmEmbedDim is not int e)
                throw fail("the adapter has an SPA projector, but the config has no rellax.crm_embed_dim (E, the length of a CRM item embedding); "
                    + $"its first weight has {projector.W1?.Length ?? 0} elements = H·E with H = {model.HiddenSize}.");
            int h = model.HiddenSize;
            string hs = $" (H = hidden_size {h} of the base model '{model.SourceName}', E = rellax.crm_embed_dim {e})";
            CheckArray(projector.W1, (long)h * e, $"projector W1 ({AdapterTensorNames.Canonical(AdapterTensorRole.ProjW1)})", $"H·E = {h}·{e}", checkValues, fail, hs);
            CheckArray(projector.B1, h, $"projector B1 ({AdapterTensorNames.Canonical(AdapterTensorRole.ProjB1)})", "H", checkValues, fail, hs);
            CheckArray(projector.W2, (long)h * h, $"projector W2 ({AdapterTensorNames.Canonical(AdapterTensorRole.ProjW2)})", $"H·H = {h}·{h}", checkValues, fail, hs);
            CheckArray(projector.B2, h, $"projector B2 ({AdapterTensorNames.Canonical(AdapterTensorRole.ProjB2)})", "H", checkValues, fail, hs);
        }
        else if (config.CrmEmbedDim is int e)
        {
            throw fail($"rellax.crm_embed_dim = {e} says the adapter has an SPA projector, but there are no ctr_input_embedding_prj tensors.");
        }

        if (byKey.Count == 0 && projector is null)
            throw fail("the adapter holds no LoRA targets and no SPA projector (target_modules is empty and there are no tensors).");

        return byKey.OrderBy(kv => kv.Key.Item1).ThenBy(kv => kv.Key.Item2).Select(kv => kv.Value).ToArray();
    }

    /// <summary>Index of the first NaN or ±∞ in <paramref name="values"/>, or -1.</summary>
    public static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) return i;
        return -1;
    }

    private static string Name(AdapterTensorRole role, LoraTarget t) => AdapterTensorNames.Canonical(role, t.Layer, t.Module);

    private static void CheckArray(float[]? a, long expected, string what, string formula, bool checkValues, Func<string, Exception> fail,
        string note = "")
    {
        if (a is null) throw fail($"{what} is null; expected {formula} = {expected} elements{note}.");
        if (a.Length != expected) throw fail($"{what} has {a.Length} elements; expected {formula} = {expected}{note}.");
        if (!checkValues) return;
        int bad = FirstNonFinite(a);
        if (bad >= 0) throw fail($"{what} holds a non-finite value ({a[bad]}) at element {bad}.");
    }
}
