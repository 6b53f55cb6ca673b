namespace Rellax.Rec;

/// <summary>Which part of the data a sample belongs to.</summary>
public enum SampleSplit
{
    /// <summary>Training samples (the first 80% in global time order).</summary>
    Train,
    /// <summary>Validation samples (the next 10%).</summary>
    Valid,
    /// <summary>Test samples (the last 10%).</summary>
    Test,
}

/// <summary>
/// One ReLLa sample (SPEC §1): a user, a target item with its rating and label, and the user's history before it. The
/// history is not copied: it is the first <see cref="HistoryLength"/> events of the user's timeline
/// (<see cref="SampleSet.History"/>).
/// </summary>
/// <param name="Index">0-based position in <see cref="SampleSet.Samples"/> (global order); the sample's id in files.</param>
/// <param name="User">Row of <see cref="RatingDataset.UserKeys"/>.</param>
/// <param name="Item">The target item (row of <see cref="RatingDataset.Items"/>).</param>
/// <param name="Rating">The user's rating of the target.</param>
/// <param name="Label">True when the rating is positive (<see cref="RatingDataset.IsPositive"/>).</param>
/// <param name="Timestamp">The target rating's timestamp (or line order, see <see cref="RatingDataset.HasTimestamps"/>).</param>
/// <param name="HistoryLength">How many of the user's timeline events come before the target (at least
/// <see cref="SampleOptions.MinHistory"/>).</param>
/// <param name="Split">Train, valid or test.</param>
public readonly record struct ReLLaSample(int Index, int User, int Item, float Rating, bool Label, long Timestamp, int HistoryLength, SampleSplit Split);

/// <summary>How <see cref="ReLLaSamples.Build"/> makes samples.</summary>
public sealed record SampleOptions
{
    /// <summary>Samples with fewer history events than this are dropped (SPEC: 5).</summary>
    public int MinHistory { get; init; } = 5;

    /// <summary>Share of samples (time-ordered datasets) or users (hold-out datasets) in the training split.</summary>
    public double TrainFraction { get; init; } = 0.8;

    /// <summary>Share in the validation split; the rest is test.</summary>
    public double ValidFraction { get; init; } = 0.1;

    /// <summary>Seed for the choices the hold-out protocol makes at random (which users go to which split).</summary>
    public int Seed { get; init; } = 42;

    /// <summary>
    /// Hold-out protocol only: shuffle each user's ratings with <see cref="Seed"/> before taking the last one as the target, as
    /// the reference Book-Crossing preprocessing does (true, the default); false keeps file order, so the target is the user's
    /// last rating in the file (for GoodReads, whose <c>ratings.csv</c> is in time order, the most recent one).
    /// </summary>
    public bool ShuffleHoldOut { get; init; } = true;

    /// <summary>Keep only the first N samples after construction (0 = all): for quick runs. Splits are assigned first.</summary>
    public int Limit { get; init; }

    /// <summary>The defaults of the hold-out protocol (Book-Crossing, GoodReads): 90/0/10 (SPEC: a 90/10 split).</summary>
    public static SampleOptions HoldOutDefaults { get; } = new() { TrainFraction = 0.9, ValidFraction = 0.0 };
}

/// <summary>
/// ReLLa samples over a dataset: every sample, in global order, plus each user's timeline (the user's rating events in
/// the order histories use), so a history is a slice and never a copy. Immutable.
/// </summary>
public sealed class SampleSet
{
    private readonly Rating[] _timelines;     // every rating grouped by user, each user's events in history order
    private readonly int[] _timelineStart;    // [users + 1]: user u's events are _timelines[_timelineStart[u].._timelineStart[u+1]]
    private readonly ReLLaSample[] _samples;
    private readonly int[] _splitCounts = new int[3];

    /// <summary>Creates a sample set from its parts and checks them (each sample's history lies inside its user's timeline and
    /// ends right before an event for the target item).</summary>
    /// <param name="dataset">The dataset the samples index.</param>
    /// <param name="options">The options the samples were made with (kept for manifests).</param>
    /// <param name="timelines">Every user's events, grouped by user in user order, each group in history order.</param>
    /// <param name="timelineStart">[users + 1] offsets of each user's group in <paramref name="timelines"/>.</param>
    /// <param name="samples">The samples in global order; <see cref="ReLLaSample.Index"/> must equal the position.</param>
    /// <exception cref="ArgumentException">Inconsistent parts; the message names the sample or user.</exception>
    public SampleSet(RatingDataset dataset, SampleOptions options, Rating[] timelines, int[] timelineStart, ReLLaSample[] samples)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timelines);
        ArgumentNullException.ThrowIfNull(timelineStart);
        ArgumentNullException.ThrowIfNull(samples);
        int users = dataset.UserKeys.Count;
        if (timelineStart.Length != users + 1 || timelineStart[0] != 0 || timelineStart[users] != timelines.Length)
            throw new ArgumentException($"timeline offsets must have {users + 1} entries from 0 to {timelines.Length}", nameof(timelineStart));
        for (int u = 0; u < users; u++)
        {
            if (timelineStart[u + 1] < timelineStart[u]) throw new ArgumentException($"timeline offsets decrease at user {u}", nameof(timelineStart));
            for (int e = timelineStart[u]; e < timelineStart[u + 1]; e++)
                if (timelines[e].User != u) throw new ArgumentException($"timeline event {e} belongs to user {timelines[e].User}, not {u}", nameof(timelines));
        }
        for (int s = 0; s < samples.Length; s++)
        {
            var x = samples[s];
            if (x.Index != s) throw new ArgumentException($"sample {s} has index {x.Index}", nameof(samples));
            if ((uint)x.User >= (uint)users) throw new ArgumentException($"sample {s}: user {x.User} is outside [0, {users})", nameof(samples));
            int length = timelineStart[x.User + 1] - timelineStart[x.User];
            if (x.HistoryLength < 0 || x.HistoryLength >= length)
                throw new ArgumentException($"sample {s}: history length {x.HistoryLength} does not leave the target inside user {x.User}'s timeline of {length} events", nameof(samples));
            if (timelines[timelineStart[x.User] + x.HistoryLength].Item != x.Item)
                throw new ArgumentException($"sample {s}: the timeline event after its history is not the target item {x.Item}", nameof(samples));
            if ((uint)x.Split > 2u) throw new ArgumentException($"sample {s}: unknown split {x.Split}", nameof(samples));
            _splitCounts[(int)x.Split]++;
        }
        Dataset = dataset;
        Options = options;
        _timelines = timelines;
        _timelineStart = timelineStart;
        _samples = samples;
    }

    /// <summary>The dataset the samples index.</summary>
    public RatingDataset Dataset { get; }

    /// <summary>The options the samples were made with.</summary>
    public SampleOptions Options { get; }

    /// <summary>Every sample in global order.</summary>
    public IReadOnlyList<ReLLaSample> Samples => _samples;

    /// <summary>User <paramref name="user"/>'s rating events in history order (time order; for hold-out datasets, the
    /// history in the protocol's order, shuffled with the seed unless <see cref="SampleOptions.ShuffleHoldOut"/> is false,
    /// followed by the held-out event; see <see cref="ReLLaSamples"/>).</summary>
    public ReadOnlySpan<Rating> Timeline(int user) => _timelines.AsSpan(_timelineStart[user], _timelineStart[user + 1] - _timelineStart[user]);

    /// <summary>The history of <paramref name="sample"/>: the events before its target, oldest first.</summary>
    public ReadOnlySpan<Rating> History(in ReLLaSample sample) => _timelines.AsSpan(_timelineStart[sample.User], sample.HistoryLength);

    /// <summary>The number of samples in <paramref name="split"/>.</summary>
    public int CountOf(SampleSplit split) => _splitCounts[(int)split];

    /// <summary>The samples of <paramref name="split"/>, in global order.</summary>
    public IEnumerable<ReLLaSample> InSplit(SampleSplit split)
    {
        foreach (var s in _samples) if (s.Split == split) yield return s;
    }

    /// <summary>The split's command-line and file name: <c>train</c>, <c>valid</c> or <c>test</c>.</summary>
    public static string NameOf(SampleSplit split) => split switch
    {
        SampleSplit.Train => "train",
        SampleSplit.Valid => "valid",
        SampleSplit.Test => "test",
        _ => throw new ArgumentOutOfRangeException(nameof(split)),
    };
}
