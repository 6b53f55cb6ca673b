using Rellax.Runtime;
using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Rec;

/// <summary><see cref="CtrMetrics.Compute"/> against cases worked out by hand (expected LogLoss values from the
/// <c>python3 -c "import math; ..."</c> line cited next to each) and against a plain pair-counting AUC.</summary>
[TestFixture]
public sealed class CtrMetricsTests
{
    private const double Tol = 1e-12;

    [Test]
    public void PerfectRanking()
    {
        var m = CtrMetrics.Compute([0.1, 0.4, 0.6, 0.9], [false, false, true, true]);
        Assert.That(m.Auc, Is.EqualTo(1.0));
        Assert.That(m.Accuracy, Is.EqualTo(1.0));
        // each sample's probability of its true label: 0.9, 0.6, 0.6, 0.9
        // python3 -c "import math; print((-math.log(.9)-math.log(.6))/2)" -> 0.30809306971190853
        Assert.That(m.LogLoss, Is.EqualTo(0.30809306971190853).Within(Tol));
        Assert.That(m.Count, Is.EqualTo(4));
        Assert.That(m.Positives, Is.EqualTo(2));
    }

    [Test]
    public void InverseRanking()
    {
        var m = CtrMetrics.Compute([0.1, 0.4, 0.6, 0.9], [true, true, false, false]);
        Assert.That(m.Auc, Is.EqualTo(0.0));
        Assert.That(m.Accuracy, Is.EqualTo(0.0));
    }

    [Test]
    public void AllTiedScoresGiveHalf()
    {
        var m = CtrMetrics.Compute([0.3, 0.3, 0.3, 0.3, 0.3], [true, false, false, true, false]);
        Assert.That(m.Auc, Is.EqualTo(0.5));
        Assert.That(m.Accuracy, Is.EqualTo(0.6)); // every prediction negative: the 3 negatives are right
        // python3 -c "import math; print(-(math.log(.7)*3+math.log(.3)*2)/5)" -> 0.6955940880936139
        Assert.That(m.LogLoss, Is.EqualTo(0.6955940880936139).Within(Tol));
    }

    /// <summary>
    /// Positives a = 0.5, b = 0.8, c = 0.5, d = 0.2; negatives e = 0.2, f = 0.5. Pair by pair (1 = positive above,
    /// 1/2 = tie, 0 = below): a-e 1, a-f 1/2, b-e 1, b-f 1, c-e 1, c-f 1/2, d-e 1/2, d-f 0; sum 5.5 over 8 pairs = 0.6875.
    /// Accuracy: only b (0.8) is predicted positive (p = 0.5 is not &gt; 0.5): right are b, e, f = 3 of 6.
    /// </summary>
    [Test]
    public void SmallCaseWithTiesByHand()
    {
        var m = CtrMetrics.Compute([0.5, 0.8, 0.5, 0.2, 0.2, 0.5], [true, true, true, true, false, false]);
        Assert.That(m.Auc, Is.EqualTo(0.6875));
        Assert.That(m.Accuracy, Is.EqualTo(0.5));
        // probability of the true label: .5 .8 .5 .2 (positives), .8 .5 (negatives)
        // python3 -c "import math; print(-(math.log(.5)+math.log(.8)+math.log(.5)+math.log(.2)+math.log(.8)+math.log(.5))/6)" -> 0.6891944261237258
        Assert.That(m.LogLoss, Is.EqualTo(0.6891944261237258).Within(Tol));
        Assert.That(m.Positives, Is.EqualTo(4));
    }

    [Test]
    public void HalfIsANegativePrediction()
    {
        Assert.That(CtrMetrics.Compute([0.5], [false]).Accuracy, Is.EqualTo(1.0));
        Assert.That(CtrMetrics.Compute([0.5], [true]).Accuracy, Is.EqualTo(0.0));
        Assert.That(CtrMetrics.Compute([0.5000001], [true]).Accuracy, Is.EqualTo(1.0));
    }

    [Test]
    public void ZeroAndOneAreClippedInLogLoss()
    {
        // confidently wrong: p = 0 becomes 1e-7, p = 1 becomes the double nearest 1 - 1e-7, whose complement is not
        // exactly 1e-7, as in numpy's clip: python3 -c "import math; print((-math.log(1e-7) - math.log(1-(1-1e-7)))/2)"
        // -> 16.1180956512215 (vs -ln(1e-7) = 16.11809565095832)
        var wrong = CtrMetrics.Compute([0.0, 1.0], [true, false]);
        Assert.That(wrong.LogLoss, Is.EqualTo(16.1180956512215).Within(1e-12));
        Assert.That(double.IsFinite(wrong.LogLoss), Is.True);
        Assert.That(wrong.Auc, Is.EqualTo(0.0));
        // confidently right: python3 -c "import math; print(-math.log(1-1e-7))" -> 1.0000000494736474e-07
        var right = CtrMetrics.Compute([0.0, 1.0], [false, true]);
        Assert.That(right.LogLoss, Is.EqualTo(1.0000000494736474e-07).Within(1e-18));
        Assert.That(right.Auc, Is.EqualTo(1.0));
        // inside the bounds nothing is clipped: 1e-7 itself with label 1 costs -ln(1e-7)
        Assert.That(CtrMetrics.Compute([1e-7], [true]).LogLoss, Is.EqualTo(16.11809565095832).Within(1e-12));
        Assert.That(CtrMetrics.Compute([1e-3], [true]).LogLoss, Is.EqualTo(6.907755278982137).Within(1e-12)); // -ln(0.001)
    }

    [Test]
    public void OneClassGivesNaNAucButTheOtherMetrics()
    {
        var pos = CtrMetrics.Compute([0.9, 0.2], [true, true]);
        Assert.That(pos.Auc, Is.NaN);
        Assert.That(pos.Accuracy, Is.EqualTo(0.5));
        Assert.That(double.IsFinite(pos.LogLoss), Is.True);
        Assert.That(CtrMetrics.Compute([0.9, 0.2], [false, false]).Auc, Is.NaN);
    }

    [Test]
    public void LengthMismatchAndEmptyAreRejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => CtrMetrics.Compute([0.1, 0.2, 0.3], [true, false]))!;
        Assert.That(ex.Message, Does.Contain("3 probabilities but 2 labels"));
        ex = Assert.Throws<ArgumentException>(() => CtrMetrics.Compute([], []))!;
        Assert.That(ex.Message, Does.Contain("no samples"));
    }

    [TestCase(double.NaN, "NaN")]
    [TestCase(1.5, "1.5")]
    [TestCase(-0.25, "-0.25")]
    [TestCase(double.PositiveInfinity, "Infinity")]
    public void BadProbabilityNamesItsIndex(double bad, string printed)
    {
        var ex = Assert.Throws<ArgumentException>(() => CtrMetrics.Compute([0.1, 0.2, bad, 0.4], [true, false, true, false]))!;
        Assert.That(ex.Message, Does.Contain($"probabilities[2] = {printed} is not a probability in [0, 1]"));
        Assert.That(ex.ParamName, Is.EqualTo("probabilities"));
    }

    /// <summary>AUC against a direct count over every (positive, negative) pair, on 400 scores rounded to 0.05 so that
    /// ties are common, with 15 seeds.</summary>
    [Test]
    public void AucEqualsPairCountingWithManyTies()
    {
        for (int seed = 0; seed < 15; seed++)
        {
            var rng = new Random(seed);
            int n = 400;
            var p = new double[n];
            var y = new bool[n];
            for (int i = 0; i < n; i++)
            {
                y[i] = rng.NextDouble() < 0.3;
                p[i] = Math.Round((rng.NextDouble() + (y[i] ? 0.3 : 0.0)) / 1.3 * 20) / 20;
            }
            double wins = 0;
            long pairs = 0;
            for (int i = 0; i < n; i++)
            {
                if (!y[i]) continue;
                for (int j = 0; j < n; j++)
                {
                    if (y[j]) continue;
                    pairs++;
                    wins += p[i] > p[j] ? 1.0 : p[i] == p[j] ? 0.5 : 0.0;
                }
            }
            Assert.That(CtrMetrics.Compute(p, y).Auc, Is.EqualTo(wins / pairs).Within(1e-12), $"seed {seed}");
        }
    }
}
