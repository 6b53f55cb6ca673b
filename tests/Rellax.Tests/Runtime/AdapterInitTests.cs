using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using Rellax.Tests.Model;

namespace Rellax.Tests.Runtime;

/// <summary>
/// <see cref="AdapterInit"/>: shapes from the base model's numbers, PEFT's LoRA init (A ~ U(±1/√d_in), B = 0), the
/// reference's generator init (LayerNorm 1/0, Kaiming-uniform Linear weights, zero biases) and projector init
/// (Xavier-normal, zero biases) checked by their bounds and sample moments, determinism per seed, a save/load round trip,
/// that a new adapter scores exactly as the base model (B = 0), and the argument errors.
/// </summary>
[TestFixture]
public sealed class AdapterInitTests
{
    /// <summary>A base config big enough for sample moments: H = 256, Hq·D = Hkv·D = 256, I = 96, 2 layers.</summary>
    private static LlamaConfig Wide => LlamaConfig.Parse(
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":256,\"intermediate_size\":96,\"num_hidden_layers\":2,"
        + "\"num_attention_heads\":4,\"num_key_value_heads\":4,\"head_dim\":64,\"vocab_size\":32,\"rms_norm_eps\":1e-5}", "wide/config.json");

    private static readonly LlamaModule[] AllModules = Enum.GetValues<LlamaModule>();

    private static (double Mean, double Variance) Moments(IEnumerable<float> values)
    {
        var v = values.Select(x => (double)x).ToArray();
        double mean = v.Average();
        return (mean, v.Sum(x => (x - mean) * (x - mean)) / v.Length);
    }

    [Test]
    public void ShapesComeFromTheBaseModelAndEveryPartIsInitialisedAsTheReference()
    {
        var model = AdapterKit.Tiny;
        var adapter = AdapterInit.Create(model, new AdapterInitOptions { Rank = 4, Alpha = 8, TargetModules = AllModules, InstanceDim = 5, CrmEmbedDim = 3, Seed = 7 });
        Assert.That(adapter.Config.Rank, Is.EqualTo(4));
        Assert.That(adapter.Config.Scale, Is.EqualTo(2f));
        Assert.That(adapter.Config.InstanceDim, Is.EqualTo(5));
        Assert.That(adapter.Config.CrmEmbedDim, Is.EqualTo(3));
        Assert.That(adapter.Config.LayersToTransform, Is.Null);
        Assert.That(adapter.Targets, Has.Count.EqualTo(2 * 7));
        foreach (var t in adapter.Targets)
        {
            string module = LlamaModules.PeftName(t.Module);
            var (_, dout, din) = AdapterKit.TinyModules[module];
            string at = $"layer {t.Layer} {module}";
            Assert.That((t.InFeatures, t.OutFeatures), Is.EqualTo((din, dout)), at);
            Assert.That(t.A, Has.Length.EqualTo(4 * din), at);
            Assert.That(t.A.Select(Math.Abs), Has.All.LessThanOrEqualTo((float)(1 / Math.Sqrt(din))), $"{at}: A within ±1/√d_in");
            Assert.That(t.A.Distinct().Count(), Is.GreaterThan(t.A.Length / 2), $"{at}: A is random");
            Assert.That(t.B, Has.Length.EqualTo(dout * 4).And.All.EqualTo(0f), $"{at}: B = 0");
            var g = t.Generator!;
            Assert.That(g.LnWeight, Has.Length.EqualTo(5).And.All.EqualTo(1f), $"{at}: LayerNorm weight 1");
            Assert.That(g.LnBias, Has.Length.EqualTo(5).And.All.EqualTo(0f), $"{at}: LayerNorm bias 0");
            Assert.That(g.W1, Has.Length.EqualTo(2 * 16 * 5));
            Assert.That(g.W1.Select(Math.Abs), Has.All.LessThanOrEqualTo((float)(1 / Math.Sqrt(5))), $"{at}: W1 within ±1/√d_h");
            Assert.That(g.W2, Has.Length.EqualTo(16 * 32));
            Assert.That(g.W2.Select(Math.Abs), Has.All.LessThanOrEqualTo((float)(1 / Math.Sqrt(32))), $"{at}: W2 within ±1/√(2r²)");
            Assert.That(g.B1.Concat(g.B2), Has.All.EqualTo(0f), $"{at}: generator biases 0");
        }
        var p = adapter.Projector!;
        Assert.That((p.W1.Length, p.W2.Length), Is.EqualTo((16 * 3, 16 * 16)));
        Assert.That(p.B1.Concat(p.B2), Has.All.EqualTo(0f), "projector biases 0");
        Assert.That(p.W1.Distinct().Count(), Is.EqualTo(p.W1.Length), "projector W1 is random");
    }

    [Test]
    public void SampleMomentsMatchKaimingUniformAndXavierNormal()
    {
        var model = Wide;
        var adapter = AdapterInit.Create(model, new AdapterInitOptions { Rank = 8, InstanceDim = 64, CrmEmbedDim = 32, Seed = 1 });
        // U(±b) has variance b²/3: A over every target (4 targets × 8 × 256 = 8192 values, b² = 1/256).
        var a = Moments(adapter.Targets.SelectMany(t => t.A));
        Assert.That(a.Mean, Is.EqualTo(0).Within(0.003));
        Assert.That(a.Variance, Is.EqualTo(1.0 / 256 / 3).Within(5).Percent);
        var w1 = Moments(adapter.Targets.SelectMany(t => t.Generator!.W1));   // b² = 1/64, 4 × 128 × 64 values
        Assert.That(w1.Variance, Is.EqualTo(1.0 / 64 / 3).Within(5).Percent);
        var w2 = Moments(adapter.Targets.SelectMany(t => t.Generator!.W2));   // b² = 1/128, 4 × 64 × 128 values
        Assert.That(w2.Variance, Is.EqualTo(1.0 / 128 / 3).Within(5).Percent);
        // Xavier normal: variance 2 / (fan_in + fan_out).
        var p1 = Moments(adapter.Projector!.W1);   // [256, 32]
        Assert.That(p1.Mean, Is.EqualTo(0).Within(0.005));
        Assert.That(p1.Variance, Is.EqualTo(2.0 / (32 + 256)).Within(5).Percent);
        var p2 = Moments(adapter.Projector.W2);    // [256, 256]
        Assert.That(p2.Variance, Is.EqualTo(2.0 / 512).Within(3).Percent);
        // Normal, not uniform: about 4.6 % of N(0, σ²) lies beyond 2σ (a uniform of the same variance has none beyond 1.74σ).
        double sigma = Math.Sqrt(2.0 / 512);
        double tail = adapter.Projector.W2.Count(x => Math.Abs(x) > 2 * sigma) / (double)adapter.Projector.W2.Length;
        Assert.That(tail, Is.EqualTo(0.0455).Within(0.006));
    }

    [Test]
    public void TheSameSeedGivesTheSameAdapterAndAnotherSeedAnother()
    {
        var options = new AdapterInitOptions { Rank = 2, TargetModules = [LlamaModule.VProj, LlamaModule.QProj], InstanceDim = 3, CrmEmbedDim = 2, Seed = 11 };
        var a = AdapterInit.Create(AdapterKit.Tiny, options);
        var b = AdapterInit.Create(AdapterKit.Tiny, options);
        var c = AdapterInit.Create(AdapterKit.Tiny, options with { Seed = 12 });
        for (int i = 0; i < a.Targets.Count; i++)
        {
            Assert.That(a.Targets[i].A, Is.EqualTo(b.Targets[i].A));
            Assert.That(a.Targets[i].Generator!.W2, Is.EqualTo(b.Targets[i].Generator!.W2));
            Assert.That(a.Targets[i].A, Is.Not.EqualTo(c.Targets[i].A));
        }
        Assert.That(a.Projector!.W2, Is.EqualTo(b.Projector!.W2));
        Assert.That(a.Projector.W2, Is.Not.EqualTo(c.Projector!.W2));
        Assert.That(a.Config.TargetModules, Is.EqualTo(new[] { LlamaModule.QProj, LlamaModule.VProj }), "modules in canonical order");
    }

    [Test]
    public void LayersAreHonouredAndTheAdapterSavesAndLoadsAsItIs()
    {
        var model = AdapterKit.Tiny;
        var adapter = AdapterInit.Create(model, new AdapterInitOptions { Rank = 3, Alpha = 6, TargetModules = [LlamaModule.DownProj], Layers = [1], InstanceDim = 4, Seed = 3 });
        Assert.That(adapter.Targets.Select(t => (t.Layer, t.Module)), Is.EqualTo(new[] { (1, LlamaModule.DownProj) }));
        Assert.That(adapter.Config.LayersToTransform, Is.EqualTo(new[] { 1 }));
        Assert.That(adapter.Projector, Is.Null);
        string dir = Directory.CreateTempSubdirectory("rellax-init-").FullName;
        try
        {
            adapter.Save(dir);
            var loaded = RellaxAdapter.Load(dir, model);
            Assert.That(loaded.Config.LayersToTransform, Is.EqualTo(new[] { 1 }));
            Assert.That((loaded.Config.Rank, loaded.Config.Alpha, loaded.Config.InstanceDim), Is.EqualTo((3, 6.0, (int?)4)));
            Assert.That(loaded.Targets[0].A, Is.EqualTo(adapter.Targets[0].A));
            Assert.That(loaded.Targets[0].Generator!.W1, Is.EqualTo(adapter.Targets[0].Generator!.W1));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void ANewAdapterScoresExactlyAsTheBaseModel()
    {
        // B = 0: the adapter's term is zero whatever A and the generated gate are, so PEFT's init starts at the base model.
        using var backend = new CpuBackend(threads: 1);
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        var adapter = AdapterInit.Create(model.Config, new AdapterInitOptions { Rank = 4, InstanceDim = 6, Seed = 5 });
        var options = new ScoringOptions { Template = PromptTemplate.None, BatchSize = 2 };
        CtrRequest[] requests = [new("Lily liked the red ball. Will she like it?", [0.5f, -1, 2, 0, 1, 3]), new("Tom had a dog.", [1, 1, 1, -2, 0, 0.25f])];
        using var plain = new CtrScorer(model, null, options);
        using var adapted = new CtrScorer(model, adapter, options);
        var expected = plain.Score([.. requests.Select(r => r with { Instance = null })]);
        var actual = adapted.Score(requests);
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.That(actual[i].LogitYes, Is.EqualTo(expected[i].LogitYes).Within(1e-5), $"request {i}");
            Assert.That(actual[i].LogitNo, Is.EqualTo(expected[i].LogitNo).Within(1e-5), $"request {i}");
        }
    }

    [Test]
    public void BadOptionsAreRefusedNamingWhatIsWrong()
    {
        var model = AdapterKit.Tiny;
        var good = new AdapterInitOptions { Rank = 2 };
        foreach (var (options, message) in new (AdapterInitOptions, string)[]
        {
            (good with { Rank = 0 }, "rank r must be at least 1, got 0"),
            (good with { Alpha = double.NaN }, "lora_alpha must be finite and > 0"),
            (good with { Alpha = 0 }, "lora_alpha must be finite and > 0"),
            (good with { TargetModules = [] }, "at least one target module"),
            (good with { TargetModules = [LlamaModule.QProj, LlamaModule.QProj] }, "listed twice: q_proj, q_proj"),
            (good with { Layers = [2] }, "layer 2 is outside the model's 2 layers"),
            (good with { InstanceDim = 0 }, "d_h (instance_dim) must be at least 1"),
            (good with { CrmEmbedDim = -1 }, "E (crm_embed_dim) must be at least 1"),
        })
        {
            var e = Assert.Throws(Is.InstanceOf<ArgumentException>(), () => AdapterInit.Create(model, options))!;
            Assert.That(e.Message, Does.Contain(message));
        }
    }

    [Test]
    public void ExtendKeepsTheLoraAndAddsNewGeneratorsAndAProjectorInitialisedAsCreateDoes()
    {
        var model = AdapterKit.Tiny;
        var lora = AdapterInit.Create(model, new AdapterInitOptions { Rank = 3, TargetModules = AllModules, Seed = 5 });
        var rng = new Random(2);
        // A trained-looking LoRA: B no longer zero.
        var trained = RellaxAdapter.Create(lora.Config, [.. lora.Targets.Select(t => t with { B = [.. t.B.Select(_ => (float)rng.NextDouble() - 0.5f)] })], null, model, "trained");
        var both = AdapterInit.Extend(model, trained, instanceDim: 6, crmEmbedDim: 4, seed: 9);
        Assert.That((both.HasGenerators, both.Projector is not null, both.Config.InstanceDim, both.Config.CrmEmbedDim, both.Config.Rank),
            Is.EqualTo((true, true, (int?)6, (int?)4, 3)));
        for (int t = 0; t < trained.Targets.Count; t++)
        {
            Assert.That(both.Targets[t].A, Is.EqualTo(trained.Targets[t].A));
            Assert.That(both.Targets[t].B, Is.EqualTo(trained.Targets[t].B));
            var g = both.Targets[t].Generator!;
            Assert.That(g.LnWeight, Is.All.EqualTo(1f));
            Assert.That(g.LnBias.Concat(g.B1).Concat(g.B2), Is.All.EqualTo(0f));
            Assert.That(g.W1.Select(Math.Abs), Is.All.LessThanOrEqualTo(1 / Math.Sqrt(6) + 1e-7), "Kaiming-uniform bound 1/sqrt(d_h)");
            Assert.That(g.W2.Select(Math.Abs), Is.All.LessThanOrEqualTo(1 / Math.Sqrt(18) + 1e-7), "Kaiming-uniform bound 1/sqrt(2r^2)");
        }
        Assert.That(both.Projector!.B1.Concat(both.Projector.B2), Is.All.EqualTo(0f));
        Assert.That(AdapterInit.Extend(model, trained, 6, 4, seed: 9).Targets[0].Generator!.W1, Is.EqualTo(both.Targets[0].Generator!.W1), "deterministic per seed");

        var spaOnly = AdapterInit.Extend(model, trained, null, 4, seed: 9);
        Assert.That((spaOnly.HasGenerators, spaOnly.Projector is not null), Is.EqualTo((false, true)));
        var gatesOnly = AdapterInit.Extend(model, trained, 6, null, seed: 9);
        Assert.That((gatesOnly.HasGenerators, gatesOnly.Projector is null), Is.EqualTo((true, true)));

        Assert.That(() => AdapterInit.Extend(model, trained, null, null), Throws.ArgumentException.With.Message.Contains("nothing to add"));
        Assert.That(() => AdapterInit.Extend(model, both, 6, null), Throws.ArgumentException.With.Message.Contains("already has CFLoRA generators"));
        Assert.That(() => AdapterInit.Extend(model, spaOnly, null, 4), Throws.ArgumentException.With.Message.Contains("already has an SPA projector"));
        Assert.That(() => AdapterInit.Extend(model, trained, 0, null), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("d_h"));
    }
}
