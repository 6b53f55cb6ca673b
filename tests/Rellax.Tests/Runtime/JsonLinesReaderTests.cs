using System.Text;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>
/// The public faces the CLI uses instead of internals (issue 21): <see cref="JsonLinesReader"/> (line numbers as an
/// editor counts them, <c>FILE:LINE</c> errors, <see cref="JsonLinesReader.IsRegularFile"/>, the path checks) and
/// <see cref="LlamaModules"/> (the PEFT spellings). The bounds themselves are <see cref="InputBoundsTests"/>'.
/// </summary>
[TestFixture]
public sealed class JsonLinesReaderTests
{
    private string _dir = null!;

    [SetUp]
    public void Create() => _dir = Directory.CreateTempSubdirectory("rellax-jsonl-").FullName;

    [TearDown]
    public void Delete() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void OpenReadsObjectsWithEditorLineNumbersAndKnowsARegularFile()
    {
        string path = Path.Combine(_dir, "in.jsonl");
        File.WriteAllText(path, "{\"id\": 1}\n\n   \n{\"id\": 2, \"x\": [1, 2]}\r\n{\"id\": 3}", new UTF8Encoding(true));
        using var reader = JsonLinesReader.Open(path, "input file");
        Assert.That(reader.FileName, Is.EqualTo(path));
        Assert.That(reader.IsRegularFile, Is.True);
        Assert.That(reader.MaxLineBytes, Is.EqualTo(16 << 20));
        var seen = reader.ReadObjects().Select(l => (l.Line, l.Object.GetProperty("id").GetInt32())).ToList();
        Assert.That(seen, Is.EqualTo(new[] { (1L, 1), (4L, 2), (5L, 3) }), "blank lines skipped but counted; BOM and \\r dropped");
        Assert.That(reader.ReadObjects(), Is.Empty, "forward only: a second enumeration continues at the end");
    }

    [Test]
    public void AStreamIsNotARegularFileAndABadLineNamesItsFileAndLine()
    {
        var bytes = Encoding.UTF8.GetBytes("{\"ok\": true}\n[1, 2]\n");
        using var reader = new JsonLinesReader(new MemoryStream(bytes), "request body");
        Assert.That(reader.IsRegularFile, Is.False);
        var e = Assert.Throws<RecordException>(() => reader.ReadObjects().ToList())!;
        Assert.That(e.Message, Is.EqualTo("request body:2: expected a JSON object, got an array"));

        using var tooLong = new JsonLinesReader(new MemoryStream(Encoding.UTF8.GetBytes("{\"a\": \"0123456789\"}\n")), "small", maxLineBytes: 8);
        Assert.That(() => tooLong.ReadObjects().ToList(), Throws.InstanceOf<RecordException>().With.Message.StartsWith("small:1: the line is longer than 8 bytes"));
        Assert.That(() => new JsonLinesReader(new MemoryStream(), "x", maxLineBytes: 0), Throws.ArgumentException);
    }

    [Test]
    public void OpenRefusesAFolderAndAMissingFileNamingWhatTheyAre()
    {
        Assert.That(() => JsonLinesReader.Open(_dir, "requests file"),
            Throws.InstanceOf<IOException>().With.Message.EqualTo($"requests file '{_dir}' is a folder, not a file"));
        string missing = Path.Combine(_dir, "none.jsonl");
        Assert.That(() => JsonLinesReader.Open(missing, "requests file"),
            Throws.InstanceOf<FileNotFoundException>().With.Message.EqualTo($"requests file '{missing}' does not exist"));
    }

    [Test]
    public void OpenOnAFifoIsNotARegularFile()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("no FIFOs");
        string fifo = Path.Combine(_dir, "pipe");
        using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)) mk.WaitForExit();
        Assume.That(File.Exists(fifo), "mkfifo is needed");
        var writer = Task.Run(() => File.WriteAllText(fifo, "{\"id\": 1}\n"));
        using (var reader = JsonLinesReader.Open(fifo, "input file"))
        {
            Assert.That(reader.IsRegularFile, Is.False);
            Assert.That(reader.ReadObjects().Select(l => l.Line), Is.EqualTo(new[] { 1L }));
        }
        Assert.That(writer.Wait(TimeSpan.FromSeconds(30)), Is.True);
    }

    [Test]
    public void LlamaModuleNamesAreThePeftSpellingsBothWays()
    {
        string[] expected = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
        Assert.That(Enum.GetValues<LlamaModule>().Select(LlamaModules.PeftName), Is.EqualTo(expected));
        foreach (var m in Enum.GetValues<LlamaModule>())
        {
            Assert.That(LlamaModules.TryParse(LlamaModules.PeftName(m), out var parsed), Is.True);
            Assert.That(parsed, Is.EqualTo(m));
        }
        foreach (string? bad in new[] { "Q_PROJ", "self_attn.q_proj", "", null })
            Assert.That(LlamaModules.TryParse(bad, out _), Is.False, bad ?? "null");
        Assert.That(() => LlamaModules.PeftName((LlamaModule)99), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }
}
