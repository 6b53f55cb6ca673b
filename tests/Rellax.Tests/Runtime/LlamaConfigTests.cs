using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>HF config.json parsing: stories260K, defaults, validation messages.</summary>
[TestFixture]
public sealed class LlamaConfigTests
{
    private const string Minimal =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":11008," +
        "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"vocab_size\":32000,\"rms_norm_eps\":1e-6}";

    private static string With(string json, string extra) => json[..^1] + "," + extra + "}";

    [Test]
    public void Stories260K_MatchesSourcesMd()
    {
        string path = TestData.RequireShared("llm/stories260K/hf_derived/config.json");
        LlamaConfig c = LlamaConfig.Load(path);
        Assert.Multiple(() =>
        {
            Assert.That(c.Architecture, Is.EqualTo("LlamaForCausalLM"));
            Assert.That(c.HiddenSize, Is.EqualTo(64));
            Assert.That(c.IntermediateSize, Is.EqualTo(172));
            Assert.That(c.NumHiddenLayers, Is.EqualTo(5));
            Assert.That(c.NumAttentionHeads, Is.EqualTo(8));
            Assert.That(c.NumKeyValueHeads, Is.EqualTo(4));
            Assert.That(c.HeadDim, Is.EqualTo(8));
            Assert.That(c.VocabSize, Is.EqualTo(512));
            Assert.That(c.MaxPositionEmbeddings, Is.EqualTo(512));
            Assert.That(c.RmsNormEps, Is.EqualTo(1e-5));
            Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
            Assert.That(c.TieWordEmbeddings, Is.True);
            Assert.That(c.AttentionBias, Is.False);
            Assert.That(c.BosTokenId, Is.EqualTo(1));
            Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 2 }));
            Assert.That(c.RopeScaling, Is.Null);
            Assert.That(c.HiddenAct, Is.EqualTo("silu"));
        });
        // A directory works too.
        Assert.That(LlamaConfig.Load(Path.GetDirectoryName(path)!).HiddenSize, Is.EqualTo(64));
    }

    [Test]
    public void Defaults_AreTheHfLlamaDefaults()
    {
        LlamaConfig c = LlamaConfig.Parse(Minimal, "mem");
        Assert.That(c.NumKeyValueHeads, Is.EqualTo(32));
        Assert.That(c.HeadDim, Is.EqualTo(128));
        Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
        Assert.That(c.MaxPositionEmbeddings, Is.EqualTo(2048));
        Assert.That(c.TieWordEmbeddings, Is.False);
        Assert.That(c.AttentionBias, Is.False);
        Assert.That(c.HiddenAct, Is.EqualTo("silu"));
        Assert.That(c.BosTokenId, Is.Null);
        Assert.That(c.EosTokenIds, Is.Empty);
    }

    [TestCase("hidden_size")]
    [TestCase("intermediate_size")]
    [TestCase("num_hidden_layers")]
    [TestCase("num_attention_heads")]
    [TestCase("vocab_size")]
    [TestCase("rms_norm_eps")]
    public void MissingRequiredField_NamesFieldAndFile(string field)
    {
        string json = System.Text.RegularExpressions.Regex.Replace(Minimal, $"\"{field}\":[^,}}]+,?", "").Replace(",}", "}");
        Assert.That(json, Does.Not.Contain(field));
        var ex = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Parse(json, "/models/x/config.json"));
        Assert.That(ex!.Field, Is.EqualTo(field));
        Assert.That(ex.Message, Does.Contain(field).And.Contain("/models/x/config.json").And.Contain("missing"));
    }

    [Test]
    public void Load_MissingFieldNamesTheRealFile()
    {
        string dir = Path.Combine(Path.GetTempPath(), "rellax-cfg-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "config.json");
            File.WriteAllText(path, Minimal.Replace("\"vocab_size\":32000,", ""));
            var ex = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Load(path));
            Assert.That(ex!.Message, Does.Contain(path).And.Contain("vocab_size"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void NonSiluActivation_IsRejected()
    {
        var ex = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Parse(With(Minimal, "\"hidden_act\":\"gelu\""), "cfg"));
        Assert.That(ex!.Field, Is.EqualTo("hidden_act"));
        Assert.That(ex.Message, Does.Contain("gelu"));
    }

    [Test]
    public void Llama3RopeScaling_Parses()
    {
        string json = With(Minimal, "\"num_key_value_heads\":8,\"rope_theta\":500000.0,\"max_position_embeddings\":131072," +
                                    "\"eos_token_id\":[128001,128008,128009],\"bos_token_id\":128000," +
                                    "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0," +
                                    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}");
        LlamaConfig c = LlamaConfig.Parse(json, "llama31");
        Assert.That(c.RopeScaling, Is.EqualTo(new RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)));
        Assert.That(c.RopeTheta, Is.EqualTo(500000.0));
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 128001, 128008, 128009 }));
        Assert.That(c.BosTokenId, Is.EqualTo(128000));
        Assert.That(c.NumKeyValueHeads, Is.EqualTo(8));

        // Older configs spell it "type".
        LlamaConfig old = LlamaConfig.Parse(json.Replace("\"rope_type\"", "\"type\""), "old");
        Assert.That(old.RopeScaling!.Type, Is.EqualTo("llama3"));
    }

    [Test]
    public void OtherRopeScalingType_IsNotSupportedByName()
    {
        var ex = Assert.Throws<LlamaConfigException>(() =>
            LlamaConfig.Parse(With(Minimal, "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0}"), "cfg"));
        Assert.That(ex!.Message, Does.Contain("yarn").And.Contain("not supported"));
    }

    [Test]
    public void Qwen2_DefaultsAttentionBiasTrue()
    {
        string qwen = Minimal.Replace("LlamaForCausalLM", "Qwen2ForCausalLM");
        Assert.That(LlamaConfig.Parse(qwen, "q").AttentionBias, Is.True);
        Assert.That(LlamaConfig.Parse(Minimal.Replace("LlamaForCausalLM", "MistralForCausalLM"), "m").AttentionBias, Is.False);
    }

    [Test]
    public void UnknownArchitecture_ListsSupportedOnes()
    {
        var ex = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Parse(Minimal.Replace("LlamaForCausalLM", "GemmaForCausalLM"), "cfg"));
        Assert.That(ex!.Message, Does.Contain("GemmaForCausalLM").And.Contain("LlamaForCausalLM").And.Contain("MistralForCausalLM").And.Contain("Qwen2ForCausalLM"));
    }

    [Test]
    public void KvHeadsMustDivideHeads()
    {
        var ex = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Parse(With(Minimal, "\"num_key_value_heads\":5"), "cfg"));
        Assert.That(ex!.Field, Is.EqualTo("num_key_value_heads"));
    }

    [TestCase("\"rms_norm_eps\":0", "rms_norm_eps")]
    [TestCase("\"vocab_size\":-3", "vocab_size")]
    [TestCase("\"hidden_size\":\"big\"", "hidden_size")]
    public void InvalidValues_NameTheField(string replacement, string field)
    {
        string key = replacement[..(replacement.IndexOf(':') + 1)];
        string json = System.Text.RegularExpressions.Regex.Replace(Minimal, System.Text.RegularExpressions.Regex.Escape(key) + "[^,}]+", replacement);
        var ex = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Parse(json, "cfg"));
        Assert.That(ex!.Field, Is.EqualTo(field));
    }

    [Test]
    public void NotJson_IsLlamaConfigException()
    {
        var ex = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Parse("{nope", "broken.json"));
        Assert.That(ex!.Message, Does.Contain("broken.json"));
    }
}
