using System.Text.Json;
using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="TrainingFile"/>: lines byte-identical to Python's <c>json.dumps</c>, read back with
/// <see cref="JsonDocument"/>; row sampling identical to CPython's <c>random.sample</c>; the ReiT mixed set.
/// </summary>
[TestFixture]
public sealed class TrainingFileTests
{
    /// <summary>
    /// The expected line is what Python 3.11 prints for
    /// <c>python3 -c 'import json; print(json.dumps({"input": "a\"b\\c\né\t\x01\x7f\b\f\U0001f600/\x27<>&+", "output": "Yes."}))'</c>.
    /// </summary>
    [Test]
    public void LineIsExactlyPythonJsonDumpsWithEnsureAscii()
    {
        string input = "a\"b\\c\né\t\u0001\u007f\b\f😀/'<>&+";
        Assert.That(TrainingFile.Line(input, true),
            Is.EqualTo("""{"input": "a\"b\\c\n\u00e9\t\u0001\u007f\b\f\ud83d\ude00/'<>&+", "output": "Yes."}"""));
        Assert.That(TrainingFile.Line("", false), Is.EqualTo("""{"input": "", "output": "No."}"""));
    }

    [Test]
    public void WrittenLinesParseBackToTheSamePromptAndAnswer()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var b = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = true });
        var prompts = new[] { b.BuildRecent(set.Samples[0], 5), b.Build(set.Samples[1], [3, 0, 1]) };
        var sw = new StringWriter();
        Assert.That(TrainingFile.WriteAll(sw, prompts), Is.EqualTo(2));
        string text = sw.ToString();
        Assert.That(text, Does.EndWith("}\n"));
        Assert.That(text, Does.Not.Contain("\r"));
        Assert.That(text.All(c => c < 0x80), Is.True, "ensure_ascii: the file is plain ASCII");
        var lines = text.Split('\n');
        Assert.That(lines, Has.Length.EqualTo(3));
        Assert.That(lines[2], Is.Empty);
        string[] outputs = ["Yes.", "No."]; // sample 0 rated 4 (> 3), sample 1 rated 3
        for (int i = 0; i < 2; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            var props = doc.RootElement.EnumerateObject().Select(p => p.Name).ToArray();
            Assert.That(props, Is.EqualTo(new[] { "input", "output" }));
            Assert.That(doc.RootElement.GetProperty("input").GetString(), Is.EqualTo(prompts[i].Text));
            Assert.That(doc.RootElement.GetProperty("output").GetString(), Is.EqualTo(outputs[i]));
        }
        // the prompt's non-ASCII title survives the round trip, escaped in the file
        Assert.That(lines[0], Does.Contain("Am\\u00e9lie (2001) (5 stars)[hist]"));
    }

    [Test]
    public void WriteAppendsOneLineFeedAndNothingElse()
    {
        var sw = new StringWriter { NewLine = "\r\n" };
        TrainingFile.Write(sw, new ReLLaPrompt("x", [], 0, false));
        Assert.That(sw.ToString(), Is.EqualTo("{\"input\": \"x\", \"output\": \"No.\"}\n"));
    }

    /// <summary>Expected rows: <c>python3 -c "import random; random.seed(SEED); print(random.sample(range(N), K))"</c>
    /// (Python 3.11.7). The cases cover the pool branch (N ≤ setsize), the set branch, K ≤ 5 and K &gt; 5, seed 0, a seed
    /// above 2³² (two key words), a negative seed (Python takes |seed|), and K = N.</summary>
    [TestCase(42L, 100, 5, new[] { 81, 14, 3, 94, 35 })]
    [TestCase(42L, 10, 5, new[] { 1, 0, 4, 9, 6 })]
    [TestCase(42L, 1000, 8, new[] { 654, 114, 25, 759, 281, 250, 228, 142 })]
    [TestCase(42L, 50, 8, new[] { 40, 7, 1, 17, 15, 14, 8, 6 })]
    [TestCase(0L, 30, 6, new[] { 27, 12, 24, 13, 1, 8 })]
    [TestCase(1099511627783L, 500, 4, new[] { 314, 382, 417, 480 })]
    [TestCase(-42L, 100, 5, new[] { 81, 14, 3, 94, 35 })]
    [TestCase(7L, 20, 20, new[] { 10, 4, 12, 1, 2, 13, 8, 16, 5, 9, 0, 14, 3, 19, 6, 7, 18, 11, 15, 17 })]
    [TestCase(42L, 12, 0, new int[0])]
    public void SampleRowsMatchesCPythonRandomSample(long seed, int population, int count, int[] expected) =>
        Assert.That(TrainingFile.SampleRows(population, count, seed), Is.EqualTo(expected));

    [Test]
    public void SampleRowsRejectsMoreRowsThanThePopulation()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => TrainingFile.SampleRows(5, 6, 42))!;
        Assert.That(ex.Message, Does.Contain("cannot sample 6 distinct rows from 5"));
        Assert.Throws<ArgumentOutOfRangeException>(() => TrainingFile.SampleRows(5, -1, 42));
    }

    /// <summary>3 users × 12 events; user u's event e is item 12u + e titled <c>M{u}-{e} (2000)</c> rated e % 5 + 1.
    /// With a minimum history of 5 the samples are (u, e) for e = 5..11: sample index 7u + e − 5.</summary>
    private static SampleSet MixedFixture()
    {
        var titles = new string[36];
        var ratings = new List<Rating>();
        for (int u = 0; u < 3; u++)
            for (int e = 0; e < 12; e++)
            {
                titles[12 * u + e] = $"M{u}-{e} (2000)";
                ratings.Add(new Rating(u, 12 * u + e, e % 5 + 1, 100 * u + e));
            }
        return PromptFixtures.Set(ItemDomain.Movies, titles, null, 3, ratings.ToArray());
    }

    private static string WriteMixed(SampleSet set, int count, long seed, out int[] rows)
    {
        var b = new ReLLaPromptBuilder(set);
        var sw = new StringWriter();
        rows = TrainingFile.WriteMixed(sw, b, set.Samples, count, seed,
            s => ReLLaPromptBuilder.RecentPositions(s.HistoryLength, 2),
            s => [0]);
        return sw.ToString();
    }

    [Test]
    public void MixedSetWritesEachDrawnRowTwiceRecentThenSubr()
    {
        var set = MixedFixture();
        Assert.That(set.Samples, Has.Count.EqualTo(21));
        string text = WriteMixed(set, 6, 42, out var rows);
        // python3 -c "import random; random.seed(42); print(random.sample(range(21), 6))" -> [20, 3, 0, 8, 7, 16]
        Assert.That(rows, Is.EqualTo(new[] { 20, 3, 0, 8, 7, 16 }));
        var lines = text.Split('\n');
        Assert.That(lines, Has.Length.EqualTo(13));
        Assert.That(lines[12], Is.Empty);
        for (int i = 0; i < 6; i++)
        {
            int u = rows[i] / 7, e = 5 + rows[i] % 7; // the target event of sample rows[i]
            using var recent = JsonDocument.Parse(lines[2 * i]);
            using var subr = JsonDocument.Parse(lines[2 * i + 1]);
            string r = recent.RootElement.GetProperty("input").GetString()!;
            string s = subr.RootElement.GetProperty("input").GetString()!;
            string target = $"***M{u}-{e} (2000)***";
            Assert.That(r, Does.Contain(target));
            Assert.That(s, Does.Contain(target));
            // recent-2: events e-2, e-1; the "SUBR" provider: event 0 (rated 1 -> "star")
            string star1 = (e - 2) % 5 + 1 > 1 ? "stars" : "star", star2 = (e - 1) % 5 + 1 > 1 ? "stars" : "star";
            Assert.That(r, Does.Contain($"['0. M{u}-{e - 2} (2000) ({(e - 2) % 5 + 1} {star1})', '1. M{u}-{e - 1} (2000) ({(e - 1) % 5 + 1} {star2})']\n"));
            Assert.That(s, Does.Contain($"['0. M{u}-0 (2000) (1 star)']\n"));
            string answer = e % 5 + 1 > 3 ? "Yes." : "No.";
            Assert.That(recent.RootElement.GetProperty("output").GetString(), Is.EqualTo(answer));
            Assert.That(subr.RootElement.GetProperty("output").GetString(), Is.EqualTo(answer));
        }
        // row 20 is user 2's event 11 (rating 2): written out in full
        Assert.That(lines[0], Is.EqualTo(
            """{"input": "The user watched the following movies in the past, and rated them:\n['0. M2-9 (2000) (5 stars)', '1. M2-10 (2000) (1 star)']\nBased on the movies the user has watched, deduce if the user will like the movie ***M2-11 (2000)***.\nNote that more stars the user rated the movie, the more the user liked the movie.\nYou should ONLY tell me yes or no.", "output": "No."}"""));
    }

    [Test]
    public void MixedSetIsReproducibleAndDependsOnTheSeed()
    {
        var set = MixedFixture();
        string a = WriteMixed(set, 6, 42, out _), b = WriteMixed(set, 6, 42, out _);
        string c = WriteMixed(set, 6, 7, out var rows7);
        Assert.That(b, Is.EqualTo(a));
        // python3 -c "import random; random.seed(7); print(random.sample(range(21), 6))" -> [10, 4, 12, 1, 2, 3]
        Assert.That(rows7, Is.EqualTo(new[] { 10, 4, 12, 1, 2, 3 }));
        Assert.That(c, Is.Not.EqualTo(a));
    }

    [Test]
    public void MixedSetCounts()
    {
        var set = MixedFixture();
        Assert.That(WriteMixed(set, 0, 42, out var none), Is.Empty);
        Assert.That(none, Is.Empty);
        string all = WriteMixed(set, 21, 42, out var rows);
        Assert.That(all.Count(c => c == '\n'), Is.EqualTo(42));
        Assert.That(rows.OrderBy(x => x), Is.EqualTo(Enumerable.Range(0, 21)));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => WriteMixed(set, 22, 42, out _))!;
        Assert.That(ex.Message, Does.Contain("cannot draw 22 rows from 21 samples"));
    }

    [Test]
    public void MixedSetReportsABadProviderPosition()
    {
        var set = MixedFixture();
        var b = new ReLLaPromptBuilder(set);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => TrainingFile.WriteMixed(new StringWriter(), b, set.Samples, 3, 42,
            s => [0], s => [s.HistoryLength]))!;
        Assert.That(ex.Message, Does.Contain("historyPositions[0]"));
        Assert.That(ex.Message, Does.Contain("sample 20's history of 11 events")); // the first drawn row is 20 (see above)
    }
}
