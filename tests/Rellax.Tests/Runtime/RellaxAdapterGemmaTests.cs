using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>
/// A real PEFT adapter, <c>shared/data/lora/gemma-2b-text-to-sql</c> (read in place, never copied: it carries no licence).
/// Gemma's weights are not available, so the base model is a <see cref="LlamaConfig"/> with gemma-2b's dimensions. The
/// expectations come from the adapter's own files, read here without the code under test.
/// </summary>
[TestFixture]
public sealed class RellaxAdapterGemmaTests
{
    private const string AdapterDir = "lora/gemma-2b-text-to-sql";

    /// <summary>gemma-2b's dimensions (config.json of google/gemma-2b), as a Llama-architecture config.</summary>
    private static LlamaConfig Gemma2B(int hidden = 2048, int layers = 18) => LlamaConfig.Parse(
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":" + hidden + ",\"intermediate_size\":16384,\"num_hidden_layers\":" + layers
        + ",\"num_attention_heads\":8,\"num_key_value_heads\":1,\"head_dim\":256,\"vocab_size\":256000,\"rms_norm_eps\":1e-6,"
        + "\"max_position_embeddings\":8192,\"rope_theta\":10000.0}", $"gemma-2b dims (hidden {hidden}, {layers} layers)");

    private static readonly Dictionary<string, LlamaModule> Modules = new()
    {
        ["q_proj"] = LlamaModule.QProj, ["k_proj"] = LlamaModule.KProj, ["v_proj"] = LlamaModule.VProj, ["o_proj"] = LlamaModule.OProj,
        ["gate_proj"] = LlamaModule.GateProj, ["up_proj"] = LlamaModule.UpProj, ["down_proj"] = LlamaModule.DownProj,
    };

    [Test]
    public void Loads_WithTheRankAlphaTargetsLayersAndShapesItsFilesSay()
    {
        string dir = TestData.RequireShared(AdapterDir);
        using JsonDocument cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
        int r = cfg.RootElement.GetProperty("r").GetInt32();
        double alpha = cfg.RootElement.GetProperty("lora_alpha").GetDouble();
        string[] targetNames = cfg.RootElement.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()!).ToArray();

        string weights = Path.Combine(dir, "adapter_model.safetensors");
        JsonObject header = AdapterKit.Header(weights);
        long dataStart = 8 + HeaderLength(weights);
        var aTensors = header.Where(kv => kv.Key.EndsWith(".lora_A.weight", StringComparison.Ordinal)).ToArray();
        var layers = aTensors.Select(kv => int.Parse(kv.Key.Split('.')[4], System.Globalization.CultureInfo.InvariantCulture)).Distinct().ToArray();

        // The shared copy's values are all NaN (every F16 is 0x7FFF), which the public Load refuses (see the next test); the
        // structure is checked here with the value scan turned off.
        RellaxAdapter a = RellaxAdapter.Load(dir, Gemma2B(), checkValues: false);

        Assert.Multiple(() =>
        {
            Assert.That(a.Config.Rank, Is.EqualTo(r));
            Assert.That(a.Config.Alpha, Is.EqualTo(alpha));
            Assert.That(a.Config.Scale, Is.EqualTo((float)(alpha / r)));
            Assert.That(a.Config.UseRsLora, Is.EqualTo(cfg.RootElement.GetProperty("use_rslora").GetBoolean()));
            Assert.That(a.Config.TargetModules, Is.EquivalentTo(targetNames.Select(n => Modules[n])));
            Assert.That(a.Config.BaseModelName, Is.EqualTo(cfg.RootElement.GetProperty("base_model_name_or_path").GetString()));
            Assert.That(a.HasGenerators, Is.False);
            Assert.That(a.Projector, Is.Null);
            Assert.That(layers, Has.Length.EqualTo(18));
            Assert.That(a.Targets, Has.Count.EqualTo(aTensors.Length));
            Assert.That(a.Targets.Select(t => t.Layer).Distinct(), Is.EquivalentTo(layers));
        });
        TestContext.Out.WriteLine($"r = {r}, alpha = {alpha}, targets = [{string.Join(", ", targetNames)}], {a.Targets.Count} adapted layers×modules");

        // Every target's shapes equal the header's, and a sample of values equals the raw F16 bytes read here.
        foreach (LoraTarget t in a.Targets)
        {
            string module = Modules.Single(kv => kv.Value == t.Module).Key;
            string section = t.Module <= LlamaModule.OProj ? "self_attn" : "mlp";
            string prefix = $"base_model.model.model.layers.{t.Layer}.{section}.{module}.";
            JsonObject ha = header[prefix + "lora_A.weight"]!.AsObject(), hb = header[prefix + "lora_B.weight"]!.AsObject();
            int[] sa = ha["shape"]!.AsArray().Select(n => (int)n!).ToArray(), sb = hb["shape"]!.AsArray().Select(n => (int)n!).ToArray();
            Assert.Multiple(() =>
            {
                Assert.That(sa, Is.EqualTo(new[] { r, t.InFeatures }), prefix);
                Assert.That(sb, Is.EqualTo(new[] { t.OutFeatures, r }), prefix);
                Assert.That(t.A, Has.Length.EqualTo(sa[0] * sa[1]));
                Assert.That(t.B, Has.Length.EqualTo(sb[0] * sb[1]));
            });
            Assert.That((string)ha["dtype"]!, Is.EqualTo("F16"));
            long offA = dataStart + (long)ha["data_offsets"]![0]!, offB = dataStart + (long)hb["data_offsets"]![0]!;
            // Bit patterns, so that NaN payloads count too (F16 → F32 widening keeps the payload).
            foreach (int i in new[] { 0, 1, t.A.Length / 2, t.A.Length - 1 })
                Assert.That(BitConverter.SingleToInt32Bits(t.A[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(F16At(weights, offA, i))), $"{prefix}lora_A[{i}]");
            foreach (int i in new[] { 0, t.B.Length / 3, t.B.Length - 1 })
                Assert.That(BitConverter.SingleToInt32Bits(t.B[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(F16At(weights, offB, i))), $"{prefix}lora_B[{i}]");
        }
        // gemma-2b's GQA: q_proj maps 2048 → 8·256, v_proj 2048 → 1·256.
        Assert.That(a.Targets.First(t => t.Module == LlamaModule.VProj).OutFeatures, Is.EqualTo(256));
        Assert.That(a.Targets.First(t => t.Module == LlamaModule.QProj).OutFeatures, Is.EqualTo(2048));
    }

    [Test]
    public void PublicLoad_RefusesNonFiniteValuesNamingATensorThatHasThem_OrLoadsWhenThereAreNone()
    {
        string dir = TestData.RequireShared(AdapterDir);
        string weights = Path.Combine(dir, "adapter_model.safetensors");
        JsonObject header = AdapterKit.Header(weights);
        long dataStart = 8 + HeaderLength(weights);
        byte[] bytes = File.ReadAllBytes(weights);
        // Which tensors hold a non-finite F16 (exponent bits all ones), found here from the raw bytes.
        var nonFinite = new HashSet<string>();
        foreach ((string name, JsonNode? node) in header)
        {
            if (name == "__metadata__") continue;
            long begin = dataStart + (long)node!["data_offsets"]![0]!, end = dataStart + (long)node["data_offsets"]![1]!;
            for (long o = begin; o < end; o += 2)
                if ((BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan((int)o, 2)) & 0x7C00) == 0x7C00) { nonFinite.Add(name); break; }
        }
        TestContext.Out.WriteLine($"{nonFinite.Count} of {header.Count - 1} tensors hold NaN or ±inf");

        if (nonFinite.Count == 0)
        {
            Assert.That(RellaxAdapter.Load(dir, Gemma2B()).Targets, Is.Not.Empty);
            return;
        }
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, Gemma2B()))!;
        TestContext.Out.WriteLine(ex.Message);
        Assert.That(ex.Message, Does.Contain("non-finite").And.Contain(weights));
        Assert.That(nonFinite.Any(n => ex.Message.Contains($"tensor '{n}'", StringComparison.Ordinal)), Is.True,
            "the message must name a tensor that holds a non-finite value");
    }

    [Test]
    public void ABaseModelWithAnotherHiddenSize_IsRefusedNamingTensorAndShapes()
    {
        string dir = TestData.RequireShared(AdapterDir);
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, Gemma2B(hidden: 1024)))!;
        TestContext.Out.WriteLine(ex.Message);
        Assert.That(ex.Message, Does.Contain("'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape [16, 2048]; expected [16, 1024]")
            .And.Contain("hidden_size 1024").And.Contain("adapter_model.safetensors"));
    }

    [Test]
    public void ABaseModelWithFewerLayers_IsRefusedNamingTheLayerCount()
    {
        string dir = TestData.RequireShared(AdapterDir);
        var ex = Assert.Throws<InvalidDataException>(() => RellaxAdapter.Load(dir, Gemma2B(layers: 12)))!;
        TestContext.Out.WriteLine(ex.Message);
        Assert.That(ex.Message, Does.Contain("layers.12.").And.Contain("num_hidden_layers = 12"));
    }

    private static long HeaderLength(string path)
    {
        using var f = File.OpenRead(path);
        Span<byte> len = stackalloc byte[8];
        f.ReadExactly(len);
        return (long)BinaryPrimitives.ReadUInt64LittleEndian(len);
    }

    private static float F16At(string path, long offset, int index)
    {
        using var f = File.OpenRead(path);
        f.Position = offset + 2L * index;
        Span<byte> b = stackalloc byte[2];
        f.ReadExactly(b);
        return (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b));
    }
}
