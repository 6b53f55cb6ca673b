using System.Text;
using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Tests.Subr;

/// <summary>
/// <see cref="SubrIndex"/>: building, safetensors round trips in every storage type, item-id mapping and its errors,
/// quantisation agreement, and the real-data check on MovieLens-100K titles embedded with GloVe.
/// </summary>
[TestFixture]
public sealed class SubrIndexTests
{
    private CpuBackend _cpu = null!;
    private string _dir = null!;

    [OneTimeSetUp]
    public void Create()
    {
        _cpu = new CpuBackend(2);
        _dir = Directory.CreateTempSubdirectory("rellax-subr-").FullName;
    }

    [OneTimeTearDown]
    public void Dispose()
    {
        _cpu.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Test]
    public void SaveAndLoadKeepEveryStoredValue([Values(DType.F32, DType.F16, DType.I8)] DType storage, [Values] bool withIds)
    {
        const int rows = 57, dim = 19;
        var vectors = SubrCheck.Vectors(rows, dim, 3);
        long[] ids = withIds ? Enumerable.Range(0, rows).Select(i => 1000L + 7 * i).ToArray() : [];
        using var index = SubrIndex.Build(_cpu, vectors, rows, dim, ids, new SubrIndexOptions { Storage = storage, Similarity = SubrSimilarity.Dot });
        string path = Path.Combine(_dir, $"index-{storage}-{withIds}.safetensors");
        index.Save(path);
        using (var file = SafeTensorsFile.Open(path))
        {
            Assert.That(file.Contains("item_ids"), Is.EqualTo(withIds), "item_ids is written only when ids are not 0..N-1");
            Assert.That(file.Contains("scales"), Is.EqualTo(storage == DType.I8));
            Assert.That(file.Metadata["format"], Is.EqualTo(SubrIndex.FormatName));
            Assert.That(file.Metadata["similarity"], Is.EqualTo("dot"));
        }
        using var loaded = SubrIndex.Load(path, _cpu);
        Assert.That(loaded.Table.Storage, Is.EqualTo(storage));
        Assert.That(loaded.Table.Similarity, Is.EqualTo(SubrSimilarity.Dot));
        Assert.That((loaded.Count, loaded.Dim), Is.EqualTo((rows, dim)));
        for (int r = 0; r < rows; r += 7)
        {
            Assert.That(loaded.Table.ReadRow(r), Is.EqualTo(index.Table.ReadRow(r)), $"row {r}");
            Assert.That(loaded.ItemIdOf(r), Is.EqualTo(withIds ? 1000 + 7 * r : r));
        }
        Assert.That(File.Exists(path + ".tmp"), Is.False);
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty, "no temporary file is left behind");
    }

    [Test]
    public void PcaReducedIndexEqualsTheTableOfProjectedVectorsAndKeepsItsRatios()
    {
        const int rows = 400, dim = 40, k = 8;
        var vectors = SubrCheck.Vectors(rows, dim, 31);
        for (int r = 0; r < rows; r++) vectors[r * dim] += 3 * vectors[r * dim + 1]; // some structure to find
        var options = new SubrIndexOptions { PcaComponents = k, PcaSeed = 5 };
        using var index = SubrIndex.Build(_cpu, vectors, rows, dim, default, options);
        Assert.That(index.Dim, Is.EqualTo(k));
        var pca = Pca.Fit(_cpu, vectors, rows, dim, new PcaOptions { Components = k, Seed = 5 });
        var projected = new float[rows * k];
        pca.Transform(vectors, rows, projected);
        using var expected = SubrTable.Create(_cpu, projected, rows, k);
        for (int r = 0; r < rows; r += 37) Assert.That(index.Table.ReadRow(r), Is.EqualTo(expected.ReadRow(r)), $"row {r}");
        Assert.That(index.ExplainedVarianceRatio, Is.EqualTo(pca.ExplainedVarianceRatio.ToArray()));
        Assert.That(index.ExplainedVarianceRatio!.Sum(), Is.InRange(0.2, 1.0));

        string path = Path.Combine(_dir, "pca.safetensors");
        index.Save(path);
        using var loaded = SubrIndex.Load(path, _cpu);
        Assert.That(loaded.ExplainedVarianceRatio, Is.EqualTo(index.ExplainedVarianceRatio), "the ratios survive a round trip exactly");
    }

    [Test]
    public void RetrievalSpeaksItemIdsAndNamesUnknownOnes()
    {
        const int rows = 30, dim = 8;
        long[] ids = Enumerable.Range(0, rows).Select(i => 500L + i).ToArray();
        using var index = SubrIndex.Build(_cpu, SubrCheck.Vectors(rows, dim, 4), rows, dim, ids);
        var samples = new[] { new SubrSample("a", [501, 502, 503, 510, 520], 501), new SubrSample("b", [], 529) };
        var result = index.Retrieve(samples, 2, SubrOrder.Score);
        Assert.That(result.PositionsOf(0)[0], Is.EqualTo(0), "the target itself scores 1 under cosine");
        Assert.That(result.RowsOf(0)[0], Is.EqualTo(1), "item 501 is row 1");
        Assert.That(result.CountOf(1), Is.Zero);
        Assert.That(() => index.Retrieve([new SubrSample("u7", [501, 9999], 502)], 2),
            Throws.TypeOf<RecordException>().With.Property(nameof(RecordException.Record)).EqualTo(0).And.Message.Contain("'u7'").And.Message.Contain("9999").And.Message.Contain("position 1"));
        Assert.That(() => index.Retrieve([new SubrSample("u8", [501], 42)], 2),
            Throws.TypeOf<RecordException>().With.Message.Contain("'u8'").And.Message.Contain("target item 42"));
        Assert.That(() => SubrIndex.Build(_cpu, SubrCheck.Vectors(3, 2, 1), 3, 2, [5, 6, 5]),
            Throws.ArgumentException.With.Message.Contain("item id 5 appears twice"));
    }

    [Test]
    public void LoadNamesTheFileAndTheProblem()
    {
        string missing = Path.Combine(_dir, "missing.safetensors");
        Assert.That(() => SubrIndex.Load(missing, _cpu), Throws.InstanceOf<FileNotFoundException>().With.Message.Contain(missing));
        string noEmbeddings = Path.Combine(_dir, "other.safetensors");
        var w = new SafeTensorsWriter();
        w.Add<float>("weights", SafeTensorDType.F32, [2, 2], [1, 2, 3, 4]);
        w.Save(noEmbeddings);
        Assert.That(() => SubrIndex.Load(noEmbeddings, _cpu), Throws.InstanceOf<InvalidDataException>().With.Message.Contain("'embeddings'").And.Message.Contain("weights"));
        string noScales = Path.Combine(_dir, "noscales.safetensors");
        w = new SafeTensorsWriter();
        w.Add<sbyte>("embeddings", SafeTensorDType.I8, [2, 2], [1, 2, 3, 4]);
        w.Save(noScales);
        Assert.That(() => SubrIndex.Load(noScales, _cpu), Throws.InstanceOf<InvalidDataException>().With.Message.Contain("scales"));
        string nan = Path.Combine(_dir, "nan.safetensors");
        w = new SafeTensorsWriter();
        w.Add<float>("embeddings", SafeTensorDType.F32, [2, 2], [1, 2, float.NaN, 4]);
        w.Save(nan);
        Assert.That(() => SubrIndex.Load(nan, _cpu), Throws.InstanceOf<InvalidDataException>().With.Message.Contain(nan).And.Message.Contain("row 1, column 0"));
    }

    [Test]
    public void QuantisedTablesSelectTheSameItemsUpToQuantisationError([Values(DType.F16, DType.I8)] DType storage)
    {
        const int rows = 5000, dim = 128, k = 30;
        var vectors = SubrCheck.Vectors(rows, dim, 21);
        using var f32 = SubrTable.Create(_cpu, vectors, rows, dim);
        using var q = SubrTable.Create(_cpu, vectors, rows, dim, storage);
        using var queries = SubrCheck.Queries(rows, Enumerable.Range(0, 40).Select(i => 50 + 97 * i).ToArray(), 22);
        double overlap = SubrQuantization.AssertSameUpToQuantization(_cpu, f32, q, queries, k);
        TestContext.Out.WriteLine($"{storage} vs f32 overlap on random 128-d vectors, k = {k}: {overlap:P2}");
        Assert.That(overlap, Is.GreaterThan(storage == DType.F16 ? 0.99 : 0.9));
    }

    [Test]
    public void MovieLensTitlesWithGloVeMatchTheReference()
    {
        string glove = TestData.RequireShared("embeddings/glove6B-100d.titles-subset.txt");
        string ml = TestData.RequireShared("movielens/ml-100k");
        var words = WordVectors.Load(glove);
        var (ids, vectors) = MovieLensTitleVectors(ml, words);
        int n = ids.Length, dim = words.Dim;
        var samples = MovieLensSamples(ml, users: 60);
        using var index = SubrIndex.Build(_cpu, vectors, n, dim, ids);
        const int k = 30;
        var result = index.Retrieve(samples, k);
        using var queries = index.ToQueries(samples);
        SubrCheck.AssertMatchesReference(index.Table, queries, k, SubrOrder.Chronological, result, SubrCheck.Tolerance(dim, 1));
        Assert.That(samples.Count(s => s.History.Length > k), Is.GreaterThan(30), "most of these users have more than K ratings");

        foreach (var storage in new[] { DType.F16, DType.I8 })
        {
            using var q = SubrTable.Create(_cpu, vectors, n, dim, storage);
            double overlap = SubrQuantization.AssertSameUpToQuantization(_cpu, index.Table, q, queries, k);
            TestContext.Out.WriteLine($"ML-100K GloVe titles, {samples.Count} users, k = {k}: {storage} selects {overlap:P2} of the f32 items");
        }

        // SPEC §2's pipeline: PCA (centred) before normalising. Centring removes the component every sentence shares
        // ("Here is a movie. Its title is ..."), which spreads the cosine scores apart, so quantisation ties are rarer.
        var pca = Pca.Fit(_cpu, vectors, n, dim, new PcaOptions { Components = 64 });
        var projected = new float[n * 64];
        pca.Transform(vectors, n, projected);
        using var pf32 = SubrTable.Create(_cpu, projected, n, 64);
        SubrCheck.AssertMatchesReference(pf32, queries, k, SubrOrder.Score, _cpu.Subr.Retrieve(pf32, queries, k, SubrOrder.Score), SubrCheck.Tolerance(64, 1));
        foreach (var storage in new[] { DType.F16, DType.I8 })
        {
            using var q = SubrTable.Create(_cpu, projected, n, 64, storage);
            double overlap = SubrQuantization.AssertSameUpToQuantization(_cpu, pf32, q, queries, k);
            TestContext.Out.WriteLine($"ML-100K GloVe titles after PCA to 64 ({pca.ExplainedVarianceRatio.ToArray().Sum():P1} of the variance), k = {k}: {storage} selects {overlap:P2} of the f32 items");
        }
    }

    /// <summary>ML-100K item ids and SPEC §2 item sentences embedded as the mean of their GloVe word vectors.</summary>
    internal static (long[] Ids, float[] Vectors) MovieLensTitleVectors(string ml, WordVectors words)
    {
        var latin1 = Encoding.Latin1;
        var genres = File.ReadAllLines(Path.Combine(ml, "u.genre"), latin1).Where(l => l.Contains('|')).Select(l => l.Split('|')[0]).ToArray();
        var items = File.ReadAllLines(Path.Combine(ml, "u.item"), latin1).Where(l => l.Length > 0).Select(l => l.Split('|')).ToArray();
        var ids = items.Select(f => long.Parse(f[0])).ToArray();
        var vectors = new float[items.Length * words.Dim];
        for (int i = 0; i < items.Length; i++)
        {
            int g = Array.IndexOf(items[i][^19..], "1");
            string sentence = $"Here is a movie. Its title is {items[i][1]}. The movie's genre is {(g < 0 ? "unknown" : genres[g])}.";
            words.Embed(sentence, vectors.AsSpan(i * words.Dim, words.Dim));
        }
        return (ids, vectors);
    }

    /// <summary>For the first users of u.data: history = their ratings in time order but the last, target = the last.</summary>
    internal static List<SubrSample> MovieLensSamples(string ml, int users)
    {
        return File.ReadLines(Path.Combine(ml, "u.data"))
            .Select(l => l.Split('\t'))
            .Select(f => (User: int.Parse(f[0]), Item: long.Parse(f[1]), Time: long.Parse(f[3])))
            .GroupBy(r => r.User).OrderBy(g => g.Key).Take(users)
            .Select(g =>
            {
                var seq = g.OrderBy(r => r.Time).ThenBy(r => r.Item).Select(r => r.Item).ToArray();
                return new SubrSample($"user{g.Key}", seq[..^1], seq[^1]);
            }).ToList();
    }
}
