namespace Rellax.Rec;

/// <summary>
/// ReLLa sample construction (SPEC §1). Time-ordered datasets (<see cref="RatingDataset.HasTimestamps"/>): every rating is
/// a sample whose history is the user's earlier ratings; PLACEHOLDER (samples helper): full documentation of the order,
/// ties, the &gt;= 5 rule, the split and the hold-out protocol.
/// </summary>
public static class ReLLaSamples
{
    /// <summary>Builds the samples of <paramref name="dataset"/>.</summary>
    /// <param name="dataset">The ratings.</param>
    /// <param name="options">Null for the protocol's defaults (<see cref="SampleOptions"/> for time-ordered data,
    /// <see cref="SampleOptions.HoldOutDefaults"/> for hold-out data).</param>
    public static SampleSet Build(RatingDataset dataset, SampleOptions? options = null) =>
        throw new NotImplementedException("PLACEHOLDER: ReLLa sample construction");
}
