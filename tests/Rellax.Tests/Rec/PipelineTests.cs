using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Tests.Rec;

/// <summary>
/// The pipeline pieces around the kernels: the synthetic demo dataset, recent-K and SUBR-K over a <see cref="SampleSet"/>
/// (SUBR checked against a brute-force cosine top-K written here), the category agreement, and the on-disk cache.
/// </summary>
[TestFixture]
public sealed class PipelineTests
{
    // ---- the synthetic dataset --------------------------------------------------------------------------------

    [Test]
    public void TheSyntheticDatasetIsDeterministicAndShapedAsAsked()
    {
        var options = new SyntheticDatasetOptions { Users = 30, ItemsPerCategory = 12, Categories = 5, MinRatingsPerUser = 20, MaxRatingsPerUser = 30, Seed = 3 };
        var a = SyntheticDataset.Create(options);
        var b = SyntheticDataset.Create(options);
        var c = SyntheticDataset.Create(options with { Seed = 4 });
        Assert.That(a.Ratings.ToArray(), Is.EqualTo(b.Ratings.ToArray()), "same seed, same ratings");
        Assert.That(a.Items.Select(i => i.Title), Is.EqualTo(b.Items.Select(i => i.Title)));
        Assert.That(a.Ratings.ToArray(), Is.Not.EqualTo(c.Ratings.ToArray()), "another seed, other ratings");

        Assert.That(a.UserKeys, Has.Count.EqualTo(30));
        Assert.That(a.Items, Has.Count.EqualTo(60));
        Assert.That(a.Profiles, Is.Not.Null.And.Count.EqualTo(30));
        Assert.That(a.Items.Select(i => i.Genres.Single()).Distinct().Count(), Is.EqualTo(5), "one genre per item, five categories");
        Assert.That(a.Items.Select(i => i.Title).Distinct().Count(), Is.EqualTo(60), "titles are distinct");
        Assert.That(a.HasTimestamps, Is.True);
        foreach (var group in a.Ratings.ToArray().GroupBy(r => r.User))
        {
            var events = group.ToArray();
            Assert.That(events.Length, Is.InRange(20, 30), $"user {group.Key}: ratings per user");
            Assert.That(events.Select(e => e.Item).Distinct().Count(), Is.EqualTo(events.Length), $"user {group.Key} rates each item once");
            for (int i = 1; i < events.Length; i++) Assert.That(events[i].Timestamp, Is.GreaterThan(events[i - 1].Timestamp), $"user {group.Key}: time moves on");
            Assert.That(events.All(e => e.Value is >= 1 and <= 5 && e.Value == MathF.Round(e.Value)), $"user {group.Key}: whole stars 1 to 5");
        }
    }

    [Test]
    public void SyntheticUsersHaveTastesThatLabelsFollow()
    {
        // The structure the demo relies on: each user's two most-rated categories are liked far more often than the rest.
        var data = SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 60, Seed = 11 });
        long favouritePositive = 0, favouriteTotal = 0, otherPositive = 0, otherTotal = 0;
        foreach (var group in data.Ratings.ToArray().GroupBy(r => r.User))
        {
            var top2 = group.GroupBy(r => data.Items[r.Item].Genres[0]).OrderByDescending(g => g.Count()).Take(2).Select(g => g.Key).ToHashSet();
            foreach (var r in group)
            {
                bool favourite = top2.Contains(data.Items[r.Item].Genres[0]);
                bool positive = data.IsPositive(r.Value);
                if (favourite) { favouriteTotal++; if (positive) favouritePositive++; }
                else { otherTotal++; if (positive) otherPositive++; }
            }
        }
        double fav = (double)favouritePositive / favouriteTotal, other = (double)otherPositive / otherTotal;
        TestContext.Out.WriteLine($"positive share: favourite categories {fav:P0} of {favouriteTotal}, others {other:P0} of {otherTotal}");
        Assert.That(favouriteTotal, Is.GreaterThan(2 * otherTotal), "most events fall in the two favourite categories");
        Assert.That(fav, Is.GreaterThan(0.7));
        Assert.That(other, Is.LessThan(0.3));
    }

    [Test]
    public void SyntheticOptionsOutOfRangeAreNamed()
    {
        Assert.That(() => SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 0 }), Throws.ArgumentException.With.Message.Contains("Users"));
        Assert.That(() => SyntheticDataset.Create(new SyntheticDatasetOptions { Categories = 1 }), Throws.ArgumentException.With.Message.Contains("Categories"));
        Assert.That(() => SyntheticDataset.Create(new SyntheticDatasetOptions { ItemsPerCategory = 500 }), Throws.ArgumentException.With.Message.Contains("ItemsPerCategory"));
        Assert.That(() => SyntheticDataset.Create(new SyntheticDatasetOptions { MinRatingsPerUser = 10, MaxRatingsPerUser = 5 }),
            Throws.ArgumentException.With.Message.Contains("ratings per user"));
        Assert.That(() => SyntheticDataset.Create(new SyntheticDatasetOptions { QualityShare = 0.6 }), Throws.ArgumentException.With.Message.Contains("QualityShare"));
        Assert.That(() => SyntheticDataset.Create(new SyntheticDatasetOptions { RatingNoise = double.NaN }), Throws.ArgumentException.With.Message.Contains("RatingNoise"));
    }

    [Test]
    public void GenerationEndsWhenTheFavouriteCategoriesRunOut()
    {
        // Every event wants a favourite category, but a user rates more items than two categories hold: the rest come from
        // other categories instead of drawing forever.
        var data = SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 3, ItemsPerCategory = 5, Categories = 4, MinRatingsPerUser = 14, MaxRatingsPerUser = 14, FavouriteShare = 1 });
        Assert.That(data.Ratings, Has.Length.EqualTo(3 * 14));
        foreach (var user in data.Ratings.ToArray().GroupBy(r => r.User))
            Assert.That(user.Select(r => r.Item).Distinct().Count(), Is.EqualTo(14), "no item rated twice");
    }

    // ---- recent-K and SUBR-K over a sample set ----------------------------------------------------------------

    /// <summary>
    /// A sample set made directly (not through <c>ReLLaSamples</c>): every event with at least one earlier event of its
    /// user is a sample, all in the train split; timelines in time order.
    /// </summary>
    internal static SampleSet EverySample(RatingDataset data)
    {
        var byUser = data.Ratings.ToArray().GroupBy(r => r.User).ToDictionary(g => g.Key, g => g.OrderBy(r => r.Timestamp).ThenBy(r => r.Item).ToArray());
        var timelines = new List<Rating>();
        var start = new int[data.UserKeys.Count + 1];
        var samples = new List<ReLLaSample>();
        for (int u = 0; u < data.UserKeys.Count; u++)
        {
            start[u] = timelines.Count;
            var events = byUser.GetValueOrDefault(u, []);
            for (int j = 1; j < events.Length; j++)
                samples.Add(new ReLLaSample(samples.Count, u, events[j].Item, events[j].Value, data.IsPositive(events[j].Value), events[j].Timestamp, j, SampleSplit.Train));
            timelines.AddRange(events);
        }
        start[^1] = timelines.Count;
        return new SampleSet(data, new SampleOptions { MinHistory = 1 }, [.. timelines], start, [.. samples]);
    }

    [Test]
    public void RecentKListsTheLastKEventsOldestFirst()
    {
        var set = EverySample(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 4, Seed = 1 }));
        var samples = set.Samples.Take(40).ToList();
        var recent = SampleRetrieval.Recent(set, samples, k: 7);
        for (int i = 0; i < samples.Count; i++)
        {
            int n = samples[i].HistoryLength;
            int[] expected = Enumerable.Range(Math.Max(0, n - 7), Math.Min(n, 7)).ToArray();
            Assert.That(recent[i], Is.EqualTo(expected), $"sample {i} with {n} history events");
        }
    }

    [TestCase(SubrOrder.Chronological)]
    [TestCase(SubrOrder.Score)]
    public void SubrKMatchesABruteForceCosineTopK(SubrOrder order)
    {
        var data = SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 6, Seed = 5 });
        var set = EverySample(data);
        const int Dim = 13, K = 5;
        var rng = new Random(21);
        var vectors = new float[data.Items.Count * Dim];
        for (int i = 0; i < vectors.Length; i++) vectors[i] = (float)(rng.NextDouble() * 2 - 1);
        using var backend = new CpuBackend(threads: 2);
        using var index = SubrIndex.Build(backend, vectors, data.Items.Count, Dim);
        var samples = set.Samples.Where((s, i) => i % 3 == 0).ToList();
        var found = SampleRetrieval.Subr(index, set, samples, K, order, batchSize: 7);

        double Cosine(int a, int b)
        {
            double dot = 0, na = 0, nb = 0;
            for (int d = 0; d < Dim; d++)
            {
                double x = vectors[a * Dim + d], y = vectors[b * Dim + d];
                dot += x * y; na += x * x; nb += y * y;
            }
            return dot / Math.Sqrt(na * nb);
        }
        for (int i = 0; i < samples.Count; i++)
        {
            var history = set.History(samples[i]).ToArray();
            // Best first; ties: the more recent (larger position) wins.
            var best = Enumerable.Range(0, history.Length).Select(p => (p, s: Cosine(history[p].Item, samples[i].Item)))
                .OrderByDescending(x => x.s).ThenByDescending(x => x.p).Take(K).Select(x => x.p).ToArray();
            int[] expected = order == SubrOrder.Chronological ? [.. best.Order()] : best;
            Assert.That(found[i], Is.EqualTo(expected), $"sample {samples[i].Index} ({history.Length} history events)");
        }
    }

    [Test]
    public void SubrKNamesTheSampleOfAnItemTheIndexLacks()
    {
        var data = SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 3, Seed = 5 });
        var set = EverySample(data);
        using var backend = new CpuBackend(threads: 1);
        // A table over every item but the target of sample 5: the first sample touching that item is named.
        int lacking = set.Samples[5].Item;
        long[] ids = Enumerable.Range(0, data.Items.Count).Where(i => i != lacking).Select(i => (long)i).ToArray();
        using var index = SubrIndex.Build(backend, ids.SelectMany(i => new[] { (float)Math.Sin(i + 1), (float)Math.Cos(i + 1), 1f, 0.5f }).ToArray(), ids.Length, 4, ids);
        var missing = set.Samples.First(s => s.Item == lacking || set.History(s).ToArray().Any(r => r.Item == lacking));
        Assert.That(missing.Index, Is.LessThanOrEqualTo(5));
        Assert.That(() => SampleRetrieval.Subr(index, set, set.Samples, 3),
            Throws.TypeOf<RecordException>().With.Message.StartsWith($"sample {missing.Index}: ").And.Message.Contains($"item {lacking} is not in the index"));
    }

    [Test]
    public void CategoryAgreementCountsListedItemsSharingTheTargetsFirstGenre()
    {
        // Two users; items 0-1 genre A, 2-3 genre B, 4 no genre.
        Item I(string key, params string[] genres) => new(key, "Title " + key, genres);
        var data = new RatingDataset("hand", DatasetKind.Custom, ItemDomain.Movies, [I("0", "A"), I("1", "A", "B"), I("2", "B"), I("3", "B", "A"), I("4")],
            ["u0", "u1"], null,
            [new Rating(0, 0, 5, 1), new Rating(0, 2, 5, 2), new Rating(0, 4, 5, 3), new Rating(0, 1, 5, 4), new Rating(1, 3, 1, 5), new Rating(1, 2, 1, 6)],
            hasTimestamps: true, labelThreshold: 3);
        var set = EverySample(data);
        // Samples: u0 target 2 (history [0]), target 4 (history [0, 2]), target 1 (history [0, 2, 4]); u1 target 2 (history [3]).
        var samples = set.Samples.ToList();
        Assert.That(samples.Select(s => s.Item), Is.EqualTo(new[] { 2, 4, 1, 2 }));
        // Whole history: sample 0: item 0 (A) vs B: 0/1. Sample 1: target has no genre: left out. Sample 2: items 0 (A), 2 (B),
        // 4 (none, left out) vs A: 1/2. Sample 3: item 3 (B) vs B: 1/1. Total 2/4.
        Assert.That(SampleRetrieval.CategoryAgreement(set, samples, null), Is.EqualTo(0.5));
        // Listing only position 0 of each: sample 0: 0/1; sample 1 left out; sample 2: item 0 (A) vs A: 1/1; sample 3: 1/1. Total 2/3.
        Assert.That(SampleRetrieval.CategoryAgreement(set, samples, [[0], [0], [0], [0]]), Is.EqualTo(2.0 / 3));
        Assert.That(SampleRetrieval.CategoryAgreement(set, samples.Skip(1).Take(1).ToList(), null), Is.NaN, "nothing to count");
    }

    // ---- the cache --------------------------------------------------------------------------------------------

    [Test]
    public void CachedVectorsAndPositionsRoundTripAndBadFilesAreIgnored()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-cache-").FullName;
        try
        {
            var warnings = new List<string>();
            var cache = new PipelineCache(dir, warnings.Add);
            float[] vectors = [1, 2, 3, 4, 5, 6];
            Assert.That(cache.TryLoadVectors("k1", 2, 3), Is.Null, "a miss");
            cache.SaveVectors("k1", vectors, 2, 3);
            Assert.That(cache.TryLoadVectors("k1", 2, 3), Is.EqualTo(vectors));
            Assert.That(cache.TryLoadVectors("k1", 3, 2), Is.Null, "another shape is not trusted");
            Assert.That(warnings, Has.Count.EqualTo(1).And.Some.Contains("[3, 2]"));

            var set = EverySample(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 2, Seed = 2 }));
            var samples = set.Samples.Take(10).ToList();
            var positions = SampleRetrieval.Recent(set, samples, 4);
            cache.SavePositions("k2", positions);
            Assert.That(cache.TryLoadPositions("k2", samples, 4), Is.EqualTo(positions));
            Assert.That(cache.TryLoadPositions("k2", samples, 3), Is.Null, "another K is not trusted");
            Assert.That(cache.TryLoadPositions("k2", samples.Take(9).ToList(), 4), Is.Null, "another sample count is not trusted");

            // A truncated file is reported and ignored, never half-read.
            string path = cache.PositionsPath("k2");
            File.WriteAllBytes(path, File.ReadAllBytes(path)[..^4]);
            warnings.Clear();
            Assert.That(cache.TryLoadPositions("k2", samples, 4), Is.Null);
            Assert.That(warnings, Has.Count.EqualTo(1));
            Assert.That(Directory.GetFiles(dir, "*.tmp-*"), Is.Empty, "no temporary files left");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void AnUnwritableCacheIsAWarningNotAFailure()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-cache-").FullName;
        try
        {
            string blocked = Path.Combine(dir, "file");
            File.WriteAllText(blocked, "not a folder");
            var warnings = new List<string>();
            var cache = new PipelineCache(blocked, warnings.Add);
            cache.SaveVectors("k", [1f], 1, 1);
            Assert.That(warnings, Has.Count.EqualTo(1).And.Some.Contains("could not write"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void CacheKeysChangeWithEveryPart()
    {
        static string Key(Action<CacheKey> add)
        {
            using var k = new CacheKey("test v1");
            add(k);
            return k.Finish();
        }
        string baseKey = Key(k => k.Add("ab").Add(3).Add<float>([1f, 2f]));
        Assert.That(Key(k => k.Add("ab").Add(3).Add<float>([1f, 2f])), Is.EqualTo(baseKey), "deterministic");
        Assert.That(Key(k => k.Add("a").Add("b").Add(3).Add<float>([1f, 2f])), Is.Not.EqualTo(baseKey), "length-prefixed: a split string differs");
        Assert.That(Key(k => k.Add("ab").Add(4).Add<float>([1f, 2f])), Is.Not.EqualTo(baseKey));
        Assert.That(Key(k => k.Add("ab").Add(3).Add<float>([1f, 2.0000002f])), Is.Not.EqualTo(baseKey));
        Assert.That(baseKey, Has.Length.EqualTo(32));
    }

    // ---- given item vectors ------------------------------------------------------------------------------------

    [Test]
    public void GivenItemVectorsAreReorderedByIdAndEveryItemIsRequiredOnce()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-vectors-").FullName;
        try
        {
            string Write(string name, float[] values, int rows, int dim, long[]? ids)
            {
                var w = new Rellax.Runtime.SafeTensorsWriter();
                w.Add<float>("embeddings", Rellax.Runtime.SafeTensorDType.F32, [rows, dim], values);
                if (ids is not null) w.Add<long>("item_ids", Rellax.Runtime.SafeTensorDType.I64, [ids.Length], ids);
                string path = Path.Combine(dir, name);
                w.Save(path);
                return path;
            }
            // Rows for items 2, 0, 1: loading puts them in item order.
            var v = ItemVectors.Load(Write("shuffled.safetensors", [20, 21, 0, 1, 10, 11], 3, 2, [2, 0, 1]), itemCount: 3);
            Assert.That(v.Values, Is.EqualTo(new float[] { 0, 1, 10, 11, 20, 21 }));
            Assert.That((v.Rows, v.Dim), Is.EqualTo((3, 2)));
            Assert.That(ItemVectors.Load(Write("plain.safetensors", [1, 2, 3], 3, 1, null), 3).Values, Is.EqualTo(new float[] { 1, 2, 3 }), "no ids: row k is item k");

            Assert.That(() => ItemVectors.Load(Write("few.safetensors", [1, 2], 2, 1, null), 3),
                Throws.TypeOf<InvalidDataException>().With.Message.Contains("2 vectors").And.Message.Contains("3 items"));
            Assert.That(() => ItemVectors.Load(Write("twice.safetensors", [1, 2, 3], 3, 1, [0, 2, 0]), 3),
                Throws.TypeOf<InvalidDataException>().With.Message.Contains("item 0 has two vectors"));
            Assert.That(() => ItemVectors.Load(Write("unknown.safetensors", [1, 2, 3], 3, 1, [0, 1, 7]), 3),
                Throws.TypeOf<InvalidDataException>().With.Message.Contains("item_ids[2] = 7"));
            Assert.That(() => ItemVectors.Load(Write("nan.safetensors", [1, float.NaN, 3], 3, 1, null), 3),
                Throws.TypeOf<InvalidDataException>().With.Message.Contains("item vector 1"));
            Assert.That(() => ItemVectors.Load(Path.Combine(dir, "none.safetensors"), 3), Throws.TypeOf<FileNotFoundException>());
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
