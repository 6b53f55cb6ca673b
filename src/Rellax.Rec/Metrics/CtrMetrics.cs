namespace Rellax.Rec;

/// <summary>
/// CTR metrics over predicted click probabilities and 0/1 labels (SPEC §1): AUC, LogLoss, accuracy at 0.5.
/// PLACEHOLDER (metrics): the documented tie and clipping rules.
/// </summary>
/// <param name="Auc">Area under the ROC curve; NaN when the labels are all one class.</param>
/// <param name="LogLoss">Mean binary cross-entropy (natural log) with p clipped to [<see cref="Epsilon"/>, 1 - <see cref="Epsilon"/>].</param>
/// <param name="Accuracy">Share of samples where (p &gt; 0.5) equals the label.</param>
/// <param name="Count">Number of samples.</param>
/// <param name="Positives">Number of positive labels.</param>
public readonly record struct CtrMetrics(double Auc, double LogLoss, double Accuracy, int Count, int Positives)
{
    /// <summary>The clipping bound of <see cref="LogLoss"/>.</summary>
    public const double Epsilon = 1e-7;

    /// <summary>All three metrics.</summary>
    /// <exception cref="ArgumentException">Lengths differ, no samples, or a probability outside [0, 1] or NaN (the message names its index).</exception>
    public static CtrMetrics Compute(ReadOnlySpan<double> probabilities, ReadOnlySpan<bool> labels) =>
        throw new NotImplementedException("PLACEHOLDER: CtrMetrics.Compute");
}
