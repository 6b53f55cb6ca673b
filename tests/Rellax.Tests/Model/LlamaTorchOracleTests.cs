using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// The whole Llama forward pass against an independent TorchSharp implementation (float64) of HF
/// <c>LlamaForCausalLM</c> (<see cref="TorchLlamaOracle"/>), on a random tiny model with odd sizes, grouped-query heads, an untied lm_head,
/// and F32 / F16 / BF16 checkpoints. Tolerance: 2e-4 absolute on logits of magnitude ~1 (fp32 kernels).
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
