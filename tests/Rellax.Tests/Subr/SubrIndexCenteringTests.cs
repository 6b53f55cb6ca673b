using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;
using ModelPaths = Rellax.Tests.Model.ModelPaths;

namespace Rellax.Tests.Subr;

/// <summary>
/// Issue 15, class 5 (SUBR part): an f16/i8 index of raw item vectors whose cosines crowd near 1 loses top-K agreement
/// with f32, and centring (<see cref="SubrIndexOptions.Center"/>) restores it (measured on real vectors); a file that is
/// not an index (e.g. <c>rellax embed</c>'s output) is indexed on load, never ranked raw as if normalised.
/// </summary>
[TestFixture]
public sealed class SubrIndexCenteringTests
{
    private CpuBackend _cpu = null!;
    private string _dir = null!;

    [OneTimeSetUp]
    public void Create()
    {
        _cpu = new CpuBackend(2);
        _dir = Directory.CreateTempSubdirectory("rellax-centre-").FullName;
    }

    [OneTimeTearDown]
    public void Dispose()
    {
        _cpu.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>Top-K overlap of an f16 and an i8 index with the f32 index of the same vectors, raw and centred.</summary>
    private (double F16Raw, double I8Raw, double F16Centred, double I8Centred) Agreement(float[] vectors, int n, int dim, SubrQueries queries, int k, string what)
    {
        var result = new double[4];
        int slot = 0;
        foreach (bool center in new[] { false, true })
        {
            using var f32 = SubrIndex.Build(_cpu, vectors, n, dim, default, new SubrIndexOptions { Center = center });
            Assert.That(f32.Mean is not null, Is.EqualTo(center));
            foreach (var storage in new[] { DType.F16, DType.I8 })
            {
                using var q = SubrIndex.Build(_cpu, vectors, n, dim, default, new SubrIndexOptions { Center = center, Storage = storage });
                // Every disagreement must still be a near-tie within the quantisation error (asserted inside).
                result[slot++] = SubrQuantization.AssertSameUpToQuantization(_cpu, f32.Table, q.Table, queries, k);
            }
        }
        TestContext.Out.WriteLine($"{what}, k = {k}: f16 {result[0]:P2} -> {result[2]:P2} centred, i8 {result[1]:P2} -> {result[3]:P2} centred");
        return (result[0], result[1], result[2], result[3]);
    }

    /// <summary>Mean pairwise cosine of the first rows: how much the raw vectors crowd.</summary>
    private static double MeanCosine(float[] v, int n, int dim)
    {
        int m = Math.Min(n, 100);
        double sum = 0;
        int pairs = 0;
        for (int i = 0; i < m; i++)
            for (int j = i + 1; j < m; j++, pairs++)
                sum += System.Numerics.Tensors.TensorPrimitives.CosineSimilarity(v.AsSpan(i * dim, dim), v.AsSpan(j * dim, dim));
        return sum / pairs;
    }

    [Test]
    public void CentringRestoresQuantisedAgreementOnStories260KItemVectors()
    {
        // The demo's items, embedded by stories260K as `rellax demo` and `rellax embed` do (SPEC §2 sentence, mean pooling).
        var data = SyntheticDataset.Create(new SyntheticDatasetOptions { Categories = 8, ItemsPerCategory = 40 });
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), _cpu);
        float[] vectors;
        using (var embedder = new ItemEmbedder(model))
            vectors = embedder.Embed(data.Items.Select(i => ItemText.Describe(i, data.Domain)).ToList());
        int n = data.Items.Count, dim = model.Config.HiddenSize;
        double crowd = MeanCosine(vectors, n, dim);
        TestContext.Out.WriteLine($"stories260K item vectors: {n} × {dim}, mean pairwise cosine {crowd:F4}");
        using var queries = SubrCheck.Queries(n, Enumerable.Range(0, 200).Select(i => 20 + i % 60).ToArray(), 5);
        var a = Agreement(vectors, n, dim, queries, 5, "stories260K demo items");
        Assert.That(crowd, Is.GreaterThan(0.9), "raw LLM item vectors crowd near cosine 1");
        Assert.That(a.F16Centred, Is.GreaterThanOrEqualTo(a.F16Raw));
        Assert.That(a.I8Centred, Is.GreaterThan(a.I8Raw));
        Assert.That(a.I8Centred, Is.GreaterThan(0.9));
    }

    [Test]
    public void CentringRestoresQuantisedAgreementOnGloVeTitleVectors()
    {
        string glove = TestData.RequireShared("embeddings/glove6B-100d.titles-subset.txt");
        string ml = TestData.RequireShared("movielens/ml-100k");
        var (_, vectors) = SubrIndexTests.MovieLensTitleVectors(ml, WordVectors.Load(glove));
        int dim = 100, n = vectors.Length / dim;
        TestContext.Out.WriteLine($"GloVe ML-100K item sentences: {n} × {dim}, mean pairwise cosine {MeanCosine(vectors, n, dim):F4}");
        using var queries = SubrCheck.Queries(n, Enumerable.Range(0, 200).Select(i => 40 + i % 200).ToArray(), 6);
        var a = Agreement(vectors, n, dim, queries, 30, "GloVe ML-100K sentences");
        Assert.That(a.F16Centred, Is.GreaterThanOrEqualTo(a.F16Raw - 0.005));
        Assert.That(a.I8Centred, Is.GreaterThanOrEqualTo(a.I8Raw));
    }

    [Test]
    public void TheMeanIsSavedAndLoadedAndCentringEqualsSubtractingIt()
    {
        const int n = 40, dim = 8;
        var vectors = SubrCheck.Vectors(n, dim, 9).Select(x => x + 3f).ToArray(); // a large shared component
        using var index = SubrIndex.Build(_cpu, vectors, n, dim, default, new SubrIndexOptions { Center = true });
        var mean = index.Mean!.ToArray();
        for (int c = 0; c < dim; c++)
            Assert.That(mean[c], Is.EqualTo(Enumerable.Range(0, n).Average(r => (double)vectors[r * dim + c])).Within(1e-5));
        var subtracted = vectors.Select((x, i) => x - mean[i % dim]).ToArray();
        using var manual = SubrIndex.Build(_cpu, subtracted, n, dim);
        Assert.That(SubrCheck.HostCopy(index.Table).Rows, Is.EqualTo(SubrCheck.HostCopy(manual.Table).Rows).Within(1e-6));
        string path = Path.Combine(_dir, "centred.safetensors");
        index.Save(path);
        using var loaded = SubrIndex.Load(path, _cpu);
        Assert.That((loaded.Mean!.ToArray(), loaded.BuiltOnLoad), Is.EqualTo((mean, false)));
        using (var file = SafeTensorsFile.Open(path)) Assert.That(file.Metadata["centered"], Is.EqualTo("true"));
        using var plain = SubrIndex.Build(_cpu, vectors, n, dim, default, new SubrIndexOptions { Center = true, PcaComponents = 4 });
        Assert.That(plain.Mean, Is.Null, "PCA centres by itself");
        using var dot = SubrIndex.Build(_cpu, vectors, n, dim, default, new SubrIndexOptions { Center = true, Similarity = SubrSimilarity.Dot });
        Assert.That(dot.Mean, Is.Null, "a dot index keeps the raw vectors");
    }

    [Test]
    public void RawVectorsAreIndexedOnLoadNotRankedAsIfNormalised()
    {
        const int n = 30, dim = 6;
        var vectors = SubrCheck.Vectors(n, dim, 11).Select((x, i) => x * (1 + i / dim)).ToArray(); // rows of very different norms
        long[] ids = Enumerable.Range(0, n).Select(i => 100L + i).ToArray();
        // What `rellax embed` writes: raw F32 embeddings and item ids, similarity = dot, not an index.
        string path = Path.Combine(_dir, "embed-output.safetensors");
        var w = new SafeTensorsWriter();
        w.Add<float>("embeddings", SafeTensorDType.F32, [n, dim], vectors);
        w.Add<long>("item_ids", SafeTensorDType.I64, [n], ids);
        w.Metadata["format"] = "rellax-item-embeddings";
        w.Metadata["similarity"] = "dot";
        w.Save(path);
        using var loaded = SubrIndex.Load(path, _cpu);
        Assert.That((loaded.BuiltOnLoad, loaded.Table.Similarity, loaded.Mean is not null), Is.EqualTo((true, SubrSimilarity.Cosine, true)));
        using var built = SubrIndex.Build(_cpu, vectors, n, dim, ids, new SubrIndexOptions { Center = true });
        var samples = Enumerable.Range(0, 10).Select(s => new SubrSample($"s{s}", ids.Skip(s).Take(15).ToArray(), ids[(s * 7) % n])).ToList();
        var a = loaded.Retrieve(samples, 4, SubrOrder.Score);
        var b = built.Retrieve(samples, 4, SubrOrder.Score);
        for (int s = 0; s < samples.Count; s++)
            Assert.That(a.PositionsOf(s).ToArray(), Is.EqualTo(b.PositionsOf(s).ToArray()), $"sample {s}: as `rellax index` builds it");
        var rowNorms = Enumerable.Range(0, n).Select(r => System.Numerics.Tensors.TensorPrimitives.Norm(SubrCheck.HostCopy(loaded.Table).Rows.AsSpan(r * dim, dim)));
        Assert.That(rowNorms, Is.All.EqualTo(1f).Within(1e-5f), "rows are normalised");

        // An I8 table that is not an index cannot be rebuilt (its scale is lost): refused with the command that builds one.
        string i8 = Path.Combine(_dir, "i8.safetensors");
        w = new SafeTensorsWriter();
        w.Add<sbyte>("embeddings", SafeTensorDType.I8, [2, 2], [1, 2, 3, 4]);
        w.Add<float>("scales", SafeTensorDType.F32, [2], [1f, 1f]);
        w.Save(i8);
        Assert.That(() => SubrIndex.Load(i8, _cpu), Throws.TypeOf<InvalidDataException>().With.Message.Contain("rellax index"));
    }
}
