using System.Buffers.Binary;
using System.Text;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>Model directories: single file and shards with model.safetensors.index.json.</summary>
[TestFixture]
public sealed class SafeTensorsCheckpointTests
{
    private string _tmp = "";

    [SetUp]
    public void SetUp()
    {
        _tmp = Path.Combine(Path.GetTempPath(), "rellax-ckpt-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_tmp);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    /// <summary>Writes a one-tensor F32 safetensors file holding <paramref name="values"/>.</summary>
    private string Shard(string file, string tensor, params float[] values)
    {
        byte[] data = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4 * i), values[i]);
        byte[] header = Encoding.UTF8.GetBytes($"{{\"{tensor}\":{{\"dtype\":\"F32\",\"shape\":[{values.Length}],\"data_offsets\":[0,{data.Length}]}}}}");
        string path = Path.Combine(_tmp, file);
        using var f = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
        f.Write(len);
        f.Write(header);
        f.Write(data);
        return path;
    }

    private void Index(string weightMapJson) =>
        File.WriteAllText(Path.Combine(_tmp, "model.safetensors.index.json"), $"{{\"metadata\":{{\"total_size\":0}},\"weight_map\":{weightMapJson}}}");

    [Test]
    public void Stories260K_SingleFileDirectory()
    {
        string dir = TestData.RequireShared("llm/stories260K/hf_derived");
        using SafeTensorsCheckpoint ckpt = SafeTensorsCheckpoint.Open(dir);
        Assert.That(ckpt.Names.Count(), Is.EqualTo(47));
        Assert.That(ckpt.Contains("model.layers.4.mlp.down_proj.weight"), Is.True);
        Assert.That(ckpt.Info("model.layers.4.mlp.down_proj.weight").Shape, Is.EqualTo(new[] { 64, 172 }));
        Assert.That(ckpt.ReadFloat32("model.norm.weight"), Has.Length.EqualTo(64));
        var ex = Assert.Throws<KeyNotFoundException>(() => ckpt.Info("lm_head.weight"));
        Assert.That(ex!.Message, Does.Contain("lm_head.weight"));
    }

    [Test]
    public void Sharded_ReadsEachTensorFromItsShard()
    {
        Shard("model-00001-of-00002.safetensors", "a", 1f, 2f);
        Shard("model-00002-of-00002.safetensors", "b", 3f, 4f, 5f);
        Index("{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}");
        using SafeTensorsCheckpoint ckpt = SafeTensorsCheckpoint.Open(_tmp);
        Assert.That(ckpt.Names, Is.EqualTo(new[] { "a", "b" }));
        Assert.That(ckpt.Files, Has.Count.EqualTo(2));
        Assert.That(ckpt.ReadFloat32("a"), Is.EqualTo(new[] { 1f, 2f }));
        var b = new float[3];
        ckpt.ReadFloat32("b", b);
        Assert.That(b, Is.EqualTo(new[] { 3f, 4f, 5f }));
    }

    [Test]
    public void Sharded_MissingShardFile()
    {
        Shard("s1.safetensors", "a", 1f);
        Index("{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_tmp));
        Assert.That(ex!.Message, Does.Contain("s2.safetensors").And.Contain("does not exist").And.Contain("index.json"));
    }

    [Test]
    public void Sharded_TensorNotInItsShard()
    {
        Shard("s1.safetensors", "a", 1f);
        Shard("s2.safetensors", "b", 1f);
        Index("{\"a\":\"s2.safetensors\"}");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_tmp));
        Assert.That(ex!.Message, Does.Contain("'a'").And.Contain("does not contain"));
    }

    [Test]
    public void Sharded_PathTraversalRefused()
    {
        Index("{\"a\":\"../elsewhere.safetensors\"}");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_tmp));
        Assert.That(ex!.Message, Does.Contain("plain file name"));
    }

    [Test]
    public void Sharded_IndexNotJson()
    {
        File.WriteAllText(Path.Combine(_tmp, "model.safetensors.index.json"), "{weight_map");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_tmp));
        Assert.That(ex!.Message, Does.Contain("not valid JSON"));
    }

    [Test]
    public void PickleOnlyDirectory_SaysHowToConvert()
    {
        File.WriteAllBytes(Path.Combine(_tmp, "pytorch_model.bin"), [0x80, 0x02, 0x7D, 0x2E]);
        var ex = Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(_tmp));
        Assert.That(ex!.Message, Does.Contain("never unpickled").And.Contain("save_file"));
    }
}
