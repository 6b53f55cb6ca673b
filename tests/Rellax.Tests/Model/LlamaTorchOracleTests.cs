using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// The whole Llama forward pass against an independent TorchSharp implementation (float64) of HF
/// <c>LlamaForCausalLM</c> (<see cref="TorchLlamaOracle"/>), on a random tiny model with odd sizes, grouped-query heads, an untied lm_head,
/// and F32 / F16 / BF16 checkpoints. With q/k/v biases the same model is <c>Qwen2ForCausalLM</c> (its config implies
/// <c>attention_bias</c>); with an o_proj bias too it is Llama with <c>attention_bias</c>. Tolerance: 2e-4 absolute on
/// logits of magnitude ~1 (fp32 kernels).
/// </summary>
[TestFixture]
public sealed class LlamaTorchOracleTests
{
    private static readonly SyntheticModelSpec Spec = SyntheticModelSpec.TinyLlama;

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var factory in TestBackends.Factories())
            foreach (var dtype in new[] { "F32", "F16", "BF16" })
                yield return new TestCaseData(factory, dtype).SetArgDisplayNames(factory.Name, dtype);
    }

    [TestCaseSource(nameof(Cases))]
    public void LogitsMatchTorchSharp(BackendFactory factory, string dtype)
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-llama").FullName;
        try
        {
            var weights = SyntheticModel.RandomWeights(Spec, seed: 7, dtype);
            SyntheticModel.Write(dir, Spec, weights, dtype);
            int[] prompt = [1, 17, 300, 5, 5, 511, 42, 260, 3, 99, 128];

            using var backend = factory.Create();
            using var model = LlamaModel.Load(dir, backend);
            using var session = model.CreateSession();
            var ours = session.Forward(prompt.AsSpan(0, 8));
            var oursNext = session.Forward(prompt.AsSpan(8)); // continues against the KV cache

            var expectedAll = new TorchLlamaOracle(OracleConfig.Read(dir), weights).Logits(new OracleSample(prompt));
            Assert.That(ours, Is.EqualTo(expectedAll[7].Select(v => (float)v)).Within(2e-4), "logits after the first chunk");
            Assert.That(oursNext, Is.EqualTo(expectedAll[^1].Select(v => (float)v)).Within(2e-4), "logits after continuing with the KV cache");
        }
        finally { Directory.Delete(dir, true); }
    }

    private static IEnumerable<TestCaseData> BiasCases()
    {
        foreach (var factory in TestBackends.Factories())
        {
            foreach (var dtype in new[] { "F32", "BF16" })
                yield return new TestCaseData(factory, dtype, "Qwen2ForCausalLM").SetArgDisplayNames(factory.Name, dtype, "qwen2");
            yield return new TestCaseData(factory, "F16", "LlamaForCausalLM").SetArgDisplayNames(factory.Name, "F16", "llama-attention-bias");
        }
    }

    /// <summary>The tiny model with q/k/v biases (and an o_proj bias for Llama with attention_bias).</summary>
    private static (SyntheticModelSpec Spec, OracleWeights Weights) BiasedModel(string architecture, string dtype, int seed)
    {
        var spec = Spec with { Architecture = architecture, ModelType = architecture == "Qwen2ForCausalLM" ? "qwen2" : "llama", AttentionBias = true };
        var weights = SyntheticModel.RandomWeights(spec, seed, dtype);
        if (architecture == "LlamaForCausalLM")
        {
            var rng = new Random(seed + 1);
            for (int l = 0; l < spec.Layers; l++)
                weights[$"model.layers.{l}.self_attn.o_proj.bias"] = ([spec.Hidden],
                    [.. Enumerable.Range(0, spec.Hidden).Select(_ => SyntheticModel.Representable((float)(rng.NextDouble() - 0.5), dtype))]);
        }
        return (spec, weights);
    }

    [TestCaseSource(nameof(BiasCases))]
    public void AttentionBiasLogitsMatchTorchSharp(BackendFactory factory, string dtype, string architecture)
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-bias").FullName;
        try
        {
            bool llama = architecture == "LlamaForCausalLM";
            var (spec, weights) = BiasedModel(architecture, dtype, seed: 11);
            SyntheticModel.Write(dir, spec, weights, dtype);
            int[] prompt = [1, 17, 300, 5, 5, 511, 42, 260, 3, 99, 128];

            using var backend = factory.Create();
            using var model = LlamaModel.Load(dir, backend);
            Assert.That(model.Weights.Layers[1].KBias, Is.Not.Null);
            Assert.That(model.Weights.Layers[1].OBias is not null, Is.EqualTo(llama));
            using var session = model.CreateSession();
            var ours = session.Forward(prompt.AsSpan(0, 8));
            var oursNext = session.Forward(prompt.AsSpan(8));

            var config = OracleConfig.Read(dir);
            var expectedAll = new TorchLlamaOracle(config, weights).Logits(new OracleSample(prompt));
            Assert.That(ours, Is.EqualTo(expectedAll[7].Select(v => (float)v)).Within(2e-4), "logits after the first chunk");
            Assert.That(oursNext, Is.EqualTo(expectedAll[^1].Select(v => (float)v)).Within(2e-4), "logits after continuing with the KV cache");
            // The biases matter: the same weights without them give clearly different logits.
            var unbiasedWeights = new OracleWeights();
            foreach (var (name, value) in weights)
                if (!name.EndsWith(".bias", StringComparison.Ordinal)) unbiasedWeights[name] = value;
            var unbiased = new TorchLlamaOracle(config, unbiasedWeights).Logits(new OracleSample(prompt))[^1];
            Assert.That(unbiased.Zip(oursNext).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-2));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void BiasesAndAttentionBiasMustAgree()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-bias").FullName;
        try
        {
            using var backend = new Rellax.Kernels.Cpu.CpuBackend(1);
            // Biases in the file, attention_bias false in config.json: refused, not ignored.
            var (_, biased) = BiasedModel("Qwen2ForCausalLM", "F32", seed: 11);
            SyntheticModel.Write(dir, Spec, biased, "F32");
            Assert.That(() => LlamaModel.Load(dir, backend), Throws.InstanceOf<InvalidDataException>()
                .With.Message.Contains("model.layers.0.self_attn.q_proj.bias").And.Message.Contains("attention_bias"));
            // Qwen2 (attention_bias implied) without its biases: the missing tensor is named.
            foreach (var f in Directory.GetFiles(dir)) File.Delete(f);
            SyntheticModel.Write(dir, Spec with { Architecture = "Qwen2ForCausalLM", ModelType = "qwen2" }, SyntheticModel.RandomWeights(Spec, seed: 11), "F32");
            Assert.That(() => LlamaModel.Load(dir, backend), Throws.InstanceOf<InvalidDataException>()
                .With.Message.Contains("model.layers.0.self_attn.q_proj.bias"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MistralSlidingWindowIsExactUpToTheWindowAndRefusedBeyond()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-mistral").FullName;
        try
        {
            var spec = Spec with { Architecture = "MistralForCausalLM", ModelType = "mistral", SlidingWindow = 8 };
            var weights = SyntheticModel.RandomWeights(spec, seed: 13);
            SyntheticModel.Write(dir, spec, weights, "F32");
            int[] prompt = [1, 17, 300, 5, 5, 511, 42, 260, 3];
            using var backend = new Rellax.Kernels.Cpu.CpuBackend(1);
            using var model = LlamaModel.Load(dir, backend);
            using var session = model.CreateSession();
            // Within the window Mistral's attention is full causal attention.
            var ours = session.Forward(prompt.AsSpan(0, 8));
            var expected = new TorchLlamaOracle(OracleConfig.Read(dir), weights).Logits(new OracleSample(prompt.AsSpan(0, 8).ToArray()));
            Assert.That(ours, Is.EqualTo(expected[7].Select(v => (float)v)).Within(2e-4));
            Assert.That(() => session.Forward(prompt.AsSpan(8)), Throws.InstanceOf<NotSupportedException>()
                .With.Message.Contains("sliding_window = 8").And.Message.Contains("8 + 1 tokens"));
            Assert.That(session.Position, Is.EqualTo(8), "the refused call did not advance the session");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void Int8AttentionRefusesAHeadDimensionItCannotQuantize()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-tiny-llama").FullName;
        try
        {
            SyntheticModel.Write(dir, Spec, SyntheticModel.RandomWeights(Spec, seed: 7), "F32");
            using var backend = new Rellax.Kernels.Cpu.CpuBackend(1);
            using var model = LlamaModel.Load(dir, backend);
            Assert.That(() => model.CreateSession(attention: Rellax.Kernels.AttentionPrecision.Int8),
                Throws.ArgumentException.With.Message.Contains("head dimension").And.Message.Contains($"is {Spec.HeadDim}"));
            using var fp32 = model.CreateSession();
            Assert.That(fp32.Forward([1, 17]).All(float.IsFinite), "fp32 attention still works on the same model");
        }
        finally { Directory.Delete(dir, true); }
    }
}
