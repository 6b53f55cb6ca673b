using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>The fitted <see cref="LikeRateBaseline"/> and its scores.</summary>
/// <param name="Weights">[bias, w_user, w_item] of the logistic regression on the standardised features.</param>
/// <param name="Valid">Valid-split metrics (null when the split is empty).</param>
/// <param name="Test">Test-split metrics (null when the split is empty or not asked for).</param>
/// <param name="TrainSamples">Train samples fitted on.</param>
public sealed record LikeRateBaselineResult(double[] Weights, CtrMetrics? Valid, CtrMetrics? Test, int TrainSamples);

/// <summary>
/// The simplest click model worth beating: a logistic regression on two features of a sample, the user's recent
/// like-rate (the share of positive labels among the user's last <c>k</c> history events) and the item's like-rate (the
/// share of positive train-split samples of the item, leave-one-out on the train split itself so that a train row's own
/// label never feeds its feature), both smoothed towards the train split's positive rate with a prior of
/// <see cref="PriorWeight"/> pseudo-events. Fitted on the train split by Newton's method (IRLS) with a small L2 penalty;
/// nothing is selected on the valid or test split.
/// </summary>
public static class LikeRateBaseline
{
    /// <summary>Pseudo-events of the smoothing prior: rate = (positives + m·p) / (events + m), p = the train positive rate.</summary>
    public const double PriorWeight = 5;

    private const double L2 = 1e-4;
    private const int NewtonSteps = 25;

    /// <summary>Fits on the train split and scores the valid split (and the test split when <paramref name="scoreTest"/>).</summary>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="k">History events behind the user's recent like-rate (at least 1).</param>
    /// <param name="scoreTest">Also score the test split (false while tuning).</param>
    /// <exception cref="ArgumentException">An empty or one-class train split, or <paramref name="k"/> below 1.</exception>
    public static LikeRateBaselineResult Fit(SampleSet set, int k = 10, bool scoreTest = true)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        var train = set.InSplit(SampleSplit.Train).ToArray();
        if (train.Length == 0) throw new ArgumentException("the train split is empty: there is nothing to fit", nameof(set));
        int positives = train.Count(s => s.Label);
        if (positives == 0 || positives == train.Length)
            throw new ArgumentException($"the train split's {train.Length} samples are all {(positives == 0 ? "negative" : "positive")}: a click model needs both classes", nameof(set));
        double prior = (double)positives / train.Length;

        // Per item: train-split events and positives.
        int items = set.Dataset.Items.Count;
        var itemEvents = new int[items];
        var itemPositives = new int[items];
        foreach (var s in train)
        {
            itemEvents[s.Item]++;
            if (s.Label) itemPositives[s.Item]++;
        }

        double[] Features(in ReLLaSample s, bool leaveOneOut)
        {
            var history = set.History(s);
            int from = Math.Max(0, history.Length - k), likes = 0;
            for (int i = from; i < history.Length; i++)
                if (set.Dataset.IsPositive(history[i].Value)) likes++;
            double user = (likes + PriorWeight * prior) / (history.Length - from + PriorWeight);
            int n = itemEvents[s.Item], p = itemPositives[s.Item];
            if (leaveOneOut) { n--; if (s.Label) p--; }
            double item = (p + PriorWeight * prior) / (n + PriorWeight);
            return [user, item];
        }

        var x = train.Select(s => Features(s, leaveOneOut: true)).ToArray();
        var (mean, scale) = Standardisation(x);
        var w = FitLogistic(x, train.Select(s => s.Label).ToArray(), mean, scale);

        CtrMetrics? Score(SampleSplit split)
        {
            var samples = set.InSplit(split).ToArray();
            if (samples.Length == 0) return null;
            var p = samples.Select(s => Predict(w, Features(s, leaveOneOut: false), mean, scale)).ToArray();
            return CtrMetrics.Compute(p, [.. samples.Select(s => s.Label)]);
        }
        return new LikeRateBaselineResult(w, Score(SampleSplit.Valid), scoreTest ? Score(SampleSplit.Test) : null, train.Length);
    }

    private static (double[] Mean, double[] Scale) Standardisation(double[][] x)
    {
        int d = x[0].Length;
        var mean = new double[d];
        var scale = new double[d];
        for (int j = 0; j < d; j++)
        {
            mean[j] = x.Average(r => r[j]);
            double variance = x.Average(r => (r[j] - mean[j]) * (r[j] - mean[j]));
            scale[j] = variance > 0 ? 1 / Math.Sqrt(variance) : 1;
        }
        return (mean, scale);
    }

    private static double Predict(double[] w, double[] f, double[] mean, double[] scale)
    {
        double z = w[0];
        for (int j = 0; j < f.Length; j++) z += w[j + 1] * (f[j] - mean[j]) * scale[j];
        return 1 / (1 + Math.Exp(-z));
    }

    /// <summary>Newton's method on the mean log-loss + L2/2·|w|² (bias unpenalised); 3×3 solves by Gaussian elimination.</summary>
    private static double[] FitLogistic(double[][] x, bool[] y, double[] mean, double[] scale)
    {
        int d = x[0].Length + 1, n = x.Length;
        var w = new double[d];
        for (int iteration = 0; iteration < NewtonSteps; iteration++)
        {
            var g = new double[d];
            var h = new double[d, d];
            var row = new double[d];
            for (int i = 0; i < n; i++)
            {
                row[0] = 1;
                for (int j = 1; j < d; j++) row[j] = (x[i][j - 1] - mean[j - 1]) * scale[j - 1];
                double z = 0;
                for (int j = 0; j < d; j++) z += w[j] * row[j];
                double p = 1 / (1 + Math.Exp(-z)), r = p - (y[i] ? 1 : 0), v = p * (1 - p);
                for (int a = 0; a < d; a++)
                {
                    g[a] += r * row[a] / n;
                    for (int b = 0; b < d; b++) h[a, b] += v * row[a] * row[b] / n;
                }
            }
            for (int a = 1; a < d; a++) { g[a] += L2 * w[a]; h[a, a] += L2; }
            var step = Solve(h, g);
            double largest = 0;
            for (int a = 0; a < d; a++) { w[a] -= step[a]; largest = Math.Max(largest, Math.Abs(step[a])); }
            if (largest < 1e-10) break;
        }
        return w;
    }

    private static double[] Solve(double[,] a, double[] b)
    {
        int n = b.Length;
        var m = (double[,])a.Clone();
        var v = (double[])b.Clone();
        for (int c = 0; c < n; c++)
        {
            int pivot = c;
            for (int r = c + 1; r < n; r++) if (Math.Abs(m[r, c]) > Math.Abs(m[pivot, c])) pivot = r;
            for (int j = 0; j < n; j++) (m[c, j], m[pivot, j]) = (m[pivot, j], m[c, j]);
            (v[c], v[pivot]) = (v[pivot], v[c]);
            for (int r = c + 1; r < n; r++)
            {
                double f = m[r, c] / m[c, c];
                for (int j = c; j < n; j++) m[r, j] -= f * m[c, j];
                v[r] -= f * v[c];
            }
        }
        var x = new double[n];
        for (int r = n - 1; r >= 0; r--)
        {
            double s = v[r];
            for (int j = r + 1; j < n; j++) s -= m[r, j] * x[j];
            x[r] = s / m[r, r];
        }
        return x;
    }
}
