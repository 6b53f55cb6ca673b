using System.Text.Json;
using NUnit.Framework;
using Rellax.Cli;
using Rellax.Rec;

namespace Rellax.Tests.Cli;

/// <summary>
/// <c>rellax crm train</c> and <c>rellax crm score</c> as a user runs them, on a small synthetic prepared dataset: the
/// happy path (files written, --json, score reads the training's K and reproduces its test metrics), and the bad inputs of
/// issue 16 item 6, each one line on stderr, a non-zero exit and no output folder (or the old one untouched).
/// </summary>
[TestFixture]
public sealed class CrmCommandTests
{
    private string _dir = null!;
    private string _data = null!;

    [OneTimeSetUp]
    public void Prepare()
    {
        _dir = Directory.CreateTempSubdirectory("rellax-crm-").FullName;
        _data = Path.Combine(_dir, "data");
        PreparedDataset.Save(ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 30, Seed = 2 })), _data);
    }

    [OneTimeTearDown] public void Clean() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    private static void AssertOneLineError((int Code, string Out, string Err) r, string contains)
    {
        Assert.That(r.Code, Is.Not.EqualTo(0), r.Err);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), r.Err);
        Assert.That(lines[0], Does.Contain(contains));
        Assert.That(r.Err, Does.Not.Contain("   at "), "no stack trace");
    }

    /// <summary>No leftover temporary folders next to the output.</summary>
    private void AssertNoTemporaries() =>
        Assert.That(Directory.GetDirectories(_dir).Where(d => d.Contains(".tmp-")), Is.Empty);

    [Test]
    public void TrainsWritesTheModelAndScoresIt()
    {
        string output = Path.Combine(_dir, "din");
        var r = Run("crm", "train", "--data", _data, "--output", output, "--epochs", "2", "--k", "12", "--embed-dim", "8", "--batch-size", "32", "--json");
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var test = doc.RootElement.GetProperty("test");
        foreach (string file in new[] { DinModel.ConfigFile, DinModel.WeightsFile, DinTraining.LogFile, DinTraining.SummaryFile })
            Assert.That(File.Exists(Path.Combine(output, file)), Is.True, file);
        AssertNoTemporaries();

        string scores = Path.Combine(_dir, "scores.jsonl");
        var s = Run("crm", "score", "--din", output, "--data", _data, "--output", scores, "--json");
        Assert.That(s.Code, Is.EqualTo(0), s.Err);
        using var sdoc = JsonDocument.Parse(s.Out);
        Assert.That(sdoc.RootElement.GetProperty("k").GetInt32(), Is.EqualTo(12), "K from training.json");
        var metrics = sdoc.RootElement.GetProperty("metrics");
        Assert.That(metrics.GetProperty("auc").GetDouble(), Is.EqualTo(test.GetProperty("auc").GetDouble()));
        Assert.That(metrics.GetProperty("logloss").GetDouble(), Is.EqualTo(test.GetProperty("logloss").GetDouble()));
        var lines = File.ReadAllLines(scores);
        Assert.That(lines, Has.Length.EqualTo(test.GetProperty("count").GetInt32()));
        using var first = JsonDocument.Parse(lines[0]);
        Assert.That(first.RootElement.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "id", "label", "p_click" }));
        double p = first.RootElement.GetProperty("p_click").GetDouble();
        Assert.That(p, Is.InRange(0.0, 1.0));

        // An existing output folder is refused, and left as it was; --overwrite replaces it.
        var before = File.ReadAllBytes(Path.Combine(output, DinModel.WeightsFile));
        AssertOneLineError(Run("crm", "train", "--data", _data, "--output", output, "--epochs", "1"), "already exists (pass --overwrite");
        Assert.That(File.ReadAllBytes(Path.Combine(output, DinModel.WeightsFile)), Is.EqualTo(before));
        var o = Run("crm", "train", "--data", _data, "--output", output, "--epochs", "1", "--seed", "5", "--overwrite");
        Assert.That(o.Code, Is.EqualTo(0), o.Err);
        Assert.That(File.ReadAllBytes(Path.Combine(output, DinModel.WeightsFile)), Is.Not.EqualTo(before));
        AssertNoTemporaries();
    }

    [Test]
    public void DropFieldsWritesAConfigWithoutThemAndNoTestHidesTheTestSplit()
    {
        string output = Path.Combine(_dir, "din-drop");
        var r = Run("crm", "train", "--data", _data, "--output", output, "--epochs", "1", "--k", "8", "--embed-dim", "4",
            "--drop-fields", "user,job", "--no-test", "--json");
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        Assert.That(doc.RootElement.GetProperty("test").ValueKind, Is.EqualTo(JsonValueKind.Null), "--no-test: no test metrics");
        Assert.That(doc.RootElement.GetProperty("valid").GetProperty("auc").ValueKind, Is.EqualTo(JsonValueKind.Number));
        var config = DinConfig.Load(Path.Combine(output, DinModel.ConfigFile));
        Assert.That(config.Fields.Select(f => f.Name), Does.Not.Contain("user").And.Not.Contain("job").And.Contain("item"));
        using (var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, DinTraining.SummaryFile))))
        {
            Assert.That(summary.RootElement.GetProperty("test").ValueKind, Is.EqualTo(JsonValueKind.Null));
            Assert.That(summary.RootElement.GetProperty("test_evaluated").GetBoolean(), Is.False);
        }

        // The folder is used as it is: crm score and eval read it.
        var s = Run("crm", "score", "--din", output, "--data", _data, "--split", "valid", "--output", Path.Combine(_dir, "drop.jsonl"), "--json");
        Assert.That(s.Code, Is.EqualTo(0), s.Err);
        using var sdoc = JsonDocument.Parse(s.Out);
        Assert.That(sdoc.RootElement.GetProperty("metrics").GetProperty("auc").GetDouble(),
            Is.EqualTo(doc.RootElement.GetProperty("valid").GetProperty("auc").GetDouble()), "the scored valid AUC is the trained one");

        // Without --no-test the text output has a test line; with it, none.
        var t = Run("crm", "train", "--data", _data, "--output", Path.Combine(_dir, "din-notest"), "--epochs", "1", "--embed-dim", "4", "--no-test");
        Assert.That(t.Code, Is.EqualTo(0), t.Err);
        Assert.That(t.Out, Does.Contain("valid: AUC").And.Not.Contain("test:"));
    }

    [Test]
    public void LrDecayLowersTheLearningRateLinearly()
    {
        string output = Path.Combine(_dir, "din-decay");
        var r = Run("crm", "train", "--data", _data, "--output", output, "--epochs", "2", "--embed-dim", "4", "--batch-size", "4", "--lr-decay", "--no-test");
        Assert.That(r.Code, Is.EqualTo(0), r.Err);
        using (var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, DinTraining.SummaryFile))))
            Assert.That(summary.RootElement.GetProperty("lr_decay").GetBoolean(), Is.True);
        var lrs = File.ReadLines(Path.Combine(output, DinTraining.LogFile))
            .Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.TryGetProperty("lr", out _))
            .Select(e => (Step: e.GetProperty("step").GetInt32(), Lr: e.GetProperty("lr").GetDouble())).ToArray();
        Assert.That(lrs, Has.Length.GreaterThanOrEqualTo(2), "the log has step lines");
        for (int i = 1; i < lrs.Length; i++) Assert.That(lrs[i].Lr, Is.LessThan(lrs[i - 1].Lr), $"step {lrs[i].Step}");
        Assert.That(lrs[0].Lr, Is.LessThan(1e-3).And.GreaterThan(0));
        // Linear to 0 over all T steps: step g (1-based) runs at lr (T - (g - 1)) / T; T is the last epoch line's step.
        int total = File.ReadLines(Path.Combine(output, DinTraining.LogFile)).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.TryGetProperty("valid_auc", out _)).Last().GetProperty("step").GetInt32();
        foreach (var (step, rate) in lrs) Assert.That(rate, Is.EqualTo(1e-3 * (total - (step - 1)) / total).Within(1e-9), $"step {step} of {total}");
    }

    [TestCase("--lr-decay")]
    [TestCase("--no-test")]
    public void RefusesAValueForAFlag(string flag)
    {
        string output = Path.Combine(_dir, "out-flag");
        AssertOneLineError(Run("crm", "train", "--data", _data, "--output", output, flag, "sometimes"), "sometimes");
        Assert.That(Directory.Exists(output), Is.False);
        AssertNoTemporaries();
    }

    [TestCase("item", "--drop-fields: the 'item' field cannot be dropped")]
    [TestCase("user,zip", "--drop-fields: 'zip' is not a DIN field")]
    [TestCase("location", "cannot drop field 'location': it is not a field of dataset")]
    public void RefusesBadDropFields(string value, string message)
    {
        string output = Path.Combine(_dir, "out-drop");
        var r = Run("crm", "train", "--data", _data, "--output", output, "--drop-fields", value);
        Assert.That(r.Code, Is.Not.EqualTo(0));
        Assert.That(r.Err + r.Out, Does.Contain(message));
        Assert.That(r.Err, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(Directory.Exists(output), Is.False);
        AssertNoTemporaries();
    }

    [Test]
    public void RefusesAFolderThatIsNotAPreparedDataset()
    {
        string notPrepared = Path.Combine(_dir, "empty-folder");
        Directory.CreateDirectory(notPrepared);
        string output = Path.Combine(_dir, "out-notprepared");
        AssertOneLineError(Run("crm", "train", "--data", notPrepared, "--output", output), notPrepared);
        Assert.That(Directory.Exists(output), Is.False);
        AssertNoTemporaries();
    }

    [TestCase("0")]
    [TestCase("-1")]
    [TestCase("NaN")]
    public void RefusesABadLearningRate(string lr)
    {
        string output = Path.Combine(_dir, "out-lr");
        var r = Run("crm", "train", "--data", _data, "--output", output, "--lr", lr);
        Assert.That(r.Code, Is.Not.EqualTo(0));
        Assert.That(r.Err.TrimEnd().Split('\n'), Has.Length.EqualTo(1), r.Err);
        Assert.That(r.Err, lr == "NaN" ? Does.Contain("--lr: 'NaN' is not a finite number") : Does.Contain($"--lr must be > 0, got {lr}"));
        Assert.That(Directory.Exists(output), Is.False);
    }

    [TestCase("--dropout", "1", "--dropout must be >= 0 and <= 0.95, got 1")]
    [TestCase("--embed-init-std", "0", "--embed-init-std must be > 0 and <= 100, got 0")]
    [TestCase("--weight-decay", "-0.1", "--weight-decay must be >= 0 and <= 100, got -0.1")]
    [TestCase("--k", "0", "--k must be >= 1, got 0")]
    [TestCase("--batch-size", "0", "--batch-size must be >= 1, got 0")]
    public void RefusesOptionsOutOfRange(string option, string value, string message)
    {
        string output = Path.Combine(_dir, "out-range");
        var r = Run("crm", "train", "--data", _data, "--output", output, option, value);
        Assert.That(r.Code, Is.Not.EqualTo(0));
        Assert.That(r.Err + r.Out, Does.Contain(message));
        Assert.That(Directory.Exists(output), Is.False);
    }

    /// <summary>A prepared dataset with the samples <paramref name="edit"/> keeps or changes (re-indexed).</summary>
    private string Variant(string name, Func<IEnumerable<ReLLaSample>, IEnumerable<ReLLaSample>> edit)
    {
        var set = PreparedDataset.Load(_data);
        int users = set.Dataset.UserKeys.Count;
        var starts = new int[users + 1];
        var timelines = new List<Rating>();
        for (int u = 0; u < users; u++) { timelines.AddRange(set.Timeline(u).ToArray()); starts[u + 1] = timelines.Count; }
        var edited = new SampleSet(set.Dataset, set.Options, [.. timelines], starts, [.. edit(set.Samples).Select((x, i) => x with { Index = i })]);
        string dir = Path.Combine(_dir, name);
        if (!Directory.Exists(dir)) PreparedDataset.Save(edited, dir);
        return dir;
    }

    [Test]
    public void RefusesAnEmptyTrainSplit()
    {
        string data = Variant("all-test", all => all.Select(s => s with { Split = SampleSplit.Test }));
        string output = Path.Combine(_dir, "out-empty");
        AssertOneLineError(Run("crm", "train", "--data", data, "--output", output), "the train split is empty");
        Assert.That(Directory.Exists(output), Is.False);
        AssertNoTemporaries();
    }

    [Test]
    public void RefusesAOneClassTrainSplitAndSaysAucIsUndefinedWhenScoringOne()
    {
        string data = Variant("all-negative", all => all.Where(s => !s.Label));
        string output = Path.Combine(_dir, "out-oneclass");
        AssertOneLineError(Run("crm", "train", "--data", data, "--output", output), "are all negative: a click model needs both classes");
        Assert.That(Directory.Exists(output), Is.False);

        // Scoring a one-class split works and says the AUC is undefined.
        string din = Path.Combine(_dir, "din-for-oneclass");
        Assert.That(Run("crm", "train", "--data", _data, "--output", din, "--epochs", "1").Code, Is.EqualTo(0));
        var s = Run("crm", "score", "--din", din, "--data", data, "--output", Path.Combine(_dir, "oneclass.jsonl"));
        Assert.That(s.Code, Is.EqualTo(0), s.Err);
        Assert.That(s.Out, Does.Contain("AUC undefined (one class)"));
    }

    [Test]
    public void StopsOnANonFiniteLossNamingEpochAndStep()
    {
        string output = Path.Combine(_dir, "out-nan");
        // lr 1e30: the first AdamW step moves every weight by ~1e30, and the next forward overflows.
        var r = Run("crm", "train", "--data", _data, "--output", output, "--lr", "1e30", "--batch-size", "16");
        AssertOneLineError(r, "the training loss became NaN or infinite at epoch 1, step 2");
        Assert.That(r.Err, Does.Contain("nothing was written"));
        Assert.That(Directory.Exists(output), Is.False);
        AssertNoTemporaries();
    }

    [Test]
    public void ProgressBarShowsTheRunningLoss()
    {
        using var progress = new TerminalProgress(new StringWriter(), interactive: true, "epoch 1", 10) { Status = "loss 0.6931" };
        Assert.That(progress.Render(5, TimeSpan.FromSeconds(1)), Does.StartWith("epoch 1 [").And.EndWith("  loss 0.6931"));
    }
}
