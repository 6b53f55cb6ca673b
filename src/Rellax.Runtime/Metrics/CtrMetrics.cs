using System.Globalization;

namespace Rellax.Runtime;

/// <summary>
/// CTR metrics over predicted click probabilities and 0/1 labels (SPEC §1): AUC, LogLoss, accuracy at 0.5, in double
/// precision, as the reference's <c>finetune.py</c> computes them with scikit-learn (<c>roc_auc_score</c>,
/// <c>log_loss</c>, <c>accuracy_score(y, p &gt; 0.5)</c>), with the differences noted on each.
/// </summary>
/// <param name="Auc">Area under the ROC curve = the probability that a random positive scores above a random negative,
/// a tie counting 1/2; NaN when the labels are all one class (scikit-learn raises instead).</param>
/// <param name="LogLoss">Mean binary cross-entropy (natural log) with p clipped to [<see cref="Epsilon"/>, 1 − <see cref="Epsilon"/>].</param>
/// <param name="Accuracy">Share of samples where (p &gt; 0.5) equals the label.</param>
/// <param name="Count">Number of samples.</param>
/// <param name="Positives">Number of positive labels.</param>
public readonly record struct CtrMetrics(double Auc, double LogLoss, double Accuracy, int Count, int Positives)
{
    /// <summary>
    /// The clipping bound of <see cref="LogLoss"/>: each p is replaced by min(max(p, 1e-7), 1 − 1e-7) before the log.
    /// scikit-learn's <c>log_loss</c> clips at <c>np.finfo(float64).eps</c> = 2.22e-16 since 1.2 (1e-15 before), so the two
    /// agree exactly for every p in [1e-7, 1 − 1e-7] and differ only for near-certain predictions: a confidently wrong
    /// sample (p = 0 with label 1, or p = 1 with label 0) costs −ln(1e-7) = 16.118 nats here against −ln(2.22e-16) = 36.044
    /// in scikit-learn (34.539 with 1e-15), 19.93 nats less before averaging; a confidently right one costs
    /// −ln(1 − 1e-7) ≈ 1.0e-7 here against ≈ 2.2e-16. The wider bound keeps one saturated fp32 score (p rounds to 0 or 1
    /// in fp32 softmax for a logit gap above ~17 or ~104) from dominating the mean.
    /// </summary>
    public const double Epsilon = 1e-7;

    /// <summary>
    /// All three metrics, sort-based in O(n log n) time and O(n) memory.
    /// <list type="bullet">
    /// <item>AUC by the rank-sum (Mann-Whitney) formula: rank all p ascending (1-based), tied p sharing the average of
    /// their ranks; with R₊ the sum of the positives' ranks, n₊ positives and n₋ negatives,
    /// AUC = (R₊ − n₊(n₊ + 1)/2) / (n₊ n₋). This equals the share of (positive, negative) pairs ordered correctly with a
    /// tied pair counting 1/2 (scikit-learn's trapezoidal ROC area gives the same). Twice the rank sum is accumulated
    /// exactly in a 64-bit integer. NaN when n₊ = 0 or n₋ = 0.</item>
    /// <item>LogLoss = −(1/n) Σ [y ln q + (1 − y) ln(1 − q)], q = p clipped by <see cref="Epsilon"/>.</item>
    /// <item>Accuracy: a prediction is positive when p &gt; 0.5, so p = 0.5 exactly counts as a negative prediction
    /// (as <c>accuracy_score(y, p &gt; 0.5)</c> in the reference).</item>
    /// </list>
    /// </summary>
    /// <param name="probabilities">p(click) per sample, each in [0, 1].</param>
    /// <param name="labels">The true label per sample (true = clicked/liked), same length.</param>
    /// <exception cref="ArgumentException">Lengths differ, no samples, or a probability outside [0, 1] or NaN (the message
    /// names its index and value).</exception>
    public static CtrMetrics Compute(ReadOnlySpan<double> probabilities, ReadOnlySpan<bool> labels)
    {
        int n = probabilities.Length;
        if (labels.Length != n)
            throw new ArgumentException($"{n} probabilities but {labels.Length} labels: one label per probability is needed", nameof(labels));
        if (n == 0) throw new ArgumentException("no samples: metrics need at least one probability and label", nameof(probabilities));
        for (int i = 0; i < n; i++)
        {
            double p = probabilities[i];
            if (!(p >= 0.0 && p <= 1.0))
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                    $"probabilities[{i}] = {p:R} is not a probability in [0, 1]"), nameof(probabilities));
        }

        int positives = 0, correct = 0;
        double lossSum = 0;
        for (int i = 0; i < n; i++)
        {
            double p = probabilities[i];
            bool y = labels[i];
            if (y) positives++;
            if (p > 0.5 == y) correct++;
            double q = Math.Clamp(p, Epsilon, 1.0 - Epsilon);
            lossSum -= y ? Math.Log(q) : Math.Log(1.0 - q);
        }

        return new CtrMetrics(RankSumAuc(probabilities, labels, positives), lossSum / n, (double)correct / n, n, positives);
    }

    // Rank-sum AUC; see Compute. positives = the number of true labels.
    private static double RankSumAuc(ReadOnlySpan<double> probabilities, ReadOnlySpan<bool> labels, int positives)
    {
        int n = probabilities.Length;
        long negatives = n - positives;
        if (positives == 0 || negatives == 0) return double.NaN;
        var keys = probabilities.ToArray();
        var sortedLabels = labels.ToArray();
        Array.Sort(keys, sortedLabels);
        long twiceRankSum = 0; // Σ over positives of 2 · (average rank): each group's 2·avg = first + last rank, an integer
        for (int start = 0; start < n;)
        {
            int end = start + 1;
            while (end < n && keys[end] == keys[start]) end++;
            long groupPositives = 0;
            for (int i = start; i < end; i++) if (sortedLabels[i]) groupPositives++;
            twiceRankSum += groupPositives * ((start + 1L) + end); // ranks start+1 .. end
            start = end;
        }
        double u = (twiceRankSum - (long)positives * (positives + 1L)) / 2.0;
        return u / ((double)positives * negatives);
    }
}
