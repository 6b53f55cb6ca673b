using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using Rellax.Runtime.Training;
using Rellax.Tests.Model;

namespace Rellax.Tests.Training;

/// <summary>
/// The adapter trainer's gradients on the real stories260K against central finite differences of its own loss (the
/// float64 TorchSharp oracle is the tight check; this one is independent of any other implementation: it perturbs each
/// checked entry by ±ε and re-runs the fp32 forward). For every trained tensor the entries with the largest gradient are
/// checked, so a wrong sign, a missing term or a wrong factor fails.
/// </summary>
[TestFixture]
public sealed class AdapterTrainerFiniteDifferenceTests
{
    private static List<CtrExample> Examples(int count, int? instanceDim, int? crmDim, int seed)
    {
        var requests = ScoringOracle.RandomRequests(seed, count, instanceDim, crmDim, markers: crmDim is not null);
        return [.. requests.Select((r, i) => new CtrExample(r, i % 2))];
    }

    [TestCase(CtrLoss.Bce, AdapterParts.Lora, false)]
    [TestCase(CtrLoss.Lm, AdapterParts.Lora, false)]
    [TestCase(CtrLoss.Bce, AdapterParts.Gate | AdapterParts.Projector, false)]
    [TestCase(CtrLoss.Bce, AdapterParts.Lora | AdapterParts.Gate | AdapterParts.Projector, true)]
    [TestCase(CtrLoss.Lm, AdapterParts.Gate | AdapterParts.Projector, true)]
    public void GradientsMatchCentralDifferences(CtrLoss loss, AdapterParts parts, bool recompute)
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(2);
        using var model = LlamaModel.Load(dir, backend);
        bool cflora = parts != AdapterParts.Lora;
        int? dh = cflora ? 6 : null, e = cflora ? 5 : null;
        var (config, targets, projector) = ScoringOracle.RandomAdapter(model.Config, 11,
            [LlamaModule.QProj, LlamaModule.VProj, LlamaModule.DownProj], 4, dh, e);
        var adapter = RellaxAdapter.Create(config, targets, projector, model.Config);
        var examples = Examples(5, dh, e, 3);
        var options = new AdapterTrainingOptions
        {
            Trainable = parts, Loss = loss, Recompute = recompute,
            Scoring = new ScoringOptions { Template = PromptTemplate.None, BatchSize = 2 },     // 3 micro-batches
        };
        using var trainer = new AdapterTrainer(model, adapter, examples, null, options);
        int[] all = [.. Enumerable.Range(0, examples.Count)];
        double baseLoss = trainer.ComputeGradients(all);
        Assert.That(double.IsFinite(baseLoss) && baseLoss > 0, $"loss {baseLoss}");
        var grads = trainer.Parameters.ToDictionary(p => p.Name, p => (float[])p.Grad.Clone());
        Assert.That(trainer.Parameters, Is.Not.Empty);

        // One tensor of each role (A, B, each generator part, each projector part) keeps the run short.
        int checkedTensors = 0;
        var roles = new HashSet<string>();
        foreach (var p in trainer.Parameters)
        {
            if (!roles.Add(p.Name[(p.Name.IndexOf("_proj.", StringComparison.Ordinal) + 1)..])) continue;
            var g = grads[p.Name];
            double norm = Math.Sqrt(g.Sum(x => (double)x * x));
            Assert.That(norm, Is.GreaterThan(0), $"{p.Name}: zero gradient");
            foreach (int i in Enumerable.Range(0, g.Length).OrderByDescending(i => Math.Abs(g[i])).Take(2))
            {
                float original = p.Value[i];
                float eps = Math.Max(1e-3f, Math.Abs(original) * 1e-3f);
                p.Value[i] = original + eps;
                double up = trainer.ComputeGradients(all);
                p.Value[i] = original - eps;
                double down = trainer.ComputeGradients(all);
                p.Value[i] = original;
                double numeric = (up - down) / (2.0 * ((double)(original + eps) - original));
                Assert.That(g[i], Is.EqualTo(numeric).Within(0.03 * Math.Abs(numeric) + 2e-4 * norm),
                    $"{p.Name}[{i}]: analytic {g[i]:G6} vs central difference {numeric:G6} ({loss}, {parts}, recompute {recompute})");
            }
            checkedTensors++;
        }
        TestContext.Out.WriteLine($"{checkedTensors} tensors checked; loss {baseLoss:F6}; peak activations {trainer.PeakActivationBytes} bytes");
    }

    [Test]
    public void RecomputeGivesTheSameGradients()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(2);
        using var model = LlamaModel.Load(dir, backend);
        var (config, targets, projector) = ScoringOracle.RandomAdapter(model.Config, 5, [LlamaModule.QProj, LlamaModule.UpProj], 4, 6, 5);
        var adapter = RellaxAdapter.Create(config, targets, projector, model.Config);
        var examples = Examples(4, 6, 5, 9);
        float[][] Run(bool recompute)
        {
            using var trainer = new AdapterTrainer(model, adapter, examples, null, new AdapterTrainingOptions
            {
                Trainable = AdapterParts.Lora | AdapterParts.Gate | AdapterParts.Projector, Recompute = recompute,
                Scoring = new ScoringOptions { Template = PromptTemplate.None },
            });
            trainer.ComputeGradients([0, 1, 2, 3]);
            return [.. trainer.Parameters.Select(p => (float[])p.Grad.Clone())];
        }
        var kept = Run(false);
        var recomputed = Run(true);
        for (int i = 0; i < kept.Length; i++) Assert.That(recomputed[i], Is.EqualTo(kept[i]), $"tensor {i}");
    }
}
