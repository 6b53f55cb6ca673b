using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using NUnit.Framework;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="CrmFeatures"/>: lookups, the safetensors round trip (the written header checked with the tests' own JSON
/// parsing), files made by other tools (I32 ids, F16 rows, absent parts, no metadata), and every error naming the file,
/// the tensor or the id.
/// </summary>
[TestFixture]
public sealed class CrmFeaturesTests
{
    private string _dir = null!;

    [OneTimeSetUp]
    public void Create() => _dir = Directory.CreateTempSubdirectory("rellax-crm-").FullName;

    [OneTimeTearDown]
    public void Delete() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name + ".safetensors");

    // Items 10, 3, 7 with E = 2; samples 0, 5 with d_h = 3.
    private static CrmFeatures Sample() => new(
        [10, 3, 7], [1.5f, -2f, 0.25f, 4f, -0.125f, 8f], 2,
        [0, 5], [0.5f, 1f, 2f, -3f, 3.5f, 1e-3f], 3);

    [Test]
    public void LookupsReturnTheRowOfEachId()
    {
        var f = Sample();
        Assert.That((f.EmbedDim, f.StateDim), Is.EqualTo((2, 3)));
        Assert.That(f.ItemEmbedding(3).ToArray(), Is.EqualTo(new[] { 0.25f, 4f }));
        Assert.That(f.ItemEmbedding(7).ToArray(), Is.EqualTo(new[] { -0.125f, 8f }));
        Assert.That(f.UserState(5).ToArray(), Is.EqualTo(new[] { -3f, 3.5f, 1e-3f }));
        Assert.That(f.HasItem(10) && !f.HasItem(11) && f.HasSample(0) && !f.HasSample(1), Is.True);
        Assert.That(() => f.ItemEmbedding(4), Throws.InstanceOf<KeyNotFoundException>().With.Message.Contains("item 4 has no CRM embedding"));
        Assert.That(() => f.UserState(6), Throws.InstanceOf<KeyNotFoundException>().With.Message.Contains("sample 6 has no CRM user state"));
    }

    [Test]
    public void SaveWritesTheDocumentedTensorsAndLoadReadsThemBack()
    {
        string path = PathOf("roundtrip");
        Sample().Save(path);

        // The header, parsed here: names, dtypes, shapes and the format metadata.
        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, (int)headerLength));
        var root = header.RootElement;
        Assert.That(root.GetProperty("__metadata__").GetProperty("format").GetString(), Is.EqualTo("rellax-crm-features"));
        (string, string, int[])[] expected =
        [
            ("item_embeddings", "F32", [3, 2]), ("item_ids", "I64", [3]), ("sample_ids", "I64", [2]), ("user_states", "F32", [2, 3]),
        ];
        foreach (var (name, dtype, shape) in expected)
        {
            var entry = root.GetProperty(name);
            Assert.That(entry.GetProperty("dtype").GetString(), Is.EqualTo(dtype), name);
            Assert.That(entry.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(shape), name);
        }
        var ids = root.GetProperty("item_ids").GetProperty("data_offsets");
        long begin = 8 + headerLength + ids[0].GetInt64();
        Assert.That(Enumerable.Range(0, 3).Select(i => BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan((int)begin + 8 * i))), Is.EqualTo(new long[] { 10, 3, 7 }));

        var loaded = CrmFeatures.Load(path);
        Assert.That(loaded.ItemIds, Is.EqualTo(new long[] { 10, 3, 7 }));
        Assert.That(loaded.SampleIds, Is.EqualTo(new long[] { 0, 5 }));
        Assert.That(loaded.ItemEmbeddings.ToArray(), Is.EqualTo(Sample().ItemEmbeddings.ToArray()));
        Assert.That(loaded.UserStates.ToArray(), Is.EqualTo(Sample().UserStates.ToArray()));
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty, "no temporary file is left behind");
    }

    [Test]
    public void AnAbsentPartRoundTripsAsNoTensors()
    {
        string path = PathOf("items-only");
        new CrmFeatures([1, 2], [1, 2, 3, 4], 2, [], [], 0).Save(path);
        using (var file = SafeTensorsFile.Open(path))
            Assert.That(file.Tensors.Keys.Order(), Is.EqualTo(new[] { "item_embeddings", "item_ids" }));
        var loaded = CrmFeatures.Load(path);
        Assert.That((loaded.EmbedDim, loaded.StateDim, loaded.SampleIds.Count), Is.EqualTo((2, 0, 0)));
        Assert.That(loaded.ItemEmbedding(2).ToArray(), Is.EqualTo(new[] { 3f, 4f }));
    }

    [Test]
    public void FilesFromOtherToolsAreRead()
    {
        // I32 ids, F16 rows, no metadata, user states only.
        string path = PathOf("other-tool");
        var writer = new SafeTensorsWriter();
        writer.Add<int>("sample_ids", SafeTensorDType.I32, [2], [4, 9]);
        writer.Add<Half>("user_states", SafeTensorDType.F16, [2, 2], [(Half)0.5f, (Half)(-1.25f), (Half)3f, (Half)0.0625f]);
        writer.Save(path);
        var loaded = CrmFeatures.Load(path);
        Assert.That(loaded.UserState(9).ToArray(), Is.EqualTo(new[] { 3f, 0.0625f }));
        Assert.That(loaded.ItemIds, Is.Empty);
    }

    [Test]
    public void TheConstructorNamesWhatIsWrong()
    {
        Assert.That(() => new CrmFeatures([1, 2, 1], new float[6], 2, [], [], 0),
            Throws.ArgumentException.With.Message.Contains("item id 1 appears twice (rows 0 and 2)"));
        Assert.That(() => new CrmFeatures([1, 2], new float[5], 2, [], [], 0),
            Throws.ArgumentException.With.Message.Contains("itemEmbeddings has 5 values, but [2, 2] needs 4"));
        Assert.That(() => new CrmFeatures([], [], 0, [3, 4], [0, 1, float.PositiveInfinity, 2], 2),
            Throws.ArgumentException.With.Message.Contains("sample 4 (row 1), column 0: value").And.Message.Contains("is not finite"));
        Assert.That(() => new CrmFeatures([5], [], 0, [], [], 0),
            Throws.ArgumentException.With.Message.Contains("1 item ids are given but the item vector size is 0"));
    }

    private string Write(string name, Action<SafeTensorsWriter> add, string? format = CrmFeatures.FormatName)
    {
        string path = PathOf(name);
        var writer = new SafeTensorsWriter();
        if (format is not null) writer.Metadata["format"] = format;
        add(writer);
        writer.Save(path);
        return path;
    }

    [Test]
    public void LoadNamesTheFileAndTheTensor()
    {
        string unknown = Write("unknown", w => w.Add<long>("item_idz", SafeTensorDType.I64, [1], [1]));
        Assert.That(() => CrmFeatures.Load(unknown), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains(unknown).And.Message.Contains("unknown tensor 'item_idz'"));

        string half = Write("half", w => w.Add<long>("item_ids", SafeTensorDType.I64, [1], [1]));
        Assert.That(() => CrmFeatures.Load(half), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("tensor 'item_ids' is present but 'item_embeddings' is missing"));

        string rows = Write("rows", w =>
        {
            w.Add<long>("item_ids", SafeTensorDType.I64, [2], [1, 2]);
            w.Add<float>("item_embeddings", SafeTensorDType.F32, [3, 2], new float[6]);
        });
        Assert.That(() => CrmFeatures.Load(rows), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("tensor 'item_embeddings': expected shape [2, dim] (one row per item_ids entry), got [3, 2]"));

        string dtype = Write("dtype", w =>
        {
            w.Add<float>("sample_ids", SafeTensorDType.F32, [1], [1]);
            w.Add<float>("user_states", SafeTensorDType.F32, [1, 1], [1]);
        });
        Assert.That(() => CrmFeatures.Load(dtype), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("tensor 'sample_ids': dtype is F32, expected I64 (or I32)"));

        string duplicate = Write("duplicate", w =>
        {
            w.Add<long>("item_ids", SafeTensorDType.I64, [2], [8, 8]);
            w.Add<float>("item_embeddings", SafeTensorDType.F32, [2, 1], [1, 2]);
        });
        Assert.That(() => CrmFeatures.Load(duplicate), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains($"'{duplicate}', tensor 'item_ids': item id 8 appears twice (rows 0 and 1)"));

        string nan = Write("nan", w =>
        {
            w.Add<long>("sample_ids", SafeTensorDType.I64, [1], [2]);
            w.Add<float>("user_states", SafeTensorDType.F32, [1, 2], [1, float.NaN]);
        });
        Assert.That(() => CrmFeatures.Load(nan), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("tensor 'user_states': sample 2 (row 0), column 1: value NaN is not finite"));

        string format = Write("format", w => { }, format: "rellax-subr-index");
        Assert.That(() => CrmFeatures.Load(format), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("metadata format is 'rellax-subr-index', expected 'rellax-crm-features'"));

        string pickle = Path.Combine(_dir, "features.pt");
        File.WriteAllBytes(pickle, [0x80, 0x02, 0x7d]);
        Assert.That(() => CrmFeatures.Load(pickle), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("pickle"));

        Assert.That(() => CrmFeatures.Load(PathOf("absent")), Throws.InstanceOf<FileNotFoundException>());
    }
}
