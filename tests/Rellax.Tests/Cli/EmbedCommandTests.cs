using System.Runtime.InteropServices;
using System.Text.Json;
using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Tests.Model;

namespace Rellax.Tests.Cli;

/// <summary>
/// <c>rellax embed</c> as a user runs it, on stories260K: the safetensors it writes (shapes, ids, metadata), equality with
/// the library's <see cref="ItemEmbedder"/>, <c>--pca</c>, and the way on through <c>rellax index</c> and
/// <c>rellax retrieve</c>; bad items fail with FILE:LINE and leave no output.
/// </summary>
[TestFixture]
public sealed class EmbedCommandTests
{
    private string _dir = null!;
    private string _model = null!;
    private string _items = null!;
    private readonly List<(long Id, string Text)> _catalog = [];

    [OneTimeSetUp]
    public void WriteItems()
    {
        _model = ModelPaths.Stories260KOrIgnore();
        _dir = Directory.CreateTempSubdirectory("rellax-embed-").FullName;
        string[] titles = ["Toy Story", "The Little Red Hen", "A Dog in the Park", "Lily and the Big Tree", "The Sun and the Moon",
            "Tom Finds a Ball", "The Happy Cat", "A Boat on the Sea", "The Brave Bird", "Sam Bakes a Cake", "Rain", "The Blue Car and the Old Man Who Lived by the River"];
        for (int i = 0; i < titles.Length; i++) _catalog.Add((i == 3 ? -4 : 1000L + 7 * i, $"Here is a story. Its title is {titles[i]}."));
        _items = Path.Combine(_dir, "items.jsonl");
        var lines = _catalog.Select(c => JsonSerializer.Serialize(new { id = c.Id, text = c.Text })).ToList();
        lines.Insert(5, "");
        File.WriteAllLines(_items, lines);
    }

    [OneTimeTearDown] public void Clean() { if (_dir is not null) Directory.Delete(_dir, recursive: true); }

    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    private float[] LibraryEmbeddings()
    {
        using var cpu = new CpuBackend(threads: 1);
        using var model = LlamaModel.Load(_model, cpu);
        using var embedder = new ItemEmbedder(model, PromptTemplate.Vicuna, batchSize: 32);
        return embedder.Embed(_catalog.Select(c => c.Text).ToList());
    }

    private static (int[] Shape, float[] Rows, long[] Ids, IReadOnlyDictionary<string, string> Metadata) ReadOutput(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        var e = file.Info("embeddings");
        Assert.That(e.DType, Is.EqualTo(SafeTensorDType.F32));
        var ids = file.Info("item_ids");
        Assert.That(ids.DType, Is.EqualTo(SafeTensorDType.I64));
        return (e.Shape.ToArray(), file.ReadFloat32("embeddings"), MemoryMarshal.Cast<byte, long>(file.GetBytes("item_ids")).ToArray(),
            file.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    [Test]
    public void WritesTheLibraryEmbeddingsWithIdsAndMetadata()
    {
        string output = Path.Combine(_dir, "items.safetensors");
        var (code, stdout, stderr) = Run("embed", "--items", _items, "--output", output, "--backend", "cpu", "--threads", "1", "--batch-size", "5", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var summary = JsonDocument.Parse(stdout))
        {
            Assert.That(summary.RootElement.GetProperty("items").GetInt32(), Is.EqualTo(_catalog.Count));
            Assert.That(summary.RootElement.GetProperty("dim").GetInt32(), Is.EqualTo(64));
            Assert.That(summary.RootElement.GetProperty("tokens").GetInt64(), Is.GreaterThan(_catalog.Count * 40L), "vicuna preamble + title");
        }
        var (shape, rows, ids, metadata) = ReadOutput(output);
        Assert.That(shape, Is.EqualTo(new[] { _catalog.Count, 64 }));
        Assert.That(ids, Is.EqualTo(_catalog.Select(c => c.Id).ToArray()), "ids in input order");
        Assert.That(metadata["template"], Is.EqualTo("vicuna"));
        Assert.That(metadata["pooling"], Is.EqualTo("mean of final-norm hidden states, BOS included"));
        Assert.That(metadata["model"], Is.EqualTo(Path.GetFullPath(_model)).Or.EqualTo(_model));
        Assert.That(metadata["similarity"], Is.EqualTo("dot"));
        // Batches of 5 here, one batch of 32 in the library: the same rows up to float rounding.
        RandomData.AssertClose(rows, LibraryEmbeddings(), 1e-5, 1e-4, "embeddings vs ItemEmbedder.Embed");
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty);
    }

    [Test]
    public void PcaReducesToTheRequestedComponents()
    {
        const int k = 6;
        string output = Path.Combine(_dir, "items-pca.safetensors");
        var (code, stdout, stderr) = Run("embed", "--items", _items, "--output", output, "--pca", $"{k}", "--backend", "cpu", "--threads", "1", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var summary = JsonDocument.Parse(stdout))
        {
            Assert.That(summary.RootElement.GetProperty("dim").GetInt32(), Is.EqualTo(k));
            Assert.That(summary.RootElement.GetProperty("explained_variance").GetDouble(), Is.InRange(0.0, 1.0 + 1e-9));
        }
        var (shape, rows, ids, metadata) = ReadOutput(output);
        Assert.That(shape, Is.EqualTo(new[] { _catalog.Count, k }));
        Assert.That(ids, Is.EqualTo(_catalog.Select(c => c.Id).ToArray()));
        Assert.That(JsonSerializer.Deserialize<double[]>(metadata["pca_explained_variance_ratio"]), Has.Length.EqualTo(k));

        // The same PCA on the library's embeddings, column by column up to sign (a component's sign is arbitrary).
        int n = _catalog.Count;
        using var cpu = new CpuBackend(threads: 1);
        var fit = Pca.Fit(cpu, LibraryEmbeddings(), n, 64, new PcaOptions { Components = k, Seed = 0 });
        var expected = new float[n * k];
        fit.Transform(LibraryEmbeddings(), n, expected);
        for (int j = 0; j < k; j++)
        {
            double dot = 0, norm = 0;
            for (int i = 0; i < n; i++) { dot += rows[i * k + j] * expected[i * k + j]; norm += expected[i * k + j] * (double)expected[i * k + j]; }
            float sign = dot < 0 ? -1 : 1;
            float[] got = Enumerable.Range(0, n).Select(i => sign * rows[i * k + j]).ToArray();
            float[] want = Enumerable.Range(0, n).Select(i => expected[i * k + j]).ToArray();
            RandomData.AssertClose(got, want, 1e-3 * Math.Sqrt(norm / n), 1e-3, $"component {j}");
        }
    }

    [Test]
    public void TheOutputIsAnIndexInputAndRetrievalFindsTheTargetItself()
    {
        string output = Path.Combine(_dir, "for-index.safetensors"), index = Path.Combine(_dir, "index.safetensors");
        var (code, _, stderr) = Run("embed", "--items", _items, "--output", output, "--backend", "cpu", "--threads", "1");
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var cpu = new CpuBackend(threads: 1))
        using (var loaded = SubrIndex.Load(output, cpu))
        {
            Assert.That(loaded.Count, Is.EqualTo(_catalog.Count));
            Assert.That(loaded.Dim, Is.EqualTo(64));
        }
        (code, _, stderr) = Run("index", "--vectors", output, "--output", index, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        long target = _catalog[7].Id;
        string samples = Path.Combine(_dir, "samples.jsonl"), retrieved = Path.Combine(_dir, "retrieved.jsonl");
        File.WriteAllText(samples, JsonSerializer.Serialize(new { id = "s", history = _catalog.Select(c => c.Id).ToArray(), target }) + "\n");
        (code, _, stderr) = Run("retrieve", "--embeddings", index, "--samples", samples, "--k", "1", "--output", retrieved, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(retrieved));
        Assert.That(doc.RootElement.GetProperty("retrieved")[0].GetInt64(), Is.EqualTo(target), "an item is most similar to itself (cosine 1)");
    }

    private static IEnumerable<TestCaseData> BadItems()
    {
        yield return new TestCaseData("{\"id\": 1000, \"text\": \"again\"}", new[] { "item id 1000 is already used on line 1" }).SetName("DuplicateId");
        yield return new TestCaseData("{\"id\": \"x\", \"text\": \"a\"}", new[] { "\"id\"" }).SetName("StringId");
        yield return new TestCaseData("{\"id\": 3, \"text\": }", new[] { "not valid JSON" }).SetName("MalformedJson");
        yield return new TestCaseData(JsonSerializer.Serialize(new { id = 77, text = string.Concat(Enumerable.Repeat("The cat sat on the mat. ", 100)) }),
            new[] { "item 77: ", "tokens, more than the model's 512" }).SetName("TextTooLong");
    }

    [TestCaseSource(nameof(BadItems))]
    public void BadItemsNameTheLineAndLeaveNoOutput(string badLine, string[] mentions)
    {
        string name = TestContext.CurrentContext.Test.Name;
        string items = Path.Combine(_dir, $"bad-{name}.jsonl"), output = Path.Combine(_dir, $"bad-{name}.safetensors");
        File.WriteAllLines(items, ["{\"id\": 1000, \"text\": \"good\"}", "", badLine, "{\"id\": 1, \"text\": \"good\"}"]);
        File.WriteAllText(output, "earlier");
        var (code, stdout, stderr) = Run("embed", "--items", items, "--output", output, "--backend", "cpu", "--threads", "1");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
        Assert.That(stderr, Does.StartWith($"rellax: {items}:3: "));
        foreach (string m in mentions) Assert.That(stderr, Does.Contain(m));
        Assert.That(File.ReadAllText(output), Is.EqualTo("earlier"), "an existing output is left alone");
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty);
    }

    [TestCase(65, "min(12, 64) = 12")]
    [TestCase(13, "min(12, 64) = 12")]
    public void PcaLargerThanItemsOrHiddenSizeIsRefused(int k, string expected)
    {
        string output = Path.Combine(_dir, $"pca-{k}.safetensors");
        var (code, _, stderr) = Run("embed", "--items", _items, "--output", output, "--pca", $"{k}", "--backend", "cpu");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.StartWith("rellax: --pca").And.Contain(expected));
        Assert.That(File.Exists(output), Is.False);
        (code, _, stderr) = Run("embed", "--items", _items, "--output", output, "--pca", "0");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("--pca must be >= 1"));
    }

    [Test]
    public void HelpShowsTheFormatsAndExamples()
    {
        var (code, stdout, stderr) = Run("embed", "--help");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("item_ids I64 [N]").And.Contain("Examples:").And.Contain("rellax embed --items")
            .And.Contain("--pca").And.Contain("rellax index --vectors"));
    }
}
