using System.Diagnostics;
using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Tests.Model;
using TorchSharp;
using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="DinModel"/> against the independent TorchSharp DIN (<see cref="TorchDin"/>, float64, loaded by name from the
/// same <c>model.safetensors</c> through the tests' own safetensors parser), the feature layout of
/// <see cref="DinConfig.For"/> on a hand-made dataset and on MovieLens-100K, <see cref="DinModel.Featurize"/>, and the
/// load errors. Tolerance against the float64 oracle: |ours - torch| &lt;= 1e-4 · max(1, |torch|) (our forward is float32
/// with sums of at most a few hundred terms of magnitude &lt;= ~1, whose rounding error is ~1e-6).
/// </summary>
[TestFixture]
public sealed class DinTests
{
    private const double Tolerance = 1e-4;
    private string _dir = null!;
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Create()
    {
        _dir = Directory.CreateTempSubdirectory("rellax-din-").FullName;
        _cpu = new CpuBackend(threads: 2);
    }

    [OneTimeTearDown]
    public void Delete()
    {
        _cpu.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private string NewDir(string name)
    {
        string dir = Path.Combine(_dir, name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>A hand-made config: user 5, item 13, gender [F, M] (3 rows), genre 4 values (5 rows), ratings 1..5;
    /// table rows: user 0-4, item 5-17, gender 18-20, genre 21-25, ratings 26-30 (V = 31).</summary>
    private static DinConfig SmallConfig() => new()
    {
        EmbedDim = 8,
        Fields =
        [
            new DinField("user", 5),
            new DinField("item", 13),
            new DinField("gender", 3, ["F", "M"]),
            new DinField("genre", 5, ["Comedy", "Drama", "Horror", "Western"]),
        ],
        RatingValues = [1, 2, 3, 4, 5],
        AttentionSizes = [16, 12],
        TowerSizes = [24, 20, 10],
    };

    // Block starts of SmallConfig, written out by hand (not from FieldOffset).
    private static readonly (int Start, int Count)[] SmallBlocks = [(0, 5), (5, 13), (18, 3), (21, 5)];
    private const int SmallRatingStart = 26, SmallRows = 31;

    /// <summary>Builds the oracle from a model directory: the keys of its state_dict must be exactly the file's tensors.</summary>
    private static TorchDin Oracle(string dir, int fields, int itemField, int embed, int[] attention, int[] tower)
    {
        var weights = OracleWeights.Read(dir);
        var oracle = new TorchDin(weights["embed.embedding.weight"].Shape[0], embed, fields, itemField, attention, tower);
        oracle.to(float64);
        oracle.eval();
        var stateKeys = oracle.state_dict().Keys.Order(StringComparer.Ordinal).ToList();
        Assert.That(stateKeys, Is.EqualTo(weights.Keys.Order(StringComparer.Ordinal).ToList()),
            "the torch module (reference layout) and the checkpoint have the same tensor names");
        var source = new Dictionary<string, TorchTensor>();
        foreach (var (name, (shape, data)) in weights)
            source[name] = torch.tensor(data, shape.Select(d => (long)d).ToArray(), dtype: float32).to(float64);
        oracle.load_state_dict(source, strict: true);
        return oracle;
    }

    /// <summary>Runs the oracle on ragged inputs by padding them to the longest history; the padding gets random valid rows
    /// (masked out), so a forward that ignored the mask would differ.</summary>
    private static (double[] States, double[] Logits) RunOracle(TorchDin oracle, int[] fieldRows, int fields, int[] starts, int[] items, int[] ratings,
        int paddingRows, Random random)
    {
        using var scope = torch.NewDisposeScope();
        int batch = starts.Length - 1;
        int longest = Math.Max(1, Enumerable.Range(0, batch).Max(b => starts[b + 1] - starts[b]));
        var ids = new long[batch * longest];
        var rates = new long[batch * longest];
        var mask = new double[batch * longest];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < longest; j++)
            {
                int p = starts[b] + j;
                bool real = p < starts[b + 1];
                ids[b * longest + j] = real ? items[p] : random.Next(paddingRows);
                rates[b * longest + j] = real ? ratings[p] : random.Next(paddingRows);
                mask[b * longest + j] = real ? 1 : 0;
            }
        using var noGrad = torch.no_grad();
        var (states, logits) = oracle.Run(
            torch.tensor(fieldRows.Select(r => (long)r).ToArray(), [batch, fields], dtype: int64),
            torch.tensor(ids, [batch, longest], dtype: int64),
            torch.tensor(rates, [batch, longest], dtype: int64),
            torch.tensor(mask, [batch, longest], dtype: float64));
        return (states.contiguous().data<double>().ToArray(), logits.contiguous().data<double>().ToArray());
    }

    private static void AssertClose(ReadOnlySpan<float> actual, double[] expected, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what + " length");
        double worst = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double excess = Math.Abs(actual[i] - expected[i]) - Tolerance * Math.Max(1, Math.Abs(expected[i]));
            if (at < 0 || excess > worst) (worst, at) = (excess, i);
        }
        if (at >= 0)
            Assert.That(worst, Is.LessThanOrEqualTo(0), $"{what}[{at}]: ours {actual[at]}, torch {expected[at]}");
    }

    [Test]
    public void ForwardMatchesTorchOnRaggedBatches([Values(1, 7, 1029)] int batch)
    {
        var config = SmallConfig();
        var model = DinModel.CreateRandom(config, seed: 11);
        string dir = NewDir("forward");
        model.Save(dir);
        var oracle = Oracle(dir, fields: 4, itemField: 1, embed: 8, attention: [16, 12], tower: [24, 20, 10]);

        const int maxHistory = 9;
        var random = new Random(batch);
        var fieldRows = new int[batch * 4];
        var starts = new int[batch + 1];
        var items = new List<int>();
        var ratings = new List<int>();
        for (int b = 0; b < batch; b++)
        {
            for (int f = 0; f < 4; f++) fieldRows[b * 4 + f] = SmallBlocks[f].Start + random.Next(SmallBlocks[f].Count);
            // Lengths: 1, the maximum, then random from 0 to the maximum (0 included).
            int length = (b % 5) switch { 0 => 1, 1 => maxHistory, _ => random.Next(maxHistory + 1) };
            for (int j = 0; j < length; j++)
            {
                items.Add(SmallBlocks[1].Start + random.Next(SmallBlocks[1].Count));
                ratings.Add(SmallRatingStart + random.Next(5));
            }
            starts[b + 1] = items.Count;
        }
        var states = new float[batch * 10];
        var logits = new float[batch];
        model.Forward(_cpu, fieldRows, starts, items.ToArray(), ratings.ToArray(), states, logits);

        var (expectedStates, expectedLogits) = RunOracle(oracle, fieldRows, 4, starts, [.. items], [.. ratings], SmallRows, random);
        AssertClose(states, expectedStates, "h_u");
        AssertClose(logits, expectedLogits, "logit");
        Assert.That(states.Count(v => v > 0), Is.GreaterThan(states.Length / 10), "the ReLU tower is not dead (the check has values to compare)");
    }

    [Test]
    public void ForwardMatchesTorchWithHalfPrecisionWeightsAndNoHistory([Values("F16", "BF16")] string dtype)
    {
        string dir = NewDir("half");
        DinModel.CreateRandom(SmallConfig(), seed: 21).Save(dir);
        RewriteWeights(dir, _ => { }, dtype);
        var model = DinModel.Load(dir);
        var oracle = Oracle(dir, fields: 4, itemField: 1, embed: 8, attention: [16, 12], tower: [24, 20, 10]);
        // Three samples, none with history: u = 0 and only the fields reach the tower.
        int[] fields = [0, 5, 18, 21, 4, 17, 20, 25, 2, 11, 19, 23];
        var states = new float[30];
        var logits = new float[3];
        model.Forward(_cpu, fields, [0, 0, 0, 0], [], [], states, logits);
        var (expectedStates, expectedLogits) = RunOracle(oracle, fields, 4, [0, 0, 0, 0], [], [], SmallRows, new Random(2));
        AssertClose(states, expectedStates, "h_u");
        AssertClose(logits, expectedLogits, "logit");
        Assert.That(model.EmbeddingRow(30).ToArray(), Is.EqualTo(OracleWeights.Read(dir)["embed.embedding.weight"].Data.AsSpan(30 * 8, 8).ToArray()),
            "half-precision values are widened exactly");
    }

    [Test]
    public void ASampleDoesNotDependOnItsBatch()
    {
        var model = DinModel.CreateRandom(SmallConfig(), seed: 3);
        int[] fields = [2, 9, 19, 24, 4, 5, 20, 21];
        int[] items = [6, 7, 8, 17, 16];
        int[] rates = [26, 30, 28, 27, 29];
        var both = new float[20];
        var bothLogits = new float[2];
        model.Forward(_cpu, fields, [0, 3, 5], items, rates, both, bothLogits);
        var second = new float[10];
        var secondLogit = new float[1];
        model.Forward(_cpu, fields[4..], [0, 2], items[3..], rates[3..], second, secondLogit);
        Assert.That(second, Is.EqualTo(both[10..]).Within(1e-6));
        Assert.That(secondLogit[0], Is.EqualTo(bothLogits[1]).Within(1e-6));
    }

    // ---- the feature layout and Featurize on a hand-made dataset -------------------------------------------------------

    /// <summary>
    /// 4 users (profiles: u0 male/25/writer, u1 female/35/null job, u2 male/25/artist, u3 female/18/writer), 6 items
    /// (genres: i0 [Drama, Comedy], i1 [Comedy], i2 [], i3 [Western], i4 [Drama], i5 [Comedy, Horror]) and 20 ratings
    /// with distinct timestamps and values in {1, 2, 4, 5} (no 3).
    /// </summary>
    internal static RatingDataset HandMade()
    {
        Item Movie(int i, params string[] genres) => new($"m{i}", $"Movie {i} (199{i})", genres);
        var items = new[] { Movie(0, "Drama", "Comedy"), Movie(1, "Comedy"), Movie(2), Movie(3, "Western"), Movie(4, "Drama"), Movie(5, "Comedy", "Horror") };
        var profiles = new[]
        {
            new UserProfile("male", "25", "writer"), new UserProfile("female", "35", null),
            new UserProfile("male", "25", "artist"), new UserProfile("female", "18", "writer"),
        };
        (int U, int I, float V)[] events =
        [
            (0, 0, 5), (0, 1, 4), (1, 2, 1), (0, 2, 2), (2, 3, 5), (0, 3, 4), (1, 0, 2), (0, 4, 5), (3, 5, 1), (0, 5, 1),
            (1, 1, 4), (2, 0, 4), (1, 3, 5), (2, 1, 2), (1, 4, 1), (2, 2, 4), (3, 0, 2), (1, 5, 5), (2, 4, 1), (3, 1, 4),
        ];
        var ratings = events.Select((x, t) => new Rating(x.U, x.I, x.V, 1000 + 10 * t)).ToArray();
        return new RatingDataset("hand-made", DatasetKind.Custom, ItemDomain.Movies, items, ["u0", "u1", "u2", "u3"], profiles, ratings,
            hasTimestamps: true, labelThreshold: 3);
    }

    /// <summary>Samples as SPEC §1 makes them (a plain loop, independent of <see cref="ReLLaSamples"/>): each user's
    /// events by time, every event with at least <paramref name="minHistory"/> earlier ones is a sample, ordered by
    /// (time, user, item); all in the training split.</summary>
    internal static SampleSet SamplesOf(RatingDataset dataset, int minHistory)
    {
        var byUser = dataset.Ratings.ToArray().GroupBy(r => r.User).ToDictionary(g => g.Key, g => g.OrderBy(r => r.Timestamp).ThenBy(r => r.Item).ToArray());
        int users = dataset.UserKeys.Count;
        var timelines = new List<Rating>();
        var start = new int[users + 1];
        var samples = new List<ReLLaSample>();
        for (int u = 0; u < users; u++)
        {
            var events = byUser.GetValueOrDefault(u, []);
            for (int p = minHistory; p < events.Length; p++)
            {
                var r = events[p];
                samples.Add(new ReLLaSample(0, u, r.Item, r.Value, dataset.IsPositive(r.Value), r.Timestamp, p, SampleSplit.Train));
            }
            timelines.AddRange(events);
            start[u + 1] = timelines.Count;
        }
        var ordered = samples.OrderBy(s => s.Timestamp).ThenBy(s => s.User).ThenBy(s => s.Item).Select((s, i) => s with { Index = i }).ToArray();
        return new SampleSet(dataset, new SampleOptions { MinHistory = minHistory }, [.. timelines], start, ordered);
    }

    [Test]
    public void ForGivesTheDocumentedLayoutOnAHandMadeDataset()
    {
        var config = DinConfig.For(HandMade(), embedDim: 6);
        Assert.That(config.Fields.Select(f => f.Name), Is.EqualTo(new[] { "user", "item", "gender", "age", "job", "genre" }), "no location: no user has one");
        Assert.That(config.Fields.Select(f => f.VocabularySize), Is.EqualTo(new[] { 4, 6, 3, 4, 3, 4 }));
        Assert.That(config.Fields[2].Values, Is.EqualTo(new[] { "female", "male" }));
        Assert.That(config.Fields[3].Values, Is.EqualTo(new[] { "18", "25", "35" }));
        Assert.That(config.Fields[4].Values, Is.EqualTo(new[] { "artist", "writer" }));
        Assert.That(config.Fields[5].Values, Is.EqualTo(new[] { "Comedy", "Drama", "Western" }), "first genres only: Horror is never first");
        Assert.That(config.RatingValues, Is.EqualTo(new[] { 1f, 2f, 4f, 5f }));
        Assert.That(config.ItemFieldIndex, Is.EqualTo(1));
        Assert.That(config.RatingOffset, Is.EqualTo(4 + 6 + 3 + 4 + 3 + 4));
        Assert.That(config.NumFeatures, Is.EqualTo(24 + 4));
        Assert.That(config.TowerInputDim, Is.EqualTo(7 * 6));
    }

    [Test]
    public void ForLeavesOutDroppedFieldsAndTheConfigRoundTrips()
    {
        var dataset = HandMade();
        var config = DinConfig.For(dataset, embedDim: 6, dropFields: ["user", "job"]);
        Assert.That(config.Fields.Select(f => f.Name), Is.EqualTo(new[] { "item", "gender", "age", "genre" }));
        Assert.That(config.Fields.Select(f => f.VocabularySize), Is.EqualTo(new[] { 6, 3, 4, 4 }), "the kept fields keep their vocabularies");
        Assert.That(config.ItemFieldIndex, Is.EqualTo(0));
        Assert.That(config.RatingOffset, Is.EqualTo(6 + 3 + 4 + 4));
        Assert.That(config.TowerInputDim, Is.EqualTo(5 * 6));

        // What DinModel writes is read back as is, and fits the dataset it came from.
        string dir = Directory.CreateTempSubdirectory("rellax-din-drop-").FullName;
        try
        {
            var model = DinModel.CreateRandom(config, seed: 3);
            model.Save(dir);
            var loaded = DinModel.Load(dir, dataset);
            Assert.That(loaded.Config.Fields.Select(f => (f.Name, f.VocabularySize)), Is.EqualTo(config.Fields.Select(f => (f.Name, f.VocabularySize))));
            Assert.That(loaded.Config.NumFeatures, Is.EqualTo(config.NumFeatures));
            Assert.That(loaded.EmbeddingRow(0).ToArray(), Is.EqualTo(model.EmbeddingRow(0).ToArray()));
        }
        finally { Directory.Delete(dir, recursive: true); }

        Assert.That(DinConfig.For(dataset, 6, []).Fields, Has.Count.EqualTo(6), "an empty list drops nothing");
        Assert.That(() => DinConfig.For(dataset, 6, ["item"]), Throws.ArgumentException.With.Message.Contains("cannot drop field 'item'"));
        Assert.That(() => DinConfig.For(dataset, 6, ["location"]), Throws.ArgumentException.With.Message
            .Contains("cannot drop field 'location': it is not a field of dataset").And.Message.Contains("(fields: user, item, gender, age, job, genre)"));
    }

    [Test]
    public void FeaturizeMatchesTorchOnTheHandMadeLayout()
    {
        var dataset = HandMade();
        var set = SamplesOf(dataset, minHistory: 2);
        var config = DinConfig.For(dataset, embedDim: 6) with { AttentionSizes = [10], TowerSizes = [14, 12, 9] };
        var model = DinModel.CreateRandom(config, seed: 5);
        string dir = NewDir("featurize");
        model.Save(dir);
        var oracle = Oracle(dir, fields: 6, itemField: 1, embed: 6, attention: [10], tower: [14, 12, 9]);

        const int maxHistory = 3;
        var features = model.Featurize(_cpu, set, set.Samples, maxHistory);
        Assert.That(features.SampleIds, Is.EqualTo(Enumerable.Range(0, set.Samples.Count).Select(i => (long)i)));
        Assert.That((features.EmbedDim, features.StateDim), Is.EqualTo((6, 9)));

        // The layout by hand: user u -> u, item i -> 4 + i, gender female/male -> 11/12 (10 = missing),
        // age 18/25/35 -> 14/15/16, job artist/writer -> 18/19 (17 = missing), genre Comedy/Drama/Western -> 21/22/23
        // (20 = missing), rating 1/2/4/5 -> 24/25/26/27 (V = 28).
        int[] gender = [12, 11, 12, 11], age = [15, 16, 15, 14], job = [19, 17, 18, 19];
        int[] genre = [22, 21, 20, 23, 22, 21];
        int Rating(float v) => v switch { 1 => 24, 2 => 25, 4 => 26, 5 => 27, _ => throw new AssertionException($"rating {v}") };
        var samples = set.Samples;
        var fieldRows = new int[samples.Count * 6];
        var starts = new int[samples.Count + 1];
        var items = new List<int>();
        var ratings = new List<int>();
        bool truncated = false, full = false;
        for (int s = 0; s < samples.Count; s++)
        {
            var x = samples[s];
            int[] rows = [x.User, 4 + x.Item, gender[x.User], age[x.User], job[x.User], genre[x.Item]];
            rows.CopyTo(fieldRows, s * 6);
            var history = set.Timeline(x.User)[..x.HistoryLength].ToArray();
            truncated |= history.Length > maxHistory;
            full |= history.Length <= maxHistory;
            foreach (var ev in history.Skip(Math.Max(0, history.Length - maxHistory)))
            {
                items.Add(4 + ev.Item);
                ratings.Add(Rating(ev.Value));
            }
            starts[s + 1] = items.Count;
        }
        Assert.That(truncated && full, Is.True, "the samples include histories longer and not longer than maxHistory");
        var (expected, _) = RunOracle(oracle, fieldRows, 6, starts, [.. items], [.. ratings], 28, new Random(1));
        AssertClose(features.UserStates, expected, "h_u");

        // SPA's item embedding is the item's row of the table (rows 4..9), read with the tests' own parser.
        var table = OracleWeights.Read(dir)["embed.embedding.weight"].Data;
        Assert.That(features.ItemIds, Is.EqualTo(Enumerable.Range(0, 6).Select(i => (long)i)));
        for (int i = 0; i < 6; i++)
            Assert.That(features.ItemEmbedding(i).ToArray(), Is.EqualTo(table.AsSpan((4 + i) * 6, 6).ToArray()), $"item {i}");
        Assert.That(model.EmbeddingRow(4 + 2).ToArray(), Is.EqualTo(table.AsSpan(6 * 6, 6).ToArray()));
    }

    /// <summary>Reads the I64 tensors and the metadata of a safetensors file with the tests' own parsing.</summary>
    private static (Dictionary<string, (int[] Shape, long[] Data)> Tensors, Dictionary<string, string> Metadata) ReadInt64(string path)
    {
        byte[] file = File.ReadAllBytes(path);
        long headerLength = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(file);
        using var header = System.Text.Json.JsonDocument.Parse(System.Text.Encoding.UTF8.GetString(file, 8, (int)headerLength));
        var tensors = new Dictionary<string, (int[], long[])>();
        var metadata = new Dictionary<string, string>();
        foreach (var entry in header.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__")
            {
                foreach (var m in entry.Value.EnumerateObject()) metadata[m.Name] = m.Value.GetString()!;
                continue;
            }
            Assert.That(entry.Value.GetProperty("dtype").GetString(), Is.EqualTo("I64"), entry.Name);
            int[] shape = [.. entry.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())];
            int begin = 8 + (int)headerLength + (int)entry.Value.GetProperty("data_offsets")[0].GetInt64();
            var data = new long[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++) data[i] = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(begin + 8 * i));
            tensors[entry.Name] = (shape, data);
        }
        return (tensors, metadata);
    }

    [Test]
    public void DinInputsExportTheLayoutTheReferenceModelTakes()
    {
        var dataset = HandMade();
        var set = SamplesOf(dataset, minHistory: 2);
        var config = DinConfig.For(dataset, embedDim: 6) with { AttentionSizes = [10], TowerSizes = [14, 12, 9] };
        string path = Path.Combine(NewDir("inputs"), "din-inputs.safetensors");
        DinInputs.Write(config, set, set.Samples, maxHistory: 3, path);
        var (t, metadata) = ReadInt64(path);
        int count = set.Samples.Count;
        Assert.That(metadata["format"], Is.EqualTo("rellax-din-inputs"));
        Assert.That(JsonNode.Parse(metadata["din_config"])!["num_features"]!.GetValue<int>(), Is.EqualTo(28));
        Assert.That(t["X"].Shape, Is.EqualTo(new[] { count, 6 }));
        Assert.That(t["hist_ids"].Shape, Is.EqualTo(new[] { count, 3 }), "K = maxHistory: some windows are full");
        Assert.That(t["sample_ids"].Data, Is.EqualTo(Enumerable.Range(0, count).Select(i => (long)i)));

        // Sample 0 by hand: user 0's third event (0, 2, 2) at t = 1030 after (0, 0, 5) and (0, 1, 4): history of 2.
        var first = set.Samples[0];
        Assert.That((first.User, first.Item, first.HistoryLength), Is.EqualTo((0, 2, 2)));
        Assert.That(t["X"].Data[..6], Is.EqualTo(new long[] { 0, 4 + 2, 12, 15, 19, 20 }), "user 0, item 2, male, 25, writer, no genre");
        Assert.That(t["Y"].Data[0], Is.EqualTo(0), "rating 2 is negative");
        Assert.That(t["hist_ids"].Data[..3], Is.EqualTo(new long[] { 4, 5, 4 }), "items 0, 1, then padding with the item field's first row");
        Assert.That(t["hist_ratings"].Data[..3], Is.EqualTo(new long[] { 27, 26, 24 }), "ratings 5, 4, then padding with the first rating row");
        Assert.That(t["hist_mask"].Data[..3], Is.EqualTo(new long[] { 1, 1, 0 }));

        // The reference-layout torch model on these tensors, as they are, gives Featurize's user states.
        var model = DinModel.CreateRandom(config, seed: 8);
        string dir = NewDir("inputs-model");
        model.Save(dir);
        var oracle = Oracle(dir, fields: 6, itemField: 1, embed: 6, attention: [10], tower: [14, 12, 9]);
        double[] expected;
        using (var scope = torch.NewDisposeScope())
        using (var noGrad = torch.no_grad())
        {
            var (states, _) = oracle.Run(torch.tensor(t["X"].Data, [count, 6]), torch.tensor(t["hist_ids"].Data, [count, 3]),
                torch.tensor(t["hist_ratings"].Data, [count, 3]), torch.tensor(t["hist_mask"].Data, [count, 3]).to(float64));
            expected = states.contiguous().data<double>().ToArray();
        }
        AssertClose(model.Featurize(_cpu, set, set.Samples, 3).UserStates, expected, "h_u");
    }

    [Test]
    public void FeaturizeOnASubsetGivesThoseSamplesOnly()
    {
        var dataset = HandMade();
        var set = SamplesOf(dataset, minHistory: 1);
        var model = DinModel.CreateRandom(DinConfig.For(dataset, 4), seed: 2);
        var all = model.Featurize(_cpu, set, set.Samples);
        var some = new[] { set.Samples[7], set.Samples[2], set.Samples[11] };
        var part = model.Featurize(_cpu, set, some);
        Assert.That(part.SampleIds, Is.EqualTo(new long[] { 7, 2, 11 }));
        Assert.That(part.UserStates.Length, Is.EqualTo(3 * model.StateDim));
        foreach (var s in some)
            Assert.That(part.UserState(s.Index).ToArray(), Is.EqualTo(all.UserState(s.Index).ToArray()).Within(1e-6), $"sample {s.Index}");
        Assert.That(() => model.Featurize(_cpu, set, [set.Samples[3], set.Samples[3]]), Throws.ArgumentException.With.Message.Contains("sample id 3 appears twice"));
        var foreign = set.Samples[0] with { Item = 5 };
        Assert.That(() => model.Featurize(_cpu, set, [foreign]), Throws.ArgumentException.With.Message.Contains("not a sample of this set"));
    }

    [Test]
    public void FeaturizeRunsOnTheCallersBackendOfAnyKindAndLeavesItUsable()
    {
        // The DIN ops are backend-generic (uploads, copies, Linear): the ILGPU CPU emulator gives the CPU backend's
        // states up to float rounding, and a one-thread CPU backend the same states as the fixture's two-thread one.
        var dataset = HandMade();
        var set = SamplesOf(dataset, minHistory: 1);
        var model = DinModel.CreateRandom(DinConfig.For(dataset, 4), seed: 2);
        var onCpu = model.Featurize(_cpu, set, set.Samples).UserStates.ToArray();
        using (var emulator = new Kernels.Ilgpu.IlgpuBackend(Kernels.Ilgpu.IlgpuDeviceKind.CpuEmulator))
        {
            var onEmulator = model.Featurize(emulator, set, set.Samples).UserStates.ToArray();
            Assert.That(onEmulator, Is.EqualTo(onCpu).Within(1e-5), "ILGPU emulator vs CPU");
            using var after = emulator.Upload<float>([1f]);
            Assert.That(after.Length, Is.EqualTo(1), "the emulator is still usable: the model did not dispose it");
        }
        using var single = new CpuBackend(threads: 1);
        Assert.That(model.Featurize(single, set, set.Samples).UserStates.ToArray(), Is.EqualTo(onCpu).Within(1e-6), "1 thread vs 2");
        Assert.That(() => model.Featurize(null!, set, set.Samples), Throws.ArgumentNullException.With.Property(nameof(ArgumentException.ParamName)).EqualTo("backend"));
    }

    [Test]
    public void CreateRandomIsSeededAndDeterministic()
    {
        var config = SmallConfig();
        var a = DinModel.CreateRandom(config, 9);
        var b = DinModel.CreateRandom(config, 9);
        var c = DinModel.CreateRandom(config, 10);
        string da = NewDir("seed-a"), db = NewDir("seed-b"), dc = NewDir("seed-c");
        a.Save(da);
        b.Save(db);
        c.Save(dc);
        Assert.That(File.ReadAllBytes(Path.Combine(db, DinModel.WeightsFile)), Is.EqualTo(File.ReadAllBytes(Path.Combine(da, DinModel.WeightsFile))));
        Assert.That(File.ReadAllBytes(Path.Combine(dc, DinModel.WeightsFile)), Is.Not.EqualTo(File.ReadAllBytes(Path.Combine(da, DinModel.WeightsFile))));
    }

    [Test]
    public void SaveThenLoadGivesTheSameModel()
    {
        var dataset = HandMade();
        var set = SamplesOf(dataset, 2);
        var model = DinModel.CreateRandom(DinConfig.For(dataset, 5), seed: 4);
        string dir = NewDir("roundtrip");
        model.Save(dir);
        var loaded = DinModel.Load(dir, dataset);
        Assert.That(loaded.Config.ToJson(), Is.EqualTo(model.Config.ToJson()));
        Assert.That(loaded.Featurize(_cpu, set, set.Samples).UserStates.ToArray(), Is.EqualTo(model.Featurize(_cpu, set, set.Samples).UserStates.ToArray()));
        Assert.That(Directory.GetFiles(dir).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "config.json", "model.safetensors" }), "no temporary file is left");
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "config.json")));
        var root = doc.RootElement;
        Assert.That(root.GetProperty("model_type").GetString(), Is.EqualTo("din"));
        Assert.That(root.GetProperty("num_features").GetInt32(), Is.EqualTo(dataset.UserKeys.Count + 6 + 3 + 4 + 3 + 4 + 4));
        Assert.That(root.GetProperty("num_fields").GetInt32(), Is.EqualTo(6 + 2), "the reference counts the history and rating pseudo-fields");
        Assert.That(root.GetProperty("item_field_idx").GetInt32(), Is.EqualTo(1));
        Assert.That(root.GetProperty("hidden_size").GetInt32(), Is.EqualTo(128));
    }

    // ---- MovieLens-100K ---------------------------------------------------------------------------------------------

    [Test]
    public void ForOnMovieLens100KCountsEveryVocabulary()
    {
        string dir = TestData.RequireShared("movielens/ml-100k");
        var dataset = DatasetReader.Read(DatasetKind.MovieLens100K, dir);
        var config = DinConfig.For(dataset, 16);
        // Independent counts over the raw files:
        //   wc -l < u.user  -> 943;  wc -l < u.item -> 1682
        //   cut -d'|' -f2 u.user | sort -u | wc -l -> 61 ages;  cut -d'|' -f4 u.user | sort -u | wc -l -> 21 jobs
        //   first genre flag of each u.item line (python one-liner over u.genre names) -> 19 distinct, none missing
        Assert.That(config.Fields.Select(f => (f.Name, f.VocabularySize)),
            Is.EqualTo(new[] { ("user", 943), ("item", 1682), ("gender", 3), ("age", 62), ("job", 22), ("genre", 20) }));
        Assert.That(config.RatingValues, Is.EqualTo(new[] { 1f, 2f, 3f, 4f, 5f }));
        Assert.That(config.NumFeatures, Is.EqualTo(943 + 1682 + 3 + 62 + 22 + 20 + 5));

        var set = SamplesOf(dataset, minHistory: 5);
        var model = DinModel.CreateRandom(config with { TowerSizes = [32, 32, 32] }, seed: 1);
        var test = set.Samples.Skip(set.Samples.Count - 3000).ToArray();
        var features = model.Featurize(_cpu, set, test, maxHistory: 30);
        Assert.That(features.SampleIds.Count, Is.EqualTo(3000));
        Assert.That(features.UserStates.Length, Is.EqualTo(3000 * 32));
        Assert.That(features.ItemIds.Count, Is.EqualTo(1682));
        Assert.That(features.ItemEmbedding(1681).ToArray(), Is.EqualTo(model.EmbeddingRow(943 + 1681).ToArray()));
    }

    /// <summary>Throughput on an ML-1M-sized split (not a timed assertion: run explicitly to measure).</summary>
    [Test, Explicit("measures throughput; prints the time")]
    public void MeasureFeaturizeOnOneHundredThousandSamples()
    {
        const int users = 4000, items = 3700, perUser = 60;
        var random = new Random(1);
        var ratings = new List<Rating>();
        for (int u = 0; u < users; u++)
            for (int k = 0; k < perUser; k++) ratings.Add(new Rating(u, random.Next(items), 1 + random.Next(5), 1_000_000L * u + k));
        var dataset = new RatingDataset("synthetic", DatasetKind.Custom, ItemDomain.Movies,
            [.. Enumerable.Range(0, items).Select(i => new Item($"{i}", $"Item {i}", [$"g{i % 18}"]))],
            [.. Enumerable.Range(0, users).Select(u => $"{u}")],
            [.. Enumerable.Range(0, users).Select(u => new UserProfile(u % 2 == 0 ? "male" : "female", $"{18 + u % 7}", $"job{u % 21}"))],
            [.. ratings], true, 3);
        var set = SamplesOf(dataset, 35);
        var samples = set.Samples.Take(100_000).ToArray();
        foreach (var (embed, attention, tower) in new[] { (32, new[] { 64 }, new[] { 128, 128, 128 }), (64, new[] { 256 }, new[] { 256, 256, 256 }) })
        {
            var model = DinModel.CreateRandom(DinConfig.For(dataset, embed) with { AttentionSizes = attention, TowerSizes = tower }, 1);
            model.Featurize(_cpu, set, samples.Take(3000).ToArray());
            var clock = Stopwatch.StartNew();
            var features = model.Featurize(_cpu, set, samples, 30);
            TestContext.Out.WriteLine($"E={embed} attention [{string.Join(",", attention)}] tower [{string.Join(",", tower)}]: " +
                $"{samples.Length} samples x 30 history in {clock.Elapsed.TotalSeconds:F2} s ({samples.Length / clock.Elapsed.TotalSeconds:F0} samples/s)");
            Assert.That(features.SampleIds.Count, Is.EqualTo(samples.Length));
        }
    }

    // ---- load errors -------------------------------------------------------------------------------------------------

    private string SavedSmall(string name)
    {
        string dir = NewDir(name);
        DinModel.CreateRandom(SmallConfig(), 1).Save(dir);
        return dir;
    }

    /// <summary>Rewrites model.safetensors with <paramref name="edit"/> applied to the tensor list (read back with the
    /// tests' own parser).</summary>
    private static void RewriteWeights(string dir, Action<Dictionary<string, (int[] Shape, float[] Data)>> edit, string dtype = "F32")
    {
        var weights = new Dictionary<string, (int[] Shape, float[] Data)>(OracleWeights.Read(dir));
        edit(weights);
        var writer = new Rellax.Runtime.SafeTensorsWriter();
        foreach (var (name, (shape, data)) in weights)
        {
            switch (dtype)
            {
                case "F16":
                    writer.Add<Half>(name, SafeTensorDType.F16, shape, data.Select(v => (Half)v).ToArray());
                    break;
                case "BF16": // round to nearest even on the upper 16 bits
                    writer.Add<ushort>(name, SafeTensorDType.BF16, shape, data.Select(v =>
                    {
                        uint bits = BitConverter.SingleToUInt32Bits(v);
                        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
                    }).ToArray());
                    break;
                default:
                    writer.Add<float>(name, SafeTensorDType.F32, shape, data);
                    break;
            }
        }
        writer.Save(Path.Combine(dir, DinModel.WeightsFile));
    }

    [Test]
    public void LoadNamesAMissingTensor()
    {
        string dir = SavedSmall("missing");
        RewriteWeights(dir, w => w.Remove("attention_layer.attention_layer.0.dnn.3.bias"));
        Assert.That(() => DinModel.Load(dir), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("tensor 'attention_layer.attention_layer.0.dnn.3.bias' [12] is missing")
            .And.Message.Contains("model.safetensors"));
    }

    [Test]
    public void LoadNamesAWrongShape()
    {
        string dir = SavedSmall("shape");
        RewriteWeights(dir, w => w["dnn.dnn.3.weight"] = ([20, 23], new float[20 * 23]));
        Assert.That(() => DinModel.Load(dir), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("tensor 'dnn.dnn.3.weight': shape [20, 23] does not match the config, which needs [20, 24]"));
    }

    [Test]
    public void LoadNamesAnUnknownTensor()
    {
        string dir = SavedSmall("unknown");
        RewriteWeights(dir, w => w["attention_layer.attention_layer.0.dnn.6.weight"] = ([4, 12], new float[48]));
        Assert.That(() => DinModel.Load(dir), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("unknown tensor(s) 'attention_layer.attention_layer.0.dnn.6.weight'"));
    }

    [Test]
    public void LoadNamesANonFiniteValue()
    {
        string dir = SavedSmall("nan");
        RewriteWeights(dir, w =>
        {
            var (shape, data) = w["fc_out.weight"];
            data[3] = float.NaN;
            w["fc_out.weight"] = (shape, data);
        });
        Assert.That(() => DinModel.Load(dir), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("tensor 'fc_out.weight': element 3 is NaN"));
    }

    [Test]
    public void LoadNamesABadConfig()
    {
        string dir = SavedSmall("config");
        string path = Path.Combine(dir, DinModel.ConfigFile);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json.Remove("hidden_sizes");
        File.WriteAllText(path, json.ToJsonString());
        Assert.That(() => DinModel.Load(dir), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("'hidden_sizes' is missing"));

        json["hidden_sizes"] = new JsonArray(24, 20, 10);
        json["num_features"] = 30;
        File.WriteAllText(path, json.ToJsonString());
        Assert.That(() => DinModel.Load(dir), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("'num_features' is 30 but the fields and sizes give 31"));

        json["num_features"] = 31;
        json["hidden_act"] = "dice";
        File.WriteAllText(path, json.ToJsonString());
        Assert.That(() => DinModel.Load(dir), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("hidden_act 'dice' is not supported"));
        Assert.That(() => DinModel.Load(Path.Combine(dir, "absent")), Throws.InstanceOf<DirectoryNotFoundException>());
    }

    [Test]
    public void AVocabularyThatDoesNotFitIsRefused()
    {
        var dataset = HandMade();
        var config = DinConfig.For(dataset, 4);
        string dir = NewDir("fit");

        // One item fewer than the dataset.
        var fewer = config with { Fields = [.. config.Fields.Select(f => f.Name == "item" ? f with { VocabularySize = 5 } : f)] };
        DinModel.CreateRandom(fewer, 1).Save(dir);
        Assert.That(() => DinModel.Load(dir, dataset), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("config.json")
            .And.Message.Contains("field 'item' has 5 ids but the dataset has 6 items"));

        // A rating value the checkpoint does not know (4 missing).
        DinModel.CreateRandom(config with { RatingValues = [1, 2, 5] }, 1).Save(dir);
        Assert.That(() => DinModel.Load(dir, dataset), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("rating value 4 (rating 1: user 'u0', item 'm1') is not in the rating vocabulary [1, 2, 5]"));

        // A gender value list without 'male'.
        var genders = config with { Fields = [.. config.Fields.Select(f => f.Name == "gender" ? new DinField("gender", 2, ["female"]) : f)] };
        DinModel.CreateRandom(genders, 1).Save(dir);
        Assert.That(() => DinModel.Load(dir, dataset), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("user 'u0': gender 'male' is not among the field's 1 values"));

        // A field the dataset cannot fill, and Featurize refusing the same way.
        var zip = config with { Fields = [.. config.Fields, new DinField("zipcode", 7)] };
        var model = DinModel.CreateRandom(zip, 1);
        Assert.That(() => model.Featurize(_cpu, SamplesOf(dataset, 2), []), Throws.ArgumentException.With.Message.Contains("field 'zipcode' is not one the feature layout can fill"));
    }

    [Test]
    public void ValidateNamesWhatIsWrong()
    {
        var good = SmallConfig();
        Assert.That(() => (good with { Fields = [new DinField("user", 5)] }).Validate(),
            Throws.ArgumentException.With.Message.Contains("no field is named 'item'"));
        Assert.That(() => (good with { Fields = [new DinField("item", 5), new DinField("item", 3)] }).Validate(),
            Throws.ArgumentException.With.Message.Contains("field 'item' appears twice"));
        Assert.That(() => (good with { Fields = [new DinField("item", 5), new DinField("genre", 3, ["a", "b", "c"])] }).Validate(),
            Throws.ArgumentException.With.Message.Contains("field 'genre': 3 values need a vocabulary of 4 (id 0 = missing), not 3"));
        Assert.That(() => (good with { RatingValues = [1, 2, 2] }).Validate(), Throws.ArgumentException.With.Message.Contains("rating value 2 appears twice"));
        Assert.That(() => (good with { TowerSizes = [] }).Validate(), Throws.ArgumentException.With.Message.Contains("tower hidden sizes: at least one layer"));
        Assert.That(() => DinModel.CreateRandom(good with { EmbedDim = 0 }, 1), Throws.ArgumentException.With.Message.Contains("embed size 0"));
    }

    [Test]
    public void ForwardRefusesRowsOutsideTheTable()
    {
        var model = DinModel.CreateRandom(SmallConfig(), 1);
        var states = new float[10];
        var logits = new float[1];
        Assert.That(() => model.Forward(_cpu, [0, 5, 18, 21], [0, 1], [31], [26], states, logits),
            Throws.ArgumentException.With.Message.Contains("historyItemRows[0] = 31 is outside the embedding table [0, 31)"));
        Assert.That(() => model.Forward(_cpu, [0, 5, 18], [0, 1], [6], [26], states, logits),
            Throws.ArgumentException.With.Message.Contains("fieldRows has 3 entries, but [B, F] = [1, 4] needs 4"));
    }
}
