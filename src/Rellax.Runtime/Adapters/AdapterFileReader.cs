namespace Rellax.Runtime;

/// <summary>
/// Reads an adapter directory for <see cref="RellaxAdapter.Load(string, LlamaConfig)"/>: the pickle check, the config, then
/// every tensor of <c>adapter_model.safetensors</c>: names and headers (dtype, shape against r, d_h, E and the base model)
/// first, then the data widened to f32, the pairing and completeness checks, and last the NaN/±∞ scan.
/// </summary>
internal static class AdapterFileReader
{
    /// <summary>Pickled checkpoint names that are refused (never unpickled), in the order they are looked for.</summary>
    private static readonly string[] PickleNames =
        ["adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.ckpt", "pytorch_model.bin"];

    /// <summary>Loads and validates the adapter in <paramref name="directory"/> (see <see cref="RellaxAdapter.Load(string, LlamaConfig)"/>).</summary>
    /// <param name="directory">The adapter directory.</param>
    /// <param name="model">The base model's config.</param>
    /// <param name="checkValues">Refuse NaN/±∞ values (always, except when inspecting the structure of a broken file).</param>
    public static RellaxAdapter Read(string directory, LlamaConfig model, bool checkValues)
    {
        string dir = Path.GetFullPath(directory);
        if (File.Exists(dir)) throw new IOException($"adapter directory '{directory}' is a file, not a folder (an adapter is a folder with {RellaxAdapter.ConfigFileName} and {RellaxAdapter.WeightsFileName})");
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException($"Adapter directory not found: '{dir}'.");

        string weightsPath = Path.Combine(dir, RellaxAdapter.WeightsFileName);
        if (!File.Exists(weightsPath))
        {
            string? pickle = PickleNames.FirstOrDefault(p => File.Exists(Path.Combine(dir, p)));
            if (pickle is not null)
                throw new FileNotFoundException(
                    $"Adapter '{dir}' has no {RellaxAdapter.WeightsFileName}, only the pickled '{pickle}'. Pickled PyTorch files are refused "
                    + "(they are never unpickled: loading one can run arbitrary code). Convert it once with PyTorch:\n"
                    + $"  cd '{dir}' && python -c \"import torch, safetensors.torch as s; s.save_file(torch.load('{pickle}'), '{RellaxAdapter.WeightsFileName}')\"",
                    weightsPath);
            throw new FileNotFoundException($"Adapter weights not found: '{weightsPath}'.", weightsPath);
        }
        string configPath = Path.Combine(dir, RellaxAdapter.ConfigFileName);
        if (!File.Exists(configPath))
            throw new FileNotFoundException($"Adapter config not found: '{configPath}'.", configPath);

        AdapterConfig config = AdapterConfigFile.Parse(InputPaths.ReadAllText(configPath, "adapter config", InputPaths.MaxConfigBytes), configPath);
        AdapterValidation.CheckConfig(config, model, msg => new InvalidDataException($"Adapter config '{configPath}': {msg}"));

        SafeTensorsFile file;
        try { file = SafeTensorsFile.Open(weightsPath); }
        catch (SafeTensorsFormatException e)
        {
            throw new InvalidDataException($"Adapter weights '{weightsPath}': not a valid safetensors file ({e.Message}).", e);
        }
        using (file)
        {
            // Structure first (names, headers, pairs, completeness), values last: a file for another base model is reported as
            // such even when its values are also bad.
            (var parts, var order) = ReadTensors(file, weightsPath, configPath, config, model);
            (List<LoraTarget> targets, SpaProjectorWeights? projector) = Assemble(parts, weightsPath, model);
            IReadOnlyList<LoraTarget> ordered = AdapterValidation.CheckParts(config, targets, projector, model, checkValues: false,
                msg => new InvalidDataException($"Adapter weights '{weightsPath}': {msg}"));
            if (checkValues) CheckValues(parts, order, file, weightsPath);
            return new RellaxAdapter(dir, config, ordered, projector);
        }
    }

    /// <summary>Classifies every tensor name, checks every header (layer, module, dtype, shape), then reads the tensors.
    /// Returns them with their checking order.</summary>
    private static (Dictionary<AdapterTensorKey, (string Name, float[] Data)> Parts, List<(AdapterTensorKey Key, string Name)> Order) ReadTensors(SafeTensorsFile file, string path, string configPath,
        AdapterConfig config, LlamaConfig model)
    {
        var keys = new Dictionary<AdapterTensorKey, string>();
        var unknown = new List<string>();
        foreach (string name in file.Tensors.Keys.OrderBy(n => n, StringComparer.Ordinal))
        {
            if (!AdapterTensorNames.TryParse(name, out AdapterTensorKey key, out bool overflow))
            {
                if (overflow)
                    throw new InvalidDataException($"Adapter weights '{path}': tensor '{name}' has a layer index beyond the base model "
                        + $"'{model.SourceName}' (num_hidden_layers = {model.NumHiddenLayers}).");
                unknown.Add(name);
                continue;
            }
            if (keys.TryGetValue(key, out string? other))
                throw new InvalidDataException($"Adapter weights '{path}': tensors '{other}' and '{name}' are the same parameter "
                    + $"('{AdapterTensorNames.Canonical(key)}'), once with and once without PEFT's '.default' or the reference code's 'LM.'; keep one.");
            keys.Add(key, name);
        }
        if (unknown.Count > 0)
            throw new InvalidDataException($"Adapter weights '{path}': {unknown.Count} unknown tensor name(s): "
                + string.Join(", ", unknown.Take(5).Select(n => $"'{n}'")) + (unknown.Count > 5 ? ", ..." : "")
                + $". Accepted names: {AdapterTensorNames.AcceptedPatterns}.");

        var ordered = new List<(AdapterTensorKey, string)>();
        // Checked in (layer, module, role) order, projector last: A before B, and the tensors that reveal d_h or E first.
        foreach ((AdapterTensorKey key, string name) in keys.OrderBy(kv => kv.Key.IsProjector).ThenBy(kv => kv.Key.Layer)
                     .ThenBy(kv => kv.Key.Module).ThenBy(kv => kv.Key.Role))
        {
            SafeTensorInfo info = file.Info(name);
            string where = $"Adapter weights '{path}': tensor '{name}'";
            if (!key.IsProjector)
            {
                string module = LlamaModules.PeftName(key.Module);
                if (key.Layer >= model.NumHiddenLayers)
                    throw new InvalidDataException($"{where} is for layer {key.Layer}, but the base model '{model.SourceName}' has "
                        + $"num_hidden_layers = {model.NumHiddenLayers} (layers 0..{model.NumHiddenLayers - 1}).");
                if (!config.TargetModules.Contains(key.Module))
                    throw new InvalidDataException($"{where} adapts {module}, which target_modules in '{configPath}' does not list "
                        + $"[{string.Join(", ", config.TargetModules.Select(LlamaModules.PeftName))}].");
                if (config.LayersToTransform is { } layers && !layers.Contains(key.Layer))
                    throw new InvalidDataException($"{where} is for layer {key.Layer}, which layers_to_transform in '{configPath}' does not list "
                        + $"[{string.Join(", ", layers)}].");
            }
            if (info.DType is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16))
                throw new InvalidDataException($"{where} has dtype {info.DType.ToFormatString()}; adapter tensors must be F32, F16 or BF16.");
            (long[] expected, string why) = ExpectedShape(key, info.Shape, config, model, where, configPath);
            if (!info.Shape.Select(d => (long)d).SequenceEqual(expected))
                throw new InvalidDataException($"{where} has shape {Shape(info.Shape)}; expected {Shape(expected)} ({why}).");
            ordered.Add((key, name));
        }
        // Only once every header agrees with the config and the base model are the tensors read (and widened to f32).
        var result = new Dictionary<AdapterTensorKey, (string, float[])>();
        foreach ((AdapterTensorKey key, string name) in ordered) result.Add(key, (name, file.ReadFloat32(name)));
        return (result, ordered);
    }

    /// <summary>Refuses the first tensor, in checking order, that holds a NaN or ±∞.</summary>
    private static void CheckValues(Dictionary<AdapterTensorKey, (string Name, float[] Data)> parts, List<(AdapterTensorKey Key, string Name)> order,
        SafeTensorsFile file, string path)
    {
        foreach ((AdapterTensorKey key, string name) in order)
        {
            float[] data = parts[key].Data;
            int bad = AdapterValidation.FirstNonFinite(data);
            if (bad >= 0)
            {
                int count = data.Count(v => !float.IsFinite(v));
                throw new InvalidDataException($"Adapter weights '{path}': tensor '{name}' holds {count} non-finite value(s) of {data.Length} "
                    + $"(the first, {data[bad]}, at flat element {bad} of shape {Shape(file.Info(name).Shape)}); refusing an adapter with NaN or infinite weights.");
            }
        }
    }

    /// <summary>The shape <paramref name="key"/>'s tensor must have, and where each dimension comes from.</summary>
    private static (long[] Shape, string Why) ExpectedShape(AdapterTensorKey key, int[] actual, AdapterConfig config, LlamaConfig model,
        string where, string configPath)
    {
        long r = config.Rank, r2 = r * r;
        string rFrom = $"r = {r} from '{configPath}'";
        if (key.IsProjector)
        {
            long h = model.HiddenSize;
            string hFrom = $"H = hidden_size {h} of the base model '{model.SourceName}'";
            if (key.Role is AdapterTensorRole.ProjW1 && actual.Length == 2 && actual[0] != h)
                throw new InvalidDataException($"{where} has shape {Shape(actual)}: the SPA projector outputs {actual[0]} values, but the base model "
                    + $"'{model.SourceName}' has hidden_size {h}; expected [H, E] = [{h}, E]. The adapter was trained for another base model.");
            if (key.Role is AdapterTensorRole.ProjW1)
            {
                if (config.CrmEmbedDim is not int e)
                    throw new InvalidDataException($"{where} is the SPA projector, but '{configPath}' has no rellax.crm_embed_dim (E, the length of a CRM "
                        + $"item embedding){(actual.Length == 2 ? $"; this tensor implies E = {actual[1]}: add \"rellax\": {{\"crm_embed_dim\": {actual[1]}}}" : "")}.");
                return ([h, e], $"[H, E]: {hFrom}, E = rellax.crm_embed_dim {e}");
            }
            if (config.CrmEmbedDim is null)
                throw new InvalidDataException($"{where} is part of the SPA projector, but '{configPath}' has no rellax.crm_embed_dim (E, the length of a CRM item embedding).");
            return key.Role is AdapterTensorRole.ProjW2 ? ([h, h], $"[H, H]: {hFrom}") : ([h], $"[H]: {hFrom}");
        }

        (int outF, int inF) = AdapterTensorNames.BaseShape(key.Module, model);
        string origin = AdapterTensorNames.BaseShapeOrigin(key.Module, model);
        switch (key.Role)
        {
            case AdapterTensorRole.LoraA: return ([r, inF], $"[r, d_in]: {rFrom}; {origin}");
            case AdapterTensorRole.LoraB: return ([outF, r], $"[d_out, r]: {rFrom}; {origin}");
        }
        if (config.InstanceDim is not int dh)
        {
            string implied = key.Role switch
            {
                AdapterTensorRole.GateLnWeight or AdapterTensorRole.GateLnBias when actual.Length == 1 => $"; this tensor implies d_h = {actual[0]}",
                AdapterTensorRole.GateW1 when actual.Length == 2 => $"; this tensor implies d_h = {actual[1]}",
                _ => "",
            };
            throw new InvalidDataException($"{where} is a CFLoRA generator part, but '{configPath}' has no rellax.instance_dim (d_h, the length of "
                + $"the CRM vector h_u){implied}: add \"rellax\": {{\"instance_dim\": d_h}}.");
        }
        string dhFrom = $"d_h = rellax.instance_dim {dh}, {rFrom}";
        return key.Role switch
        {
            AdapterTensorRole.GateLnWeight or AdapterTensorRole.GateLnBias => ([dh], $"[d_h]: {dhFrom}"),
            AdapterTensorRole.GateW1 => ([2 * r2, dh], $"[2r², d_h]: {dhFrom}"),
            AdapterTensorRole.GateB1 => ([2 * r2], $"[2r²]: {rFrom}"),
            AdapterTensorRole.GateW2 => ([r2, 2 * r2], $"[r², 2r²]: {rFrom}"),
            _ => ([r2], $"[r²]: {rFrom}"),
        };
    }

    /// <summary>Groups the tensors into targets and the projector; every group must be complete.</summary>
    private static (List<LoraTarget>, SpaProjectorWeights?) Assemble(Dictionary<AdapterTensorKey, (string Name, float[] Data)> parts, string path,
        LlamaConfig model)
    {
        float[] Part(AdapterTensorKey key, AdapterTensorKey present, string what)
        {
            if (parts.TryGetValue(key, out var p)) return p.Data;
            throw new InvalidDataException($"Adapter weights '{path}': tensor '{parts[present].Name}' has no matching "
                + $"'{AdapterTensorNames.Canonical(key)}'{(key.Role <= AdapterTensorRole.LoraB ? " (or its '.default' form)" : "")}; {what}.");
        }

        var targets = new List<LoraTarget>();
        foreach (var group in parts.Keys.Where(k => !k.IsProjector).GroupBy(k => (k.Layer, k.Module)).OrderBy(g => g.Key.Layer).ThenBy(g => g.Key.Module))
        {
            (int layer, LlamaModule module) = group.Key;
            AdapterTensorKey present = group.OrderBy(k => k.Role).First();
            AdapterTensorKey K(AdapterTensorRole role) => new(role, layer, module);
            float[] a = Part(K(AdapterTensorRole.LoraA), present, "LoRA factors come in lora_A/lora_B pairs");
            float[] b = Part(K(AdapterTensorRole.LoraB), present, "LoRA factors come in lora_A/lora_B pairs");
            CfloraGeneratorWeights? generator = null;
            if (group.Any(k => k.IsGenerator))
            {
                AdapterTensorKey gp = group.Where(k => k.IsGenerator).OrderBy(k => k.Role).First();
                const string Why = "a CFLoRA generator needs all six lora_gate.{0,1,3}.{weight,bias} tensors";
                generator = new CfloraGeneratorWeights(
                    Part(K(AdapterTensorRole.GateLnWeight), gp, Why), Part(K(AdapterTensorRole.GateLnBias), gp, Why),
                    Part(K(AdapterTensorRole.GateW1), gp, Why), Part(K(AdapterTensorRole.GateB1), gp, Why),
                    Part(K(AdapterTensorRole.GateW2), gp, Why), Part(K(AdapterTensorRole.GateB2), gp, Why));
            }
            (int outF, int inF) = AdapterTensorNames.BaseShape(module, model);
            targets.Add(new LoraTarget(layer, module, inF, outF, a, b, generator));
        }

        SpaProjectorWeights? projector = null;
        AdapterTensorKey[] proj = parts.Keys.Where(k => k.IsProjector).OrderBy(k => k.Role).ToArray();
        if (proj.Length > 0)
        {
            const string Why = "the SPA projector needs ctr_input_embedding_prj.{0,2}.{weight,bias}";
            AdapterTensorKey P(AdapterTensorRole role) => new(role, -1, default);
            projector = new SpaProjectorWeights(Part(P(AdapterTensorRole.ProjW1), proj[0], Why), Part(P(AdapterTensorRole.ProjB1), proj[0], Why),
                Part(P(AdapterTensorRole.ProjW2), proj[0], Why), Part(P(AdapterTensorRole.ProjB2), proj[0], Why));
        }
        return (targets, projector);
    }

    private static string Shape(IEnumerable<int> dims) => "[" + string.Join(", ", dims) + "]";

    private static string Shape(IEnumerable<long> dims) => "[" + string.Join(", ", dims) + "]";
}
