using System.Text;
using NUnit.Framework;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Tests.Model;

namespace Rellax.Tests.Runtime;

/// <summary>
/// Hostile input to the library (issue 15, classes 3 and 7): the one line reader's cap (long lines, endless input such as
/// <c>/dev/zero</c>, read in bounded chunks), typed <see cref="RecordException"/>s naming file and line from every reader,
/// folders passed as files, and the tokenizer's work on megabytes of text (counted, not timed).
/// </summary>
[TestFixture]
public sealed class InputBoundsTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("rellax-bounds-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static LineReader Lines(string text, int max = LineReader.DefaultMaxLineBytes) =>
        new(new MemoryStream(Encoding.UTF8.GetBytes(text)), "in.txt", max);

    private static List<(long, string)> ReadAll(LineReader reader)
    {
        var lines = new List<(long, string)>();
        while (reader.TryReadLine(out var line)) lines.Add((reader.LineNumber, Encoding.UTF8.GetString(line.Span)));
        return lines;
    }

    [Test]
    public void LinesEndAtNewlinesWithCrDroppedBomDroppedAndNoFinalNewlineNeeded()
    {
        Assert.That(ReadAll(Lines("\uFEFFa\nb\r\n\n  \nlast")), Is.EqualTo(new[] { (1L, "a"), (2L, "b"), (3L, ""), (4L, "  "), (5L, "last") }));
        Assert.That(ReadAll(Lines("")), Is.Empty);
        Assert.That(ReadAll(Lines("x\n")), Is.EqualTo(new[] { (1L, "x") }));
        Assert.That(ReadAll(Lines("\r\r\n")), Is.EqualTo(new[] { (1L, "\r") }), "only the \\r before \\n is a terminator");
    }

    [Test]
    public void ALineLongerThanTheCapNamesTheFileAndLineAndALineAtTheCapIsRead()
    {
        const int max = 100;
        string atCap = new('a', max);
        Assert.That(ReadAll(Lines($"x\n{atCap}\r\n{atCap}", max)).Select(l => l.Item2), Is.EqualTo(new[] { "x", atCap, atCap }));
        var e = Assert.Throws<RecordException>(() => ReadAll(Lines($"x\n\n{atCap}b\ny", max)))!;
        Assert.That((e.File, e.Line), Is.EqualTo(("in.txt", 3L)));
        Assert.That(e.Message, Is.EqualTo("in.txt:3: the line is longer than 100 bytes, the limit on one line (is this the right file?)"));
        e = Assert.Throws<RecordException>(() => ReadAll(Lines(new string('z', 5 * max), max)))!;
        Assert.That(e.Line, Is.EqualTo(1), "a last line without a newline counts too");
        Assert.That(LineReader.DefaultMaxLineBytes, Is.EqualTo(16 << 20), "the documented default: 16 MiB");
    }

    /// <summary>An endless stream of one byte with no newline, counting what was read.</summary>
    private sealed class Endless(byte value) : Stream
    {
        public long Served { get; private set; }
        public override int Read(byte[] buffer, int offset, int count)
        {
            buffer.AsSpan(offset, count).Fill(value);
            Served += count;
            return count;
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => Served; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Test]
    public void AHugeLineFailsAfterReadingAboutTheCapNotTheWholeLine()
    {
        // A 100 MB line (here: endless) with a 1 MiB cap: the reader stops after the cap plus at most one 64 KiB chunk.
        var stream = new Endless((byte)'{');
        using var reader = new LineReader(stream, "huge.jsonl", 1 << 20);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<RecordException>(() => JsonLines.Objects(reader).ToList())!;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(e.Message, Does.StartWith("huge.jsonl:1: the line is longer than 1 MiB"));
        Assert.That(stream.Served, Is.LessThanOrEqualTo((1 << 20) + 2 * 65536), "read no further than the cap and a chunk");
        Assert.That(allocated, Is.LessThan(4L << 20), "memory stays within a few times the cap");
    }

    [Test]
    public void DevZeroIsRefusedAtTheDefaultCapWithBoundedMemory()
    {
        if (!File.Exists("/dev/zero")) Assert.Ignore("no /dev/zero here");
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<RecordException>(() => JsonLines.Objects("/dev/zero", "input file").ToList())!;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(e.Message, Is.EqualTo("/dev/zero:1: the line is longer than 16 MiB, the limit on one line (is this the right file?)"));
        Assert.That(allocated, Is.LessThan(80L << 20), "at most a few times the 16 MiB cap");
        Assert.Throws<RecordException>(() => InputPaths.ReadAllBytes("/dev/zero", "manifest", 1 << 20));
    }

    [Test]
    public void JsonLinesSkipBlankLinesAndNameBadOnesTyped()
    {
        using (var reader = Lines("{\"a\": 1}\n \t\n\n{\"a\": 2}\r\n"))
            Assert.That(JsonLines.Objects(reader).Select(r => (r.Line, r.Root.GetProperty("a").GetInt32())).ToList(), Is.EqualTo(new[] { (1L, 1), (4L, 2) }));
        var e = Assert.Throws<RecordException>(() => JsonLines.Objects(Lines("{}\n[1, 2]")).ToList())!;
        Assert.That(e.Message, Is.EqualTo("in.txt:2: expected a JSON object, got an array"));
        e = Assert.Throws<RecordException>(() => JsonLines.Objects(Lines("{}\n{\"a\": }")).ToList())!;
        Assert.That((e.File, e.Line, e.Message.StartsWith("in.txt:2: not valid JSON at byte ", StringComparison.Ordinal)), Is.EqualTo(("in.txt", 2L, true)));
        var bytes = Encoding.UTF8.GetBytes("{}\n{\"a\": \"x\"}").ToList();
        bytes.Insert(bytes.Count - 2, 0xFF);
        e = Assert.Throws<RecordException>(() => JsonLines.Objects(new LineReader(new MemoryStream([.. bytes]), "bad.jsonl")).ToList())!;
        Assert.That(e.Message, Is.EqualTo("bad.jsonl:2: not valid UTF-8 (byte 9)"));
    }

    [Test]
    public void RecordExceptionsSayWhereOnOneLineAndCanBeRelocated()
    {
        var inFile = new RecordException("a.jsonl", 7, "bad field");
        Assert.That(inFile.Message, Is.EqualTo("a.jsonl:7: bad field"));
        Assert.That(new RecordException("a.jsonl", null, "no rows").Message, Is.EqualTo("a.jsonl: no rows"));
        var request = new RecordException("request", 3, null, "too long");
        Assert.That((request.Message, request.Record, request.File), Is.EqualTo(("request 3: too long", (int?)3, (string?)null)));
        var sample = new RecordException("sample", 0, "u7", "unknown item");
        Assert.That(sample.Message, Is.EqualTo("sample 'u7': unknown item"));
        var moved = sample.At("s.jsonl", 12, "sample 'u7'");
        Assert.That((moved.Message, moved.File, moved.Line, moved.Reason, moved.InnerException), Is.EqualTo(("s.jsonl:12: sample 'u7': unknown item", "s.jsonl", (long?)12, "sample 'u7': unknown item", (Exception)sample)));
        Assert.That(inFile, Is.InstanceOf<FormatException>(), "what the CLI's guard prints as one line");

        // What the CLI prints for an argument error: no C# parameter name, no "Actual value was" line.
        Assert.That(ExceptionText.OneLine(new ArgumentOutOfRangeException("k", 5, "k must be below 3")), Is.EqualTo("k must be below 3"));
        Assert.That(ExceptionText.OneLine(new ArgumentException("bad shape", "x")), Is.EqualTo("bad shape"));
        Assert.That(ExceptionText.OneLine(new InvalidOperationException("two\nlines")), Is.EqualTo("two lines"));
    }

    [Test]
    public void EveryLineReaderThrowsTypedErrorsNamingFileAndLine()
    {
        // SUBR samples.
        string samples = Path.Combine(_dir, "samples.jsonl");
        File.WriteAllText(samples, "{\"id\": 1, \"history\": [1], \"target\": 2}\n\n{\"id\": 2, \"history\": [\"x\"], \"target\": 2}\n");
        var e = Assert.Throws<RecordException>(() => SubrSamplesFile.Read(samples).ToList())!;
        Assert.That((e.File, e.Line), Is.EqualTo((samples, 3L)));
        Assert.That(e.Message, Is.EqualTo($"{samples}:3: sample '2': history[0] = \"x\" is not an integer item id"));

        // Word vectors (GloVe text).
        string glove = Path.Combine(_dir, "glove.txt");
        File.WriteAllText(glove, "the 1 2\ncat 3 nan\n");
        e = Assert.Throws<RecordException>(() => WordVectors.Load(glove))!;
        Assert.That((e.File, e.Line), Is.EqualTo((glove, 2L)));

        // Dataset text files (MovieLens u.data here): a line past the cap is refused, not read whole.
        string ml = Path.Combine(_dir, "ml");
        Directory.CreateDirectory(ml);
        string data = Path.Combine(ml, "u.data");
        File.WriteAllText(data, "1\t1\t5\t100\n");
        using (var writer = new StreamWriter(data, append: true)) writer.Write(new string('9', (16 << 20) + 10));
        e = Assert.Throws<RecordException>(() => DatasetReader.SourceLines(data, Encoding.Latin1).ToList())!;
        Assert.That((e.File, e.Line), Is.EqualTo((data, 2L)));

        // Dataset CSVs (ML-25M, Book-Crossing, goodbooks) have their own quote-aware reader, with the same cap.
        string csv = Path.Combine(_dir, "ratings.csv");
        File.WriteAllText(csv, "userId,movieId\n");
        using (var writer = new StreamWriter(csv, append: true)) writer.Write(new string('7', (16 << 20) + 10));
        using var records = new CsvRecordReader(csv, Encoding.UTF8);
        Assert.That(records.Read(), Is.True);
        e = Assert.Throws<RecordException>(() => records.Read())!;
        Assert.That(e.Message, Is.EqualTo($"{csv}:2: the line is longer than 16 Mi characters, the limit on one line (is this the right file?)"));
    }

    [Test]
    public void AFolderWhereAFileIsExpectedAndTheReverseSaySo()
    {
        string file = Path.Combine(_dir, "file.txt");
        File.WriteAllText(file, "x");
        Assert.That(() => SubrSamplesFile.Read(_dir), Throws.TypeOf<IOException>().With.Message.EqualTo($"samples file '{_dir}' is a folder, not a file"));
        Assert.That(() => SubrSamplesFile.Read(Path.Combine(_dir, "none")), Throws.TypeOf<FileNotFoundException>());
        Assert.That(() => WordVectors.Load(_dir), Throws.TypeOf<IOException>().With.Message.Contain("is a folder, not a file"));
        Assert.That(() => SubrIndex.Load(_dir, new Rellax.Kernels.Cpu.CpuBackend(1)), Throws.TypeOf<IOException>().With.Message.Contain("is a folder, not a file"));
        Assert.That(() => ItemVectors.ReadFile(_dir), Throws.TypeOf<IOException>().With.Message.Contain("is a folder, not a file"));
        Assert.That(() => CrmFeatures.Load(_dir), Throws.TypeOf<IOException>().With.Message.Contain("is a folder, not a file"));
        Assert.That(() => PreparedDataset.Load(file), Throws.TypeOf<IOException>().With.Message.Contain("is a file, not a folder"));
        Assert.That(() => DatasetReader.Read(DatasetKind.MovieLens100K, file), Throws.TypeOf<IOException>().With.Message.Contain("is a file, not a folder"));
        Assert.That(() => DinModel.Load(file), Throws.TypeOf<IOException>().With.Message.Contain("is a file, not a folder"));
        Assert.That(() => RellaxAdapter.Load(file, LlamaConfig.Load(Path.Combine(ModelPaths.Stories260KOrIgnore(), "config.json"))),
            Throws.TypeOf<IOException>().With.Message.Contain("is a file, not a folder"));
        using var cpu = new Rellax.Kernels.Cpu.CpuBackend(1);
        Assert.That(() => LlamaModel.Load(file, cpu), Throws.TypeOf<IOException>().With.Message.Contain("is a file, not a folder"));
    }

    /// <summary>A text of about <paramref name="chars"/> characters of story words.</summary>
    private static string Story(int chars)
    {
        var sb = new StringBuilder(chars + 64);
        string[] words = ["Lily", "and", "Tom", "went", "to", "the", "park.", "They", "saw", "a", "big", "red", "ball", "!", "Mom", "smiled,"];
        for (int i = 0; sb.Length < chars; i++) sb.Append(words[(i * 7 + i / 3) % words.Length]).Append(' ');
        return sb.ToString(0, chars);
    }

    [Test]
    public void TheMergeLoopIsLinearInTheTextOnAMegabyteAndTenMegabytes()
    {
        // stories260K is SentencePiece-style without a pre-tokenizer: the whole text is ONE word for BPE, the worst case.
        // Microsoft.ML.Tokenizers' merge loop took 237 s on 1 MB here (quadratic; 0.38 s for 10 K characters).
        var tokenizer = LlamaTokenizer.Load(ModelPaths.Stories260KOrIgnore());
        foreach (int chars in new[] { 1 << 20, 10 << 20 })
        {
            string text = Story(chars);
            long before = BpeMerges.Work;
            int ids = tokenizer.Encode(text, addSpecialTokens: false).Count;
            long work = BpeMerges.Work - before;
            TestContext.Out.WriteLine($"{chars} characters: {ids} ids, {work} heap operations ({(double)work / chars:F2} per character)");
            // Candidates pushed <= (n - 1) + 2 merges <= 3n, popped <= pushed: at most 6 per symbol, one symbol per character.
            Assert.That(work, Is.LessThanOrEqualTo(6L * (chars + 1)));
            Assert.That(ids, Is.GreaterThan(chars / 16), "the text was really encoded");
        }
    }

    [Test]
    public void EncodingWithinAContextStopsEarlyOnAHugeText()
    {
        var tokenizer = LlamaTokenizer.Load(ModelPaths.Stories260KOrIgnore());
        string huge = Story(10 << 20);
        long before = BpeMerges.Work;
        Assert.That(tokenizer.TryEncodeWithMarkers(huge, [], 512, out var ids, out long atLeast), Is.False);
        Assert.That(BpeMerges.Work - before, Is.EqualTo(0), "refused from the length alone: no merge work at all");
        Assert.That((ids.Length, atLeast > 512), Is.EqualTo((0, true)));

        // Markers split the text: pieces before the limit are encoded, then it stops; the work is bounded by the context.
        string marked = string.Join("[hist]", Enumerable.Repeat(Story(200), 20_000));
        before = BpeMerges.Work;
        Assert.That(tokenizer.TryEncodeWithMarkers(marked, ["[hist]"], 512, out _, out atLeast), Is.False);
        long work = BpeMerges.Work - before;
        TestContext.Out.WriteLine($"4 MB in 200-character pieces, limit 512: stopped after {work} heap operations, at least {atLeast} tokens");
        Assert.That(work, Is.LessThanOrEqualTo(6L * (512 + 1) * tokenizer.MaxPieceChars));
        Assert.That(atLeast, Is.GreaterThan(512));

        // Within the limit the result equals the plain encoding.
        string fits = "Lily [hist] went to the park";
        Assert.That(tokenizer.TryEncodeWithMarkers(fits, ["[hist]"], 512, out ids, out atLeast), Is.True);
        Assert.That(ids, Is.EqualTo(tokenizer.EncodeWithMarkers(fits, ["[hist]"])));
        Assert.That(atLeast, Is.EqualTo(ids.Length));
        Assert.That(tokenizer.TryEncodeWithMarkers(fits, ["[hist]"], ids.Length, out _, out _), Is.True, "exactly at the limit fits");
        Assert.That(tokenizer.TryEncodeWithMarkers(fits, ["[hist]"], ids.Length - 1, out _, out atLeast), Is.False);
        Assert.That(atLeast, Is.GreaterThanOrEqualTo(ids.Length));
    }

    [Test]
    public void ByteLevelEncodingStopsWordByWord()
    {
        var tokenizer = LlamaTokenizerByteLevelTests.Qwen2();
        string text = string.Concat(Enumerable.Repeat("the cat 2024 ", 100_000));
        Assert.That(tokenizer.TryEncodeWithMarkers(text, [], 64, out _, out long atLeast), Is.False);
        Assert.That(atLeast, Is.GreaterThan(64));
        Assert.That(tokenizer.TryEncodeWithMarkers("the cat", [], 64, out var ids, out _), Is.True);
        Assert.That(ids, Is.EqualTo(tokenizer.EncodeWithMarkers("the cat", [])));
    }

    [Test]
    public void CanonicalOrderingOfALongRunOfMarksIsStableAndNotQuadratic()
    {
        // 200 000 alternating marks of classes 230 (U+0301) and 220 (U+0316): sorted stably, every 220 first.
        var cps = new List<int> { 'a' };
        for (int i = 0; i < 100_000; i++) { cps.Add(0x0301); cps.Add(0x0316); }
        cps.Add('b');
        UnicodeNormalization.OrderCanonically(cps);
        Assert.That(cps[0], Is.EqualTo('a'));
        Assert.That(cps.Skip(1).Take(100_000), Is.All.EqualTo(0x0316));
        Assert.That(cps.Skip(100_001).Take(100_000), Is.All.EqualTo(0x0301));
        Assert.That(cps[^1], Is.EqualTo('b'));
        // Short runs keep the insertion sort's result.
        var shortRun = new List<int> { 'e', 0x0301, 0x0316, 0x0301 };
        UnicodeNormalization.OrderCanonically(shortRun);
        Assert.That(shortRun, Is.EqualTo(new[] { 'e', 0x0316, 0x0301, 0x0301 }));
    }
}
