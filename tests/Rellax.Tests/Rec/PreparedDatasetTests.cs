using System.Text.Json;
using NUnit.Framework;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="PreparedDataset"/>: Save then Load gives back the same dataset and samples (hand-made with every field kind,
/// and ML-100K); the files are what the format says (items readable by <c>rellax embed</c>); saving is atomic and refuses to
/// replace foreign folders; Load names the file, line and field of every kind of damage.
/// </summary>
[TestFixture]
public sealed class PreparedDatasetTests
{
    private string _dir = null!;

    [SetUp] public void MakeDir() => _dir = Directory.CreateTempSubdirectory("rellax-prepared-").FullName;

    [TearDown] public void Clean() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// Books with every optional field (some null), profiles with nulls, a non-ASCII title, half-star ratings, a user with no
    /// ratings, and one user rating the same item twice with identical rating and time (indistinguishable events).
    /// </summary>
    private static SampleSet HandMade(int limit = 0)
    {
        var items = new List<Item>
        {
            new("0312982518", "Señor Café: \"quoted\" \\ title", ["Fiction", "Drama"], "A. Author", "2001", "Pocket", "0312982518"),
            new("b2", "No genres", [], null, null, null, null),
            new("b3", "Third", ["Horror"], "B", null, "P", null),
        };
        string[] users = ["10", "7", "empty", "3"];
        var profiles = new List<UserProfile> { new("male", "25-34", "writer", null), new(null, null, null, "Spain"), new("female", "1", null), new(null, null, null) };
        var ratings = new List<Rating>();
        for (int k = 0; k < 8; k++) ratings.Add(new Rating(0, k % 3, 0.5f + k % 10 * 0.5f, 1000 + 10 * k));
        for (int k = 0; k < 7; k++) ratings.Add(new Rating(1, (k + 1) % 3, 3.5f, 995 + 10 * k));
        ratings.Add(new Rating(3, 1, 4, 5000));    // row 15: user "3"'s only rating
        ratings.Add(new Rating(1, 2, 3.5f, 995));  // row 16: a second item for user "7" in its first second
        ratings.Add(new Rating(1, 1, 3.5f, 995));  // row 17: identical to row 8 (user "7"'s first rating: item 1, 3.5, 995)
        var data = new RatingDataset("hand-books", DatasetKind.Custom, ItemDomain.Books, items, users, profiles, [.. ratings],
            hasTimestamps: true, labelThreshold: 3, skippedLines: 2) { FilteredRatings = 9 };
        return ReLLaSamples.Build(data, new SampleOptions { MinHistory = 2, Limit = limit, Seed = 5 });
    }

    private static void AssertSame(SampleSet expected, SampleSet actual)
    {
        var (e, a) = (expected.Dataset, actual.Dataset);
        Assert.That((a.Name, a.Kind, a.Domain, a.HasTimestamps, a.LabelThreshold, a.SkippedLines, a.FilteredRatings),
            Is.EqualTo((e.Name, e.Kind, e.Domain, e.HasTimestamps, e.LabelThreshold, e.SkippedLines, e.FilteredRatings)));
        Assert.That(a.Items, Has.Count.EqualTo(e.Items.Count));
        for (int i = 0; i < e.Items.Count; i++)
        {
            var (x, y) = (e.Items[i], a.Items[i]);
            Assert.That((y.Key, y.Title, y.Author, y.Year, y.Publisher, y.Isbn), Is.EqualTo((x.Key, x.Title, x.Author, x.Year, x.Publisher, x.Isbn)), $"item {i}");
            Assert.That(y.Genres, Is.EqualTo(x.Genres), $"item {i} genres");
        }
        Assert.That(a.UserKeys, Is.EqualTo(e.UserKeys));
        if (e.Profiles is null) Assert.That(a.Profiles, Is.Null);
        else Assert.That(a.Profiles, Is.EqualTo(e.Profiles));
        Assert.That(a.Ratings.ToArray(), Is.EqualTo(e.Ratings.ToArray()), "ratings in file order");
        Assert.That(actual.Options, Is.EqualTo(expected.Options));
        Assert.That(actual.Samples, Is.EqualTo(expected.Samples));
        for (int u = 0; u < e.UserKeys.Count; u++)
            Assert.That(actual.Timeline(u).ToArray(), Is.EqualTo(expected.Timeline(u).ToArray()), $"timeline of user {u}");
        foreach (var split in Enum.GetValues<SampleSplit>()) Assert.That(actual.CountOf(split), Is.EqualTo(expected.CountOf(split)));
    }

    [Test]
    public void RoundTripOfAHandMadeDataset()
    {
        var samples = HandMade();
        Assert.That(samples.Samples, Has.Count.GreaterThan(10), "the fixture has samples in every split");
        Assert.That(samples.CountOf(SampleSplit.Valid), Is.GreaterThan(0));
        string folder = Path.Combine(_dir, "prepared");
        PreparedDataset.Save(samples, folder);
        AssertSame(samples, PreparedDataset.Load(folder));
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.EqualTo(new[] { folder }), "no temporary folder left");

        var limited = HandMade(limit: 4);
        PreparedDataset.Save(limited, folder);
        AssertSame(limited, PreparedDataset.Load(folder));
    }

    [Test]
    public void RoundTripOfAHoldOutDataset()
    {
        var raws = new List<ReLLaSamplesTests.Raw>();
        for (int k = 0; k < 8; k++)
            for (int u = 0; u < 5; u++)
                if (k < 5 + u) raws.Add(new ReLLaSamplesTests.Raw($"{u}", $"{(u * 7 + k) % 9}", k % 11, 3 * k + u));
        var data = ReLLaSamplesTests.Dataset(raws, hasTimestamps: false, kind: DatasetKind.GoodReads, domain: ItemDomain.Books);
        var samples = ReLLaSamples.Build(data);
        string folder = Path.Combine(_dir, "gr");
        PreparedDataset.Save(samples, folder);
        AssertSame(samples, PreparedDataset.Load(folder));
    }

    [Test]
    public void ArbitraryFloatRatingsAndLargeTimestampsRoundTripExactly()
    {
        var random = new Random(3);
        var raws = Enumerable.Range(0, 400).Select(k => new ReLLaSamplesTests.Raw($"{k % 7}", $"{k % 13}",
            k % 4 == 0 ? random.NextSingle() * 10 : k % 4 == 1 ? 1e-7f * k : k % 4 == 2 ? 1f / (k + 1) : -123456.79f,
            k % 5 == 0 ? long.MaxValue - k : -1_000_000_000_000L * k)).ToList();
        var samples = ReLLaSamples.Build(ReLLaSamplesTests.Dataset(raws), new SampleOptions { MinHistory = 0 });
        string folder = Path.Combine(_dir, "floats");
        PreparedDataset.Save(samples, folder);
        AssertSame(samples, PreparedDataset.Load(folder));
    }

    [Test]
    public void TheFilesAreTheDocumentedFormat()
    {
        var samples = HandMade();
        string folder = Path.Combine(_dir, "p");
        PreparedDataset.Save(samples, folder);
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName).Order(),
            Is.EqualTo(new[] { "dataset.json", "items.jsonl", "samples.jsonl", "timelines.jsonl", "users.jsonl" }));
        using (var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "dataset.json"))))
        {
            var m = manifest.RootElement;
            Assert.That(m.GetProperty("format").GetString(), Is.EqualTo("rellax-prepared-dataset"));
            Assert.That(m.GetProperty("version").GetInt32(), Is.EqualTo(1));
            Assert.That(m.GetProperty("kind").GetString(), Is.EqualTo("custom"));
            Assert.That(m.GetProperty("domain").GetString(), Is.EqualTo("books"));
            Assert.That(m.GetProperty("skipped_lines").GetInt32(), Is.EqualTo(2));
            Assert.That(m.GetProperty("options").GetProperty("min_history").GetInt32(), Is.EqualTo(2));
            var counts = m.GetProperty("counts");
            Assert.That(counts.GetProperty("ratings").GetInt32(), Is.EqualTo(18));
            Assert.That(counts.GetProperty("users").GetInt32(), Is.EqualTo(4));
            Assert.That(counts.GetProperty("train").GetInt32() + counts.GetProperty("valid").GetInt32() + counts.GetProperty("test").GetInt32(),
                Is.EqualTo(counts.GetProperty("samples").GetInt32()));
        }
        // items.jsonl as `rellax embed --items` reads it: int64 id and the SUBR sentence as text.
        List<Rellax.Cli.EmbedItemsFile.Item> embedItems;
        using (var reader = JsonLinesReader.Open(Path.Combine(folder, "items.jsonl"), "items file")) embedItems = Rellax.Cli.EmbedItemsFile.Read(reader);
        Assert.That(embedItems.Select(i => i.Id), Is.EqualTo(new long[] { 0, 1, 2 }));
        Assert.That(embedItems[0].Text, Is.EqualTo("Here is a book. Its title is Señor Café: \"quoted\" \\ title. ISBN of the book is 0312982518. " +
            "The author of the book is A. Author. The publication year of the book is 2001. Its publisher is Pocket."));
        string[] itemLines = File.ReadAllLines(Path.Combine(folder, "items.jsonl"));
        Assert.That(itemLines[1], Is.EqualTo("{\"id\":1,\"key\":\"b2\",\"title\":\"No genres\",\"genres\":[],\"text\":\"Here is a book. Its title is No genres. " +
            "ISBN of the book is unknown. The author of the book is unknown. The publication year of the book is unknown. Its publisher is unknown.\"}"));
        string[] userLines = File.ReadAllLines(Path.Combine(folder, "users.jsonl"));
        Assert.That(userLines[1], Is.EqualTo("{\"id\":1,\"key\":\"7\",\"gender\":null,\"age\":null,\"job\":null,\"location\":\"Spain\"}"));
        // User 3 ("3") has one rating: 4 stars at 5000, file position 15.
        string[] timelineLines = File.ReadAllLines(Path.Combine(folder, "timelines.jsonl"));
        Assert.That(timelineLines, Has.Length.EqualTo(4));
        Assert.That(timelineLines[3], Is.EqualTo("{\"user\":3,\"items\":[1],\"ratings\":[4],\"timestamps\":[5000],\"rows\":[15]}"));
        Assert.That(timelineLines[2], Is.EqualTo("{\"user\":2,\"items\":[],\"ratings\":[],\"timestamps\":[],\"rows\":[]}"));
        // User 0's ratings are 0.5, 1, ..., 4 at 1000, 1010, ...: its timeline is in file order, the half stars written as such.
        Assert.That(timelineLines[0], Does.StartWith("{\"user\":0,\"items\":[0,1,2,0,1,2,0,1],\"ratings\":[0.5,1,1.5,2,2.5,3,3.5,4],\"timestamps\":[1000,1010,"));
        Assert.That(timelineLines[0], Does.EndWith("\"rows\":[0,1,2,3,4,5,6,7]}"));
        string[] sampleLines = File.ReadAllLines(Path.Combine(folder, "samples.jsonl"));
        Assert.That(sampleLines, Has.Length.EqualTo(samples.Samples.Count));
        var first = samples.Samples[0];
        Assert.That(sampleLines[0], Is.EqualTo($"{{\"id\":0,\"split\":\"train\",\"user\":{first.User},\"item\":{first.Item},\"rating\":{first.Rating.ToString(System.Globalization.CultureInfo.InvariantCulture)}," +
            $"\"label\":{(first.Label ? 1 : 0)},\"timestamp\":{first.Timestamp},\"history\":{first.HistoryLength}}}"));
    }

    [Test]
    public void IdenticalEventsOfOneUserKeepTheirRows()
    {
        // User 1 ("7"): rows 8..14 at 995, 1005, ..., 1055 on items 1, 2, 0, 1, 2, 0, 1, plus rows 16 (item 2) and 17 (item 1,
        // identical to row 8) at 995. At 995 the order is by item key ("b2" = item 1 before "b3" = item 2), then file order:
        // rows 8, 17, 16; then 9..14.
        var samples = HandMade();
        string folder = Path.Combine(_dir, "p");
        PreparedDataset.Save(samples, folder);
        string line = File.ReadAllLines(Path.Combine(folder, "timelines.jsonl"))[1];
        using var doc = JsonDocument.Parse(line);
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().Select(r => r.GetInt32()).ToArray();
        Assert.That(rows, Is.EqualTo(new[] { 8, 17, 16, 9, 10, 11, 12, 13, 14 }));
    }

    [Test]
    public void RoundTripOfMovieLens100K()
    {
        string dir = TestData.RequireShared("movielens/ml-100k");
        var samples = ReLLaSamples.Build(DatasetReader.Read(DatasetKind.MovieLens100K, dir));
        string folder = Path.Combine(_dir, "ml100k");
        PreparedDataset.Save(samples, folder);
        AssertSame(samples, PreparedDataset.Load(folder));
        // Independent: u.data has 100000 lines and u.item 1682 (`wc -l u.data u.item`): one timeline event per rating.
        Assert.That(File.ReadLines(Path.Combine(folder, "items.jsonl")).Count(), Is.EqualTo(1682));
        int events = File.ReadLines(Path.Combine(folder, "timelines.jsonl")).Sum(l => JsonDocument.Parse(l).RootElement.GetProperty("items").GetArrayLength());
        Assert.That(events, Is.EqualTo(100000));
    }

    [Test]
    public void SaveReplacesAnEarlierDatasetButRefusesOtherFolders()
    {
        var samples = HandMade();
        string folder = Path.Combine(_dir, "p");
        PreparedDataset.Save(HandMade(limit: 2), folder);
        PreparedDataset.Save(samples, folder);
        Assert.That(PreparedDataset.Load(folder).Samples, Has.Count.EqualTo(samples.Samples.Count));

        string foreign = Path.Combine(_dir, "foreign");
        Directory.CreateDirectory(foreign);
        File.WriteAllText(Path.Combine(foreign, "notes.txt"), "mine");
        Assert.That(() => PreparedDataset.Save(samples, foreign), Throws.InstanceOf<IOException>().With.Message.Contains("not a prepared dataset"));
        Assert.That(File.ReadAllText(Path.Combine(foreign, "notes.txt")), Is.EqualTo("mine"));

        string empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        PreparedDataset.Save(samples, empty);
        Assert.That(File.Exists(Path.Combine(empty, "dataset.json")));

        Assert.That(() => PreparedDataset.Save(samples, Path.Combine(_dir, "missing", "p")), Throws.InstanceOf<DirectoryNotFoundException>().With.Message.Contains("missing"));
        File.WriteAllText(Path.Combine(_dir, "file"), "x");
        Assert.That(() => PreparedDataset.Save(samples, Path.Combine(_dir, "file")), Throws.InstanceOf<IOException>().With.Message.Contains("is a file"));
    }

    [Test]
    public void AFailedSaveLeavesTheEarlierFolderIntact()
    {
        string folder = Path.Combine(_dir, "p");
        var good = HandMade();
        PreparedDataset.Save(good, folder);
        string before = File.ReadAllText(Path.Combine(folder, "samples.jsonl"));
        // An item list that fails (as a disk would) once the samples are built: the save fails while writing items.jsonl.
        var d = good.Dataset;
        var items = new FailingList<Item>(d.Items.ToList());
        var broken = new RatingDataset(d.Name, d.Kind, d.Domain, items, d.UserKeys, d.Profiles, d.Ratings.ToArray(), d.HasTimestamps, d.LabelThreshold);
        var brokenSamples = ReLLaSamples.Build(broken, good.Options);
        items.Fail = true;
        Assert.That(() => PreparedDataset.Save(brokenSamples, folder), Throws.InstanceOf<IOException>().With.Message.EqualTo("simulated failure"));
        Assert.That(File.ReadAllText(Path.Combine(folder, "samples.jsonl")), Is.EqualTo(before));
        AssertSame(good, PreparedDataset.Load(folder));
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.EqualTo(new[] { folder }), "the temporary folder was removed");
    }

    [Test]
    public void SaveNeedsEveryRatingInATimeline()
    {
        // A valid SampleSet whose timelines leave out the dataset's last rating: its file position could not be written.
        var d = ReLLaSamplesTests.Dataset([new("u", "a", 4, 1), new("u", "b", 2, 2), new("u", "c", 5, 3)]);
        var partial = new SampleSet(d, new SampleOptions { MinHistory = 1 }, d.Ratings[..2].ToArray(), [0, 2],
            [new ReLLaSample(0, 0, 1, 2, false, 2, 1, SampleSplit.Train)]);
        string folder = Path.Combine(_dir, "p");
        Assert.That(() => PreparedDataset.Save(partial, folder), Throws.ArgumentException.With.Message.Contains("2 events but the dataset has 3 ratings"));
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.Empty);
    }

    /// <summary>A list whose indexer throws <see cref="IOException"/> once <see cref="Fail"/> is set.</summary>
    private sealed class FailingList<T>(List<T> inner) : IReadOnlyList<T>
    {
        public bool Fail { get; set; }
        public T this[int index] => Fail ? throw new IOException("simulated failure") : inner[index];
        public int Count => inner.Count;
        public IEnumerator<T> GetEnumerator() => Fail ? throw new IOException("simulated failure") : inner.GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    // ---- Load errors ------------------------------------------------------------------------------------------------------

    private string SavedCopy()
    {
        string folder = Path.Combine(_dir, "p");
        PreparedDataset.Save(HandMade(), folder);
        return folder;
    }

    private static void EditLine(string path, int line, Func<string, string> edit)
    {
        var lines = File.ReadAllLines(path);
        lines[line - 1] = edit(lines[line - 1]);
        File.WriteAllLines(path, lines);
    }

    private static string LoadError(string folder) =>
        Assert.Throws<RecordException>(() => PreparedDataset.Load(folder))!.Message;

    [Test]
    public void LoadNamesTheFileLineAndField()
    {
        string folder = SavedCopy();
        string samples = Path.Combine(folder, "samples.jsonl");
        string timelines = Path.Combine(folder, "timelines.jsonl");
        string original = File.ReadAllText(samples);

        EditLine(samples, 3, l => l.Replace("\"id\":2", "\"id\":7"));
        Assert.That(LoadError(folder), Does.StartWith($"{samples}:3: \"id\" must be 2").And.Contain("got 7"));
        File.WriteAllText(samples, original);

        EditLine(samples, 2, l => l[..^5]);
        Assert.That(LoadError(folder), Does.StartWith($"{samples}:2: not valid JSON"));
        File.WriteAllText(samples, original);

        EditLine(samples, 1, l => l.Replace("\"split\":\"train\"", "\"split\":\"dev\""));
        Assert.That(LoadError(folder), Does.StartWith($"{samples}:1: \"split\" must be \"train\", \"valid\" or \"test\", got \"dev\""));
        File.WriteAllText(samples, original);

        EditLine(samples, 1, l => l.Contains("\"label\":1") ? l.Replace("\"label\":1", "\"label\":0") : l.Replace("\"label\":0", "\"label\":1"));
        Assert.That(LoadError(folder), Does.StartWith($"{samples}:1: \"label\"").And.Contain("does not match rating"));
        File.WriteAllText(samples, original);

        EditLine(samples, 4, l => System.Text.RegularExpressions.Regex.Replace(l, "\"item\":\\d+", "\"item\":99"));
        Assert.That(LoadError(folder), Does.StartWith($"{samples}:4: \"item\" 99 is outside [0, 3)"));
        File.WriteAllText(samples, original);

        EditLine(samples, 4, l => System.Text.RegularExpressions.Regex.Replace(l, "\"timestamp\":\\d+", "\"timestamp\":1"));
        Assert.That(LoadError(folder), Does.StartWith($"{samples}:4: the sample").And.Contain("is not event"));
        File.WriteAllText(samples, original);

        File.WriteAllLines(samples, File.ReadAllLines(samples)[..^1]);
        Assert.That(LoadError(folder), Does.StartWith($"{samples}: ").And.Contain("samples but the manifest says"));
        File.WriteAllText(samples, original);

        // Blank lines and CRLF endings are read; line numbers count every line.
        File.WriteAllText(samples, "\r\n" + original.Replace("\n", "\r\n"));
        Assert.That(PreparedDataset.Load(folder).Samples, Has.Count.EqualTo(HandMade().Samples.Count));
        EditLine(samples, 4, l => l.Replace("\"id\":2", "\"id\":7"));
        Assert.That(LoadError(folder), Does.StartWith($"{samples}:4: \"id\" must be 2"));
        File.WriteAllText(samples, original);

        string t = File.ReadAllText(timelines);
        EditLine(timelines, 1, l => l.Replace("\"items\":[0,", "\"items\":[5,"));
        Assert.That(LoadError(folder), Does.StartWith($"{timelines}:1: \"items\"[0] = 5 is outside [0, 3)"));
        File.WriteAllText(timelines, t);

        EditLine(timelines, 1, l => l.Replace("\"rows\":[0,1,", "\"rows\":[1,1,"));
        Assert.That(LoadError(folder), Does.StartWith($"{timelines}:1: \"rows\"[1] = 1 appears twice"));
        File.WriteAllText(timelines, t);

        EditLine(timelines, 1, l => l.Replace("\"ratings\":[0.5,", "\"ratings\":[0.5,0.5,"));
        Assert.That(LoadError(folder), Does.StartWith($"{timelines}:1: \"items\", \"ratings\", \"timestamps\" and \"rows\" must have the same length, got 8, 9, 8, 8"));
        File.WriteAllText(timelines, t);

        EditLine(timelines, 2, l => l.Replace("\"user\":1", "\"user\":\"1\""));
        Assert.That(LoadError(folder), Does.StartWith($"{timelines}:2: \"user\" must be an integer, got \"1\""));
        File.WriteAllText(timelines, t);

        Assert.That(PreparedDataset.Load(folder).Samples, Has.Count.EqualTo(HandMade().Samples.Count), "restored files load again");
    }

    [Test]
    public void LoadChecksTheManifestItemsAndUsers()
    {
        string folder = SavedCopy();
        string manifest = Path.Combine(folder, "dataset.json");
        string m = File.ReadAllText(manifest);

        File.WriteAllText(manifest, m.Replace("\"version\": 1", "\"version\": 2"));
        Assert.That(LoadError(folder), Is.EqualTo($"{manifest}: \"version\" 2 is not supported (this build reads version 1)"));
        File.WriteAllText(manifest, m.Replace("\"kind\": \"custom\"", "\"kind\": \"netflix\""));
        Assert.That(LoadError(folder), Does.StartWith($"{manifest}: \"kind\" must be one of movielens-100k,"));
        File.WriteAllText(manifest, m.Replace("\"format\": \"rellax-prepared-dataset\",", ""));
        Assert.That(LoadError(folder), Is.EqualTo($"{manifest}: \"format\" is missing"));
        File.WriteAllText(manifest, m.Replace("\"users\": 4", "\"users\": 5"));
        Assert.That(LoadError(folder), Is.EqualTo($"{Path.Combine(folder, "users.jsonl")}: 4 users but the manifest says 5"));
        File.WriteAllText(manifest, m.Replace("\"train_fraction\": 0.8", "\"train_fraction\": 1.5"));
        Assert.That(LoadError(folder), Does.StartWith($"{manifest}: \"options\": TrainFraction must be in [0, 1]"));
        File.WriteAllText(manifest, m);

        string items = Path.Combine(folder, "items.jsonl");
        string it = File.ReadAllText(items);
        EditLine(items, 2, l => l.Replace("\"genres\":[]", "\"genres\":[3]"));
        Assert.That(LoadError(folder), Is.EqualTo($"{items}:2: \"genres\"[0] must be a string, got 3"));
        File.WriteAllText(items, it);
        EditLine(items, 3, l => l.Replace("\"id\":2", "\"id\":1"));
        Assert.That(LoadError(folder), Does.StartWith($"{items}:3: \"id\" must be 2"));
        File.WriteAllText(items, it);

        string users = Path.Combine(folder, "users.jsonl");
        string us = File.ReadAllText(users);
        EditLine(users, 1, l => l.Replace(",\"job\":\"writer\"", ""));
        Assert.That(LoadError(folder), Is.EqualTo($"{users}:1: \"job\" is missing"));
        File.WriteAllText(users, us);

        File.Delete(Path.Combine(folder, "timelines.jsonl"));
        Assert.That(() => PreparedDataset.Load(folder), Throws.InstanceOf<FileNotFoundException>().With.Message.Contains("timelines.jsonl is missing"));
        Assert.That(() => PreparedDataset.Load(Path.Combine(_dir, "nope")), Throws.InstanceOf<DirectoryNotFoundException>());
    }
}
