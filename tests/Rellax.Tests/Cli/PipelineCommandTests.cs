using System.Text.Json;
using NUnit.Framework;

namespace Rellax.Tests.Cli;

/// <summary>
/// <c>rellax demo</c>, <c>rellax eval</c> and <c>rellax export</c> as a user runs them: the demo end to end in its fast
/// mode, the demo's kept output evaluated again by <c>eval</c> (same scores; the second run from the cache), training
/// files, and the error paths (one line, exit code 1, no output file).
/// </summary>
[TestFixture]
public sealed class PipelineCommandTests
{
    private string _dir = null!;
    private string _demo = null!;
    private JsonElement _demoJson;

    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    /// <summary>The <c>p_yes</c> of every line of a scores file, in order.</summary>
    private static double[] P(string path) => File.ReadAllLines(path).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("p_yes").GetDouble()).ToArray();

    [OneTimeSetUp]
    public void RunTheDemoOnce()
    {
        Model.ModelPaths.Stories260KOrIgnore();
        _dir = Directory.CreateTempSubdirectory("rellax-pipeline-cli-").FullName;
        _demo = Path.Combine(_dir, "demo");
        var (code, stdout, stderr) = Run("demo", "--fast", "--json", "--output", _demo, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        _demoJson = JsonDocument.Parse(stdout).RootElement.Clone();
        TestContext.Out.WriteLine(stderr);
    }

    [OneTimeTearDown] public void Clean() { if (_dir is not null) Directory.Delete(_dir, recursive: true); }

    /// <summary>The demo's JSON object of one arm.</summary>
    private JsonElement Arm(string name) => _demoJson.GetProperty("arms").EnumerateArray().Single(a => a.GetProperty("arm").GetString() == name);

    [Test]
    public void TheFastDemosJsonShapeIsStable()
    {
        var j = _demoJson;
        Assert.That(j.EnumerateObject().Select(p => p.Name), Is.SupersetOf(new[]
        {
            "model", "backend", "seed", "users", "items", "ratings", "samples", "k", "steps", "batch_size", "train_rows", "test_scored", "retrieval",
            "arms", "winner", "output", "total_seconds",
        }));
        Assert.That(j.GetProperty("test_scored").GetInt32(), Is.EqualTo(64));
        Assert.That(j.GetProperty("k").GetInt32(), Is.EqualTo(3));
        var arms = j.GetProperty("arms").EnumerateArray().ToArray();
        Assert.That(arms.Select(a => a.GetProperty("arm").GetString()), Is.EqualTo(new[] { "din", "zero-shot", "lora-recent", "lora-subr", "rellax" }));
        foreach (var a in arms)
        {
            Assert.That(a.EnumerateObject().Select(p => p.Name), Is.SupersetOf(new[] { "arm", "trained", "train_rows", "seconds", "auc", "logloss", "accuracy", "count" }));
            Assert.That(a.GetProperty("count").GetInt32(), Is.EqualTo(64), "every arm is scored on the same test samples");
            Assert.That(a.GetProperty("auc").GetDouble(), Is.InRange(0.0, 1.0));
            Assert.That(a.GetProperty("logloss").GetDouble(), Is.GreaterThan(0));
            Assert.That(a.GetProperty("seconds").GetDouble(), Is.GreaterThan(0));
        }
        Assert.That(Arm("lora-subr").GetProperty("train_rows").GetInt32(), Is.EqualTo(j.GetProperty("train_rows").GetInt32()));
        Assert.That(Arm("zero-shot").GetProperty("train_rows").GetInt32(), Is.EqualTo(0));
        Assert.That(j.GetProperty("winner").GetString(), Is.AnyOf("din", "lora-recent", "lora-subr", "rellax"));
        var retrieval = j.GetProperty("retrieval");
        TestContext.Out.WriteLine($"category agreement: SUBR {retrieval.GetProperty("subr")}, recent {retrieval.GetProperty("recent")}, whole {retrieval.GetProperty("whole_history")}");
        // The synthetic users' tastes give retrieval something to find: SUBR's history shares the target's category more often.
        Assert.That(retrieval.GetProperty("subr").GetDouble(), Is.GreaterThan(retrieval.GetProperty("recent").GetDouble()));
        foreach (string f in new[] { "prepared/dataset.json", "prepared/items.jsonl", "din/config.json", "din/model.safetensors", "crm.safetensors",
                     "arms/rellax/adapter_config.json", "arms/rellax/adapter_model.safetensors", "arms/rellax/training.json", "arms/rellax/training.jsonl",
                     "arms/lora-subr/adapter_model.safetensors", "arms/lora-recent/scores.jsonl" })
            Assert.That(File.Exists(Path.Combine(_demo, f)), f);
        Assert.That(File.ReadAllLines(Path.Combine(_demo, "arms", "rellax", "scores.jsonl")), Has.Length.EqualTo(64));
        byte[] png = File.ReadAllBytes(Path.Combine(_demo, "curves.png"));
        Assert.That(png.Take(8), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }), "curves.png is a PNG");
    }

    [Test]
    public void TheTrainedArmsBeatTheUntrainedModelOnTheSyntheticTestSplit()
    {
        // Seeded (the demo's default seed), not timed: every trained arm ranks the 64 test samples better than the base
        // model does (an untrained LoRA is the base model: B = 0), and the CRM beats it too.
        double untrained = Arm("zero-shot").GetProperty("auc").GetDouble();
        foreach (string arm in new[] { "din", "lora-recent", "lora-subr", "rellax" })
        {
            double auc = Arm(arm).GetProperty("auc").GetDouble();
            TestContext.Out.WriteLine($"{arm}: test AUC {auc:F4} (untrained {untrained:F4})");
            Assert.That(auc, Is.GreaterThan(untrained), arm);
        }
    }

    [Test]
    public void EvalOnTheDemosOutputGivesTheDemosScoresAndUsesTheCacheTheSecondTime()
    {
        string scores = Path.Combine(_dir, "eval-scores.jsonl");
        // No --k, --retrieval or --template: eval takes them from the trained adapter's training.json, and says so.
        string[] args = ["eval", "--data", Path.Combine(_demo, "prepared"), "--adapter", Path.Combine(_demo, "arms", "rellax"), "--crm", Path.Combine(_demo, "crm.safetensors"),
            "--limit", "64", "--pca", "32", "--backend", "cpu", "--json", "--scores", scores];
        var (code, stdout, stderr) = Run(args);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stderr, Does.Contain("--k 3 --retrieval subr --template none from").And.Contain("training.json"));
        var j = JsonDocument.Parse(stdout).RootElement;
        Assert.That(j.GetProperty("k").GetInt32(), Is.EqualTo(3));
        Assert.That(j.GetProperty("metrics").GetProperty("auc").GetDouble(), Is.EqualTo(Arm("rellax").GetProperty("auc").GetDouble()).Within(1e-6));
        Assert.That(P(scores), Is.EqualTo(P(Path.Combine(_demo, "arms", "rellax", "scores.jsonl"))).Within(1e-9), "the demo and eval score the same prompts the same");
        // The demo filled the cache in its folder; eval's default cache is DATA/cache, so a run there is computed once, then cached.
        var (code2, stdout2, stderr2) = Run(args);
        Assert.That(code2, Is.EqualTo(0), stderr2);
        var stages = JsonDocument.Parse(stdout2).RootElement.GetProperty("stages").EnumerateArray().ToDictionary(s => s.GetProperty("stage").GetString()!);
        Assert.That(stages["embed"].GetProperty("cached").GetBoolean(), Is.True);
        Assert.That(stages["retrieve"].GetProperty("cached").GetBoolean(), Is.True);
    }

    [Test]
    public void EvalWithItemVectorsFromEmbedRetrievesAsTheLlmStageDoes()
    {
        // rellax embed over the prepared items.jsonl gives the same LLM vectors eval computes itself, so SUBR picks the same
        // histories and the scores equal the demo's; eval then runs no embed stage.
        string vectors = Path.Combine(_dir, "items.safetensors");
        var (code, _, stderr) = Run("embed", "--items", Path.Combine(_demo, "prepared", "items.jsonl"), "--output", vectors, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        string scores = Path.Combine(_dir, "given-scores.jsonl");
        (code, var stdout, stderr) = Run("eval", "--data", Path.Combine(_demo, "prepared"), "--adapter", Path.Combine(_demo, "arms", "rellax"),
            "--crm", Path.Combine(_demo, "crm.safetensors"), "--item-vectors", vectors, "--limit", "64", "--pca", "32",
            "--no-cache", "--backend", "cpu", "--json", "--scores", scores);
        Assert.That(code, Is.EqualTo(0), stderr);
        var stages = JsonDocument.Parse(stdout).RootElement.GetProperty("stages").EnumerateArray().Select(s => s.GetProperty("stage").GetString());
        Assert.That(stages, Is.EqualTo(new[] { "pca", "retrieve", "prompts", "tokenize", "forward" }));
        Assert.That(P(scores), Is.EqualTo(P(Path.Combine(_demo, "arms", "rellax", "scores.jsonl"))).Within(1e-6));

        // export takes the same vectors without a model.
        string reit = Path.Combine(_dir, "reit-given.jsonl");
        (code, _, stderr) = Run("export", "--data", Path.Combine(_demo, "prepared"), "--item-vectors", vectors, "--prompts", "subr", "--k", "3",
            "--split", "test", "--pca", "32", "--output", reit, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(File.ReadAllLines(reit), Is.Not.Empty);
    }

    [Test]
    public void ExportForScoreWithCrmVectorsThenScoreGivesEvalsScores()
    {
        // export --format score --spa --crm writes the prompts with SPA markers and the vectors the CFLoRA + SPA adapter
        // needs; rellax score on that file must give exactly what eval scores in one command.
        string prepared = Path.Combine(_demo, "prepared"), adapter = Path.Combine(_demo, "arms", "rellax"), crm = Path.Combine(_demo, "crm.safetensors");
        string evalScores = Path.Combine(_dir, "eval-recent.jsonl"), requests = Path.Combine(_dir, "requests-crm.jsonl"), scores = Path.Combine(_dir, "score-crm.jsonl");
        var (code, _, stderr) = Run("eval", "--data", prepared, "--adapter", adapter, "--crm", crm, "--retrieval", "recent", "--k", "3", "--limit", "6",
            "--backend", "cpu", "--scores", evalScores);
        Assert.That(code, Is.EqualTo(0), stderr);
        (code, _, stderr) = Run("export", "--data", prepared, "--prompts", "recent", "--split", "test", "--limit", "6", "--k", "3", "--spa", "--crm", crm,
            "--format", "score", "--output", requests);
        Assert.That(code, Is.EqualTo(0), stderr);
        var first = JsonDocument.Parse(File.ReadLines(requests).First()).RootElement;
        Assert.That(first.GetProperty("prompt").GetString(), Does.Contain("[hist]").And.Contain("[target]"));
        Assert.That(first.GetProperty("hist_embeddings").GetArrayLength(), Is.EqualTo(3));
        Assert.That(first.GetProperty("instance").GetArrayLength(), Is.GreaterThan(0));
        (code, _, stderr) = Run("score", "--adapter", adapter, "--input", requests, "--output", scores, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(P(scores), Has.Length.EqualTo(6));
        Assert.That(P(scores), Is.EqualTo(P(evalScores)).Within(1e-6));
        Assert.That(File.ReadLines(scores).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("id").GetInt32()),
            Is.EqualTo(File.ReadLines(evalScores).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("id").GetInt32())));

        // Without --crm the markers come with a warning that says what score then needs.
        (code, _, stderr) = Run("export", "--data", prepared, "--prompts", "recent", "--split", "test", "--limit", "6", "--k", "3", "--spa",
            "--format", "score", "--output", requests);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stderr, Does.Contain("rellax: warning:").And.Contain("give --crm FILE"));
    }

    [Test]
    public void EvalWithTheDemosDinComputesTheSameCrmFeatures()
    {
        // The demo saved the DIN it trained (as crm train does); eval --din runs it on the same 64 test samples, so h_u and
        // the item embeddings, and with them the scores of the ReLLaX arm, are the demo's.
        string scores = Path.Combine(_dir, "din-scores.jsonl");
        var (code, _, stderr) = Run("eval", "--data", Path.Combine(_demo, "prepared"), "--adapter", Path.Combine(_demo, "arms", "rellax"),
            "--din", Path.Combine(_demo, "din"), "--limit", "64", "--pca", "32", "--backend", "cpu", "--scores", scores);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(P(scores), Is.EqualTo(P(Path.Combine(_demo, "arms", "rellax", "scores.jsonl"))).Within(1e-6));
    }

    [TestCase("generate"), TestCase("score"), TestCase("embed"), TestCase("index"), TestCase("retrieve"), TestCase("backends"),
     TestCase("prepare"), TestCase("eval"), TestCase("export"), TestCase("demo")]
    public void EveryCommandsHelpHasExamples(string command)
    {
        var (code, stdout, stderr) = Run(command, "--help");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("Examples:").And.Contain($"rellax {command}"));
    }

    [Test]
    public void EvalErrorsAreOneLineAndWriteNothing()
    {
        string prepared = Path.Combine(_demo, "prepared");
        string scores = Path.Combine(_dir, "never.jsonl");
        var (code, _, stderr) = Run("eval", "--data", prepared, "--adapter", Path.Combine(_demo, "arms", "rellax"), "--k", "5", "--limit", "2", "--retrieval", "recent", "--scores", scores);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(stderr, Does.StartWith("rellax: ").And.Contain("CRM"));
        Assert.That(File.Exists(scores), Is.False);

        (code, _, stderr) = Run("eval", "--data", Path.Combine(_dir, "missing"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("missing"));

        (code, _, stderr) = Run("eval", "--data", prepared, "--crm", "a", "--din", "b");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("either --crm or --din"));

        (code, _, stderr) = Run("eval", "--data", prepared, "--retrieval", "magic");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("magic"));
    }

    [Test]
    public void ExportWritesRecentAndReitTrainingFiles()
    {
        string prepared = Path.Combine(_demo, "prepared");
        string recent = Path.Combine(_dir, "recent.jsonl");
        var (code, _, stderr) = Run("export", "--data", prepared, "--prompts", "recent", "--split", "test", "--k", "3", "--output", recent);
        Assert.That(code, Is.EqualTo(0), stderr);
        // The test split's size, counted from the prepared samples file itself.
        int testCount = File.ReadAllLines(Path.Combine(prepared, "samples.jsonl")).Count(l => JsonDocument.Parse(l).RootElement.GetProperty("split").GetString() == "test");
        Assert.That(testCount, Is.GreaterThan(0));
        var lines = File.ReadAllLines(recent);
        Assert.That(lines, Has.Length.EqualTo(testCount));
        foreach (var line in lines)
        {
            var o = JsonDocument.Parse(line).RootElement;
            Assert.That(o.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "input", "output" }));
            Assert.That(o.GetProperty("output").GetString(), Is.AnyOf("Yes.", "No."));
            Assert.That(o.GetProperty("input").GetString(), Does.StartWith("The user is a ").And.Not.Contain("[hist]"));
        }

        string reit = Path.Combine(_dir, "reit.jsonl");
        (code, _, stderr) = Run("export", "--data", prepared, "--prompts", "reit", "--rows", "10", "--k", "3", "--spa", "--output", reit, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        var pairs = File.ReadAllLines(reit).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.That(pairs, Has.Length.EqualTo(20), "each drawn row twice");
        for (int i = 0; i < 20; i += 2)
        {
            string a = pairs[i].GetProperty("input").GetString()!, b = pairs[i + 1].GetProperty("input").GetString()!;
            Assert.That(a[a.IndexOf("***", StringComparison.Ordinal)..], Is.EqualTo(b[b.IndexOf("***", StringComparison.Ordinal)..]), $"rows {i}, {i + 1}: the same target");
            Assert.That(pairs[i].GetProperty("output").GetString(), Is.EqualTo(pairs[i + 1].GetProperty("output").GetString()));
            Assert.That(a, Does.Contain("[hist]"), "--spa marks the prompts");
        }

        (code, _, stderr) = Run("export", "--data", prepared, "--prompts", "reit", "--output", Path.Combine(_dir, "x.jsonl"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("--rows"));
        Assert.That(File.Exists(Path.Combine(_dir, "x.jsonl")), Is.False);
    }
}
