namespace Rellax.Rec;

/// <summary>
/// ReLLa sample construction (SPEC §1), following the reference preprocessing notebooks of LaVieEnRose365/ReLLa
/// (<c>data_preprocess/ml-1m.ipynb</c>, <c>ml-25m.ipynb</c>, <c>BookCrossing.ipynb</c>). Two protocols, picked by
/// <see cref="RatingDataset.HasTimestamps"/>.
/// </summary>
/// <remarks>
/// <para><b>Time-ordered datasets</b> (MovieLens, and custom data with timestamps).</para>
/// <list type="number">
/// <item>All ratings are sorted globally by (timestamp, user key, item key), stably: two ratings with the same key (a user
/// rating the same item twice in the same second) keep their file order, and the later one has the earlier one in its
/// history. Keys are the source ids (<see cref="RatingDataset.UserKeys"/>, <see cref="Item.Key"/>): ids made only of digits
/// compare as numbers and come before any other id, which compare ordinally (ML-100K, ML-25M: numeric ids; pandas sorts
/// ML-25M's integer columns). MovieLens-1M compares ids as strings (ordinal, so <c>"10" &lt; "9"</c>), because the
/// reference notebook reads <c>ratings.dat</c> into string columns before the same sort; this keeps our ML-1M samples and
/// split identical to the reference's.</item>
/// <item>Each rating is a sample; its history is every earlier rating of the same user in that global order (the user's
/// timeline, <see cref="SampleSet.Timeline"/>, is the user's ratings in that order).</item>
/// <item>Samples with fewer than <see cref="SampleOptions.MinHistory"/> history events are dropped (SPEC: 5).</item>
/// <item>The N remaining samples, still in global order, are split: train = the first <c>floor(TrainFraction · N)</c>,
/// valid = the next <c>floor(ValidFraction · N)</c>, test = the rest (the reference's <c>int(0.8 * N)</c> and
/// <c>int(0.1 * N)</c>, computed in double precision as Python does). E.g. N = 19: 15 / 1 / 3.</item>
/// </list>
/// <para><b>Hold-out datasets</b> (<see cref="RatingDataset.HasTimestamps"/> false: Book-Crossing, GoodReads), as
/// <c>BookCrossing.ipynb</c> does it.</para>
/// <list type="number">
/// <item>Users are taken in the order of their first rating in the file; each user's ratings in file order.</item>
/// <item>Users with fewer than <see cref="SampleOptions.MinHistory"/> + 1 ratings are dropped (SPEC: "more than 5
/// ratings", i.e. a history of at least 5 besides the target); their timelines stay, in file order, without samples.</item>
/// <item>Each kept user's ratings are shuffled with Python's <c>random.shuffle</c> after <c>random.seed(Seed)</c>,
/// re-seeded for every user as the notebook does (<see cref="SampleOptions.ShuffleHoldOut"/> false skips this and keeps
/// file order); the last rating is the target (one sample per user), the others are its history in that order.</item>
/// <item>The samples, in user order, are shuffled once more with a fresh <c>random.seed(Seed)</c>; that is the global
/// order. Split as above with <see cref="SampleOptions.HoldOutDefaults"/>: train = <c>floor(0.9 · N)</c>, no valid, test =
/// the rest. Given the same ratings, the default seed 42 gives the reference's permutations (the generator is CPython's,
/// <see cref="PythonRandom"/>; the notebook reports 17,714 samples: 15,942 train, 1,772 test; not checked here, the full
/// Book-Crossing files are not in the test data).</item>
/// </list>
/// <para>Both: labels are <see cref="RatingDataset.IsPositive"/> of the target's rating; <see cref="SampleOptions.Limit"/>
/// keeps the first N samples of the global order after the split is assigned (so a limited run has the same splits as the
/// full one for the samples it keeps). Histories are never copied: a sample stores its history's length and its history is
/// the start of the user's timeline. Cost: one sort of n rating indices (8-byte keys; equal timestamps re-sorted with the
/// full key) plus O(n) passes; for ML-25M about 12 bytes per rating of scratch besides the timelines and samples.</para>
/// </remarks>
public static class ReLLaSamples
{
    /// <summary>Builds the samples of <paramref name="dataset"/> (see the class remarks for both protocols).</summary>
    /// <param name="dataset">The ratings.</param>
    /// <param name="options">Null for the protocol's defaults (<see cref="SampleOptions"/> for time-ordered data,
    /// <see cref="SampleOptions.HoldOutDefaults"/> for hold-out data).</param>
    /// <exception cref="ArgumentException">Invalid options (negative counts, fractions outside [0, 1] or summing above 1).</exception>
    /// <param name="cancellationToken">Checked before each pass over the ratings and every 2²⁰ ratings of the longest
    /// pass. (No progress: the passes are linear and short next to reading the files.)</param>
    public static SampleSet Build(RatingDataset dataset, SampleOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        options ??= dataset.HasTimestamps ? new SampleOptions() : SampleOptions.HoldOutDefaults;
        Validate(options);
        cancellationToken.ThrowIfCancellationRequested();
        return dataset.HasTimestamps ? BuildTimeOrdered(dataset, options, cancellationToken) : BuildHoldOut(dataset, options, cancellationToken);
    }

    /// <summary>Checks <paramref name="options"/>; the message names the option.</summary>
    /// <exception cref="ArgumentException">An invalid value.</exception>
    public static void Validate(SampleOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.MinHistory < 0) throw new ArgumentException($"MinHistory must be >= 0, got {options.MinHistory}", nameof(options));
        if (options.Limit < 0) throw new ArgumentException($"Limit must be >= 0 (0 = all samples), got {options.Limit}", nameof(options));
        if (!(options.TrainFraction is >= 0 and <= 1)) throw new ArgumentException($"TrainFraction must be in [0, 1], got {options.TrainFraction}", nameof(options));
        if (!(options.ValidFraction is >= 0 and <= 1)) throw new ArgumentException($"ValidFraction must be in [0, 1], got {options.ValidFraction}", nameof(options));
        if (options.TrainFraction + options.ValidFraction > 1)
            throw new ArgumentException($"TrainFraction + ValidFraction must be at most 1, got {options.TrainFraction} + {options.ValidFraction}", nameof(options));
    }

    /// <summary>The split sizes of <paramref name="count"/> samples: train = <c>floor(TrainFraction · count)</c>, valid =
    /// <c>floor(ValidFraction · count)</c>, test = the rest.</summary>
    public static (int Train, int Valid, int Test) SplitSizes(int count, SampleOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentNullException.ThrowIfNull(options);
        int train = (int)(options.TrainFraction * count);
        int valid = (int)(options.ValidFraction * count);
        return (train, valid, count - train - valid);
    }

    private static SampleSplit SplitOf(int index, int train, int valid) =>
        index < train ? SampleSplit.Train : index < train + valid ? SampleSplit.Valid : SampleSplit.Test;

    // ---- time-ordered protocol ------------------------------------------------------------------------------------

    private static SampleSet BuildTimeOrdered(RatingDataset dataset, SampleOptions options, CancellationToken cancellationToken)
    {
        var ratings = dataset.Ratings;
        int n = ratings.Length, users = dataset.UserKeys.Count;
        int[] order = GlobalOrder(dataset);
        cancellationToken.ThrowIfCancellationRequested();

        // Per-user counts give the timeline offsets and the number of samples before anything is allocated per sample.
        var start = new int[users + 1];
        var span = ratings.Span;
        for (int i = 0; i < n; i++) start[span[i].User + 1]++;
        long total = 0;
        for (int u = 0; u < users; u++)
        {
            total += Math.Max(0, start[u + 1] - options.MinHistory);
            start[u + 1] += start[u];
        }
        int count = checked((int)total);
        var (train, valid, _) = SplitSizes(count, options);
        int kept = options.Limit > 0 ? Math.Min(options.Limit, count) : count;

        var timelines = new Rating[n];
        var fill = new int[users];
        var samples = new ReLLaSample[kept];
        int next = 0;
        for (int g = 0; g < n; g++)
        {
            if ((g & 0xFFFFF) == 0xFFFFF) cancellationToken.ThrowIfCancellationRequested();
            var r = span[order[g]];
            int position = fill[r.User]++;
            timelines[start[r.User] + position] = r;
            if (position >= options.MinHistory && next < kept)
            {
                samples[next] = new ReLLaSample(next, r.User, r.Item, r.Value, dataset.IsPositive(r.Value), r.Timestamp, position, SplitOf(next, train, valid));
                next++;
            }
        }
        return new SampleSet(dataset, options, timelines, start, samples);
    }

    /// <summary>
    /// The indices of <see cref="RatingDataset.Ratings"/> sorted by (timestamp, user key, item key, file position): see the
    /// class remarks for how keys compare. [n] ints.
    /// </summary>
    internal static int[] GlobalOrder(RatingDataset dataset)
    {
        var ratings = dataset.Ratings;
        int n = ratings.Length;
        var order = new int[n];
        var times = new ulong[n];
        var span = ratings.Span;
        for (int i = 0; i < n; i++)
        {
            order[i] = i;
            times[i] = (ulong)span[i].Timestamp ^ 0x8000_0000_0000_0000UL; // signed order as unsigned order
        }
        Array.Sort(times, order); // primitive keys: the fast introsort; ties are resolved below
        var keyOrder = KeyComparison(dataset.Kind);
        int[]? userRank = null, itemRank = null;
        for (int s = 0; s < n;)
        {
            int e = s + 1;
            while (e < n && times[e] == times[s]) e++;
            if (e - s > 1)
            {
                userRank ??= Ranks(dataset.UserKeys, keyOrder);
                itemRank ??= Ranks(dataset.Items.Select(i => i.Key).ToList(), keyOrder);
                var (ur, ir) = (userRank, itemRank);
                order.AsSpan(s, e - s).Sort((a, b) =>
                {
                    var x = ratings.Span[a];
                    var y = ratings.Span[b];
                    int c = ur[x.User].CompareTo(ur[y.User]);
                    if (c == 0) c = ir[x.Item].CompareTo(ir[y.Item]);
                    return c != 0 ? c : a.CompareTo(b);
                });
            }
            s = e;
        }
        return order;
    }

    /// <summary>How source ids compare in the global sort: ordinal strings for MovieLens-1M (as the reference reads them),
    /// otherwise <see cref="CompareIds"/>.</summary>
    internal static Comparison<string> KeyComparison(DatasetKind kind) =>
        kind == DatasetKind.MovieLens1M ? string.CompareOrdinal : CompareIds;

    /// <summary>
    /// A total order on source ids: ids of ASCII digits compare as whole numbers (leading zeros ignored, then ordinal to
    /// separate <c>"7"</c> from <c>"07"</c>) and come before every other id; other ids compare ordinally.
    /// </summary>
    internal static int CompareIds(string a, string b)
    {
        bool da = DatasetReader.IsId(a), db = DatasetReader.IsId(b);
        if (da != db) return da ? -1 : 1;
        if (!da) return string.CompareOrdinal(a, b);
        var ta = a.AsSpan().TrimStart('0');
        var tb = b.AsSpan().TrimStart('0');
        if (ta.Length != tb.Length) return ta.Length.CompareTo(tb.Length);
        int c = ta.SequenceCompareTo(tb);
        return c != 0 ? c : string.CompareOrdinal(a, b);
    }

    /// <summary>rank[i] = the position of <paramref name="keys"/>[i] when the keys are sorted by <paramref name="order"/>
    /// (equal keys by index).</summary>
    private static int[] Ranks(IReadOnlyList<string> keys, Comparison<string> order)
    {
        var index = new int[keys.Count];
        for (int i = 0; i < index.Length; i++) index[i] = i;
        Array.Sort(index, (a, b) => { int c = order(keys[a], keys[b]); return c != 0 ? c : a.CompareTo(b); });
        var rank = new int[keys.Count];
        for (int r = 0; r < index.Length; r++) rank[index[r]] = r;
        return rank;
    }

    // ---- hold-out protocol ----------------------------------------------------------------------------------------

    private static SampleSet BuildHoldOut(RatingDataset dataset, SampleOptions options, CancellationToken cancellationToken)
    {
        var span = dataset.Ratings.Span;
        int n = span.Length, users = dataset.UserKeys.Count;
        var start = new int[users + 1];
        var firstSeen = new List<int>();
        for (int i = 0; i < n; i++)
        {
            int u = span[i].User;
            if (start[u + 1]++ == 0) firstSeen.Add(u);
        }
        for (int u = 0; u < users; u++) start[u + 1] += start[u];

        // Each user's rating indices in file order (a stable counting sort by user).
        var positions = new int[n];
        var fill = new int[users];
        for (int i = 0; i < n; i++) positions[start[span[i].User] + fill[span[i].User]++] = i;

        var keptUsers = new List<int>();
        foreach (int u in firstSeen)
        {
            int length = start[u + 1] - start[u];
            if (length - 1 < options.MinHistory) continue;
            keptUsers.Add(u);
            if (options.ShuffleHoldOut) new PythonRandom(options.Seed).Shuffle(positions.AsSpan(start[u], length));
        }
        cancellationToken.ThrowIfCancellationRequested();
        var timelines = new Rating[n];
        for (int e = 0; e < n; e++) timelines[e] = span[positions[e]];
        cancellationToken.ThrowIfCancellationRequested();

        int[] sampleUsers = [.. keptUsers];
        new PythonRandom(options.Seed).Shuffle(sampleUsers.AsSpan());
        int count = sampleUsers.Length;
        var (train, valid, _) = SplitSizes(count, options);
        int kept = options.Limit > 0 ? Math.Min(options.Limit, count) : count;
        var samples = new ReLLaSample[kept];
        for (int s = 0; s < kept; s++)
        {
            int u = sampleUsers[s];
            int history = start[u + 1] - start[u] - 1;
            var r = timelines[start[u] + history];
            samples[s] = new ReLLaSample(s, u, r.Item, r.Value, dataset.IsPositive(r.Value), r.Timestamp, history, SplitOf(s, train, valid));
        }
        return new SampleSet(dataset, options, timelines, start, samples);
    }
}
