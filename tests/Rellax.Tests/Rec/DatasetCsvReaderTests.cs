using System.Text;
using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="CsvRecordReader"/> on hand-written files: RFC 4180 quoting (separators, doubled quotes and line breaks
/// inside quotes), the Book-Crossing backslash variant, line numbers of records (also after blank lines and multi-line
/// fields), CRLF, the UTF-8 byte-order mark, and every way a record can be malformed.
/// </summary>
[TestFixture]
public sealed class DatasetCsvReaderTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("rellax-csv-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string Write(string text, Encoding? encoding = null)
    {
        string path = Path.Combine(_dir, $"f{Guid.NewGuid():N}.csv");
        File.WriteAllBytes(path, (encoding ?? new UTF8Encoding(false)).GetBytes(text));
        return path;
    }

    /// <summary>Every record as (line, fields) or (line, "!" + error).</summary>
    private static List<(int Line, string[] Fields)> ReadAll(string path, char separator = ',', CsvQuoting quoting = CsvQuoting.Rfc4180, bool multiline = false)
    {
        var records = new List<(int, string[])>();
        using var csv = new CsvRecordReader(path, Encoding.UTF8, separator, quoting, multiline);
        while (csv.Read())
        {
            if (csv.Error is not null) { records.Add((csv.Line, ["!" + csv.Error])); continue; }
            var fields = new string[csv.FieldCount];
            for (int i = 0; i < fields.Length; i++) fields[i] = csv.GetString(i);
            records.Add((csv.Line, fields));
        }
        return records;
    }

    [Test]
    public void Rfc4180QuotesSeparatorsAndDoubledQuotes()
    {
        string path = Write("a,b,c\n11,\"American President, The (1995)\",Comedy|Drama\n12,\"He said \"\"hi\"\"\",\n\"\",x,\"\"\"\"\n");
        var r = ReadAll(path);
        Assert.That(r, Has.Count.EqualTo(4));
        Assert.That(r[0].Fields, Is.EqualTo(new[] { "a", "b", "c" }));
        Assert.That(r[1].Fields, Is.EqualTo(new[] { "11", "American President, The (1995)", "Comedy|Drama" }));
        Assert.That(r[2].Fields, Is.EqualTo(new[] { "12", "He said \"hi\"", "" }), "trailing separator = empty last field");
        Assert.That(r[3].Fields, Is.EqualTo(new[] { "", "x", "\"" }));
        Assert.That(r.Select(x => x.Line), Is.EqualTo(new[] { 1, 2, 3, 4 }));
    }

    [Test]
    public void LineNumbersCountBlankLinesCrLfAndBom()
    {
        // BOM, CRLF endings, a blank line and a white-space line (skipped but counted), no newline at the end
        string path = Write("\uFEFFid,v\r\n1,a\r\n\r\n  \r\n2,b", new UTF8Encoding(false));
        var r = ReadAll(path);
        Assert.That(r.Select(x => x.Line), Is.EqualTo(new[] { 1, 2, 5 }));
        Assert.That(r[0].Fields, Is.EqualTo(new[] { "id", "v" }), "the BOM is dropped and \\r removed");
        Assert.That(r[2].Fields, Is.EqualTo(new[] { "2", "b" }));
    }

    [Test]
    public void MultilineFieldReportsTheLineWhereTheRecordStarts()
    {
        string path = Write("h1,h2\n1,\"two\nlines\"\n2,x\n3,\"three\n\nlines, with a blank\"\n4,y\n");
        var r = ReadAll(path, multiline: true);
        Assert.That(r.Select(x => x.Line), Is.EqualTo(new[] { 1, 2, 4, 5, 8 }));
        Assert.That(r[1].Fields, Is.EqualTo(new[] { "1", "two\nlines" }));
        Assert.That(r[3].Fields, Is.EqualTo(new[] { "3", "three\n\nlines, with a blank" }));
        Assert.That(r[4].Fields, Is.EqualTo(new[] { "4", "y" }));
    }

    [Test]
    public void UnterminatedQuoteIsAnErrorOfItsLine()
    {
        // without multiline: the record on line 2 is bad, reading goes on at line 3
        string path = Write("h1,h2\n1,\"open\n2,x\n");
        var r = ReadAll(path);
        Assert.That(r, Has.Count.EqualTo(3));
        Assert.That(r[1].Line, Is.EqualTo(2));
        Assert.That(r[1].Fields[0], Does.StartWith("!unterminated quoted field 2"));
        Assert.That(r[2].Fields, Is.EqualTo(new[] { "2", "x" }));

        // with multiline: the field runs to the end of the file, the error names the record's first line, and the
        // lines read while looking for the closing quote are read again as records
        var m = ReadAll(path, multiline: true);
        Assert.That(m, Has.Count.EqualTo(3));
        Assert.That(m[1].Line, Is.EqualTo(2));
        Assert.That(m[1].Fields[0], Is.EqualTo("!unterminated quoted field 2: the file ends inside it"));
        Assert.That((m[2].Line, m[2].Fields[0], m[2].Fields[1]), Is.EqualTo((3, "2", "x")));
    }

    [Test]
    public void MultilineQuoteThatBreaksOnALaterLineCostsOneLine()
    {
        // line 2 opens a quote that line 3 "closes" wrongly: line 2 is the bad record, line 3 is read again on its own
        string path = Write("h1,h2\n1,\"open,x\n2,\"b\"c\n3,y\n");
        var r = ReadAll(path, multiline: true);
        Assert.That(r.Select(x => x.Line), Is.EqualTo(new[] { 1, 2, 3, 4 }));
        Assert.That(r[1].Fields[0], Is.EqualTo("!unterminated quoted field 2 (read across lines it breaks at line 3: field 2: 'b' after the closing quote (expected ',' or the end of the line))"));
        Assert.That(r[2].Fields[0], Is.EqualTo("!field 2: 'c' after the closing quote (expected ',' or the end of the line)"));
        Assert.That(r[3].Fields, Is.EqualTo(new[] { "3", "y" }));
    }

    [Test]
    public void MultilineRecordsAreCappedAtMaxRecordLines()
    {
        // an unclosed quote followed by 150 plain lines: one error at line 1, then all 150 lines as records
        var text = new StringBuilder("0,\"never closed\n");
        for (int i = 1; i <= 150; i++) text.Append(i).Append(",v\n");
        var r = ReadAll(Write(text.ToString()), multiline: true);
        Assert.That(r, Has.Count.EqualTo(151));
        Assert.That(r[0].Fields[0], Is.EqualTo($"!unterminated quoted field 2: no closing quote within {CsvRecordReader.MaxRecordLines} lines"));
        Assert.That(r[150].Line, Is.EqualTo(151));
        Assert.That(r[150].Fields, Is.EqualTo(new[] { "150", "v" }));
        Assert.That(r.Skip(1).Select(x => x.Fields[0]), Is.EqualTo(Enumerable.Range(1, 150).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))));
    }

    [Test]
    public void MultilineRewindKeepsTheByteOrderMarkOut()
    {
        string path = Write("\uFEFFa,\"open\nb,c\n");
        var r = ReadAll(path, multiline: true);
        Assert.That(r[0].Fields[0], Does.StartWith("!unterminated quoted field 2"));
        Assert.That(r[1].Fields, Is.EqualTo(new[] { "b", "c" }));
    }

    [Test]
    public void TextAfterClosingQuoteAndQuoteInUnquotedFieldAreErrors()
    {
        string path = Write("1,\"a\"b,c\n2,a\"b,c\n3,ok,c\n");
        var r = ReadAll(path);
        Assert.That(r[0].Fields[0], Does.StartWith("!field 2: 'b' after the closing quote"));
        Assert.That(r[1].Fields[0], Does.StartWith("!field 2: a quote inside an unquoted field"));
        Assert.That(r[2].Fields, Is.EqualTo(new[] { "3", "ok", "c" }));
    }

    [Test]
    public void BackslashQuotingKeepsEscapesAndInnerQuotes()
    {
        // Book-Crossing style: \" does not end a field and is kept; a quote not followed by ';' is text; NULL unquoted
        string path = Write("\"1\";\"The \\\"Best\\\" Book\";NULL\n\"2\";\"Say \"hi\" twice\";\"x\"\n\"3\";\"ends with \\\"\";\"y\"\n");
        var r = ReadAll(path, ';', CsvQuoting.Backslash);
        Assert.That(r[0].Fields, Is.EqualTo(new[] { "1", "The \\\"Best\\\" Book", "NULL" }));
        Assert.That(r[1].Fields, Is.EqualTo(new[] { "2", "Say \"hi\" twice", "x" }));
        Assert.That(r[2].Fields, Is.EqualTo(new[] { "3", "ends with \\\"", "y" }));
        using var csv = new CsvRecordReader(path, Encoding.UTF8, ';', CsvQuoting.Backslash);
        Assert.That(csv.Read(), Is.True);
        Assert.That((csv.IsQuoted(0), csv.IsQuoted(1), csv.IsQuoted(2)), Is.EqualTo((true, true, false)));
    }

    [Test]
    public void BackslashQuotingClosesAnEscapedQuoteAtTheEndOfTheLine()
    {
        // "...\" as the last field: the reference's split keeps 034545104\ ; a line that just stops is still unterminated
        string path = Write("\"1\";\"034545104\\\"\n\"2\";\"x\\\"\";\"3\"\n\"3\";\"open\n");
        var r = ReadAll(path, ';', CsvQuoting.Backslash);
        Assert.That(r[0].Fields, Is.EqualTo(new[] { "1", "034545104\\" }));
        Assert.That(r[1].Fields, Is.EqualTo(new[] { "2", "x\\\"", "3" }));
        Assert.That(r[2].Fields[0], Does.StartWith("!unterminated quoted field 2"));
    }

    [Test]
    public void BackslashQuotingRunsTitleAndUnquotedAuthorTogether()
    {
        // the shape of the public BX-Books.csv lines the Book-Crossing reader repairs: title\";author" is one field
        string path = Write("\"0789466953\";\"DK Readers (Level 4)\\\";James Buckley\";\"2000\"\n");
        var r = ReadAll(path, ';', CsvQuoting.Backslash);
        Assert.That(r[0].Fields, Is.EqualTo(new[] { "0789466953", "DK Readers (Level 4)\\\";James Buckley", "2000" }));
    }

    [Test]
    public void LongRecordsGrowTheBuffers()
    {
        // a 200,000-character field (beyond the 64 Ki-char read buffer) and 40 fields (beyond the initial 16)
        string big = new('x', 200_000);
        string many = string.Join(",", Enumerable.Range(0, 40));
        string path = Write($"\"{big}\",1\n{many}\n");
        var r = ReadAll(path);
        Assert.That(r[0].Fields[0], Has.Length.EqualTo(200_000));
        Assert.That(r[1].Fields, Has.Length.EqualTo(40));
        Assert.That(r[1].Fields[39], Is.EqualTo("39"));
        Assert.That(r[1].Line, Is.EqualTo(2));
    }

    [Test]
    public void KeyTableKeepsTextKeysApart()
    {
        // "7", "007" and "07" are different ids as text; ISBN-like and huge ids take the dictionary path
        var t = new KeyTable();
        string huge = (KeyTable.NumericLimit + 5).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string[] keys = ["7", "007", "07", "0195153448", "034545104X", huge, "16777215", "1", "99999999"];
        foreach (string k in keys) Assert.That(t.TryAdd(k), Is.True, k);
        foreach (string k in keys) Assert.That(t.TryAdd(k), Is.False, "second add of " + k);
        for (int i = 0; i < keys.Length; i++)
        {
            Assert.That(t.TryGet(keys[i], out int row), Is.True, keys[i]);
            Assert.That(row, Is.EqualTo(i), keys[i]);
        }
        Assert.That(t.Keys, Is.EqualTo(keys));
        foreach (string k in new[] { "8", "0007", "", "2", "16777214", "-7", "7 " }) Assert.That(t.TryGet(k, out _), Is.False, $"'{k}'");
        Assert.That(t.GetOrAdd("8".AsSpan()), Is.EqualTo(keys.Length));
        Assert.That(t.GetOrAdd("007".AsSpan()), Is.EqualTo(1));
    }

    [TestCase("0.5", 0.5f)]
    [TestCase("3.5", 3.5f)]
    [TestCase("4.0", 4f)]
    [TestCase("4", 4f)]
    [TestCase("3.50", 3.5f)]
    [TestCase("05.0", 5f)]
    [TestCase("5.000", 5f)]
    public void HalfStarRatingsParse(string text, float expected)
    {
        Assert.That(new RatingScale(0.5f, 5f, HalfSteps: true).TryParse(text, out float v), Is.True);
        Assert.That(v, Is.EqualTo(expected));
    }

    [TestCase("0")]
    [TestCase("0.0")]
    [TestCase("5.5")]
    [TestCase("3.25")]
    [TestCase("3.")]
    [TestCase(".5")]
    [TestCase("+3.5")]
    [TestCase("-0.5")]
    [TestCase("3.5 ")]
    [TestCase("1e0")]
    [TestCase("3,5")]
    [TestCase("")]
    [TestCase("3.5.0")]
    [TestCase("NaN")]
    public void HalfStarRatingsReject(string text) =>
        Assert.That(new RatingScale(0.5f, 5f, HalfSteps: true).TryParse(text, out _), Is.False);

    [TestCase("0", true)]
    [TestCase("10", true)]
    [TestCase("11", false)]
    [TestCase("5.0", false)]
    [TestCase("-1", false)]
    [TestCase(" 5", false)]
    public void WholeRatings(string text, bool ok) => Assert.That(new RatingScale(0, 10).TryParse(text, out _), Is.EqualTo(ok));

    [TestCase("0", 0L)]
    [TestCase("1147880044", 1147880044L)]
    [TestCase("999999999999999999", 999999999999999999L)]
    [TestCase("9223372036854775807", long.MaxValue)]
    public void TimestampsParse(string text, long expected)
    {
        Assert.That(DatasetCsv.TryParseLong(text, out long v), Is.True);
        Assert.That(v, Is.EqualTo(expected));
    }

    [TestCase("")]
    [TestCase("-1")]
    [TestCase("12a")]
    [TestCase("1.5")]
    [TestCase("9223372036854775808")]
    [TestCase("99999999999999999999")]
    public void TimestampsReject(string text) => Assert.That(DatasetCsv.TryParseLong(text, out _), Is.False);

    [Test]
    public void MissingFileNamesIt()
    {
        string path = Path.Combine(_dir, "nope.csv");
        var e = Assert.Throws<FileNotFoundException>(() => new CsvRecordReader(path, Encoding.UTF8).Dispose());
        Assert.That(e!.Message, Does.Contain(path));
    }
}
