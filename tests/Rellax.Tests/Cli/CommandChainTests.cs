using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Rec;

namespace Rellax.Tests.Cli;

/// <summary>
/// The commands chain with no glue code: prepare → embed → index → retrieve --data → export --format score --retrieved →
/// score, on a small MovieLens-style folder written here. Then every command that runs long enough to matter is
/// interrupted (SIGINT or SIGTERM) at the moment its output is complete but not yet renamed into place (the
/// <c>RELLAX_TEST_HOLD</c> hook): it must exit with 130 after one line, <c>rellax: cancelled</c>, leave no temporary file or
/// folder, and leave every file that existed before byte for byte as it was.
/// </summary>
[TestFixture]
public sealed partial class CommandChainTests
{
    private string _dir = null!;
    private string _raw = null!, _prepared = null!, _vectors = null!, _index = null!, _retrieved = null!, _requests = null!, _scores = null!;
    private const int Users = 8, Items = 30, RatingsPerUser = 10, K = 3;

    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    private static void Ok((int Code, string Out, string Err) r, string step)
    {
        Assert.That(r.Code, Is.EqualTo(0), $"{step}: {r.Err}");
        TestContext.Out.WriteLine($"{step}: {r.Err.Trim()}");
    }

    /// <summary>A MovieLens-100K-style folder: <see cref="Items"/> movies in 5 genres, <see cref="Users"/> users with
    /// <see cref="RatingsPerUser"/> time-stamped ratings each.</summary>
    private static void WriteRaw(string dir)
    {
        Directory.CreateDirectory(dir);
        string[] names = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliet"];
        File.WriteAllLines(Path.Combine(dir, "u.item"), Enumerable.Range(1, Items).Select(i =>
        {
            var flags = Enumerable.Repeat("0", 19).ToArray();
            flags[1 + i % 5] = "1";
            return $"{i}|{names[i % names.Length]} {i} ({1990 + i % 10})|01-Jan-1995||http://x|{string.Join('|', flags)}";
        }));
        File.WriteAllLines(Path.Combine(dir, "u.user"), Enumerable.Range(1, Users).Select(u => $"{u}|{20 + u}|{(u % 2 == 0 ? "M" : "F")}|other|1000{u}"));
        var rng = new Random(5);
        File.WriteAllLines(Path.Combine(dir, "u.data"), Enumerable.Range(1, Users).SelectMany(u =>
            Enumerable.Range(0, RatingsPerUser).Select(j => $"{u}\t{rng.Next(1, Items + 1)}\t{rng.Next(1, 6)}\t{100_000 + 1000 * u + j}")));
    }

    [OneTimeSetUp]
    public void RunTheChain()
    {
        Model.ModelPaths.Stories260KOrIgnore();
        _dir = Directory.CreateTempSubdirectory("rellax-chain-").FullName;
        _raw = Path.Combine(_dir, "ml-raw");
        WriteRaw(_raw);
        _prepared = Path.Combine(_dir, "prepared");
        _vectors = Path.Combine(_dir, "vectors.safetensors");
        _index = Path.Combine(_dir, "index.safetensors");
        _retrieved = Path.Combine(_dir, "retrieved.jsonl");
        _requests = Path.Combine(_dir, "requests.jsonl");
        _scores = Path.Combine(_dir, "scores.jsonl");
        Ok(Run("prepare", "--dataset", "movielens-100k", "--data", _raw, "--output", _prepared, "--min-history", "2"), "prepare");
        Ok(Run("embed", "--items", Path.Combine(_prepared, "items.jsonl"), "--output", _vectors, "--backend", "cpu"), "embed");
        Ok(Run("index", "--item-vectors", _vectors, "--output", _index, "--backend", "cpu"), "index");
        Ok(Run("retrieve", "--index", _index, "--data", _prepared, "--split", "test", "--k", $"{K}", "--output", _retrieved, "--backend", "cpu"), "retrieve");
        Ok(Run("export", "--data", _prepared, "--prompts", "subr", "--retrieved", _retrieved, "--split", "test", "--k", $"{K}",
            "--format", "score", "--output", _requests), "export");
        Ok(Run("score", "--input", _requests, "--output", _scores, "--backend", "cpu"), "score");
    }

    [OneTimeTearDown] public void Clean() { if (_dir is not null) Directory.Delete(_dir, recursive: true); }

    private static List<JsonElement> Lines(string path) => [.. File.ReadAllLines(path).Select(l => JsonDocument.Parse(l).RootElement.Clone())];

    [Test]
    public void RetrieveOverThePreparedSplitMatchesTheLibrarysRetrieval()
    {
        var set = PreparedDataset.Load(_prepared);
        var test = set.InSplit(SampleSplit.Test).ToList();
        Assert.That(test, Is.Not.Empty);
        var lines = Lines(_retrieved);
        Assert.That(lines.Select(l => l.GetProperty("id").GetInt32()), Is.EqualTo(test.Select(s => s.Index)));
        using var backend = Backends.Create("cpu", 1);
        using var index = SubrIndex.Load(_index, backend);
        // The library's path over samples (row queries straight from the timelines), a different code path from the CLI's.
        var expected = SampleRetrieval.Subr(index, set, test, K);
        for (int i = 0; i < test.Count; i++)
        {
            var positions = lines[i].GetProperty("positions").EnumerateArray().Select(p => p.GetInt32()).ToArray();
            Assert.That(positions, Is.EqualTo(expected[i]), $"sample {test[i].Index}");
            var history = set.History(test[i]).ToArray();
            Assert.That(lines[i].GetProperty("retrieved").EnumerateArray().Select(e => e.GetInt64()),
                Is.EqualTo(positions.Select(p => (long)history[p].Item)), "retrieved item ids are the history items at those positions");
        }
    }

    [Test]
    public void ExportWritesWhatScoreReadsAndScoreScoresEveryLine()
    {
        var set = PreparedDataset.Load(_prepared);
        var test = set.InSplit(SampleSplit.Test).ToList();
        var requests = Lines(_requests);
        Assert.That(requests.Select(r => r.GetProperty("id").GetInt32()), Is.EqualTo(test.Select(s => s.Index)));
        Assert.That(requests.Select(r => r.GetProperty("label").GetInt32()), Is.EqualTo(test.Select(s => s.Label ? 1 : 0)));
        // The prompt lists exactly the retrieved items' titles, in the retrieved order.
        var retrieved = Lines(_retrieved);
        for (int i = 0; i < test.Count; i++)
        {
            string prompt = requests[i].GetProperty("prompt").GetString()!;
            int at = 0;
            foreach (var item in retrieved[i].GetProperty("retrieved").EnumerateArray())
            {
                string title = set.Dataset.Items[(int)item.GetInt64()].Title;
                int found = prompt.IndexOf(title, at, StringComparison.Ordinal);
                Assert.That(found, Is.GreaterThanOrEqualTo(0), $"'{title}' in order in: {prompt}");
                at = found + title.Length;
            }
        }
        var scores = Lines(_scores);
        Assert.That(scores.Select(s => s.GetProperty("id").GetInt32()), Is.EqualTo(test.Select(s => s.Index)));
        Assert.That(scores.Select(s => s.GetProperty("p_yes").GetDouble()), Has.All.InRange(0.0, 1.0));
    }

    [Test]
    public void ExportFromRetrievedEqualsExportFromTheSameItemVectors()
    {
        // The index has no PCA and cosine similarity; export's own SUBR with the same vectors, no PCA, must pick the same items.
        string own = Path.Combine(_dir, "requests-own.jsonl");
        var r = Run("export", "--data", _prepared, "--prompts", "subr", "--item-vectors", _vectors, "--pca", "0", "--split", "test", "--k", $"{K}",
            "--format", "score", "--output", own, "--cache", Path.Combine(_dir, "export-cache"), "--backend", "cpu");
        Ok(r, "export --item-vectors");
        Assert.That(File.ReadAllBytes(own), Is.EqualTo(File.ReadAllBytes(_requests)));
        File.Delete(own);
        Directory.Delete(Path.Combine(_dir, "export-cache"), recursive: true);
    }

    [Test]
    public void ExportRefusesRetrievedResultsThatDoNotFit()
    {
        string bad = Path.Combine(_dir, "bad-retrieved.jsonl");
        var first = Lines(_retrieved)[0];
        int id = first.GetProperty("id").GetInt32();
        File.WriteAllText(bad, $"{{\"id\": {id}, \"positions\": [9999]}}\n");
        string output = Path.Combine(_dir, "never.jsonl");
        var (code, _, err) = Run("export", "--data", _prepared, "--prompts", "subr", "--retrieved", bad, "--split", "test", "--k", $"{K}", "--format", "score", "--output", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err.TrimEnd(), Is.EqualTo($"rellax: {bad}:1: sample {id}: position 9999 is outside its history of {PreparedDataset.Load(_prepared).Samples[id].HistoryLength} events"));
        Assert.That(File.Exists(output), Is.False);
        File.Delete(bad);
    }

    // ---- Requests that cannot be honoured as given: an error or a warning, never silence ----

    [Test]
    public void AnExplicitPcaTooLargeIsRefusedTheSameWayEverywhere()
    {
        // 30 items of 64-dimensional vectors (stories260K's hidden size).
        string output = Path.Combine(_dir, "never.safetensors");
        var (code, _, err) = Run("index", "--item-vectors", _vectors, "--pca", "40", "--output", output, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err.TrimEnd(), Is.EqualTo($"rellax: --pca 40 must be at most min(items, dimension) = min({Items}, 64) = {Items}"));
        (code, _, err) = Run("embed", "--items", Path.Combine(_prepared, "items.jsonl"), "--pca", "40", "--output", output, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err.TrimEnd(), Is.EqualTo($"rellax: --pca 40 must be at most min(items, hidden size) = min({Items}, 64) = {Items}"));
        (code, _, err) = Run("eval", "--data", _prepared, "--pca", "40", "--k", "2", "--no-cache", "--backend", "cpu");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err.TrimEnd(), Is.EqualTo($"rellax: --pca 40 must be at most min(items, hidden size) = min({Items}, 64) = {Items}"));
        (code, _, err) = Run("export", "--data", _prepared, "--prompts", "subr", "--pca", "40", "--k", "2", "--output", output, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err.TrimEnd(), Is.EqualTo($"rellax: --pca 40 must be at most min(items, hidden size) = min({Items}, 64) = {Items}"));
        Assert.That(File.Exists(output), Is.False);

        // The default (SPEC: 512) is capped, and says so.
        (code, var stdout, err) = Run("eval", "--data", _prepared, "--k", "2", "--limit", "3", "--no-cache", "--backend", "cpu", "--json");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(err, Does.Contain($"rellax: warning: PCA to 512 components is more than min(vectors, dimension) = min({Items}, 64) = {Items}; using {Items}"));
        Assert.That(JsonDocument.Parse(stdout).RootElement.GetProperty("pca_explained_variance").GetDouble(), Is.EqualTo(1.0).Within(1e-4),
            "30 components of 30 vectors keep all the variance");
    }

    [Test]
    public void PrepareWarnsWhenLimitLeavesASplitEmpty()
    {
        string output = Path.Combine(_dir, "prepared-limited");
        var (code, _, err) = Run("prepare", "--dataset", "movielens-100k", "--data", _raw, "--output", output, "--min-history", "2", "--limit", "3");
        Assert.That(code, Is.EqualTo(0), err);
        // --limit keeps the first 3 samples in global order, after the split: all of them train.
        Assert.That(err, Does.Contain("rellax: warning: --limit 3 leaves the valid and test splits empty (3 samples: train 3, valid 0, test 0); a larger --limit fills every split"));
        (code, _, err) = Run("prepare", "--dataset", "movielens-100k", "--data", _raw, "--output", output, "--min-history", "2", "--limit", "60");
        Assert.That(code, Is.EqualTo(0), err);
        // 64 samples split 51 / 6 / 7: the first 60 reach the test split.
        Assert.That(err, Does.Not.Contain("warning"));
        Directory.Delete(output, recursive: true);
    }

    [Test]
    public void DemoFastHonoursAnExplicitUserCountAndLimit()
    {
        var (code, stdout, err) = Run("demo", "--fast", "--users", "20", "--limit", "12", "--steps", "2", "--arms", "lora-subr", "--json", "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), err);
        var root = JsonDocument.Parse(stdout).RootElement;
        Assert.That(root.GetProperty("users").GetInt32(), Is.EqualTo(20), "--users given: honoured, not replaced by --fast's 32");
        Assert.That(root.GetProperty("test_scored").GetInt32(), Is.EqualTo(12));
        Assert.That(root.GetProperty("steps").GetInt32(), Is.EqualTo(2));
        Assert.That(root.GetProperty("arms").EnumerateArray().Select(a => a.GetProperty("arm").GetString()), Is.EqualTo(new[] { "din", "zero-shot", "lora-subr" }));
    }

    [Test]
    public void ATooLongPromptIsReportedBeforeAnyEmbeddingWithAKThatFits()
    {
        string data = TestData.RequireShared("movielens/ml-100k");
        string prepared = Path.Combine(_dir, "ml100k");
        Ok(Run("prepare", "--dataset", "movielens-100k", "--data", data, "--output", prepared), "prepare ml-100k");
        var clock = Stopwatch.StartNew();
        var (code, stdout, err) = Run("eval", "--data", prepared, "--limit", "200", "--backend", "cpu");
        Assert.That(code, Is.EqualTo(1), err);
        Assert.That(stdout, Is.Empty);
        string line = err.TrimEnd();
        Assert.That(line.Split('\n'), Has.Length.EqualTo(1), err);
        Assert.That(line, Does.Match(@"^rellax: sample \d+: with its 30 longest history items \(SUBR may list any 30\), the prompt is (at least )?\d+ tokens long, more than the model's max_position_embeddings = 512( \(tokenization stopped there\))? " +
            @"\(K = 30 history items per prompt; K = \d+ fits this sample; --template none drops the vicuna template's \d+ tokens\)$"));
        Assert.That(Directory.Exists(Path.Combine(prepared, "cache")) && Directory.EnumerateFiles(Path.Combine(prepared, "cache")).Any(), Is.False,
            "no item vectors were computed (or cached) before the check");
        TestContext.Out.WriteLine($"failed in {clock.Elapsed.TotalSeconds:F1} s: {line}");
        Directory.Delete(prepared, recursive: true);
    }

    // ---- Cancellation ----

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    private const int SigInt = 2, SigTerm = 15;

    /// <summary>Every file under the work folder with its bytes' hash, and every folder (hidden ones too).</summary>
    private Dictionary<string, string> Snapshot()
    {
        var all = new Dictionary<string, string>();
        foreach (var d in Directory.EnumerateDirectories(_dir, "*", SearchOption.AllDirectories)) all[d] = "dir";
        foreach (var f in Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories))
            all[f] = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)));
        return all;
    }

    /// <summary>Starts rellax with the hold hook at <paramref name="point"/>, waits until it holds, sends
    /// <paramref name="signal"/>, and returns its exit code and stderr.</summary>
    private static (int Code, string Err) RunAndInterrupt(int signal, string point, params string[] args)
    {
        if (IgnoredHere(signal))
            Assert.Ignore($"signal {signal} is ignored in this test process (e.g. started in the background by a shell without job " +
                "control), so the child inherits that and cannot be interrupted with it; run the tests in the foreground");
        string dll = Path.Combine(TestContext.CurrentContext.TestDirectory, "rellax.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["RELLAX_TEST_HOLD"] = point;
        using var p = new Process { StartInfo = psi };
        var err = new System.Text.StringBuilder();
        using var holding = new ManualResetEventSlim();
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (err) err.AppendLine(e.Data);
            if (e.Data.StartsWith("rellax: test: holding at", StringComparison.Ordinal)) holding.Set();
        };
        p.OutputDataReceived += (_, _) => { };
        p.Start();
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        if (!holding.Wait(TimeSpan.FromMinutes(3)))
        {
            try { p.Kill(true); } catch (InvalidOperationException) { }
            p.WaitForExit();
            Assert.Fail($"rellax {string.Join(' ', args)} never reached '{point}' (exit {p.ExitCode}): {err}");
        }
        Assert.That(Kill(p.Id, signal), Is.EqualTo(0));
        if (!p.WaitForExit(TimeSpan.FromMinutes(1))) { p.Kill(true); Assert.Fail($"rellax did not exit after signal {signal}"); }
        p.WaitForExit();
        lock (err) return (p.ExitCode, err.ToString());
    }

    /// <summary>Whether <paramref name="signal"/> is ignored in this process (Linux: <c>SigIgn</c> of /proc/self/status); a
    /// child started from here inherits an ignored disposition, and .NET does not install its handler over it.</summary>
    private static bool IgnoredHere(int signal)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return false;
        foreach (var line in File.ReadLines(status))
            if (line.StartsWith("SigIgn:", StringComparison.Ordinal))
                return (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) >> (signal - 1) & 1) != 0;
        return false;
    }

    private void AssertCancelledCleanly(int signal, string point, params string[] args)
    {
        var before = Snapshot();
        var (code, err) = RunAndInterrupt(signal, point, args);
        Assert.That(code, Is.EqualTo(130), err);
        var lines = err.TrimEnd().Split('\n').Select(l => l.TrimEnd('\r')).Where(l => !l.StartsWith("rellax: test:", StringComparison.Ordinal)).ToList();
        Assert.That(lines, Has.Count.EqualTo(1), err);
        Assert.That(lines[0], Is.EqualTo("rellax: cancelled"));
        var after = Snapshot();
        Assert.That(after.Keys.Where(k => Path.GetFileName(k).Contains(".tmp-") || Path.GetFileName(k).Contains(".old-")), Is.Empty, "no temporary file or folder");
        Assert.That(after.Keys.Except(before.Keys), Is.Empty, "nothing new");
        Assert.That(before.Keys.Except(after.Keys), Is.Empty, "nothing removed");
        foreach (var (path, hash) in before) Assert.That(after[path], Is.EqualTo(hash), $"{path} unchanged");
    }

    [TestCase(SigInt)]
    [TestCase(SigTerm)]
    public void PrepareIntoANewFolder(int signal) =>
        AssertCancelledCleanly(signal, "output", "prepare", "--dataset", "movielens-100k", "--data", _raw, "--output", Path.Combine(_dir, "prepared-new"), "--min-history", "2");

    [Test]
    public void PrepareOverAnEarlierPreparedFolder() =>
        AssertCancelledCleanly(SigTerm, "output", "prepare", "--dataset", "movielens-100k", "--data", _raw, "--output", _prepared, "--min-history", "3");

    [Test]
    public void EmbedOverAnExistingFile() =>
        AssertCancelledCleanly(SigInt, "output", "embed", "--items", Path.Combine(_prepared, "items.jsonl"), "--output", _vectors, "--pca", "4", "--backend", "cpu");

    [Test]
    public void IndexIntoANewFile() =>
        AssertCancelledCleanly(SigTerm, "output", "index", "--item-vectors", _vectors, "--output", Path.Combine(_dir, "index-new.safetensors"), "--storage", "i8", "--backend", "cpu");

    [Test]
    public void RetrieveOverAnExistingFile() =>
        AssertCancelledCleanly(SigInt, "output", "retrieve", "--index", _index, "--data", _prepared, "--k", "2", "--output", _retrieved, "--backend", "cpu");

    [Test]
    public void ExportOverAnExistingFile() =>
        AssertCancelledCleanly(SigTerm, "output", "export", "--data", _prepared, "--prompts", "recent", "--split", "test", "--k", "2", "--format", "score", "--output", _requests);

    [Test]
    public void ScoreOverAnExistingFile() =>
        AssertCancelledCleanly(SigInt, "output", "score", "--input", _requests, "--output", _scores, "--backend", "cpu");

    [Test]
    public void EvalWithScores() =>
        AssertCancelledCleanly(SigTerm, "output", "eval", "--data", _prepared, "--retrieval", "recent", "--k", "2", "--no-cache", "--scores", Path.Combine(_dir, "eval-scores.jsonl"), "--backend", "cpu");

    [Test]
    public void CrmTrainIntoANewFolder() =>
        AssertCancelledCleanly(SigInt, "output", "crm", "train", "--data", _prepared, "--output", Path.Combine(_dir, "din-new"), "--epochs", "1", "--threads", "1");

    [Test]
    public void CrmScoreOverAnExistingFile()
    {
        string din = Path.Combine(_dir, "din-for-score");
        if (!Directory.Exists(din))
            Assert.That(RellaxCommandTests.Run("crm", "train", "--data", _prepared, "--output", din, "--epochs", "1", "--threads", "1").Code, Is.EqualTo(0));
        string scores = Path.Combine(_dir, "crm-scores.jsonl");
        if (!File.Exists(scores)) File.WriteAllText(scores, "earlier\n");
        AssertCancelledCleanly(SigTerm, "output", "crm", "score", "--din", din, "--data", _prepared, "--output", scores);
    }

    [Test]
    public void DemoIntoANewFolder() =>
        AssertCancelledCleanly(SigInt, "output", "demo", "--fast", "--output", Path.Combine(_dir, "demo-new"), "--backend", "cpu");

    [Test]
    public void GenerateStopsBetweenTokens() =>
        AssertCancelledCleanly(SigTerm, "generate", "generate", "--max-new-tokens", "200", "--backend", "cpu");
}
