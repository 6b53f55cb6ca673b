using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="LikeRateBaseline"/>: the fitted weights are the optimum of the penalised log-loss (its gradient, computed
/// here independently from the features the class documents, is zero), the model ranks the synthetic dataset's samples
/// (whose labels follow each user's taste) better than chance, and the argument errors.
/// </summary>
[TestFixture]
public sealed class LikeRateBaselineTests
{
    private static SampleSet Synthetic(int users, int seed) => ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = users, Seed = seed }));

    [Test]
    public void TheFittedWeightsZeroTheGradientOfThePenalisedLogLoss()
    {
        var set = Synthetic(40, 5);
        const int k = 6;
        var result = LikeRateBaseline.Fit(set, k);
        var train = set.InSplit(SampleSplit.Train).ToArray();
        double prior = train.Count(s => s.Label) / (double)train.Length, m = LikeRateBaseline.PriorWeight;
        var events = new Dictionary<int, (int N, int P)>();
        foreach (var s in train)
        {
            events.TryGetValue(s.Item, out var e);
            events[s.Item] = (e.N + 1, e.P + (s.Label ? 1 : 0));
        }
        // The documented features: the user's smoothed like-rate over the last k events, the item's leave-one-out train rate.
        var x = train.Select(s =>
        {
            var h = set.History(s).ToArray();
            var recent = h.Skip(Math.Max(0, h.Length - k)).ToArray();
            double user = (recent.Count(r => set.Dataset.IsPositive(r.Value)) + m * prior) / (recent.Length + m);
            var (n, p) = events[s.Item];
            double item = (p - (s.Label ? 1 : 0) + m * prior) / (n - 1 + m);
            return new[] { user, item };
        }).ToArray();
        var mean = new double[2];
        var scale = new double[2];
        for (int j = 0; j < 2; j++)
        {
            mean[j] = x.Average(r => r[j]);
            scale[j] = 1 / Math.Sqrt(x.Average(r => (r[j] - mean[j]) * (r[j] - mean[j])));
        }
        var w = result.Weights;
        var g = new double[3];
        for (int i = 0; i < train.Length; i++)
        {
            double z1 = (x[i][0] - mean[0]) * scale[0], z2 = (x[i][1] - mean[1]) * scale[1];
            double p = 1 / (1 + Math.Exp(-(w[0] + w[1] * z1 + w[2] * z2))), r = p - (train[i].Label ? 1 : 0);
            g[0] += r / train.Length;
            g[1] += r * z1 / train.Length;
            g[2] += r * z2 / train.Length;
        }
        g[1] += 1e-4 * w[1];
        g[2] += 1e-4 * w[2];
        TestContext.Out.WriteLine($"weights [{string.Join(", ", w.Select(v => v.ToString("F4")))}], gradient [{string.Join(", ", g.Select(v => v.ToString("E2")))}]");
        Assert.That(g.Select(Math.Abs), Is.All.LessThan(1e-9));
        Assert.That(w[1], Is.GreaterThan(0), "a user who liked more recently likes more");
        Assert.That(w[2], Is.GreaterThan(0), "an item liked more by others is liked more");
        Assert.That(result.TrainSamples, Is.EqualTo(train.Length));
    }

    [Test]
    public void RanksTheSyntheticSamplesBetterThanChanceAndScoresTestOnlyWhenAsked()
    {
        var set = Synthetic(60, 7);
        var result = LikeRateBaseline.Fit(set, 10);
        TestContext.Out.WriteLine($"valid AUC {result.Valid!.Value.Auc:F4}, test AUC {result.Test!.Value.Auc:F4}");
        Assert.That(result.Valid!.Value.Auc, Is.GreaterThan(0.6));
        Assert.That(result.Test!.Value.Auc, Is.GreaterThan(0.6));
        Assert.That(LikeRateBaseline.Fit(set, 10, scoreTest: false).Test, Is.Null);
    }

    [Test]
    public void RefusesABadKAndAOneClassTrainSplit()
    {
        var set = Synthetic(10, 3);
        Assert.That(() => LikeRateBaseline.Fit(set, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        // Only favourite categories, no flops, no noise: every rating is 4 stars, every label positive.
        var allPositive = ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions
        {
            Users = 6, Seed = 3, FavouriteShare = 1, QualityShare = 0, RatingNoise = 0, MinRatingsPerUser = 20, MaxRatingsPerUser = 30,
        }));
        Assert.That(() => LikeRateBaseline.Fit(allPositive), Throws.ArgumentException.With.Message.Contains("all positive"));
    }
}
