using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// <see cref="CtrScorer"/> on stories260K with random ReLLaX adapters (CFLoRA + SPA, plain LoRA, SPA only, and one written
/// with <see cref="RellaxAdapter.Save"/> and read back with <see cref="RellaxAdapter.Load"/>) against
/// <see cref="TorchLlamaOracle"/>, the same forward in float64 TorchSharp, one unpadded prompt at a time.
/// Several prompts of different lengths go through one <see cref="CtrScorer.Score"/> call (left-padded batches).
/// Tolerances: fp32 attention p_yes 1e-4 and logits <see cref="Fp32LogitTolerance"/> absolute (stories260K's answer logits
/// are of order 1 to 10); int8 attention (SPEC §7) p_yes <see cref="Int8PYesTolerance"/> and logits
/// <see cref="Int8LogitTolerance"/>, looser with the strong random LoRA adapters (<see cref="Int8StrongAdapterTolerance"/>).
/// </summary>
[TestFixture]
public sealed class ScoringTorchOracleTests
{
    /// <summary>Absolute logit tolerance with fp32 attention: fp32 GEMMs over 5 layers against float64.</summary>
    public const double Fp32LogitTolerance = 1e-3;

    /// <summary>p_yes tolerance with fp32 attention (the issue's number).</summary>
    public const double Fp32PYesTolerance = 1e-4;

    /// <summary>
    /// Absolute logit tolerance with int8 q·kᵀ (SPEC §7: per-block int8 Q and K, about 1% relative error per attention output,
    /// compounding over the layers). Measured without adapter: 0.06 on stories260K (5 layers, D = 8) and on the synthetic
    /// Mistral (2 layers, D = 16).
    /// </summary>
    public const double Int8LogitTolerance = 0.15;

    /// <summary>p_yes tolerance with int8 attention; measured 3e-3 (stories260K) and 1.3e-2 (synthetic Mistral) without adapter.</summary>
    public const double Int8PYesTolerance = 0.03;

    /// <summary>
    /// Int8 tolerances (p_yes, logits) on stories260K with the strong random LoRA/CFLoRA adapters of these tests: LoRA on q (and k)
    /// sharpens the attention scores, and int8 errors grow with the score magnitude (the same happens without adapter when the
    /// q/k weights are doubled). Measured: 0.058 / 0.44 (CFLoRA + SPA on q, v), 0.066 / 1.11 (plain LoRA on every module);
    /// the fp32 path on the same adapters agrees to 6e-6 / 9e-5, so the difference is attention quantization. Still well under
    /// the effects these tests must see (LoRA on/off moves p_yes by 0.76, another h_u by 0.33).
    /// </summary>
    public static readonly (double PYes, double Logit) Int8StrongAdapterTolerance = (0.1, 1.5);

    private const int Rank = 8, InstanceDim = 16, CrmDim = 8;
    private static readonly LlamaModule[] QV = [LlamaModule.QProj, LlamaModule.VProj];

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var factory in TestBackends.Factories())
        {
            yield return new TestCaseData(factory, AttentionPrecision.Fp32).SetArgDisplayNames(factory.Name, "fp32");
            if (!factory.Emulated)
                yield return new TestCaseData(factory, AttentionPrecision.Int8).SetArgDisplayNames(factory.Name, "int8");
        }
    }

    [Test]
    public void OracleMatchesLlamaSessionWithoutAdapter()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(dir, backend);
        var oracle = TorchLlamaOracle.FromDirectory(dir);
        foreach (string text in new[] { "Once upon a time, there was a little girl named Lily.", "The cat sat on the mat and" })
        {
            int[] ids = [.. model.Tokenizer.Encode(text)];
            using var session = model.CreateSession();
            var ours = session.Forward(ids);
            var expected = oracle.LastLogits(new OracleSample(ids));
            TestContext.Out.WriteLine($"{ids.Length} tokens: max |Δlogit| {ours.Zip(expected, (a, b) => Math.Abs(a - b)).Max():E2}, max |logit| {expected.Max(Math.Abs):F2}");
            Assert.That(ours, Is.EqualTo(expected.Select(v => (float)v)).Within(Fp32LogitTolerance), text);
        }
    }

    [Test]
    public void TheRandomAdapterMovesTheScoreVisibly()
    {
        // Guards the other tests' power: an adapter path that were skipped or wrong would show as a change of this size.
        string dir = ModelPaths.Stories260KOrIgnore();
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        var tokenizer = LlamaTokenizer.Load(dir);
        var (adapterConfig, targets, projector) = ScoringOracle.RandomAdapter(config, seed: 11, QV, Rank, InstanceDim, CrmDim);
        var plain = TorchLlamaOracle.FromDirectory(dir);
        var full = plain.WithAdapter(targets, projector, ScoringOracle.LoraScale(adapterConfig));
        var spaOnly = plain.WithAdapter([], projector, 0);
        var requests = ScoringOracle.RandomRequests(seed: 3, count: 4, InstanceDim, CrmDim);
        double maxLoraEffect = 0, maxInstanceEffect = 0, maxEmbeddingEffect = 0;
        foreach (var r in requests)
        {
            double withAdapter = ScoringOracle.Score(full, tokenizer, PromptTemplate.Vicuna, r).PYes;
            maxLoraEffect = Math.Max(maxLoraEffect, Math.Abs(withAdapter - ScoringOracle.Score(spaOnly, tokenizer, PromptTemplate.Vicuna, r).PYes));
            var otherUser = r with { Instance = ScoringOracle.Uniform(new Random(99), InstanceDim, 1.5) };
            maxInstanceEffect = Math.Max(maxInstanceEffect, Math.Abs(withAdapter - ScoringOracle.Score(full, tokenizer, PromptTemplate.Vicuna, otherUser).PYes));
            var otherTarget = r with { TargetEmbedding = ScoringOracle.Uniform(new Random(98), CrmDim, 1.0) };
            maxEmbeddingEffect = Math.Max(maxEmbeddingEffect, Math.Abs(withAdapter - ScoringOracle.Score(full, tokenizer, PromptTemplate.Vicuna, otherTarget).PYes));
        }
        TestContext.Out.WriteLine($"max |Δp_yes|: LoRA on/off {maxLoraEffect:F4}, other h_u {maxInstanceEffect:F4}, other target embedding {maxEmbeddingEffect:F4}");
        Assert.That(maxLoraEffect, Is.GreaterThan(0.05), "CFLoRA moves p_yes");
        Assert.That(maxInstanceEffect, Is.GreaterThan(0.01), "h_u moves p_yes (C_u is per sample)");
        Assert.That(maxEmbeddingEffect, Is.GreaterThan(0.01), "the target's CRM embedding moves p_yes");
    }

    [TestCaseSource(nameof(Cases))]
    public void CfloraSpaScoresMatchTheOracle(BackendFactory factory, AttentionPrecision attention)
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = factory.Create();
        using var model = LlamaModel.Load(dir, backend);
        var (adapterConfig, targets, projector) = ScoringOracle.RandomAdapter(model.Config, seed: 11, QV, Rank, InstanceDim, CrmDim);
        var adapter = RellaxAdapter.Create(adapterConfig, targets, projector, model.Config);
        // The emulator runs GPU kernels thousands of times slower: one short prompt there (about 25 tokens).
        var requests = factory.Emulated
            ? [new CtrRequest("'0. Heat (1995) (4 stars)[hist]' Like ***Casino***[target]?", ScoringOracle.Uniform(new Random(1), InstanceDim, 1.5),
                [ScoringOracle.Uniform(new Random(2), CrmDim, 1.0)], ScoringOracle.Uniform(new Random(3), CrmDim, 1.0))]
            : ScoringOracle.RandomRequests(seed: 3, count: 5, InstanceDim, CrmDim);
        // The same prompt twice with another user's h_u: one batch holds two different C_u for identical tokens.
        requests.Add(requests[0] with { Instance = ScoringOracle.Uniform(new Random(99), InstanceDim, 1.5) });
        var template = factory.Emulated ? PromptTemplate.None : PromptTemplate.Vicuna;
        var oracle = TorchLlamaOracle.FromDirectory(dir).WithAdapter(targets, projector, ScoringOracle.LoraScale(adapterConfig));
        CheckAgainstOracle(model, adapter, oracle, requests, template, attention, batchSize: 3, Int8StrongAdapterTolerance);
    }

    [Test]
    public void ScoresWithoutAdapterMatchTheOracle()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(dir, backend);
        var requests = ScoringOracle.RandomRequests(seed: 2, count: 4, instanceDim: null, crmDim: null, markers: false);
        var oracle = TorchLlamaOracle.FromDirectory(dir);
        foreach (var attention in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
            CheckAgainstOracle(model, null, oracle, requests, PromptTemplate.Vicuna, attention, batchSize: 3);
    }

    [Test]
    public void PlainLoraScoresMatchTheOracle()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(dir, backend);
        LlamaModule[] modules = [LlamaModule.QProj, LlamaModule.KProj, LlamaModule.VProj, LlamaModule.OProj, LlamaModule.GateProj, LlamaModule.UpProj, LlamaModule.DownProj];
        var (adapterConfig, targets, projector) = ScoringOracle.RandomAdapter(model.Config, seed: 12, modules, rank: 4, instanceDim: null, crmDim: null);
        var adapter = RellaxAdapter.Create(adapterConfig, targets, projector, model.Config);
        var requests = ScoringOracle.RandomRequests(seed: 4, count: 4, instanceDim: null, crmDim: null, markers: false);
        var oracle = TorchLlamaOracle.FromDirectory(dir).WithAdapter(targets, projector, ScoringOracle.LoraScale(adapterConfig));
        foreach (var attention in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
            CheckAgainstOracle(model, adapter, oracle, requests, PromptTemplate.Vicuna, attention, batchSize: 4, Int8StrongAdapterTolerance);
    }

    [Test]
    public void SpaOnlyScoresMatchTheOracle()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(dir, backend);
        var (adapterConfig, targets, projector) = ScoringOracle.RandomAdapter(model.Config, seed: 13, [], Rank, instanceDim: null, CrmDim);
        var adapter = RellaxAdapter.Create(adapterConfig, targets, projector, model.Config);
        var requests = ScoringOracle.RandomRequests(seed: 5, count: 4, instanceDim: null, CrmDim);
        var oracle = TorchLlamaOracle.FromDirectory(dir).WithAdapter([], projector, 0);
        foreach (var attention in new[] { AttentionPrecision.Fp32, AttentionPrecision.Int8 })
            CheckAgainstOracle(model, adapter, oracle, requests, PromptTemplate.Vicuna, attention, batchSize: 2);
    }

    [Test]
    public void SavedAndLoadedAdapterScoresLikeTheInMemoryOne()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        string adapterDir = Directory.CreateTempSubdirectory("rellax-adapter").FullName;
        try
        {
            using var backend = new CpuBackend(threads: 2);
            using var model = LlamaModel.Load(dir, backend);
            var (adapterConfig, targets, projector) = ScoringOracle.RandomAdapter(model.Config, seed: 14, QV, rank: 4, InstanceDim, CrmDim);
            var created = RellaxAdapter.Create(adapterConfig, targets, projector, model.Config);
            created.Save(adapterDir);
            var loaded = RellaxAdapter.Load(adapterDir, model.Config);
            var requests = ScoringOracle.RandomRequests(seed: 6, count: 3, InstanceDim, CrmDim);
            var oracle = TorchLlamaOracle.FromDirectory(dir).WithAdapter(targets, projector, ScoringOracle.LoraScale(adapterConfig));
            var fromFile = CheckAgainstOracle(model, loaded, oracle, requests, PromptTemplate.Vicuna, AttentionPrecision.Fp32, batchSize: 3);
            using var scorer = new CtrScorer(model, created, new ScoringOptions { BatchSize = 3 });
            var inMemory = scorer.Score(requests);
            Assert.That(fromFile.Select(s => s.PYes), Is.EqualTo(inMemory.Select(s => s.PYes)).Within(1e-6),
                "the F32 round trip keeps every adapter value, so the scores agree to run-to-run rounding");
        }
        finally { Directory.Delete(adapterDir, true); }
    }

    /// <summary>
    /// Scores <paramref name="requests"/> in one call and checks every score against the oracle; returns our scores. The
    /// tolerances depend on <paramref name="attention"/> (see the class remarks); <paramref name="int8Tolerance"/> replaces the
    /// int8 ones.
    /// </summary>
    internal static CtrScore[] CheckAgainstOracle(LlamaModel model, RellaxAdapter? adapter, TorchLlamaOracle oracle, IReadOnlyList<CtrRequest> requests,
        PromptTemplate template, AttentionPrecision attention, int batchSize, (double PYes, double Logit)? int8Tolerance = null)
    {
        using var scorer = new CtrScorer(model, adapter, new ScoringOptions { Template = template, Attention = attention, BatchSize = batchSize });
        var ours = scorer.Score(requests);
        Assert.That(ours, Has.Length.EqualTo(requests.Count));
        string hist = adapter?.Config.HistToken ?? "[hist]", target = adapter?.Config.TargetToken ?? "[target]";
        var expected = requests.Select(r => ScoringOracle.Score(oracle, model.Tokenizer, template, r, hist, target)).ToArray();
        (double pTol, double lTol) = attention == AttentionPrecision.Int8
            ? int8Tolerance ?? (Int8PYesTolerance, Int8LogitTolerance)
            : (Fp32PYesTolerance, Fp32LogitTolerance);
        double maxP = 0, maxL = 0;
        for (int i = 0; i < requests.Count; i++)
        {
            maxP = Math.Max(maxP, Math.Abs(ours[i].PYes - expected[i].PYes));
            maxL = Math.Max(maxL, Math.Max(Math.Abs(ours[i].LogitYes - expected[i].LogitYes), Math.Abs(ours[i].LogitNo - expected[i].LogitNo)));
        }
        TestContext.Out.WriteLine($"{requests.Count} requests, {attention}: max |Δp_yes| {maxP:E2}, max |Δlogit| {maxL:E2}; " +
            $"p_yes {string.Join(" ", expected.Select(e => e.PYes.ToString("F4")))}");
        for (int i = 0; i < requests.Count; i++)
        {
            Assert.That(ours[i].PYes, Is.EqualTo(expected[i].PYes).Within(pTol), $"request {i}: p_yes");
            Assert.That(ours[i].LogitYes, Is.EqualTo(expected[i].LogitYes).Within(lTol), $"request {i}: logit_yes");
            Assert.That(ours[i].LogitNo, Is.EqualTo(expected[i].LogitNo).Within(lTol), $"request {i}: logit_no");
        }
        return ours;
    }
}
