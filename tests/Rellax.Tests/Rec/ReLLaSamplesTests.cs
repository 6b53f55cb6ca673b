using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="ReLLaSamples.Build"/> on hand-made datasets (global order, ties, the history rule, split boundaries, limit,
/// labels, the hold-out protocol with its seed) and on real MovieLens-100K against counts computed with sort/awk over the
/// raw u.data and a differently written per-user loop.
/// </summary>
[TestFixture]
public sealed class ReLLaSamplesTests
{
    /// <summary>One hand-written rating: source keys, value, time.</summary>
    internal readonly record struct Raw(string User, string Item, float Value, long Time);

    /// <summary>A dataset whose users and items are rows in order of first appearance of their keys in <paramref name="raws"/>
    /// unless <paramref name="userKeys"/>/<paramref name="itemKeys"/> give the rows.</summary>
    internal static RatingDataset Dataset(IEnumerable<Raw> raws, bool hasTimestamps = true, DatasetKind kind = DatasetKind.Custom,
        float threshold = 3, string[]? userKeys = null, string[]? itemKeys = null, ItemDomain domain = ItemDomain.Movies)
    {
        var list = raws.ToList();
        var users = userKeys?.ToList() ?? list.Select(r => r.User).Distinct().ToList();
        var items = itemKeys?.ToList() ?? list.Select(r => r.Item).Distinct().ToList();
        var ratings = list.Select(r => new Rating(users.IndexOf(r.User), items.IndexOf(r.Item), r.Value, r.Time)).ToArray();
        return new RatingDataset("hand", kind, domain, items.Select(k => new Item(k, $"Title {k}", ["Drama"])).ToList(), users, null,
            ratings, hasTimestamps, threshold);
    }

    /// <summary>One user "u" rating items "i0".."i{count-1}" at times 100, 200, ...</summary>
    private static IEnumerable<Raw> OneUser(string user, int count, long time0 = 100, string prefix = "i") =>
        Enumerable.Range(0, count).Select(k => new Raw(user, $"{prefix}{k}", 1 + k % 5, time0 + 100 * k));

    private static string Key(SampleSet s, in ReLLaSample x) => $"{s.Dataset.UserKeys[x.User]}/{s.Dataset.Items[x.Item].Key}";

    private static string[] HistoryKeys(SampleSet s, in ReLLaSample x)
    {
        var h = s.History(x);
        var keys = new string[h.Length];
        for (int i = 0; i < h.Length; i++) keys[i] = s.Dataset.Items[h[i].Item].Key;
        return keys;
    }

    [Test]
    public void SamplesFollowTheGlobalTimeOrderAndHistoriesAreEarlierRatingsOfTheUser()
    {
        // Two users interleaved in time, file order scrambled. User a: a0..a6 at 10, 30, ..., 130; user b: b0..b6 at 20, 40, ..., 140.
        var raws = new List<Raw>();
        for (int k = 6; k >= 0; k--) raws.Add(new Raw("a", $"a{k}", 4, 10 + 20 * k));
        for (int k = 0; k < 7; k++) raws.Add(new Raw("b", $"b{k}", 2, 20 + 20 * k));
        var s = ReLLaSamples.Build(Dataset(raws), new SampleOptions { MinHistory = 5 });
        // Each user has 7 events: positions 5 and 6 are samples; in time: a5 (110), b5 (120), a6 (130), b6 (140).
        Assert.That(s.Samples.Select(x => Key(s, x)), Is.EqualTo(new[] { "a/a5", "b/b5", "a/a6", "b/b6" }));
        Assert.That(s.Samples.Select(x => x.HistoryLength), Is.EqualTo(new[] { 5, 5, 6, 6 }));
        Assert.That(HistoryKeys(s, s.Samples[2]), Is.EqualTo(new[] { "a0", "a1", "a2", "a3", "a4", "a5" }));
        Assert.That(HistoryKeys(s, s.Samples[1]), Is.EqualTo(new[] { "b0", "b1", "b2", "b3", "b4" }));
        Assert.That(s.Samples.Select(x => x.Timestamp), Is.EqualTo(new long[] { 110, 120, 130, 140 }));
        Assert.That(s.Samples.Select(x => x.Index), Is.EqualTo(new[] { 0, 1, 2, 3 }));
    }

    [Test]
    public void TiesInTimeAcrossUsersGoByUserIdAsANumber()
    {
        // Users "10" and "9" each rate 6 items, every one at the same second as the other user's. Numeric ids: 9 before 10.
        var raws = OneUser("10", 6, prefix: "x").Concat(OneUser("9", 6, prefix: "y")).ToList();
        var s = ReLLaSamples.Build(Dataset(raws));
        Assert.That(s.Samples.Select(x => Key(s, x)), Is.EqualTo(new[] { "9/y5", "10/x5" }));
        // MovieLens-1M compares ids as strings, as the reference notebook does: "10" < "9".
        var ml1m = ReLLaSamples.Build(Dataset(raws, kind: DatasetKind.MovieLens1M));
        Assert.That(ml1m.Samples.Select(x => Key(ml1m, x)), Is.EqualTo(new[] { "10/x5", "9/y5" }));
    }

    [Test]
    public void TiesInTimeWithinAUserGoByItemIdAndDecideTheHistory()
    {
        // User u rates 5 items at 100..500, then items "10" and "9" both at 600 (file order: "10" first).
        var raws = OneUser("u", 5).Append(new Raw("u", "10", 5, 600)).Append(new Raw("u", "9", 1, 600)).ToList();
        var s = ReLLaSamples.Build(Dataset(raws));
        Assert.That(s.Samples.Select(x => Key(s, x)), Is.EqualTo(new[] { "u/9", "u/10" }));
        Assert.That(HistoryKeys(s, s.Samples[1]), Is.EqualTo(new[] { "i0", "i1", "i2", "i3", "i4", "9" }), "9 sorts first, so it is in 10's history");
        Assert.That(HistoryKeys(s, s.Samples[0]), Has.Length.EqualTo(5).And.Not.Contain("10"));
        var ml1m = ReLLaSamples.Build(Dataset(raws, kind: DatasetKind.MovieLens1M));
        Assert.That(ml1m.Samples.Select(x => Key(ml1m, x)), Is.EqualTo(new[] { "u/10", "u/9" }), "ordinal: \"10\" < \"9\"");
    }

    [Test]
    public void TheSameItemTwiceInTheSameSecondKeepsFileOrder()
    {
        // u rates i0..i4, then item "d" twice at 900: first 2 stars, then 5 stars. Both are samples; the second has the first in its history.
        var raws = OneUser("u", 5).Append(new Raw("u", "d", 2, 900)).Append(new Raw("u", "d", 5, 900)).ToList();
        var s = ReLLaSamples.Build(Dataset(raws));
        Assert.That(s.Samples.Select(x => x.Rating), Is.EqualTo(new[] { 2f, 5f }));
        Assert.That(s.Samples.Select(x => x.HistoryLength), Is.EqualTo(new[] { 5, 6 }));
        Assert.That(s.History(s.Samples[1])[5].Value, Is.EqualTo(2f));
        // Reversed file order: reversed samples.
        raws.Reverse(raws.Count - 2, 2);
        s = ReLLaSamples.Build(Dataset(raws));
        Assert.That(s.Samples.Select(x => x.Rating), Is.EqualTo(new[] { 5f, 2f }));
    }

    [TestCase(4, 0)]
    [TestCase(5, 0)]
    [TestCase(6, 1)]
    [TestCase(9, 4)]
    public void AUserWithNEventsGivesNMinus5Samples(int events, int expected)
    {
        var s = ReLLaSamples.Build(Dataset(OneUser("u", events)));
        Assert.That(s.Samples, Has.Count.EqualTo(expected));
        Assert.That(s.Samples.Select(x => x.HistoryLength), Is.EqualTo(Enumerable.Range(5, expected)));
        Assert.That(s.Timeline(0).Length, Is.EqualTo(events), "the timeline keeps every event");
    }

    [Test]
    public void MinHistoryIsAnOption()
    {
        var data = Dataset(OneUser("u", 4).Concat(OneUser("v", 2, time0: 1000)));
        Assert.That(ReLLaSamples.Build(data, new SampleOptions { MinHistory = 0 }).Samples, Has.Count.EqualTo(6));
        Assert.That(ReLLaSamples.Build(data, new SampleOptions { MinHistory = 2 }).Samples.Select(x => x.HistoryLength), Is.EqualTo(new[] { 2, 3 }));
        Assert.That(() => ReLLaSamples.Build(data, new SampleOptions { MinHistory = -1 }), Throws.ArgumentException.With.Message.Contains("MinHistory"));
        Assert.That(() => ReLLaSamples.Build(data, new SampleOptions { TrainFraction = 0.95 }), Throws.ArgumentException.With.Message.Contains("at most 1"));
    }

    // Hand-computed: train = floor(0.8 N), valid = floor(0.1 N), test = N - train - valid (the reference's int(0.8 * N), int(0.1 * N)).
    [TestCase(10, 8, 1, 1)]
    [TestCase(11, 8, 1, 2)]
    [TestCase(19, 15, 1, 3)]
    [TestCase(20, 16, 2, 2)]
    public void SplitBoundaries(int n, int train, int valid, int test)
    {
        var s = ReLLaSamples.Build(Dataset(OneUser("u", n + 5)));
        Assert.That(s.Samples, Has.Count.EqualTo(n));
        var expected = Enumerable.Repeat(SampleSplit.Train, train).Concat(Enumerable.Repeat(SampleSplit.Valid, valid)).Concat(Enumerable.Repeat(SampleSplit.Test, test));
        Assert.That(s.Samples.Select(x => x.Split), Is.EqualTo(expected));
        Assert.That((s.CountOf(SampleSplit.Train), s.CountOf(SampleSplit.Valid), s.CountOf(SampleSplit.Test)), Is.EqualTo((train, valid, test)));
        Assert.That(ReLLaSamples.SplitSizes(n, new SampleOptions()), Is.EqualTo((train, valid, test)));
    }

    [Test]
    public void LimitKeepsTheFirstSamplesWithTheFullRunsSplits()
    {
        var data = Dataset(OneUser("u", 25));
        var all = ReLLaSamples.Build(data);
        Assert.That(all.Samples, Has.Count.EqualTo(20));
        var three = ReLLaSamples.Build(data, new SampleOptions { Limit = 3 });
        Assert.That(three.Samples, Is.EqualTo(all.Samples.Take(3)));
        var eighteen = ReLLaSamples.Build(data, new SampleOptions { Limit = 18 });
        Assert.That((eighteen.CountOf(SampleSplit.Train), eighteen.CountOf(SampleSplit.Valid), eighteen.CountOf(SampleSplit.Test)), Is.EqualTo((16, 2, 0)));
        Assert.That(ReLLaSamples.Build(data, new SampleOptions { Limit = 1000 }).Samples, Is.EqualTo(all.Samples));
        Assert.That(three.Timeline(0).Length, Is.EqualTo(25), "timelines are complete whatever the limit");
    }

    [Test]
    public void LabelsArePositiveAboveTheThreshold()
    {
        float[] values = [1, 2, 3, 3.5f, 4, 5, 3, 4.5f];
        var raws = values.Select((v, k) => new Raw("u", $"i{k}", v, 10 * k)).ToList();
        var s = ReLLaSamples.Build(Dataset(raws), new SampleOptions { MinHistory = 0 });
        Assert.That(s.Samples.Select(x => x.Label), Is.EqualTo(new[] { false, false, false, true, true, true, false, true }));
        // Book-Crossing: rating >= 5 is positive (threshold 4).
        var bx = ReLLaSamples.Build(Dataset(raws.Select(r => r with { Value = r.Value + 1 }), threshold: 4), new SampleOptions { MinHistory = 0 });
        Assert.That(bx.Samples.Select(x => x.Label), Is.EqualTo(new[] { false, false, false, true, true, true, false, true }));
    }

    // ---- hold-out protocol -----------------------------------------------------------------------------------------------

    /// <summary>
    /// Python 3.11 permutations, printed by
    /// <c>python3 -c "import random; x=list(range(n)); random.seed(s); random.shuffle(x); print(x)"</c>.
    /// </summary>
    private static readonly Dictionary<(int Seed, int N), int[]> PythonShuffles = new()
    {
        [(42, 6)] = [3, 1, 2, 4, 0, 5],
        [(42, 7)] = [1, 3, 4, 2, 6, 0, 5],
        [(42, 10)] = [7, 3, 2, 8, 5, 6, 9, 4, 0, 1],
        [(42, 20)] = [19, 5, 14, 4, 9, 13, 15, 18, 6, 12, 17, 10, 1, 11, 2, 16, 7, 8, 0, 3],
        [(7, 6)] = [4, 0, 5, 3, 1, 2],
        [(7, 10)] = [8, 3, 1, 4, 7, 0, 9, 6, 2, 5],
        [(0, 20)] = [10, 18, 16, 14, 0, 17, 11, 2, 3, 9, 5, 7, 4, 19, 6, 15, 8, 1, 13, 12],
        [(-5, 20)] = [4, 9, 6, 5, 14, 17, 18, 1, 2, 15, 10, 3, 12, 7, 13, 0, 16, 11, 8, 19],
        [(int.MaxValue, 20)] = [1, 14, 16, 17, 4, 5, 15, 7, 13, 11, 2, 18, 8, 12, 0, 19, 9, 6, 3, 10],
        [(42, 1)] = [0],
        [(42, 2)] = [1, 0],
    };

    [Test]
    public void PythonRandomMatchesCPython()
    {
        // python3 -c "import random; random.seed(s); print([random.getrandbits(32) for _ in range(3)])"
        var first = new Dictionary<int, uint[]>
        {
            [42] = [2746317213, 478163327, 107420369],
            [7] = [1390851128, 4071050724, 647892279],
            [0] = [3626764237, 1654615998, 3255389356],
            [-5] = [2675342405, 1097127993, 3185950873],
            [int.MaxValue] = [1364760256, 4023463762, 3510513048],
        };
        foreach (var (seed, words) in first)
        {
            var r = new PythonRandom(seed);
            Assert.That(new[] { r.NextUInt32(), r.NextUInt32(), r.NextUInt32() }, Is.EqualTo(words), $"seed {seed}");
        }
        foreach (var ((seed, n), expected) in PythonShuffles)
        {
            var x = Enumerable.Range(0, n).ToArray();
            new PythonRandom(seed).Shuffle(x.AsSpan());
            Assert.That(x, Is.EqualTo(expected), $"seed {seed}, n {n}");
        }
    }

    /// <summary>
    /// 12 users in order of first appearance u0..u11, interleaved in the file; u0 and u11 have 5 ratings (dropped: a history of
    /// 4), u1..u5 have 6, u6..u10 have 7. Item keys say whose rating it is and its file order: "u3#2" is u3's third rating.
    /// </summary>
    private static RatingDataset HoldOutData(float threshold = 4)
    {
        var counts = new[] { 5, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 5 };
        var raws = new List<Raw>();
        int line = 0;
        for (int round = 0; round < 7; round++)
            for (int u = 0; u < counts.Length; u++)
                if (round < counts[u]) raws.Add(new Raw($"u{u}", $"u{u}#{round}", (u + 2 * round) % 11, line++));
        // Rows of users are in reverse key order, so first appearance (the protocol's order) differs from row order.
        var userKeys = Enumerable.Range(0, 12).Select(u => $"u{11 - u}").ToArray();
        return Dataset(raws, hasTimestamps: false, kind: DatasetKind.BookCrossing, threshold: threshold, userKeys: userKeys, domain: ItemDomain.Books);
    }

    [Test]
    public void HoldOutShufflesEachUserWithTheSeedAndHoldsOutTheLast()
    {
        var data = HoldOutData();
        var s = ReLLaSamples.Build(data);
        Assert.That(s.Options, Is.EqualTo(SampleOptions.HoldOutDefaults));
        // Kept users in first-appearance order: u1..u10; shuffled with seed 42 -> positions [7, 3, 2, 8, 5, 6, 9, 4, 0, 1].
        string[] expectedUsers = PythonShuffles[(42, 10)].Select(p => $"u{p + 1}").ToArray();
        Assert.That(s.Samples.Select(x => data.UserKeys[x.User]), Is.EqualTo(expectedUsers));
        // 90/10: train = int(0.9 * 10) = 9.
        Assert.That(s.Samples.Select(x => x.Split), Is.EqualTo(Enumerable.Repeat(SampleSplit.Train, 9).Append(SampleSplit.Test)));
        foreach (var x in s.Samples)
        {
            string user = data.UserKeys[x.User];
            int n = user is "u1" or "u2" or "u3" or "u4" or "u5" ? 6 : 7;
            // Each user's ratings shuffled with a fresh random.seed(42): the timeline is the permutation of the file order.
            var expectedTimeline = PythonShuffles[(42, n)].Select(k => $"{user}#{k}").ToArray();
            var timeline = s.Timeline(x.User).ToArray().Select(r => data.Items[r.Item].Key).ToArray();
            Assert.That(timeline, Is.EqualTo(expectedTimeline), user);
            Assert.That(x.HistoryLength, Is.EqualTo(n - 1));
            Assert.That(data.Items[x.Item].Key, Is.EqualTo(expectedTimeline[^1]));
            int fileRound = int.Parse(expectedTimeline[^1].Split('#')[1]);
            float rating = (int.Parse(user[1..]) + 2 * fileRound) % 11;
            Assert.That(x.Rating, Is.EqualTo(rating));
            Assert.That(x.Label, Is.EqualTo(rating >= 5), "Book-Crossing: positive when rating >= 5");
        }
        // Dropped users keep their ratings in file order and get no sample.
        int u0 = data.UserKeys.ToList().IndexOf("u0");
        Assert.That(s.Timeline(u0).ToArray().Select(r => data.Items[r.Item].Key), Is.EqualTo(Enumerable.Range(0, 5).Select(k => $"u0#{k}")));
        Assert.That(s.Samples.Any(x => x.User == u0), Is.False);
    }

    [Test]
    public void HoldOutSeedAndFileOrderOptions()
    {
        var data = HoldOutData();
        var seven = ReLLaSamples.Build(data, SampleOptions.HoldOutDefaults with { Seed = 7 });
        Assert.That(seven.Samples.Select(x => data.UserKeys[x.User]), Is.EqualTo(PythonShuffles[(7, 10)].Select(p => $"u{p + 1}")));
        int u1 = data.UserKeys.ToList().IndexOf("u1");
        Assert.That(seven.Timeline(u1).ToArray().Select(r => data.Items[r.Item].Key), Is.EqualTo(PythonShuffles[(7, 6)].Select(k => $"u1#{k}")));

        var last = ReLLaSamples.Build(data, SampleOptions.HoldOutDefaults with { ShuffleHoldOut = false });
        foreach (var x in last.Samples)
        {
            var keys = last.Timeline(x.User).ToArray().Select(r => data.Items[r.Item].Key).ToArray();
            Assert.That(keys, Is.EqualTo(Enumerable.Range(0, keys.Length).Select(k => $"{data.UserKeys[x.User]}#{k}")), "file order");
            Assert.That(data.Items[x.Item].Key, Is.EqualTo(keys[^1]));
        }
        Assert.That(last.Samples.Select(x => data.UserKeys[x.User]), Is.EqualTo(PythonShuffles[(42, 10)].Select(p => $"u{p + 1}")), "users still shuffled for the split");

        var five = ReLLaSamples.Build(data, SampleOptions.HoldOutDefaults with { MinHistory = 6 });
        Assert.That(five.Samples.Select(x => data.UserKeys[x.User]).Order(), Is.EqualTo(new[] { "u10", "u6", "u7", "u8", "u9" }), "only users with 7 ratings");
        var limited = ReLLaSamples.Build(data, SampleOptions.HoldOutDefaults with { Limit = 4 });
        Assert.That(limited.Samples, Is.EqualTo(ReLLaSamples.Build(data).Samples.Take(4)));
    }

    // ---- MovieLens-100K ----------------------------------------------------------------------------------------------------

    [Test]
    public void MovieLens100KMatchesAnIndependentCount()
    {
        string dir = TestData.RequireShared("movielens/ml-100k");
        var data = DatasetReader.Read(DatasetKind.MovieLens100K, dir);
        var s = ReLLaSamples.Build(data);
        // Every ML-100K user has >= 20 ratings, so N = 100000 - 5 * 943 = 95285; 8:1:1 = 76228 / 9528 / 9529. Positives per
        // split, and the samples at the split edges (user, movie, rating, time, history), from the raw file:
        //   sort -s -t$'\t' -k4,4n -k1,1n -k2,2n u.data | awk -F'\t' '{c[$1]++; if (c[$1]>5) {n++;
        //     s = (n<=76228)?"train":(n<=76228+9528)?"valid":"test"; tot[s]++; if ($3>3) pos[s]++;
        //     if (n==1||n==76229||n==85757||n==95285) print n, $1, $2, $3, $4, c[$1]-1}} END {for (s in tot) print s, tot[s], pos[s]}'
        // printed: 1 259 108 4 874724882 5 / 76229 3 319 2 889237026 11 / 85757 90 187 4 891383561 72 / 95285 729 748 4 893286638 20
        //          train 76228 41817 / valid 9528 5389 / test 9529 5354
        Assert.That(s.Samples, Has.Count.EqualTo(95285));
        Assert.That((s.CountOf(SampleSplit.Train), s.CountOf(SampleSplit.Valid), s.CountOf(SampleSplit.Test)), Is.EqualTo((76228, 9528, 9529)));
        Assert.That(s.InSplit(SampleSplit.Train).Count(x => x.Label), Is.EqualTo(41817));
        Assert.That(s.InSplit(SampleSplit.Valid).Count(x => x.Label), Is.EqualTo(5389));
        Assert.That(s.InSplit(SampleSplit.Test).Count(x => x.Label), Is.EqualTo(5354));
        string Edge(int i) { var x = s.Samples[i]; return $"{data.UserKeys[x.User]} {data.Items[x.Item].Key} {x.Rating} {x.Timestamp} {x.HistoryLength}"; }
        Assert.That(Edge(0), Is.EqualTo("259 108 4 874724882 5"));
        Assert.That(Edge(76228), Is.EqualTo("3 319 2 889237026 11"));
        Assert.That(Edge(85756), Is.EqualTo("90 187 4 891383561 72"));
        Assert.That(Edge(95284), Is.EqualTo("729 748 4 893286638 20"));
        Assert.That(s.Samples[76227].Split, Is.EqualTo(SampleSplit.Train));
        Assert.That(s.Samples[76228].Split, Is.EqualTo(SampleSplit.Valid));
        Assert.That(s.Samples[85756].Split, Is.EqualTo(SampleSplit.Test));

        // A different construction: per user, sort the user's ratings by (time, movie id as a number, line); every sample's
        // history must be the first HistoryLength of them and its target the next one.
        var ratings = data.Ratings.ToArray();
        var perUser = Enumerable.Range(0, ratings.Length).GroupBy(i => ratings[i].User)
            .ToDictionary(g => g.Key, g => g.OrderBy(i => ratings[i].Timestamp).ThenBy(i => int.Parse(data.Items[ratings[i].Item].Key)).ThenBy(i => i)
                .Select(i => ratings[i]).ToArray());
        int samplesByLoop = perUser.Values.Sum(list => Math.Max(0, list.Length - 5));
        Assert.That(samplesByLoop, Is.EqualTo(95285));
        foreach (var x in s.Samples)
        {
            var list = perUser[x.User];
            Assert.That(s.History(x).SequenceEqual(list.AsSpan(0, x.HistoryLength)), $"sample {x.Index}: history");
            Assert.That((list[x.HistoryLength].Item, list[x.HistoryLength].Value, list[x.HistoryLength].Timestamp), Is.EqualTo((x.Item, x.Rating, x.Timestamp)), $"sample {x.Index}: target");
        }
        // Global order: non-decreasing time, and within a second by user id then movie id as numbers.
        for (int i = 1; i < s.Samples.Count; i++)
        {
            var (a, b) = (s.Samples[i - 1], s.Samples[i]);
            var ka = (a.Timestamp, int.Parse(data.UserKeys[a.User]), int.Parse(data.Items[a.Item].Key));
            var kb = (b.Timestamp, int.Parse(data.UserKeys[b.User]), int.Parse(data.Items[b.Item].Key));
            if (ka.CompareTo(kb) > 0) Assert.Fail($"samples {i - 1} and {i} are out of order: {ka} then {kb}");
        }
    }
}
