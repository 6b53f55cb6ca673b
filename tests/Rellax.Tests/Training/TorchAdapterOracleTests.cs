using NUnit.Framework;
using Rellax.Runtime;
using Rellax.Runtime.Training;
using Rellax.Tests.Model;
using TorchSharp;

namespace Rellax.Tests.Training;

/// <summary>
/// What makes <see cref="TorchAdapterOracle"/> trustworthy as the reference of the trainer's gradients: its p_yes on a
/// left-padded batch equals <see cref="CtrScorer"/>'s (our fp32 model against the float64 oracle), padding does not change
/// any real row, and its autograd gradients equal central finite differences of its own loss in float64.
/// </summary>
[TestFixture]
public sealed class TorchAdapterOracleTests
{
    /// <summary>|Δp_yes| allowed between CtrScorer (fp32) and the float64 oracle.</summary>
    public const double PYesTolerance = 1e-5;

    private static readonly LlamaModule[] QV = [LlamaModule.QProj, LlamaModule.VProj];
    private static readonly LlamaModule[] AllModules =
        [LlamaModule.QProj, LlamaModule.KProj, LlamaModule.VProj, LlamaModule.OProj, LlamaModule.GateProj, LlamaModule.UpProj, LlamaModule.DownProj];

    [Test]
    public void PYesOnAPaddedBatchMatchesTheScorerOnStories260K()
    {
        using var s = TrainingSetup.Stories(QV, rank: 8, instanceDim: 16, crmDim: 8, count: 6);
        CheckPYes(s, PromptTemplate.Vicuna);
    }

    [Test]
    public void PYesOnAPaddedBatchMatchesTheScorerOnQwen2WithBiasesAndGqa()
    {
        using var s = TrainingSetup.Synthetic(SyntheticModelSpec.Qwen2, "BF16", AllModules, rank: 4, instanceDim: 8, crmDim: 6, count: 6);
        CheckPYes(s, PromptTemplate.None);
    }

    private static void CheckPYes(TrainingSetup s, PromptTemplate template)
    {
        var options = new AdapterTrainingOptions { Scoring = new ScoringOptions { Template = template, BatchSize = 16 } };
        using var scorer = new CtrScorer(s.Model, s.Adapter, options.Scoring);
        var ours = scorer.Score([.. s.Examples.Select(e => e.Request)]);
        var batch = s.OracleBatch(CtrLoss.Bce, options);
        Assert.That(batch.Select(e => e.Sample.Ids.Length).Distinct().Count(), Is.GreaterThan(1), "the batch is padded");
        var expected = s.Oracle.PYes(batch);
        double max = ours.Zip(expected, (a, b) => Math.Abs(a.PYes - b)).Max();
        TestContext.Out.WriteLine($"lengths {string.Join(" ", batch.Select(e => e.Sample.Ids.Length))}; p_yes {string.Join(" ", expected.Select(p => p.ToString("F4")))}; max |Δ| {max:E2}");
        Assert.That(ours.Select(x => x.PYes), Is.EqualTo(expected).Within(PYesTolerance));
        Assert.That(expected.Max() - expected.Min(), Is.GreaterThan(0.01), "the prompts score differently (the comparison has power)");
    }

    [Test]
    public void PaddingChangesNoRealRow()
    {
        using var s = TrainingSetup.Synthetic(SyntheticModelSpec.TinyLlama with { MaxPositions = 256 }, "F32", AllModules, rank: 4, instanceDim: 8, crmDim: 6);
        var batch = s.OracleBatch(CtrLoss.Bce, new AdapterTrainingOptions { Scoring = new ScoringOptions { Template = PromptTemplate.None } });
        using var scope = torch.NewDisposeScope();
        var padded = s.Oracle.Model.Hidden([.. batch.Select(e => e.Sample)]);                     // [B, T, H]
        int t = (int)padded.shape[1];
        for (int j = 0; j < batch.Count; j++)
        {
            int n = batch[j].Sample.Ids.Length;
            var alone = s.Oracle.Model.Hidden(batch[j].Sample);                                     // [n, H]
            double diff = (padded[j].narrow(0, t - n, n) - alone).abs().max().item<double>();
            Assert.That(diff, Is.LessThan(1e-12), $"example {j} ({n} of {t} tokens)");
        }
    }

    private static IEnumerable<TestCaseData> FiniteDifferenceCases()
    {
        yield return new TestCaseData("stories260K", CtrLoss.Bce).SetArgDisplayNames("stories260K", "bce");
        yield return new TestCaseData("stories260K", CtrLoss.Lm).SetArgDisplayNames("stories260K", "lm");
        yield return new TestCaseData("qwen2", CtrLoss.Bce).SetArgDisplayNames("qwen2", "bce");
        yield return new TestCaseData("qwen2", CtrLoss.Lm).SetArgDisplayNames("qwen2", "lm");
    }

    /// <summary>
    /// For every trainable tensor kind (LoRA A and B, each generator tensor, each projector tensor), the entry with the largest
    /// gradient and a random entry: autograd against (L(θ + h) − L(θ − h)) / 2h with h = 1e-5 in float64 (truncation error
    /// ~h², rounding ~1e-16/h).
    /// </summary>
    [TestCaseSource(nameof(FiniteDifferenceCases))]
    public void GradientsMatchCentralFiniteDifferences(string model, CtrLoss loss)
    {
        using var s = model == "qwen2"
            ? TrainingSetup.Synthetic(SyntheticModelSpec.Qwen2, "F32", AllModules, rank: 4, instanceDim: 8, crmDim: 6, count: 4)
            : TrainingSetup.Stories(QV, rank: 4, instanceDim: 8, crmDim: 6, count: 4);
        var options = new AdapterTrainingOptions { Scoring = new ScoringOptions { Template = PromptTemplate.None } };
        var batch = s.OracleBatch(loss, options);
        var names = s.Oracle.Names(AdapterParts.Lora | AdapterParts.Gate | AdapterParts.Projector);
        var (value, grads) = s.Oracle.Gradients(batch, loss, names);
        Assert.That(value, Is.EqualTo(s.Oracle.Loss(batch, loss)).Within(1e-12), "the loss with and without autograd");
        // One tensor of each kind: the last layer's (its gradient is the least diluted) of every role.
        var checkedNames = names.GroupBy(n => n.Contains(".layers.", StringComparison.Ordinal) ? n[(n.IndexOf('.', n.IndexOf("_proj.", StringComparison.Ordinal)) + 1)..] : n)
            .Select(g => g.Last()).ToArray();
        Assert.That(checkedNames, Has.Length.EqualTo(12), "A, B, six generator and four projector tensors");
        var rng = new Random(5);
        foreach (string name in checkedNames)
        {
            var g = grads[name];
            int largest = Array.IndexOf(g, g.MaxBy(Math.Abs));
            Assert.That(Math.Abs(g[largest]), Is.GreaterThan(1e-6), $"{name} gets a gradient");
            foreach (int i in new[] { largest, rng.Next(g.Length) })
            {
                double fd = s.Oracle.FiniteDifference(batch, loss, name, i, 1e-5);
                TestContext.Out.WriteLine($"{name}[{i}]: autograd {g[i]:E6}, finite difference {fd:E6}");
                Assert.That(g[i], Is.EqualTo(fd).Within(1e-7 + 1e-6 * Math.Abs(fd)), $"{name}[{i}]");
            }
        }
    }
}
