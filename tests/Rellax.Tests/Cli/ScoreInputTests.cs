using NUnit.Framework;
using Rellax.Cli;
using Rellax.Runtime;

namespace Rellax.Tests.Cli;

/// <summary>
/// The JSONL readers and writer behind <c>rellax score</c> and <c>rellax embed</c>, in process: field types, ids echoed as
/// written, blank lines, and <c>FILE:LINE</c> in every error.
/// </summary>
[TestFixture]
public sealed class ScoreInputTests
{
    /// <summary>A JSON Lines reader over <paramref name="text"/> in UTF-8, named <paramref name="name"/>.</summary>
    internal static JsonLinesReader Lines(string text, string name) => new(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(text)), name);

    private static List<ScoreRequestsFile.Entry> ReadScore(string text) =>
        ScoreRequestsFile.Read(Lines(text, "in.jsonl")).ToList();

    [Test]
    public void ReadsEveryFieldAndKeepsTheRawIdOfAnyJsonType()
    {
        string text = string.Join("\n",
            """{"id": 7, "prompt": "a [hist] b [target]", "instance": [1, -2.5, 3e-2], "hist_embeddings": [[0.5, 1], [2, 3]], "target_embedding": [4, 5]}""",
            "",
            "   ",
            """{"id": "u3-t9", "prompt": "plain"}""",
            """{"id": null, "prompt": "", "instance": null, "hist_embeddings": null, "label": 1}""",
            """{"id": {"user": 3, "item": [1, 2]}, "prompt": "x"}""",
            """{"id": 1.50, "prompt": "y"}""",
            """{"id": [1, "a"], "prompt": "z", "hist_embeddings": []}""");
        var entries = ReadScore(text);
        Assert.That(entries.Select(e => e.Line), Is.EqualTo(new[] { 1, 4, 5, 6, 7, 8 }), "blank lines are skipped but counted");
        Assert.That(entries.Select(e => e.RawId), Is.EqualTo(new[] { "7", "\"u3-t9\"", "null", """{"user": 3, "item": [1, 2]}""", "1.50", """[1, "a"]""" }));
        var first = entries[0].Request;
        Assert.That(first.Prompt, Is.EqualTo("a [hist] b [target]"));
        Assert.That(first.Instance, Is.EqualTo(new[] { 1f, -2.5f, 0.03f }));
        Assert.That(first.HistEmbeddings!.Select(h => h.ToArray()), Is.EqualTo(new[] { new[] { 0.5f, 1f }, new[] { 2f, 3f } }));
        Assert.That(first.TargetEmbedding, Is.EqualTo(new[] { 4f, 5f }));
        Assert.That(entries[1].Request.Instance, Is.Null);
        Assert.That(entries[2].Request.HistEmbeddings, Is.Null, "null is the same as absent");
        Assert.That(entries[5].Request.HistEmbeddings, Is.Empty);
    }

    [TestCase("{\"id\": 1, \"prompt\": \"a\"", "not valid JSON")]
    [TestCase("""[1, 2]""", "expected a JSON object, got an array")]
    [TestCase("""{"prompt": "a"}""", "missing \"id\"")]
    [TestCase("""{"id": 1}""", "\"prompt\" must be a string (missing)")]
    [TestCase("""{"id": 1, "prompt": 5}""", "\"prompt\" must be a string, got a number")]
    [TestCase("""{"id": 1, "prompt": "a", "instance": "1,2"}""", "\"instance\" must be an array of floats, got a string")]
    [TestCase("""{"id": 1, "prompt": "a", "instance": [1, "2"]}""", "\"instance\"[1] = \"2\" is not a finite float")]
    [TestCase("""{"id": 1, "prompt": "a", "instance": [1e39]}""", "\"instance\"[0] = 1e39 is not a finite float")]
    [TestCase("""{"id": 1, "prompt": "a", "hist_embeddings": [1, 2]}""", "\"hist_embeddings[0]\" must be an array of floats, got a number")]
    [TestCase("""{"id": 1, "prompt": "a", "hist_embeddings": {"0": [1]}}""", "\"hist_embeddings\" must be an array of float arrays, got an object")]
    [TestCase("""{"id": 1, "prompt": "a", "hist_embeddings": [[1], [2, true]]}""", "\"hist_embeddings[1]\"[1] = true is not a finite float")]
    [TestCase("""{"id": 1, "prompt": "a", "target_embedding": [[1]]}""", "\"target_embedding\"[0] = [1] is not a finite float")]
    public void BadLinesNameTheFileLineAndTheField(string badLine, string expected)
    {
        string text = """{"id": 0, "prompt": "fine"}""" + "\n\n" + badLine + "\n" + """{"id": 2, "prompt": "never read"}""";
        var e = Assert.Throws<RecordException>(() => ReadScore(text))!;
        Assert.That(e.Message, Does.StartWith("in.jsonl:3: ").And.Contain(expected));
        Assert.That(e.Message, Does.Not.Contain("\n"), "one line");
    }

    [Test]
    public void ScoresAreWrittenOneLinePerEntryWithTheIdAsWritten()
    {
        var entries = ReadScore("""{"id": {"a": [1, 2]}, "prompt": "x"}""" + "\n" + """{"id": "s", "prompt": "y"}""");
        var stream = new MemoryStream();
        ScoreCommand.WriteScores(stream, entries, [new CtrScore(0.25, 1.5f, 2.598612f), new CtrScore(1, 30f, -10f)], "in.jsonl");
        string[] lines = System.Text.Encoding.UTF8.GetString(stream.ToArray()).Split('\n');
        Assert.That(lines, Has.Length.EqualTo(3));
        Assert.That(lines[2], Is.Empty, "the last line ends with a newline");
        Assert.That(lines[0], Is.EqualTo("""{"id":{"a": [1, 2]},"p_yes":0.25,"logit_yes":1.5,"logit_no":2.598612}"""));
        Assert.That(lines[1], Is.EqualTo("""{"id":"s","p_yes":1,"logit_yes":30,"logit_no":-10}"""));
    }

    [Test]
    public void ANonFiniteScoreIsAnErrorNamingItsLine()
    {
        var entries = ReadScore("\n" + """{"id": 1, "prompt": "x"}""" + "\n" + """{"id": 2, "prompt": "y"}""");
        var e = Assert.Throws<InvalidOperationException>(() =>
            ScoreCommand.WriteScores(new MemoryStream(), entries, [new CtrScore(0.5, 0, 0), new CtrScore(double.NaN, float.NaN, 1)], "in.jsonl"))!;
        Assert.That(e.Message, Does.StartWith("in.jsonl:3: id 2: ").And.Contain("non-finite"));
    }

    [Test]
    public void EmbedItemsAreReadInOrderAndRepeatedIdsNameBothLines()
    {
        var items = EmbedItemsFile.Read(Lines("{\"id\": 5, \"text\": \"Toy Story\"}\n\n{\"id\": -2, \"text\": \"\"}\n{\"id\": 9007199254740993, \"text\": \"big\"}", "items.jsonl"));
        Assert.That(items.Select(i => (i.Id, i.Text, i.Line)), Is.EqualTo(new[] { (5L, "Toy Story", 1), (-2L, "", 3), (9007199254740993L, "big", 4) }));

        var e = Assert.Throws<RecordException>(() => EmbedItemsFile.Read(
            Lines("{\"id\": 5, \"text\": \"a\"}\n{\"id\": 6, \"text\": \"b\"}\n\n{\"id\": 5, \"text\": \"c\"}", "items.jsonl")))!;
        Assert.That(e.Message, Is.EqualTo("items.jsonl:4: item id 5 is already used on line 1"));
    }

    [TestCase("""{"id": "5", "text": "a"}""", "\"id\" must be an integer (int64), got \"5\"")]
    [TestCase("""{"id": 1.5, "text": "a"}""", "\"id\" must be an integer (int64), got 1.5")]
    [TestCase("""{"id": 9223372036854775808, "text": "a"}""", "\"id\" must be an integer (int64), got 9223372036854775808")]
    [TestCase("""{"text": "a"}""", "\"id\" must be an integer (int64) (missing)")]
    [TestCase("""{"id": 3, "text": ["a"]}""", "item 3: \"text\" must be a string, got Array")]
    [TestCase("""{"id": 3""", "not valid JSON")]
    public void BadEmbedItemsNameTheLine(string badLine, string expected)
    {
        var e = Assert.Throws<RecordException>(() => EmbedItemsFile.Read(Lines("{\"id\": 1, \"text\": \"ok\"}\n" + badLine, "items.jsonl")))!;
        Assert.That(e.Message, Does.StartWith("items.jsonl:2: ").And.Contain(expected));
    }

    [Test]
    public void AFailedAtomicWriteLeavesTheOldFileAndNoTemporary()
    {
        string dir = Directory.CreateTempSubdirectory("rellax-atomic-").FullName;
        try
        {
            string path = Path.Combine(dir, "out.jsonl");
            File.WriteAllText(path, "old\n");
            Assert.Throws<IOException>(() => Rellax.Runtime.OutputFile.Write(path, stream =>
            {
                stream.Write("half a new fi"u8);
                throw new IOException("disk full (simulated)");
            }));
            Assert.That(File.ReadAllText(path), Is.EqualTo("old\n"));
            Assert.That(Directory.GetFiles(dir), Is.EqualTo(new[] { path }), "no temporary file left");

            Rellax.Runtime.OutputFile.Write(path, stream => stream.Write("new\n"u8));
            Assert.That(File.ReadAllText(path), Is.EqualTo("new\n"));
            Assert.That(Directory.GetFiles(dir), Is.EqualTo(new[] { path }));

            Assert.Throws<DirectoryNotFoundException>(() => Rellax.Runtime.OutputFile.Check(Path.Combine(dir, "missing", "x.jsonl"), "--output"));
            Assert.Throws<IOException>(() => Rellax.Runtime.OutputFile.Check(dir, "--output"));
            Assert.DoesNotThrow(() => Rellax.Runtime.OutputFile.Check(Path.Combine(dir, "new.jsonl"), "--output"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void ProgressOffATerminalStaysQuietOnAShortRun()
    {
        var log = new StringWriter();
        using (var progress = new TerminalProgress(log, interactive: false, "scoring", 10))
            for (int i = 1; i <= 10; i++) progress.Report(i);
        Assert.That(log.ToString(), Is.Empty);
    }

    [Test]
    public void ProgressOnATerminalDrawsInPlaceAndClearsItself()
    {
        var screen = new StringWriter();
        using (var progress = new TerminalProgress(screen, interactive: true, "embedding", 200))
        {
            Assert.That(progress.Render(50, TimeSpan.FromSeconds(10)), Is.EqualTo("embedding [######------------------]  50/200  25%  5.0/s  eta 30s"));
            Assert.That(progress.Render(200, TimeSpan.FromSeconds(20)), Is.EqualTo("embedding [########################] 200/200 100%  10.0/s"));
            progress.Report(200);
        }
        string text = screen.ToString();
        Assert.That(text, Does.StartWith("\rembedding [------------------------]   0/200   0%"));
        Assert.That(text, Does.Contain("\rembedding [########################] 200/200 100%"));
        Assert.That(text, Does.EndWith("\r"), "the bar is blanked out at the end");
        Assert.That(text, Does.Not.Contain("\n"));
    }
}
