using System.Text.Json;
using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Cli;

/// <summary>
/// <c>rellax prepare</c> as a user runs it: ML-100K end to end, a small hand-written ML-100K-style folder (strict and with
/// <c>--skip-bad-lines</c>), and the error paths (bad dataset name, missing folder, malformed file, foreign output folder),
/// each one line on stderr with exit code 1 and no output folder.
/// </summary>
[TestFixture]
public sealed class PrepareCommandTests
{
    private string _dir = null!;

    [SetUp] public void MakeDir() => _dir = Directory.CreateTempSubdirectory("rellax-prepare-").FullName;

    [TearDown] public void Clean() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    /// <summary>
    /// An ML-100K-style folder: 3 movies, 2 users; user 1 rates 7 times (2 samples), user 2 rates 4 times (none).
    /// <paramref name="badLine"/> replaces u.data's third line.
    /// </summary>
    private string Tiny(string? badLine = null)
    {
        string dir = Path.Combine(_dir, "tiny");
        Directory.CreateDirectory(dir);
        string flags = string.Join('|', Enumerable.Repeat("0", 19));
        File.WriteAllLines(Path.Combine(dir, "u.item"), [
            $"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}",
            $"2|GoldenEye (1995)|01-Jan-1995||http://x|{flags}",
            $"3|Four Rooms (1995)|01-Jan-1995||http://x|{flags}",
        ]);
        File.WriteAllLines(Path.Combine(dir, "u.user"), ["1|24|M|technician|85711", "2|53|F|other|94043"]);
        var data = new List<string>();
        for (int k = 0; k < 7; k++) data.Add($"1\t{k % 3 + 1}\t{k % 5 + 1}\t{1000 + k}");
        for (int k = 0; k < 4; k++) data.Add($"2\t{k % 3 + 1}\t4\t{2000 + k}");
        if (badLine is not null) data[2] = badLine;
        File.WriteAllLines(Path.Combine(dir, "u.data"), data);
        return dir;
    }

    [Test]
    public void PreparesMovieLens100K()
    {
        string data = TestData.RequireShared("movielens/ml-100k");
        string output = Path.Combine(_dir, "ml100k");
        var (code, stdout, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", data, "--output", output, "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        // 100000 ratings (wc -l u.data), 943 users, 1682 movies; samples: 100000 - 5 * 943 = 95285, 8:1:1 with floor.
        Assert.That(root.GetProperty("ratings").GetInt32(), Is.EqualTo(100000));
        Assert.That(root.GetProperty("users").GetInt32(), Is.EqualTo(943));
        Assert.That(root.GetProperty("items").GetInt32(), Is.EqualTo(1682));
        Assert.That(root.GetProperty("skipped_lines").GetInt32(), Is.EqualTo(0));
        var samples = root.GetProperty("samples");
        Assert.That((samples.GetProperty("total").GetInt32(), samples.GetProperty("train").GetInt32(), samples.GetProperty("valid").GetInt32(), samples.GetProperty("test").GetInt32()),
            Is.EqualTo((95285, 76228, 9528, 9529)));
        var loaded = PreparedDataset.Load(output);
        Assert.That(loaded.Samples, Has.Count.EqualTo(95285));
        Assert.That(loaded.Dataset.Name, Is.EqualTo("movielens-100k"));
        Assert.That(File.ReadLines(Path.Combine(output, "samples.jsonl")).Count(), Is.EqualTo(95285));
    }

    [Test]
    public void PrintsCountsPerSplitAsText()
    {
        string output = Path.Combine(_dir, "out");
        var (code, stdout, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", Tiny(), "--output", output, "--min-history", "2");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Is.Empty);
        // User 1: 7 events -> 5 samples with history >= 2; user 2: 4 events -> 2. N = 7: train int(5.6) = 5, valid int(0.7) = 0, test 2.
        Assert.That(stderr, Does.Contain("11 ratings, 2 users, 3 items (0 lines skipped); 7 samples: train 5, valid 0, test 2 (min history 2)"));
        Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1), "not a terminal: one summary line");
        Assert.That(PreparedDataset.Load(output).Samples, Has.Count.EqualTo(7));

        (code, stdout, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", Tiny(), "--output", output, "--limit", "3", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetProperty("samples").GetProperty("total").GetInt32(), Is.EqualTo(2), "default min history 5: user 1's events 5 and 6; limit 3 keeps both");
        Assert.That(PreparedDataset.Load(output).Samples, Has.Count.EqualTo(2), "the earlier output was replaced");
    }

    [Test]
    public void HelpShowsExamples()
    {
        var (code, stdout, _) = Run("prepare", "--help");
        Assert.That(code, Is.EqualTo(0));
        Assert.That(stdout, Does.Contain("Examples:").And.Contain("rellax prepare --dataset movielens-100k").And.Contain("--skip-bad-lines").And.Contain("samples.jsonl"));
    }

    [Test]
    public void UnknownDatasetIsOneLineAndExitCode1()
    {
        string output = Path.Combine(_dir, "out");
        var (code, stdout, stderr) = Run("prepare", "--dataset", "netflix", "--data", Tiny(), "--output", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd(), Is.EqualTo("rellax: --dataset: unknown dataset 'netflix'; expected one of movielens-100k, movielens-1m, movielens-25m, bookcrossing, goodreads"));
        Assert.That(Directory.Exists(output), Is.False);
    }

    [Test]
    public void MissingDataFolderIsOneLineAndExitCode1()
    {
        string output = Path.Combine(_dir, "out");
        string missing = Path.Combine(_dir, "no-such-data");
        var (code, _, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", missing, "--output", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr.TrimEnd(), Does.StartWith("rellax: ").And.Contain(missing).And.Not.Contain("\n"));
        Assert.That(Directory.Exists(output), Is.False);

        // A missing file inside the folder is named too.
        string dir = Tiny();
        File.Delete(Path.Combine(dir, "u.user"));
        (code, _, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", dir, "--output", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr.TrimEnd(), Does.StartWith("rellax: ").And.Contain("u.user"));
        Assert.That(Directory.Exists(output), Is.False);
    }

    [Test]
    public void AMalformedFileFailsWithItsLineAndWritesNothing()
    {
        string output = Path.Combine(_dir, "out");
        string data = Tiny(badLine: "1\t2\tfive\t1002");
        var (code, stdout, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", data, "--output", output, "--json");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd(), Is.EqualTo($"rellax: {Path.Combine(data, "u.data")}:3: rating 'five' is not a whole number from 1 to 5"));
        Assert.That(Directory.Exists(output), Is.False);
        Assert.That(Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName), Is.EqualTo(new[] { "tiny" }), "no temporary folder either");

        // With --skip-bad-lines the line is skipped, shown and counted: user 1 keeps 6 events (1 sample).
        (code, stdout, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", data, "--output", output, "--json", "--skip-bad-lines");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stderr, Does.Contain($"rellax: skipped {Path.Combine(data, "u.data")}:3: rating 'five'"));
        using var doc = JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetProperty("skipped_lines").GetInt32(), Is.EqualTo(1));
        Assert.That(doc.RootElement.GetProperty("ratings").GetInt32(), Is.EqualTo(10));
        Assert.That(doc.RootElement.GetProperty("samples").GetProperty("total").GetInt32(), Is.EqualTo(1));
        Assert.That(PreparedDataset.Load(output).Dataset.SkippedLines, Is.EqualTo(1));
    }

    [Test]
    public void RefusesToReplaceAFolderThatIsNotAPreparedDataset()
    {
        string output = Path.Combine(_dir, "mine");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "important");
        var (code, _, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", Tiny(), "--output", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr.TrimEnd(), Does.StartWith("rellax: output folder").And.Contain("not a prepared dataset"));
        Assert.That(Directory.GetFiles(output).Select(Path.GetFileName), Is.EqualTo(new[] { "keep.txt" }));

        (code, _, stderr) = Run("prepare", "--dataset", "movielens-100k", "--data", Tiny(), "--output", output, "--min-history", "-1");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("--min-history must be >= 0"));
    }
}
