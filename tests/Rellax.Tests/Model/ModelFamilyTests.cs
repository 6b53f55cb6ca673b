using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// Synthetic tiny Qwen2-style (q/k/v biases, GQA 4:2, untied lm_head, rope_theta 1e6) and Mistral-style (GQA 4:1,
/// sliding_window 480, longer than every prompt here, untied lm_head) models written by the test with stories260K's
/// tokenizer, checked against <see cref="TorchLlamaOracle"/> through <see cref="LlamaSession"/> (all logits, 2e-4 absolute)
/// and <see cref="CtrScorer"/> (without and with a CFLoRA + SPA adapter; tolerances of
/// <see cref="ScoringTorchOracleTests"/>); and F16/BF16 copies of a model scored against its F32 original.
/// </summary>
[TestFixture]
public sealed class ModelFamilyTests
{
    /// <summary>
    /// |Δp_yes| allowed between an F16 copy and the F32 model. F16 rounds each weight by up to 2⁻¹¹ relative; measured on
    /// these two-layer models: 2.6e-4 (p_yes) and 7.7e-4 (logits) for Mistral. The tight check is the copy against the oracle
    /// on the rounded weights (fp32 tolerances).
    /// </summary>
    public const double F16PYesTolerance = 2e-3;

    /// <summary>|Δlogit| allowed between an F16 copy and the F32 model (absolute; answer logits are of order 1 to 10).</summary>
    public const double F16LogitTolerance = 5e-3;

    /// <summary>
    /// BF16 keeps 8 mantissa bits (2⁻⁹ relative rounding, 8x F16's): measured 1.3e-2 (p_yes) and 3.1e-2 (logits) for Mistral;
    /// allowed 5e-2 and 0.1.
    /// </summary>
    public const double Bf16PYesTolerance = 5e-2, Bf16LogitTolerance = 0.1;

    private static IEnumerable<TestCaseData> Families()
    {
        yield return new TestCaseData(SyntheticModelSpec.Qwen2).SetArgDisplayNames("qwen2");
        yield return new TestCaseData(SyntheticModelSpec.Mistral).SetArgDisplayNames("mistral");
    }

    private static IEnumerable<TestCaseData> FamiliesOnBackends()
    {
        foreach (var factory in TestBackends.Factories())
        {
            yield return new TestCaseData(SyntheticModelSpec.Qwen2, factory).SetArgDisplayNames("qwen2", factory.Name);
            if (!factory.Emulated)
                yield return new TestCaseData(SyntheticModelSpec.Mistral, factory).SetArgDisplayNames("mistral", factory.Name);
        }
    }

    [TestCaseSource(nameof(FamiliesOnBackends))]
    public void SessionLogitsMatchTheOracle(SyntheticModelSpec spec, BackendFactory factory)
    {
        ModelPaths.Stories260KOrIgnore();
        var (dir, weights) = SyntheticModel.WriteTemp(spec, seed: 21);
        try
        {
            int[] prompt = [1, 17, 300, 5, 5, 511, 42, 260, 3, 99, 128, 77, 400];
            using var backend = factory.Create();
            using var model = LlamaModel.Load(dir, backend);
            Assert.That(model.Config.Architecture, Is.EqualTo(spec.Architecture));
            using var session = model.CreateSession();
            var first = session.Forward(prompt.AsSpan(0, 9));
            var next = session.Forward(prompt.AsSpan(9));
            var expected = new TorchLlamaOracle(OracleConfig.Read(dir), weights).Logits(new OracleSample(prompt));
            Assert.That(first, Is.EqualTo(expected[8].Select(v => (float)v)).Within(2e-4), "logits after the first chunk");
            Assert.That(next, Is.EqualTo(expected[^1].Select(v => (float)v)).Within(2e-4), "logits after continuing with the KV cache");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCaseSource(nameof(Families))]
    public void ScoresWithoutAdapterMatchTheOracle(SyntheticModelSpec spec)
    {
        ModelPaths.Stories260KOrIgnore();
        var (dir, weights) = SyntheticModel.WriteTemp(spec, seed: 22);
        try
        {
            using var backend = new CpuBackend(threads: 2);
            using var model = LlamaModel.Load(dir, backend);
            var requests = ScoringOracle.RandomRequests(seed: 7, count: 4, instanceDim: null, crmDim: null, markers: false);
            var oracle = new TorchLlamaOracle(OracleConfig.Read(dir), weights);
            foreach (var attention in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
                ScoringTorchOracleTests.CheckAgainstOracle(model, null, oracle, requests, PromptTemplate.Vicuna, attention, batchSize: 3);
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCaseSource(nameof(Families))]
    public void CfloraSpaScoresMatchTheOracle(SyntheticModelSpec spec)
    {
        ModelPaths.Stories260KOrIgnore();
        var (dir, weights) = SyntheticModel.WriteTemp(spec, seed: 23);
        try
        {
            using var backend = new CpuBackend(threads: 2);
            using var model = LlamaModel.Load(dir, backend);
            // q, k and v: on Qwen2 every adapted module also has a bias.
            LlamaModule[] modules = [LlamaModule.QProj, LlamaModule.KProj, LlamaModule.VProj];
            var (config, targets, projector) = ScoringOracle.RandomAdapter(model.Config, seed: 24, modules, rank: 4, instanceDim: 16, crmDim: 8);
            var adapter = RellaxAdapter.Create(config, targets, projector, model.Config);
            var requests = ScoringOracle.RandomRequests(seed: 8, count: 4, instanceDim: 16, crmDim: 8);
            var oracle = new TorchLlamaOracle(OracleConfig.Read(dir), weights, targets, projector, ScoringOracle.LoraScale(config));
            foreach (var attention in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
                ScoringTorchOracleTests.CheckAgainstOracle(model, adapter, oracle, requests, PromptTemplate.Vicuna, attention, batchSize: 2);
        }
        finally { Directory.Delete(dir, true); }
    }

    private static IEnumerable<TestCaseData> HalfCases() =>
        from f in Families() from dtype in new[] { "F16", "BF16" }
        select new TestCaseData(f.Arguments[0], dtype).SetArgDisplayNames(((SyntheticModelSpec)f.Arguments[0]!).ModelType, dtype);

    [TestCaseSource(nameof(HalfCases))]
    public void HalfPrecisionCopyScoresLikeTheF32Model(SyntheticModelSpec spec, string dtype)
    {
        ModelPaths.Stories260KOrIgnore();
        var (dir, weights) = SyntheticModel.WriteTemp(spec, seed: 25);
        string halfDir = Directory.CreateTempSubdirectory($"rellax-{spec.ModelType}-{dtype}").FullName;
        try
        {
            // The same weights written in half precision (F16 rounds to nearest; BF16 rounded first, so the writer's
            // truncation is exact), and their exact values for the oracle.
            var rounded = new OracleWeights();
            foreach (var (name, (shape, data)) in weights)
                rounded[name] = (shape, [.. data.Select(v => SyntheticModel.Representable(v, dtype))]);
            SyntheticModel.Write(halfDir, spec, rounded, dtype);
            var requests = ScoringOracle.RandomRequests(seed: 9, count: 4, instanceDim: null, crmDim: null, markers: false);

            using var backend = new CpuBackend(threads: 2);
            using var full = LlamaModel.Load(dir, backend);
            using var half = LlamaModel.Load(halfDir, backend);
            using var fullScorer = new CtrScorer(full, null, new ScoringOptions { BatchSize = 4 });
            var f32 = fullScorer.Score(requests);
            // The half-precision model computes exactly what the oracle computes on the rounded weights ...
            var fromHalf = ScoringTorchOracleTests.CheckAgainstOracle(half, null, new TorchLlamaOracle(OracleConfig.Read(halfDir), rounded),
                requests, PromptTemplate.Vicuna, AttentionPrecision.Fp32, batchSize: 4);
            // ... and stays close to the F32 model.
            (double pTol, double lTol) = dtype == "F16" ? (F16PYesTolerance, F16LogitTolerance) : (Bf16PYesTolerance, Bf16LogitTolerance);
            TestContext.Out.WriteLine($"{dtype} vs F32: max |Δp_yes| {f32.Zip(fromHalf, (a, b) => Math.Abs(a.PYes - b.PYes)).Max():E2}, " +
                $"max |Δlogit_yes| {f32.Zip(fromHalf, (a, b) => Math.Abs(a.LogitYes - b.LogitYes)).Max():E2}");
            for (int i = 0; i < requests.Count; i++)
            {
                Assert.That(fromHalf[i].PYes, Is.EqualTo(f32[i].PYes).Within(pTol), $"request {i}: p_yes, {dtype} vs F32");
                Assert.That(fromHalf[i].LogitYes, Is.EqualTo(f32[i].LogitYes).Within(lTol), $"request {i}: logit_yes, {dtype} vs F32");
                Assert.That(fromHalf[i].LogitNo, Is.EqualTo(f32[i].LogitNo).Within(lTol), $"request {i}: logit_no, {dtype} vs F32");
            }
        }
        finally
        {
            Directory.Delete(dir, true);
            Directory.Delete(halfDir, true);
        }
    }
}
