using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>Safetensors reader: real files (stories260K F32, a PEFT F16 adapter) and hand-made bad files.</summary>
[TestFixture]
public sealed class SafeTensorsFileTests
{
    private string _tmp = "";

    [SetUp]
    public void SetUp()
    {
        _tmp = Path.Combine(Path.GetTempPath(), "rellax-st-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_tmp);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Writes u64 header length (or <paramref name="declaredLength"/>), the header text, then <paramref name="data"/>.</summary>
    private string Write(string name, string header, byte[]? data = null, ulong? declaredLength = null)
    {
        byte[] h = Encoding.UTF8.GetBytes(header);
        return WriteRaw(name, h, data ?? [], declaredLength ?? (ulong)h.Length);
    }

    private string WriteRaw(string name, byte[] header, byte[] data, ulong declaredLength)
    {
        string path = Path.Combine(_tmp, name);
        using var f = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, declaredLength);
        f.Write(len);
        f.Write(header);
        f.Write(data);
        return path;
    }

    private static SafeTensorsFile OpenWithin(string path, int seconds = 10)
    {
        var task = Task.Run(() => SafeTensorsFile.Open(path));
        Assert.That(task.Wait(TimeSpan.FromSeconds(seconds)), Is.True, $"Opening '{path}' did not finish within {seconds} s.");
        return task.Result;
    }

    /// <summary>Asserts that opening fails, quickly, with a SafeTensorsFormatException whose message contains every fragment.</summary>
    private static SafeTensorsFormatException AssertBad(string path, params string[] fragments)
    {
        var task = Task.Run(() => SafeTensorsFile.Open(path));
        bool finished;
        try { finished = task.Wait(TimeSpan.FromSeconds(10)); }
        catch (AggregateException) { finished = true; }
        Assert.That(finished, Is.True, $"Opening '{path}' hung.");
        Assert.That(task.Exception?.InnerException, Is.TypeOf<SafeTensorsFormatException>(),
            $"Expected SafeTensorsFormatException, got {task.Exception?.InnerException?.GetType().Name ?? "success"}: {task.Exception?.InnerException?.Message}");
        var ex = (SafeTensorsFormatException)task.Exception!.InnerException!;
        Assert.That(ex.Message, Does.Contain(path), "message names the file");
        foreach (string f in fragments) Assert.That(ex.Message, Does.Contain(f));
        return ex;
    }

    private static byte[] Floats(params float[] v)
    {
        var b = new byte[v.Length * 4];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(i * 4), v[i]);
        return b;
    }

    // ------------------------------------------------------------------ real files

    private static readonly (string Suffix, int[] Shape)[] LayerTensors =
    [
        ("input_layernorm.weight", [64]),
        ("self_attn.q_proj.weight", [64, 64]),
        ("self_attn.k_proj.weight", [32, 64]),
        ("self_attn.v_proj.weight", [32, 64]),
        ("self_attn.o_proj.weight", [64, 64]),
        ("post_attention_layernorm.weight", [64]),
        ("mlp.gate_proj.weight", [172, 64]),
        ("mlp.up_proj.weight", [172, 64]),
        ("mlp.down_proj.weight", [64, 172]),
    ];

    [Test]
    public void Stories260K_OpensWith47F32TensorsOfTheDocumentedShapes()
    {
        string path = TestData.RequireShared("llm/stories260K/hf_derived/model.safetensors");
        using SafeTensorsFile f = OpenWithin(path);

        var expected = new Dictionary<string, int[]> { ["model.embed_tokens.weight"] = [512, 64], ["model.norm.weight"] = [64] };
        for (int l = 0; l < 5; l++)
            foreach ((string suffix, int[] shape) in LayerTensors)
                expected[$"model.layers.{l}.{suffix}"] = shape;

        Assert.That(f.Tensors, Has.Count.EqualTo(47));
        Assert.That(f.Tensors.Keys, Is.EquivalentTo(expected.Keys));
        foreach ((string name, int[] shape) in expected)
        {
            Assert.That(f.Tensors[name].Shape, Is.EqualTo(shape), name);
            Assert.That(f.Tensors[name].DType, Is.EqualTo(SafeTensorDType.F32), name);
        }
        Assert.That(f.Contains("lm_head.weight"), Is.False, "tied embeddings: no lm_head");
        Assert.That(f.Metadata["format"], Is.EqualTo("pt"));
    }

    [Test]
    public void Stories260K_ValuesEqualTheLlama2cCheckpointBytes()
    {
        string st = TestData.RequireShared("llm/stories260K/hf_derived/model.safetensors");
        string bin = TestData.RequireShared("llm/stories260K/original/stories260K.bin");
        // llama2.c v0: 7 int32, then token_embedding[512,64], rms_att[5,64], wq[5,64,64], wk[5,32,64], wv[5,32,64],
        // wo[5,64,64], rms_ffn[5,64], w1[5,172,64] ... (SOURCES.md). w1 is gate_proj, copied unpermuted.
        byte[] raw = File.ReadAllBytes(bin);
        float[] FromBin(long floatOffset, int count)
        {
            var r = new float[count];
            for (int i = 0; i < count; i++) r[i] = BinaryPrimitives.ReadSingleLittleEndian(raw.AsSpan(28 + (int)((floatOffset + i) * 4)));
            return r;
        }
        long w1 = 512 * 64 + 5 * 64 + 5 * 64 * 64 + 2 * 5 * 32 * 64 + 5 * 64 * 64 + 5 * 64;

        using SafeTensorsFile f = OpenWithin(st);
        Assert.That(f.ReadFloat32("model.embed_tokens.weight"), Is.EqualTo(FromBin(0, 512 * 64)));
        Assert.That(f.ReadFloat32("model.layers.0.mlp.gate_proj.weight"), Is.EqualTo(FromBin(w1, 172 * 64)));
        var dest = new float[172 * 64];
        f.ReadFloat32("model.layers.3.mlp.gate_proj.weight", dest);
        Assert.That(dest, Is.EqualTo(FromBin(w1 + 3 * 172 * 64, 172 * 64)));
        Assert.That(f.GetBytes("model.norm.weight").Length, Is.EqualTo(64 * 4));
    }

    [Test]
    public void GemmaAdapter_F16_ConvertsExactlyLikeAnIndependentReader()
    {
        string path = TestData.RequireShared("lora/gemma-2b-text-to-sql/adapter_model.safetensors");

        // Independent reader: plain FileStream + JsonDocument, no code under test.
        byte[] file = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(file);
        using var doc = JsonDocument.Parse(file.AsMemory(8, (int)n));

        using SafeTensorsFile f = OpenWithin(path);
        Assert.That(f.Tensors, Has.Count.EqualTo(72));
        Assert.That(f.Tensors.Values.Select(t => t.DType).Distinct(), Is.EqualTo(new[] { SafeTensorDType.F16 }));
        Assert.That(f.Tensors.Values.Sum(t => t.ElementCount), Is.EqualTo(1_843_200));

        string qa = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        string vb = "base_model.model.model.layers.17.self_attn.v_proj.lora_B.weight";
        Assert.That(f.Tensors[qa].Shape, Is.EqualTo(new[] { 16, 2048 }));
        Assert.That(f.Tensors[vb].Shape, Is.EqualTo(new[] { 256, 16 }));

        foreach (string name in new[] { qa, vb, "base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight" })
        {
            JsonElement offs = doc.RootElement.GetProperty(name).GetProperty("data_offsets");
            long begin = offs[0].GetInt64(), end = offs[1].GetInt64();
            var expected = new float[(end - begin) / 2];
            for (int i = 0; i < expected.Length; i++)
                expected[i] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan((int)(8 + n + begin + 2 * i))));
            float[] actual = f.ReadFloat32(name);
            Assert.That(actual, Is.EqualTo(expected), name);
            Assert.That(actual.Any(x => x != 0), Is.True, $"{name} should not be all zeros");
        }
    }

    // ------------------------------------------------------------------ synthetic valid files

    [Test]
    public void Synthetic_F32_F16_BF16_And_ZeroLength_ReadExactly()
    {
        // F32 [2]: 1.5, -2 ; F16 [3]: 1.0 (0x3C00), -0.5 (0xB800), 65504 (0x7BFF);
        // BF16 [17]: 1.0 (0x3F80) ... pattern chosen so the vector loop and the tail both run.
        var data = new List<byte>(Floats(1.5f, -2f));
        foreach (ushort h in new ushort[] { 0x3C00, 0xB800, 0x7BFF }) { data.Add((byte)h); data.Add((byte)(h >> 8)); }
        ushort[] bf = [.. Enumerable.Range(0, 17).Select(i => (ushort)(i % 2 == 0 ? 0x3F80 : 0xC0A0))]; // 1.0, -5.0
        foreach (ushort h in bf) { data.Add((byte)h); data.Add((byte)(h >> 8)); }
        int f32End = 8, f16End = 14, bfEnd = 14 + 34;
        string header = "{\"__metadata__\":{\"format\":\"pt\"}," +
                        $"\"a\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,{f32End}]}}," +
                        $"\"h\":{{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[{f32End},{f16End}]}}," +
                        $"\"b\":{{\"dtype\":\"BF16\",\"shape\":[1,17],\"data_offsets\":[{f16End},{bfEnd}]}}," +
                        $"\"empty\":{{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[{bfEnd},{bfEnd}]}}}}   ";
        string path = Write("ok.safetensors", header, [.. data]);

        using SafeTensorsFile f = OpenWithin(path);
        Assert.That(f.ReadFloat32("a"), Is.EqualTo(new[] { 1.5f, -2f }));
        Assert.That(f.ReadFloat32("h"), Is.EqualTo(new[] { 1f, -0.5f, 65504f }));
        Assert.That(f.ReadFloat32("b"), Is.EqualTo(Enumerable.Range(0, 17).Select(i => i % 2 == 0 ? 1f : -5f).ToArray()));
        Assert.That(f.ReadFloat32("empty"), Is.Empty);
        Assert.That(f.Tensors["b"].ElementCount, Is.EqualTo(17));
        Assert.That(f.Tensors["a"].DataOffset, Is.EqualTo(8 + Encoding.UTF8.GetByteCount(header)));
        Assert.That(f.GetBytes("h").ToArray(), Is.EqualTo(new byte[] { 0x00, 0x3C, 0x00, 0xB8, 0xFF, 0x7B }));
        Assert.That(f.Metadata["format"], Is.EqualTo("pt"));

        Assert.Throws<ArgumentException>(() => f.ReadFloat32("a", new float[3]));
        var missing = Assert.Throws<KeyNotFoundException>(() => f.ReadFloat32("nope"));
        Assert.That(missing!.Message, Does.Contain("nope").And.Contain(path));

        f.Dispose();
        Assert.Throws<ObjectDisposedException>(() => f.GetBytes("a"));
        f.Dispose(); // idempotent
    }

    [Test]
    public void NonFloatDType_OpensButReadFloat32IsNotSupported()
    {
        string path = Write("i32.safetensors", "{\"ids\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8]);
        using SafeTensorsFile f = OpenWithin(path);
        Assert.That(f.Tensors["ids"].DType, Is.EqualTo(SafeTensorDType.I32));
        var ex = Assert.Throws<NotSupportedException>(() => f.ReadFloat32("ids"));
        Assert.That(ex!.Message, Does.Contain("ids").And.Contain("I32"));
    }

    // ------------------------------------------------------------------ bad files

    [Test]
    public void TooShort() => AssertBad(WriteRawBytes("short.safetensors", [1, 2, 3]), "at least 8");

    private string WriteRawBytes(string name, byte[] bytes)
    {
        string path = Path.Combine(_tmp, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Test]
    public void Truncated_HeaderLengthLargerThanFile() =>
        AssertBad(Write("trunc.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", declaredLength: 5000), "past the end");

    [Test]
    public void HeaderLengthZero() => AssertBad(Write("zero.safetensors", "{}", declaredLength: 0), "header length is 0");

    [Test]
    public void OversizedHeader_2Pow60_DoesNotAllocate() =>
        AssertBad(Write("huge.safetensors", "{}", declaredLength: 1UL << 60), "exceeds", "100000000");

    [Test]
    public void NonJsonHeader() => AssertBad(Write("nonjson.safetensors", "{this is not json"), "not valid JSON");

    [Test]
    public void InvalidUtf8Header() =>
        AssertBad(WriteRaw("utf8.safetensors", [(byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)':', (byte)'1', (byte)'}'], [], 8), "UTF-8");

    [Test]
    public void JsonThatIsNotAnObject() => AssertBad(Write("array.safetensors", "[1, 2, 3]"), "must be an object");

    [Test]
    public void MetadataNotStringMap() =>
        AssertBad(Write("meta.safetensors", "{\"__metadata__\":{\"n\":1}}"), "__metadata__", "must be a string");

    [Test]
    public void OffsetsOutsideData()
    {
        var ex = AssertBad(Write("outside.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[4]),
            "outside the data section");
        Assert.That(ex.TensorName, Is.EqualTo("w"));
        Assert.That(ex.Message, Does.Contain("'w'"));
    }

    [Test]
    public void BeginAfterEnd() =>
        AssertBad(Write("reversed.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", new byte[8]), "outside the data section");

    [Test]
    public void OverlappingOffsets() =>
        AssertBad(Write("overlap.safetensors",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
            new byte[12]), "overlap");

    [Test]
    public void ShapeTimesDTypeDiffersFromByteLength() =>
        AssertBad(Write("size.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", new byte[8]), "12 bytes", "span 8 bytes");

    [Test]
    public void ShapeProductOverflow() =>
        AssertBad(Write("ovf.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,8]}}", new byte[8]), "overflows");

    [Test]
    public void NegativeDimension() =>
        AssertBad(Write("neg.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,2],\"data_offsets\":[0,8]}}", new byte[8]), "negative");

    [Test]
    public void NonIntegerDimension() =>
        AssertBad(Write("frac.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", new byte[4]), "not an integer");

    [Test]
    public void UnknownDType() =>
        AssertBad(Write("dtype.safetensors", "{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}", new byte[1]), "unknown dtype 'F7'");

    [Test]
    public void MissingDataOffsets() =>
        AssertBad(Write("nooff.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", new byte[4]), "data_offsets");

    [Test]
    public void DuplicateTensorName() =>
        AssertBad(Write("dup.safetensors",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            new byte[8]), "twice");

    [Test]
    public void PickleBinExtension_IsRefusedWithConversionAdvice()
    {
        // A real pickle protocol-2 stream (pickle.dumps({}, protocol=2)): \x80\x02}q\x00.
        string path = WriteRawBytes("pytorch_model.bin", [0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E, 0, 0, 0, 0]);
        AssertBad(path, "never unpickled", "safetensors.torch.save_file(torch.load(p), out)");
        AssertBad(WriteRawBytes("model.pt", [0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E]), "never unpickled");
    }

    [Test]
    public void PickleMagicInSafetensorsNamedFile_IsRefused()
    {
        // pickle protocol 4 header: \x80\x04\x95 + u64 frame length ...
        AssertBad(WriteRawBytes("disguised.safetensors", [0x80, 0x04, 0x95, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x7D, 0x94, 0x2E]), "pickle", "never unpickled");
        // torch.save zip archive: PK\x03\x04
        AssertBad(WriteRawBytes("zip.safetensors", [0x50, 0x4B, 0x03, 0x04, 0x14, 0, 0, 0, 0, 0, 0, 0]), "pickle", "save_file");
    }

    [Test]
    public void MissingFile_IsFileNotFound() =>
        Assert.Throws<FileNotFoundException>(() => SafeTensorsFile.Open(Path.Combine(_tmp, "absent.safetensors")));
}
