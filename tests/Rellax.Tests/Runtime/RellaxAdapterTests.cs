using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Runtime;
using Rellax.Tests.Model;

namespace Rellax.Tests.Runtime;

/// <summary>
/// Builds adapter directories for the tests: PEFT-style configs and tensors named and shaped by hand (the shapes here are
/// written from the base model's numbers, not taken from the code under test).
/// </summary>
internal static class AdapterKit
{
    /// <summary>A tiny base model whose seven linear layers all have different shapes: H = 16, Hq·D = 20, Hkv·D = 10, I = 28, 2 layers.</summary>
    public const string TinyConfigJson =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":28,\"num_hidden_layers\":2,"
        + "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":10,\"vocab_size\":32,\"rms_norm_eps\":1e-5}";

    public static LlamaConfig Tiny => LlamaConfig.Parse(TinyConfigJson, "tiny/config.json");

    /// <summary>(section, d_out, d_in) of each module of <see cref="Tiny"/>.</summary>
    public static readonly IReadOnlyDictionary<string, (string Section, int Out, int In)> TinyModules = new Dictionary<string, (string, int, int)>
    {
        ["q_proj"] = ("self_attn", 20, 16),
        ["k_proj"] = ("self_attn", 10, 16),
        ["v_proj"] = ("self_attn", 10, 16),
        ["o_proj"] = ("self_attn", 16, 20),
        ["gate_proj"] = ("mlp", 28, 16),
        ["up_proj"] = ("mlp", 28, 16),
        ["down_proj"] = ("mlp", 16, 28),
    };

    /// <summary>(section, d_out, d_in) of <paramref name="module"/> for a base config, from its numbers.</summary>
    public static (string Section, int Out, int In) Dims(LlamaConfig c, string module)
    {
        int h = c.HiddenSize, q = c.NumAttentionHeads * c.HeadDim, kv = c.NumKeyValueHeads * c.HeadDim, i = c.IntermediateSize;
        return module switch
        {
            "q_proj" => ("self_attn", q, h),
            "k_proj" or "v_proj" => ("self_attn", kv, h),
            "o_proj" => ("self_attn", h, q),
            "gate_proj" or "up_proj" => ("mlp", i, h),
            "down_proj" => ("mlp", h, i),
            _ => throw new ArgumentException(module),
        };
    }

    public static string Prefix(int layer, string module, string section) => $"base_model.model.model.layers.{layer}.{section}.{module}.";

    /// <summary>Values k/64 with |k| ≤ 128: exact in F32, F16 and BF16.</summary>
    public static float[] Values(Random rng, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = rng.Next(-128, 129) / 64f;
        return v;
    }

    public static void AddLora(Dictionary<string, (int[] Shape, float[] Data)> t, int layer, string module, int r, (string Section, int Out, int In) d,
        Random rng, bool withDefault = false)
    {
        string p = Prefix(layer, module, d.Section), def = withDefault ? ".default" : "";
        t[p + $"lora_A{def}.weight"] = ([r, d.In], Values(rng, r * d.In));
        t[p + $"lora_B{def}.weight"] = ([d.Out, r], Values(rng, d.Out * r));
    }

    public static void AddGate(Dictionary<string, (int[] Shape, float[] Data)> t, int layer, string module, string section, int r, int dh, Random rng,
        string namePrefix = "")
    {
        string p = namePrefix + Prefix(layer, module, section) + "lora_gate.";
        int r2 = r * r;
        t[p + "0.weight"] = ([dh], Values(rng, dh));
        t[p + "0.bias"] = ([dh], Values(rng, dh));
        t[p + "1.weight"] = ([2 * r2, dh], Values(rng, 2 * r2 * dh));
        t[p + "1.bias"] = ([2 * r2], Values(rng, 2 * r2));
        t[p + "3.weight"] = ([r2, 2 * r2], Values(rng, r2 * 2 * r2));
        t[p + "3.bias"] = ([r2], Values(rng, r2));
    }

    public static void AddProjector(Dictionary<string, (int[] Shape, float[] Data)> t, int h, int e, Random rng)
    {
        t["ctr_input_embedding_prj.0.weight"] = ([h, e], Values(rng, h * e));
        t["ctr_input_embedding_prj.0.bias"] = ([h], Values(rng, h));
        t["ctr_input_embedding_prj.2.weight"] = ([h, h], Values(rng, h * h));
        t["ctr_input_embedding_prj.2.bias"] = ([h], Values(rng, h));
    }

    /// <summary>A PEFT-style adapter_config.json (as PEFT 0.13 writes it), with fields replaced or added by <paramref name="overrides"/>.</summary>
    public static string Config(int r, double alpha, JsonNode targets, params (string Key, JsonNode? Value)[] overrides)
    {
        var o = new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["base_model_name_or_path"] = "tiny",
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = alpha,
            ["lora_dropout"] = 0.05,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = r,
            ["rank_pattern"] = new JsonObject(),
            ["target_modules"] = targets,
            ["task_type"] = "CAUSAL_LM",
            ["use_dora"] = false,
            ["use_rslora"] = false,
        };
        foreach ((string key, JsonNode? value) in overrides) o[key] = value?.DeepClone();
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    public static JsonNode List(params string[] items) => new JsonArray(items.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray());

    public static string Write(string dir, string configJson, Dictionary<string, (int[] Shape, float[] Data)> tensors, string dtype = "F32")
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), configJson);
        Model.SafeTensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors, dtype);
        return dir;
    }

    /// <summary>The safetensors header of <paramref name="path"/>, parsed here without the library's reader.</summary>
    public static JsonObject Header(string path)
    {
        using var f = File.OpenRead(path);
        Span<byte> len = stackalloc byte[8];
        f.ReadExactly(len);
        var header = new byte[BinaryPrimitives.ReadUInt64LittleEndian(len)];
        f.ReadExactly(header);
        return JsonNode.Parse(Encoding.UTF8.GetString(header))!.AsObject();
    }
}

/// <summary><see cref="RellaxAdapter"/>: loading PEFT-named tensors, CFLoRA and SPA parts, and the Save/Load round trip.</summary>
[TestFixture]
public sealed class RellaxAdapterTests
{
    private string _tmp = "";

    [SetUp]
    public void SetUp()
    {
        _tmp = Path.Combine(Path.GetTempPath(), "rellax-adapter-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_tmp);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    private static Dictionary<string, (int[] Shape, float[] Data)> QvLora(int r, Random rng, bool withDefault = false)
    {
        var t = new Dictionary<string, (int[], float[])>();
        for (int layer = 0; layer < 2; layer++)
            foreach (string m in new[] { "q_proj", "v_proj" })
                AdapterKit.AddLora(t, layer, m, r, AdapterKit.TinyModules[m], rng, withDefault);
        return t;
    }

    [Test]
    public void Load_PlainPeftNames_TargetsHoldTheFileValuesInLayerModuleOrder()
    {
        var t = QvLora(4, new Random(1));
        string dir = AdapterKit.Write(Path.Combine(_tmp, "a"), AdapterKit.Config(4, 8, AdapterKit.List("v_proj", "q_proj")), t);

        RellaxAdapter a = RellaxAdapter.Load(dir, AdapterKit.Tiny);

        Assert.Multiple(() =>
        {
            Assert.That(a.Directory, Is.EqualTo(Path.GetFullPath(dir)));
            Assert.That(a.Config.Rank, Is.EqualTo(4));
            Assert.That(a.Config.Alpha, Is.EqualTo(8.0));
            Assert.That(a.Config.UseRsLora, Is.False);
            Assert.That(a.Config.Scale, Is.EqualTo(2f));
            Assert.That(a.Config.TargetModules, Is.EquivalentTo(new[] { LlamaModule.QProj, LlamaModule.VProj }));
            Assert.That(a.Config.BaseModelName, Is.EqualTo("tiny"));
            Assert.That(a.Config.InstanceDim, Is.Null);
            Assert.That(a.Config.CrmEmbedDim, Is.Null);
            Assert.That(a.Config.HistToken, Is.EqualTo("[hist]"));
            Assert.That(a.Config.TargetToken, Is.EqualTo("[target]"));
            Assert.That(a.HasGenerators, Is.False);
            Assert.That(a.Projector, Is.Null);
            Assert.That(a.Targets.Select(x => (x.Layer, x.Module)), Is.EqualTo(new[]
            {
                (0, LlamaModule.QProj), (0, LlamaModule.VProj), (1, LlamaModule.QProj), (1, LlamaModule.VProj),
            }));
        });
        foreach (LoraTarget x in a.Targets)
        {
            string m = x.Module == LlamaModule.QProj ? "q_proj" : "v_proj";
            string p = AdapterKit.Prefix(x.Layer, m, "self_attn");
            Assert.Multiple(() =>
            {
                Assert.That((x.OutFeatures, x.InFeatures), Is.EqualTo((AdapterKit.TinyModules[m].Out, AdapterKit.TinyModules[m].In)), p);
                Assert.That(x.A, Is.EqualTo(t[p + "lora_A.weight"].Data), p);
                Assert.That(x.B, Is.EqualTo(t[p + "lora_B.weight"].Data), p);
                Assert.That(x.Generator, Is.Null);
            });
        }
    }

    [TestCase("F32")]
    [TestCase("F16")]
    [TestCase("BF16")]
    public void Load_DefaultNamesInAnyFloatDType_SameValuesAsPlainF32(string dtype)
    {
        var plain = QvLora(3, new Random(2));
        var withDefault = plain.ToDictionary(kv => kv.Key.Replace(".weight", ".default.weight"), kv => kv.Value);
        Assert.That(withDefault.Keys, Has.All.Contain(".default.weight"));
        string config = AdapterKit.Config(3, 6, AdapterKit.List("q_proj", "v_proj"));

        RellaxAdapter a = RellaxAdapter.Load(AdapterKit.Write(Path.Combine(_tmp, "plain"), config, plain), AdapterKit.Tiny);
        RellaxAdapter b = RellaxAdapter.Load(AdapterKit.Write(Path.Combine(_tmp, "default"), config, withDefault, dtype), AdapterKit.Tiny);

        Assert.That(b.Targets, Has.Count.EqualTo(a.Targets.Count));
        for (int i = 0; i < a.Targets.Count; i++)
        {
            Assert.That((b.Targets[i].Layer, b.Targets[i].Module), Is.EqualTo((a.Targets[i].Layer, a.Targets[i].Module)));
            Assert.That(b.Targets[i].A, Is.EqualTo(a.Targets[i].A));
            Assert.That(b.Targets[i].B, Is.EqualTo(a.Targets[i].B));
        }
    }

    [Test]
    public void Load_RsLora_ScaleIsAlphaOverSqrtR()
    {
        var t = QvLora(4, new Random(3));
        RellaxAdapter rs = RellaxAdapter.Load(AdapterKit.Write(Path.Combine(_tmp, "rs"),
            AdapterKit.Config(4, 8, AdapterKit.List("q_proj", "v_proj"), ("use_rslora", true)), t), AdapterKit.Tiny);
        RellaxAdapter plain = RellaxAdapter.Load(AdapterKit.Write(Path.Combine(_tmp, "plain"),
            AdapterKit.Config(4, 8, AdapterKit.List("q_proj", "v_proj")), t), AdapterKit.Tiny);
        Assert.Multiple(() =>
        {
            Assert.That(rs.Config.UseRsLora, Is.True);
            Assert.That(rs.Config.Scale, Is.EqualTo(4f)); // 8 / sqrt(4)
            Assert.That(plain.Config.Scale, Is.EqualTo(2f)); // 8 / 4
        });
    }

    [Test]
    public void Load_AllLinear_AdaptsAllSevenModulesOfEveryLayer()
    {
        var rng = new Random(4);
        var t = new Dictionary<string, (int[], float[])>();
        for (int layer = 0; layer < 2; layer++)
            foreach ((string m, var d) in AdapterKit.TinyModules)
                AdapterKit.AddLora(t, layer, m, 2, d, rng);
        RellaxAdapter a = RellaxAdapter.Load(AdapterKit.Write(_tmp, AdapterKit.Config(2, 4, JsonValue.Create("all-linear")), t), AdapterKit.Tiny);

        Assert.That(a.Config.TargetModules, Is.EquivalentTo(Enum.GetValues<LlamaModule>()));
        Assert.That(a.Targets, Has.Count.EqualTo(14));
        var names = new Dictionary<LlamaModule, string>
        {
            [LlamaModule.QProj] = "q_proj", [LlamaModule.KProj] = "k_proj", [LlamaModule.VProj] = "v_proj", [LlamaModule.OProj] = "o_proj",
            [LlamaModule.GateProj] = "gate_proj", [LlamaModule.UpProj] = "up_proj", [LlamaModule.DownProj] = "down_proj",
        };
        foreach (LoraTarget x in a.Targets)
        {
            var d = AdapterKit.TinyModules[names[x.Module]];
            string p = AdapterKit.Prefix(x.Layer, names[x.Module], d.Section);
            Assert.That((x.OutFeatures, x.InFeatures), Is.EqualTo((d.Out, d.In)), p);
            Assert.That(x.A, Is.EqualTo(t[p + "lora_A.weight"].Item2), p);
            Assert.That(x.B, Is.EqualTo(t[p + "lora_B.weight"].Item2), p);
        }
    }

    [Test]
    public void Load_Stories260KConfig_CfloraOnQvAndSpaProjector()
    {
        LlamaConfig model = LlamaConfig.Load(ModelPaths.Stories260KOrIgnore());
        const int R = 4, Dh = 12, E = 8;
        var rng = new Random(5);
        var t = new Dictionary<string, (int[], float[])>();
        for (int layer = 0; layer < model.NumHiddenLayers; layer++)
            foreach (string m in new[] { "q_proj", "v_proj" })
            {
                var d = AdapterKit.Dims(model, m);
                AdapterKit.AddLora(t, layer, m, R, d, rng);
                AdapterKit.AddGate(t, layer, m, d.Section, R, Dh, rng);
            }
        AdapterKit.AddProjector(t, model.HiddenSize, E, rng);
        string config = AdapterKit.Config(R, 16, AdapterKit.List("q_proj", "v_proj"),
            ("rellax", new JsonObject { ["instance_dim"] = Dh, ["crm_embed_dim"] = E, ["hist_token"] = "<h>", ["target_token"] = "<t>" }));

        RellaxAdapter a = RellaxAdapter.Load(AdapterKit.Write(_tmp, config, t), model);

        Assert.Multiple(() =>
        {
            Assert.That(a.HasGenerators, Is.True);
            Assert.That(a.Config.InstanceDim, Is.EqualTo(Dh));
            Assert.That(a.Config.CrmEmbedDim, Is.EqualTo(E));
            Assert.That(a.Config.HistToken, Is.EqualTo("<h>"));
            Assert.That(a.Config.TargetToken, Is.EqualTo("<t>"));
            Assert.That(a.Targets, Has.Count.EqualTo(2 * model.NumHiddenLayers));
            Assert.That(a.Projector, Is.Not.Null);
        });
        Assert.Multiple(() =>
        {
            Assert.That(a.Projector!.W1, Is.EqualTo(t["ctr_input_embedding_prj.0.weight"].Item2));
            Assert.That(a.Projector.B1, Is.EqualTo(t["ctr_input_embedding_prj.0.bias"].Item2));
            Assert.That(a.Projector.W2, Is.EqualTo(t["ctr_input_embedding_prj.2.weight"].Item2));
            Assert.That(a.Projector.B2, Is.EqualTo(t["ctr_input_embedding_prj.2.bias"].Item2));
        });
        foreach (LoraTarget x in a.Targets)
        {
            string m = x.Module == LlamaModule.QProj ? "q_proj" : "v_proj";
            string p = AdapterKit.Prefix(x.Layer, m, "self_attn") + "lora_gate.";
            CfloraGeneratorWeights g = x.Generator!;
            Assert.Multiple(() =>
            {
                Assert.That(g.LnWeight, Is.EqualTo(t[p + "0.weight"].Item2), p);
                Assert.That(g.LnBias, Is.EqualTo(t[p + "0.bias"].Item2), p);
                Assert.That(g.W1, Is.EqualTo(t[p + "1.weight"].Item2), p);
                Assert.That(g.B1, Is.EqualTo(t[p + "1.bias"].Item2), p);
                Assert.That(g.W2, Is.EqualTo(t[p + "3.weight"].Item2), p);
                Assert.That(g.B2, Is.EqualTo(t[p + "3.bias"].Item2), p);
            });
        }
    }

    [Test]
    public void Load_ReferenceCodeGeneratorNamesWithLMPrefix_Accepted()
    {
        // ReLLaModel.state_dict() in the reference code names generators 'LM.base_model.model.model.layers.{i}.self_attn.{m}.lora_gate.*'.
        var rng = new Random(6);
        var t = QvLora(2, rng);
        for (int layer = 0; layer < 2; layer++)
            foreach (string m in new[] { "q_proj", "v_proj" })
                AdapterKit.AddGate(t, layer, m, "self_attn", 2, 5, rng, namePrefix: "LM.");
        string config = AdapterKit.Config(2, 4, AdapterKit.List("q_proj", "v_proj"), ("rellax", new JsonObject { ["instance_dim"] = 5 }));
        RellaxAdapter a = RellaxAdapter.Load(AdapterKit.Write(_tmp, config, t), AdapterKit.Tiny);
        Assert.That(a.HasGenerators, Is.True);
        Assert.That(a.Targets[3].Generator!.W2, Is.EqualTo(t["LM." + AdapterKit.Prefix(1, "v_proj", "self_attn") + "lora_gate.3.weight"].Item2));
    }

    [TestCase("[1]")]
    [TestCase("1")]
    public void Load_LayersToTransform_OnlyThoseLayersAreAdapted(string layers)
    {
        var rng = new Random(7);
        var t = new Dictionary<string, (int[], float[])>();
        AdapterKit.AddLora(t, 1, "o_proj", 2, AdapterKit.TinyModules["o_proj"], rng);
        string config = AdapterKit.Config(2, 4, AdapterKit.List("o_proj"), ("layers_to_transform", JsonNode.Parse(layers)), ("layers_pattern", "layers"));
        RellaxAdapter a = RellaxAdapter.Load(AdapterKit.Write(_tmp, config, t), AdapterKit.Tiny);
        Assert.That(a.Config.LayersToTransform, Is.EqualTo(new[] { 1 }));
        Assert.That(a.Targets.Select(x => (x.Layer, x.Module)), Is.EqualTo(new[] { (1, LlamaModule.OProj) }));
    }

    [Test]
    public void Load_SpaOnlyAdapter_NoTargetsAndAProjector()
    {
        var t = new Dictionary<string, (int[], float[])>();
        AdapterKit.AddProjector(t, 16, 3, new Random(8));
        string config = AdapterKit.Config(8, 16, AdapterKit.List(), ("rellax", new JsonObject { ["crm_embed_dim"] = 3 }));
        RellaxAdapter a = RellaxAdapter.Load(AdapterKit.Write(_tmp, config, t), AdapterKit.Tiny);
        Assert.That(a.Targets, Is.Empty);
        Assert.That(a.HasGenerators, Is.False);
        Assert.That(a.Projector!.W1, Is.EqualTo(t["ctr_input_embedding_prj.0.weight"].Item2));
    }

    /// <summary>A CFLoRA + SPA adapter built in memory for <see cref="AdapterKit.Tiny"/>: generators on every target of up_proj and
    /// down_proj in layer 1 only (layers_to_transform), rsLoRA, custom markers.</summary>
    private static RellaxAdapter InMemory(out AdapterConfig config, out LoraTarget[] targets, out SpaProjectorWeights projector)
    {
        var rng = new Random(9);
        const int R = 3, Dh = 7, E = 5;
        config = new AdapterConfig
        {
            Rank = R,
            Alpha = 5.5,
            UseRsLora = true,
            TargetModules = [LlamaModule.UpProj, LlamaModule.DownProj],
            LayersToTransform = [1],
            InstanceDim = Dh,
            CrmEmbedDim = E,
            HistToken = "[H]",
            TargetToken = "[T]",
            BaseModelName = "tiny-base",
        };
        CfloraGeneratorWeights Gen() => new(AdapterKit.Values(rng, Dh), AdapterKit.Values(rng, Dh), AdapterKit.Values(rng, 2 * R * R * Dh),
            AdapterKit.Values(rng, 2 * R * R), AdapterKit.Values(rng, 2 * R * R * R * R), AdapterKit.Values(rng, R * R));
        targets =
        [
            new LoraTarget(1, LlamaModule.DownProj, 28, 16, AdapterKit.Values(rng, R * 28), AdapterKit.Values(rng, 16 * R), Gen()),
            new LoraTarget(1, LlamaModule.UpProj, 16, 28, AdapterKit.Values(rng, R * 16), AdapterKit.Values(rng, 28 * R), Gen()),
        ];
        projector = new SpaProjectorWeights(AdapterKit.Values(rng, 16 * E), AdapterKit.Values(rng, 16), AdapterKit.Values(rng, 16 * 16), AdapterKit.Values(rng, 16));
        return RellaxAdapter.Create(config, targets, projector, AdapterKit.Tiny, "in-memory test");
    }

    [Test]
    public void Create_OrdersTargetsAndCopiesTheArrays()
    {
        RellaxAdapter a = InMemory(out _, out LoraTarget[] targets, out SpaProjectorWeights projector);
        float a0 = targets[1].A[0], w0 = projector.W1[0];
        targets[1].A[0] = 99f;
        projector.W1[0] = 99f;
        Assert.Multiple(() =>
        {
            Assert.That(a.Directory, Is.EqualTo("in-memory test"));
            Assert.That(a.Targets.Select(x => x.Module), Is.EqualTo(new[] { LlamaModule.UpProj, LlamaModule.DownProj }));
            Assert.That(a.Targets[0].A[0], Is.EqualTo(a0));
            Assert.That(a.Projector!.W1[0], Is.EqualTo(w0));
        });
    }

    [Test]
    public void SaveThenLoad_RoundTripsExactly_F32PlainNamesAndNoTemporaryFiles()
    {
        RellaxAdapter a = InMemory(out _, out _, out _);
        string dir = Path.Combine(_tmp, "saved", "nested");
        a.Save(dir);
        a.Save(dir); // overwriting is fine

        RellaxAdapter b = RellaxAdapter.Load(dir, AdapterKit.Tiny);

        Assert.Multiple(() =>
        {
            Assert.That(Directory.GetFiles(dir).Select(Path.GetFileName), Is.EquivalentTo(new[] { "adapter_config.json", "adapter_model.safetensors" }));
            Assert.That(b.Config.Rank, Is.EqualTo(a.Config.Rank));
            Assert.That(b.Config.Alpha, Is.EqualTo(a.Config.Alpha));
            Assert.That(b.Config.UseRsLora, Is.EqualTo(a.Config.UseRsLora));
            Assert.That(b.Config.Scale, Is.EqualTo(a.Config.Scale));
            Assert.That(b.Config.TargetModules, Is.EqualTo(a.Config.TargetModules));
            Assert.That(b.Config.LayersToTransform, Is.EqualTo(a.Config.LayersToTransform));
            Assert.That(b.Config.InstanceDim, Is.EqualTo(a.Config.InstanceDim));
            Assert.That(b.Config.CrmEmbedDim, Is.EqualTo(a.Config.CrmEmbedDim));
            Assert.That(b.Config.HistToken, Is.EqualTo(a.Config.HistToken));
            Assert.That(b.Config.TargetToken, Is.EqualTo(a.Config.TargetToken));
            Assert.That(b.Config.BaseModelName, Is.EqualTo(a.Config.BaseModelName));
            Assert.That(b.Targets, Has.Count.EqualTo(a.Targets.Count));
            Assert.That(b.Projector!.W1, Is.EqualTo(a.Projector!.W1));
            Assert.That(b.Projector.B1, Is.EqualTo(a.Projector.B1));
            Assert.That(b.Projector.W2, Is.EqualTo(a.Projector.W2));
            Assert.That(b.Projector.B2, Is.EqualTo(a.Projector.B2));
        });
        for (int i = 0; i < a.Targets.Count; i++)
        {
            LoraTarget x = a.Targets[i], y = b.Targets[i];
            Assert.Multiple(() =>
            {
                Assert.That((y.Layer, y.Module, y.InFeatures, y.OutFeatures), Is.EqualTo((x.Layer, x.Module, x.InFeatures, x.OutFeatures)));
                Assert.That(y.A, Is.EqualTo(x.A));
                Assert.That(y.B, Is.EqualTo(x.B));
                Assert.That(y.Generator!.LnWeight, Is.EqualTo(x.Generator!.LnWeight));
                Assert.That(y.Generator.LnBias, Is.EqualTo(x.Generator.LnBias));
                Assert.That(y.Generator.W1, Is.EqualTo(x.Generator.W1));
                Assert.That(y.Generator.B1, Is.EqualTo(x.Generator.B1));
                Assert.That(y.Generator.W2, Is.EqualTo(x.Generator.W2));
                Assert.That(y.Generator.B2, Is.EqualTo(x.Generator.B2));
            });
        }

        // The file itself: PEFT names without '.default', all F32, PEFT shapes; the config is PEFT-readable JSON.
        JsonObject header = AdapterKit.Header(Path.Combine(dir, "adapter_model.safetensors"));
        var tensors = header.Where(kv => kv.Key != "__metadata__").ToDictionary(kv => kv.Key, kv => kv.Value!.AsObject());
        Assert.Multiple(() =>
        {
            Assert.That(tensors.Keys, Has.None.Contain(".default"));
            Assert.That(tensors.Values.Select(v => (string)v["dtype"]!), Has.All.EqualTo("F32"));
            Assert.That(tensors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]["shape"]!.AsArray().Select(n => (int)n!), Is.EqualTo(new[] { 3, 28 }));
            Assert.That(tensors["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"]["shape"]!.AsArray().Select(n => (int)n!), Is.EqualTo(new[] { 28, 3 }));
            Assert.That(tensors["base_model.model.model.layers.1.mlp.up_proj.lora_gate.1.weight"]["shape"]!.AsArray().Select(n => (int)n!), Is.EqualTo(new[] { 18, 7 }));
            Assert.That(tensors["ctr_input_embedding_prj.0.weight"]["shape"]!.AsArray().Select(n => (int)n!), Is.EqualTo(new[] { 16, 5 }));
            Assert.That(tensors, Has.Count.EqualTo(2 * (2 + 6) + 4));
        });
        using JsonDocument cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
        Assert.Multiple(() =>
        {
            Assert.That(cfg.RootElement.GetProperty("peft_type").GetString(), Is.EqualTo("LORA"));
            Assert.That(cfg.RootElement.GetProperty("r").GetInt32(), Is.EqualTo(3));
            Assert.That(cfg.RootElement.GetProperty("lora_alpha").GetDouble(), Is.EqualTo(5.5));
            Assert.That(cfg.RootElement.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()), Is.EqualTo(new[] { "up_proj", "down_proj" }));
            Assert.That(cfg.RootElement.GetProperty("rellax").GetProperty("instance_dim").GetInt32(), Is.EqualTo(7));
        });
    }

    [Test]
    public void Save_WhenTheWeightsCannotBeWritten_LeavesNoTemporaryOrConfigFile()
    {
        RellaxAdapter a = InMemory(out _, out _, out _);
        string dir = Path.Combine(_tmp, "blocked");
        Directory.CreateDirectory(Path.Combine(dir, "adapter_model.safetensors")); // a directory where the file should go
        Assert.Catch(() => a.Save(dir));
        Assert.That(Directory.GetFileSystemEntries(dir).Select(Path.GetFileName), Is.EqualTo(new[] { "adapter_model.safetensors" }));
        Assert.That(Directory.Exists(Path.Combine(dir, "adapter_model.safetensors")), Is.True);
    }

    [Test]
    public void LoadSaveLoad_OfAFileWithDefaultNamesAndF16_IsExact()
    {
        var t = QvLora(2, new Random(10), withDefault: true);
        string src = AdapterKit.Write(Path.Combine(_tmp, "src"), AdapterKit.Config(2, 3, AdapterKit.List("q_proj", "v_proj")), t, "F16");
        RellaxAdapter a = RellaxAdapter.Load(src, AdapterKit.Tiny);
        a.Save(Path.Combine(_tmp, "dst"));
        RellaxAdapter b = RellaxAdapter.Load(Path.Combine(_tmp, "dst"), AdapterKit.Tiny);
        for (int i = 0; i < a.Targets.Count; i++)
        {
            Assert.That(b.Targets[i].A, Is.EqualTo(a.Targets[i].A));
            Assert.That(b.Targets[i].B, Is.EqualTo(a.Targets[i].B));
        }
        Assert.That(b.Config.Alpha, Is.EqualTo(3.0));
    }
}
