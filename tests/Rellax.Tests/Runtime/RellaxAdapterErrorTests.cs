using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>
/// <see cref="RellaxAdapter.Load(string, LlamaConfig)"/> and <see cref="RellaxAdapter.Create"/> refuse bad adapters with messages that name the
/// file, the tensor or field, and the expected against the actual shape.
/// </summary>
[TestFixture]
public sealed class RellaxAdapterErrorTests
{
    private const int R = 4, Dh = 6, E = 3;
    private string _tmp = "";

    [SetUp]
    public void SetUp()
    {
        _tmp = Path.Combine(Path.GetTempPath(), "rellax-adapter-err-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_tmp);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    private static string Q(int layer) => AdapterKit.Prefix(layer, "q_proj", "self_attn");
    private static string V(int layer) => AdapterKit.Prefix(layer, "v_proj", "self_attn");

    /// <summary>A valid LoRA on q/v of both layers, optionally with generators and a projector.</summary>
    private static Dictionary<string, (int[] Shape, float[] Data)> Good(bool generators = false, bool projector = false)
    {
        var rng = new Random(11);
        var t = new Dictionary<string, (int[], float[])>();
        for (int layer = 0; layer < 2; layer++)
            foreach (string m in new[] { "q_proj", "v_proj" })
            {
                AdapterKit.AddLora(t, layer, m, R, AdapterKit.TinyModules[m], rng);
                if (generators) AdapterKit.AddGate(t, layer, m, "self_attn", R, Dh, rng);
            }
        if (projector) AdapterKit.AddProjector(t, 16, E, rng);
        return t;
    }

    private static JsonObject RellaxObject(int? dh = Dh, int? e = E)
    {
        var o = new JsonObject();
        if (dh is int d) o["instance_dim"] = d;
        if (e is int x) o["crm_embed_dim"] = x;
        return o;
    }

    private string GoodConfig(params (string, JsonNode?)[] overrides) => AdapterKit.Config(R, 8, AdapterKit.List("q_proj", "v_proj"), overrides);

    private string Dir(string config, Dictionary<string, (int[] Shape, float[] Data)> t) => AdapterKit.Write(_tmp, config, t);

    private string WeightsPath => Path.Combine(_tmp, "adapter_model.safetensors");

    private InvalidDataException LoadFails(string config, Dictionary<string, (int[] Shape, float[] Data)> t)
    {
        string dir = Dir(config, t);
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, AdapterKit.Tiny))!;
        TestContext.Out.WriteLine(ex.Message);
        return ex;
    }

    [Test]
    public void UnknownTensorName_NamesTheTensorAndTheFile()
    {
        var t = Good();
        t["base_model.model.lm_head.weight"] = ([32, 16], new float[32 * 16]);
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain("'base_model.model.lm_head.weight'").And.Contain(WeightsPath).And.Contain("unknown"));
    }

    [TestCase("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight")] // wrong section for the module
    [TestCase("base_model.model.model.layers.0.self_attn.q_proj.lora_gate.2.weight")] // GELU has no parameters
    [TestCase("base_model.model.ctr_input_embedding_prj.0.weight")] // the reference code keeps the projector at the top level
    [TestCase("base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.bias")]
    public void MalformedPeftNames_AreUnknown(string name)
    {
        var t = Good();
        t[name] = ([4], new float[4]);
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain($"'{name}'").And.Contain("unknown"));
    }

    [Test]
    public void SameTensorWithAndWithoutDefault_Refused()
    {
        var t = Good();
        t[Q(0) + "lora_A.default.weight"] = t[Q(0) + "lora_A.weight"];
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain(Q(0) + "lora_A.default.weight").And.Contain(Q(0) + "lora_A.weight'"));
    }

    [Test]
    public void AWithoutB_NamesBoth()
    {
        var t = Good();
        t.Remove(V(1) + "lora_B.weight");
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain($"'{V(1)}lora_A.weight' has no matching '{V(1)}lora_B.weight'").And.Contain(WeightsPath));
    }

    [Test]
    public void BWithoutA_NamesBoth()
    {
        var t = Good();
        t.Remove(Q(0) + "lora_A.weight");
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain($"'{Q(0)}lora_B.weight' has no matching '{Q(0)}lora_A.weight'"));
    }

    [Test]
    public void AWithTheWrongRank_NamesTensorAndBothShapes()
    {
        var t = Good();
        t[Q(1) + "lora_A.weight"] = ([5, 16], new float[80]);
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain($"'{Q(1)}lora_A.weight' has shape [5, 16]; expected [4, 16]").And.Contain("r = 4"));
    }

    [Test]
    public void KvProjectionShapedLikeQ_RefusedWithTheGqaShape()
    {
        // v_proj's d_out is num_key_value_heads·head_dim = 10, not q's 20.
        var t = Good();
        t[V(0) + "lora_B.weight"] = ([20, R], new float[20 * R]);
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain($"'{V(0)}lora_B.weight' has shape [20, 4]; expected [10, 4]").And.Contain("num_key_value_heads·head_dim 1·10"));
    }

    [Test]
    public void DownProjWithHiddenInsteadOfIntermediateInput_Refused()
    {
        var rng = new Random(12);
        var t = new Dictionary<string, (int[], float[])>();
        for (int layer = 0; layer < 2; layer++) AdapterKit.AddLora(t, layer, "down_proj", 2, AdapterKit.TinyModules["down_proj"], rng);
        string p = AdapterKit.Prefix(1, "down_proj", "mlp");
        t[p + "lora_A.weight"] = ([2, 16], new float[32]);
        var ex = LoadFails(AdapterKit.Config(2, 4, AdapterKit.List("down_proj")), t);
        Assert.That(ex.Message, Does.Contain($"'{p}lora_A.weight' has shape [2, 16]; expected [2, 28]").And.Contain("intermediate_size 28"));
    }

    [Test]
    public void OneDimensionalLoraFactor_Refused()
    {
        var t = Good();
        t[Q(0) + "lora_A.weight"] = ([4 * 16], new float[64]);
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain($"'{Q(0)}lora_A.weight' has shape [64]; expected [4, 16]"));
    }

    [Test]
    public void LayerIndexBeyondTheBaseModel_NamesTheLayerCount()
    {
        var t = Good();
        AdapterKit.AddLora(t, 2, "q_proj", R, AdapterKit.TinyModules["q_proj"], new Random(13));
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain($"'{Q(2)}lora_A.weight' is for layer 2").And.Contain("num_hidden_layers = 2"));
    }

    [Test]
    public void ListedTargetWithNoTensorsAtAll_Refused()
    {
        var t = Good();
        foreach (string k in t.Keys.Where(k => k.Contains("v_proj")).ToArray()) t.Remove(k);
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain("target_modules lists v_proj, but it has no tensors at all").And.Contain(V(0) + "lora_A.weight"));
    }

    [Test]
    public void ListedTargetMissingInOneLayer_NamesTheLayer()
    {
        var t = Good();
        t.Remove(Q(1) + "lora_A.weight");
        t.Remove(Q(1) + "lora_B.weight");
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain("q_proj, but it is missing in layer(s) 1").And.Contain(Q(1) + "lora_A.weight"));
    }

    [Test]
    public void TensorForAModuleNotInTargetModules_Refused()
    {
        var t = Good();
        AdapterKit.AddLora(t, 0, "k_proj", R, AdapterKit.TinyModules["k_proj"], new Random(14));
        var ex = LoadFails(GoodConfig(), t);
        Assert.That(ex.Message, Does.Contain(AdapterKit.Prefix(0, "k_proj", "self_attn") + "lora_A.weight").And.Contain("target_modules").And.Contain("k_proj"));
    }

    [Test]
    public void TensorOutsideLayersToTransform_Refused()
    {
        var t = Good();
        var ex = LoadFails(GoodConfig(("layers_to_transform", new JsonArray(0))), t);
        Assert.That(ex.Message, Does.Contain(Q(1)).And.Contain("layers_to_transform"));
    }

    [Test]
    public void GeneratorsOnSomeTargetsOnly_NamesOneWithAndOneWithout()
    {
        var t = Good(generators: true);
        foreach (string k in t.Keys.Where(k => k.StartsWith(V(1) + "lora_gate", StringComparison.Ordinal)).ToArray()) t.Remove(k);
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(e: null))), t);
        Assert.That(ex.Message, Does.Contain("every LoRA target or on none").And.Contain("layer 1 v_proj has none").And.Contain(V(1) + "lora_gate.1.weight"));
    }

    [Test]
    public void IncompleteGenerator_NamesTheMissingPart()
    {
        var t = Good(generators: true);
        t.Remove(Q(0) + "lora_gate.3.bias");
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(e: null))), t);
        Assert.That(ex.Message, Does.Contain($"no matching '{Q(0)}lora_gate.3.bias'"));
    }

    [Test]
    public void GeneratorWithoutInstanceDim_SaysWhichValueTheTensorsImply()
    {
        var ex = LoadFails(GoodConfig(), Good(generators: true));
        Assert.That(ex.Message, Does.Contain("rellax.instance_dim").And.Contain("implies d_h = 6").And.Contain("adapter_config.json").And.Contain("lora_gate.0"));
    }

    [Test]
    public void GeneratorWithAnotherInstanceDim_NamesTensorAndShapes()
    {
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(dh: 9, e: null))), Good(generators: true));
        Assert.That(ex.Message, Does.Contain($"'{Q(0)}lora_gate.0.weight' has shape [6]; expected [9]").And.Contain("instance_dim 9"));
    }

    [Test]
    public void GeneratorLinearWithTheWrongWidth_NamesTensorAndShapes()
    {
        var t = Good(generators: true);
        t[V(0) + "lora_gate.3.weight"] = ([16, 16], new float[256]);
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(e: null))), t);
        Assert.That(ex.Message, Does.Contain($"'{V(0)}lora_gate.3.weight' has shape [16, 16]; expected [16, 32]").And.Contain("[r², 2r²]"));
    }

    [Test]
    public void InstanceDimWithoutGenerators_Refused()
    {
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(e: null))), Good());
        Assert.That(ex.Message, Does.Contain("rellax.instance_dim = 6").And.Contain("no generator"));
    }

    [Test]
    public void ProjectorWithoutCrmEmbedDim_SaysWhichValueTheTensorImplies()
    {
        var ex = LoadFails(GoodConfig(), Good(projector: true));
        Assert.That(ex.Message, Does.Contain("ctr_input_embedding_prj.0.weight").And.Contain("rellax.crm_embed_dim").And.Contain("implies E = 3"));
    }

    [Test]
    public void ProjectorForAnotherHiddenSize_Refused()
    {
        var t = Good();
        AdapterKit.AddProjector(t, 32, E, new Random(15));
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(dh: null))), t);
        Assert.That(ex.Message, Does.Contain("'ctr_input_embedding_prj.0.weight' has shape [32, 3]").And.Contain("hidden_size 16").And.Contain("[16, E]"));
    }

    [Test]
    public void ProjectorSecondLayerMisShaped_NamesTensorAndShapes()
    {
        var t = Good(projector: true);
        t["ctr_input_embedding_prj.2.weight"] = ([16, 8], new float[128]);
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(dh: null))), t);
        Assert.That(ex.Message, Does.Contain("'ctr_input_embedding_prj.2.weight' has shape [16, 8]; expected [16, 16]"));
    }

    [Test]
    public void IncompleteProjector_NamesTheMissingPart()
    {
        var t = Good(projector: true);
        t.Remove("ctr_input_embedding_prj.2.bias");
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(dh: null))), t);
        Assert.That(ex.Message, Does.Contain("no matching 'ctr_input_embedding_prj.2.bias'"));
    }

    [Test]
    public void CrmEmbedDimWithoutProjector_Refused()
    {
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(dh: null))), Good());
        Assert.That(ex.Message, Does.Contain("rellax.crm_embed_dim = 3").And.Contain("no ctr_input_embedding_prj"));
    }

    [TestCase(float.NaN)]
    [TestCase(float.PositiveInfinity)]
    [TestCase(float.NegativeInfinity)]
    public void NonFiniteValue_NamesTheTensorAndElement(float bad)
    {
        var t = Good(generators: true);
        t[V(1) + "lora_gate.1.weight"].Data[7] = bad;
        var ex = LoadFails(GoodConfig(("rellax", RellaxObject(e: null))), t);
        Assert.That(ex.Message, Does.Contain($"'{V(1)}lora_gate.1.weight' holds 1 non-finite value(s) of 192").And.Contain("flat element 7"));
    }

    [Test]
    public void IntegerTensor_Refused()
    {
        string dir = Dir(GoodConfig(), Good());
        var writer = new Rellax.Runtime.SafeTensorsWriter();
        foreach ((string name, (int[] shape, float[] data)) in Good())
        {
            if (name == Q(0) + "lora_A.weight") writer.Add<int>(name, SafeTensorDType.I32, shape, new int[data.Length]);
            else writer.Add<float>(name, SafeTensorDType.F32, shape, data);
        }
        writer.Save(Path.Combine(dir, "adapter_model.safetensors"));
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain($"'{Q(0)}lora_A.weight' has dtype I32"));
    }

    [Test]
    public void CorruptSafetensors_InvalidDataNamingTheFile()
    {
        string dir = Dir(GoodConfig(), Good());
        File.WriteAllBytes(WeightsPath, [1, 2, 3, 4, 5]);
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain(WeightsPath).And.Contain("safetensors"));
    }

    [TestCase("adapter_model.bin")]
    [TestCase("adapter_model.pt")]
    [TestCase("adapter_model.pth")]
    [TestCase("adapter_model.ckpt")]
    public void PickleOnly_RefusedWithTheConversionCommand(string pickle)
    {
        File.WriteAllText(Path.Combine(_tmp, "adapter_config.json"), GoodConfig());
        File.WriteAllBytes(Path.Combine(_tmp, pickle), [0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e]); // a pickled empty dict
        var ex = Assert.Throws<FileNotFoundException>(() => RellaxAdapter.Load(_tmp, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("refused").And.Contain("never unpickled").And.Contain(
            $"python -c \"import torch, safetensors.torch as s; s.save_file(torch.load('{pickle}'), 'adapter_model.safetensors')\""));
    }

    [Test]
    public void MissingFiles_AndMissingDirectory()
    {
        var ex1 = Assert.Throws<FileNotFoundException>(() => RellaxAdapter.Load(_tmp, AdapterKit.Tiny))!;
        Assert.That(ex1.Message, Does.Contain("adapter_model.safetensors"));
        AdapterKit.Write(_tmp, GoodConfig(), Good());
        File.Delete(Path.Combine(_tmp, "adapter_config.json"));
        var ex2 = Assert.Throws<FileNotFoundException>(() => RellaxAdapter.Load(_tmp, AdapterKit.Tiny))!;
        Assert.That(ex2.Message, Does.Contain("adapter_config.json"));
        string gone = Path.Combine(_tmp, "nope");
        var ex3 = Assert.Throws<DirectoryNotFoundException>(() => RellaxAdapter.Load(gone, AdapterKit.Tiny))!;
        Assert.That(ex3.Message, Does.Contain(gone));
    }

    private static readonly object[] UnsupportedConfigs =
    [
        new object[] { "peft_type", JsonValue.Create("IA3"), "'IA3' is not supported" },
        new object[] { "fan_in_fan_out", JsonValue.Create(true), "fan_in_fan_out" },
        new object[] { "bias", JsonValue.Create("lora_only"), "'lora_only' is not supported" },
        new object[] { "modules_to_save", new JsonArray("lm_head"), "modules_to_save" },
        new object[] { "rank_pattern", new JsonObject { ["q_proj"] = 8 }, "rank_pattern" },
        new object[] { "alpha_pattern", new JsonObject { ["q_proj"] = 8 }, "alpha_pattern" },
        new object[] { "use_dora", JsonValue.Create(true), "use_dora" },
        new object[] { "lora_bias", JsonValue.Create(true), "lora_bias" },
        new object[] { "layer_replication", new JsonArray(new JsonArray(0, 1)), "layer_replication" },
        new object[] { "target_modules", JsonValue.Create(".*q_proj"), "regular expression" },
        new object[] { "target_modules", new JsonArray("q_proj", "embed_tokens"), "'embed_tokens' is not a module" },
        new object[] { "layers_pattern", JsonValue.Create("h"), "layers_pattern" },
        new object[] { "alora_invocation_tokens", new JsonArray(5, 6), "plain LoRA" },
    ];

    [TestCaseSource(nameof(UnsupportedConfigs))]
    public void UnsupportedPeftFeature_NotSupportedNamingTheField(string field, JsonNode value, string expected)
    {
        var overrides = new List<(string, JsonNode?)> { (field, value) };
        if (field == "layers_pattern") overrides.Add(("layers_to_transform", new JsonArray(0, 1)));
        string dir = Dir(GoodConfig(overrides.ToArray()), Good());
        var ex = Assert.Throws<NotSupportedException>(() => RellaxAdapter.Load(dir, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain($"field '{field}'").And.Contain(expected).And.Contain("adapter_config.json"));
    }

    private static readonly object[] InvalidConfigs =
    [
        new object?[] { "r", null, "field 'r': required field is missing" },
        new object[] { "r", JsonValue.Create(0), "field 'r': must be at least 1" },
        new object[] { "r", JsonValue.Create("eight"), "field 'r': must be an integer" },
        new object?[] { "lora_alpha", null, "field 'lora_alpha': required" },
        new object?[] { "peft_type", null, "field 'peft_type': required" },
        new object?[] { "target_modules", null, "field 'target_modules': required" },
        new object[] { "layers_to_transform", new JsonArray(0, 5), "num_hidden_layers = 2" },
        new object[] { "rellax", new JsonObject { ["instance_dim"] = 0 }, "field 'rellax.instance_dim'" },
        new object[] { "rellax", new JsonObject { ["hist_token"] = "[x]", ["target_token"] = "[x]" }, "field 'rellax.target_token'" },
    ];

    [TestCaseSource(nameof(InvalidConfigs))]
    public void InvalidConfigField_InvalidDataNamingTheField(string field, JsonNode? value, string expected)
    {
        string dir = Dir(GoodConfig((field, value)), Good());
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain(expected).And.Contain(Path.Combine(_tmp, "adapter_config.json")));
    }

    [Test]
    public void MalformedConfigJson_InvalidData()
    {
        string dir = Dir("{\"peft_type\": \"LORA\", \"r\": ", Good());
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("not valid JSON").And.Contain("adapter_config.json"));
    }

    // ----- Create: the same checks on in-memory tensors, as ArgumentException -----

    private static AdapterConfig QvConfig => new() { Rank = 2, Alpha = 4, TargetModules = [LlamaModule.QProj] };

    private static LoraTarget[] QTargets(Random rng) =>
    [
        new LoraTarget(0, LlamaModule.QProj, 16, 20, AdapterKit.Values(rng, 2 * 16), AdapterKit.Values(rng, 20 * 2), null),
        new LoraTarget(1, LlamaModule.QProj, 16, 20, AdapterKit.Values(rng, 2 * 16), AdapterKit.Values(rng, 20 * 2), null),
    ];

    [Test]
    public void Create_Valid_Succeeds()
    {
        RellaxAdapter a = RellaxAdapter.Create(QvConfig, QTargets(new Random(16)), null, AdapterKit.Tiny);
        Assert.That(a.Targets, Has.Count.EqualTo(2));
    }

    [Test]
    public void Create_AWithTheWrongLength_NamesTargetAndExpectedLength()
    {
        var t = QTargets(new Random(17));
        t[1] = t[1] with { A = new float[33] };
        var ex = Assert.Throws<ArgumentException>(() => RellaxAdapter.Create(QvConfig, t, null, AdapterKit.Tiny, "mine"))!;
        Assert.That(ex.Message, Does.Contain("Adapter 'mine'").And.Contain("target layer 1 q_proj: A").And.Contain("33 elements; expected r·d_in = 2·16 = 32"));
    }

    [Test]
    public void Create_FeaturesThatDisagreeWithTheBaseModel_Refused()
    {
        var t = QTargets(new Random(18));
        t[0] = t[0] with { InFeatures = 20, OutFeatures = 16 };
        var ex = Assert.Throws<ArgumentException>(() => RellaxAdapter.Create(QvConfig, t, null, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("target layer 0 q_proj").And.Contain("[20, 16]"));
    }

    [Test]
    public void Create_DuplicateTarget_Refused()
    {
        var t = QTargets(new Random(19));
        t[1] = t[1] with { Layer = 0 };
        var ex = Assert.Throws<ArgumentException>(() => RellaxAdapter.Create(QvConfig, t, null, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("target layer 0 q_proj appears twice"));
    }

    [Test]
    public void Create_NaN_NamesTargetAndElement()
    {
        var t = QTargets(new Random(20));
        t[0].B[5] = float.NaN;
        var ex = Assert.Throws<ArgumentException>(() => RellaxAdapter.Create(QvConfig, t, null, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("target layer 0 q_proj: B").And.Contain("non-finite").And.Contain("element 5"));
    }

    [Test]
    public void Create_GeneratorWithoutInstanceDim_Refused()
    {
        var rng = new Random(21);
        var gen = new CfloraGeneratorWeights(new float[5], new float[5], new float[8 * 5], new float[8], new float[4 * 8], new float[4]);
        var t = QTargets(rng).Select(x => x with { Generator = gen }).ToArray();
        var ex = Assert.Throws<ArgumentException>(() => RellaxAdapter.Create(QvConfig, t, null, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("rellax.instance_dim"));
        RellaxAdapter ok = RellaxAdapter.Create(QvConfig with { InstanceDim = 5 }, t, null, AdapterKit.Tiny);
        Assert.That(ok.HasGenerators, Is.True);
    }

    [Test]
    public void Create_NothingAtAll_Refused()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            RellaxAdapter.Create(QvConfig with { TargetModules = [] }, [], null, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("no LoRA targets and no SPA projector"));
    }

    [Test]
    public void Create_MissingLayer_Refused()
    {
        var ex = Assert.Throws<ArgumentException>(() => RellaxAdapter.Create(QvConfig, QTargets(new Random(22))[..1], null, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("q_proj, but it is missing in layer(s) 1"));
    }

    [Test]
    public void Create_ProjectorForAnotherHiddenSize_Refused()
    {
        var p = new SpaProjectorWeights(new float[32 * 3], new float[32], new float[32 * 32], new float[32]);
        var ex = Assert.Throws<ArgumentException>(() =>
            RellaxAdapter.Create(QvConfig with { CrmEmbedDim = 3 }, QTargets(new Random(23)), p, AdapterKit.Tiny))!;
        Assert.That(ex.Message, Does.Contain("projector W1").And.Contain("expected H·E = 16·3").And.Contain("hidden_size 16"));
    }
}
