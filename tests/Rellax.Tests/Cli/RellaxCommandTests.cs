using NUnit.Framework;
using System.Diagnostics;
using System.Text.Json;

namespace Rellax.Tests.Cli;

/// <summary>The <c>rellax</c> executable as a user runs it: output, JSON shape, exit codes, error lines.</summary>
[TestFixture]
public sealed class RellaxCommandTests
{
    /// <summary>Runs the built <c>rellax</c> with <paramref name="args"/>; returns its exit code, stdout and stderr.</summary>
    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        string dll = Path.Combine(TestContext.CurrentContext.TestDirectory, "rellax.dll");
        Assert.That(File.Exists(dll), $"{dll} was not built next to the tests");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2))) { p.Kill(true); Assert.Fail("rellax did not exit within 2 minutes"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Test]
    public void GenerateWithNoArgumentsTellsTheTinyStoriesTale()
    {
        var (code, stdout, stderr) = Run("generate", "--max-new-tokens", "40");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.StartWith("Once upon a time, there was a little girl named Lily."));
    }

    [Test]
    public void GenerateJsonIsOneObjectWithTheIdsAndText()
    {
        var (code, stdout, stderr) = Run("generate", "--max-new-tokens", "5", "--json", "--prompt", "Once upon a time", "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.That(root.GetProperty("backend").GetString(), Is.EqualTo("cpu"));
        Assert.That(root.GetProperty("prompt_ids")[0].GetInt32(), Is.EqualTo(1), "BOS first");
        Assert.That(root.GetProperty("generated_ids").GetArrayLength(), Is.EqualTo(5));
        Assert.That(root.GetProperty("stop_reason").GetString(), Is.EqualTo("max_new_tokens"));
        Assert.That(root.GetProperty("text").GetString(), Is.Not.Empty);
    }

    [Test]
    public void MissingModelDirectoryFailsWithOneClearLine()
    {
        string missing = "/nonexistent/rellax-model";
        var (code, stdout, stderr) = Run("generate", "--model", missing);
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.Trim(), Does.StartWith("rellax: ").And.Contain(missing));
    }

    [Test]
    public void UnknownBackendAndNegativeTokenCountAreRejected()
    {
        var (code, _, stderr) = Run("generate", "--backend", "tpu");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("tpu"));
        (code, _, stderr) = Run("generate", "--max-new-tokens", "-3");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("--max-new-tokens"));
    }
}

/// <summary><c>rellax retrieve</c> end to end: a saved index, a JSONL file of samples, the JSONL output, and its errors.</summary>
[TestFixture]
public sealed class RetrieveCommandTests
{
    private string _dir = null!;
    private string _index = null!;
    private float[] _vectors = null!;
    private const int Rows = 200, Dim = 24;

    [OneTimeSetUp]
    public void WriteIndex()
    {
        _dir = Directory.CreateTempSubdirectory("rellax-retrieve-").FullName;
        _index = Path.Combine(_dir, "index.safetensors");
        _vectors = RandomData.Uniform(Rows * Dim, 5);
        using var cpu = new Rellax.Kernels.Cpu.CpuBackend(1);
        using var index = Rellax.Rec.SubrIndex.Build(cpu, _vectors, Rows, Dim, Enumerable.Range(0, Rows).Select(i => 10L * i).ToArray());
        index.Save(_index);
    }

    [OneTimeTearDown] public void Clean() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    [Test]
    public void RetrievesTheReferenceItemsInItemIds([Values("chronological", "score")] string order)
    {
        var rng = new Random(3);
        var samples = Enumerable.Range(0, 25).Select(i => (Id: i % 2 == 0 ? (object)i : $"s{i}",
            History: Enumerable.Range(0, rng.Next(0, 80)).Select(_ => 10L * rng.Next(Rows)).ToArray(), Target: 10L * rng.Next(Rows))).ToList();
        string input = Path.Combine(_dir, $"samples-{order}.jsonl"), output = Path.Combine(_dir, $"out-{order}.jsonl");
        File.WriteAllLines(input, samples.Select(s => JsonSerializer.Serialize(new { id = s.Id, history = s.History, target = s.Target })).Append(""));
        var (code, stdout, stderr) = Run("retrieve", "--embeddings", _index, "--samples", input, "--k", "7", "--order", order,
            "--output", output, "--batch-size", "4", "--backend", "cpu", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var summary = JsonDocument.Parse(stdout)) Assert.That(summary.RootElement.GetProperty("samples").GetInt32(), Is.EqualTo(25));
        var lines = File.ReadAllLines(output);
        Assert.That(lines, Has.Length.EqualTo(samples.Count));
        using var cpu = new Rellax.Kernels.Cpu.CpuBackend(1);
        using var table = Rellax.Kernels.SubrTable.Create(cpu, _vectors, Rows, Dim);
        var host = Subr.SubrCheck.HostCopy(table);
        for (int i = 0; i < samples.Count; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            var root = doc.RootElement;
            Assert.That(root.GetProperty("id").GetRawText(), Is.EqualTo(JsonSerializer.Serialize(samples[i].Id)), "ids are echoed as given");
            var history = samples[i].History.Select(x => (int)(x / 10)).ToArray();
            var scores = Rellax.Kernels.SubrReference.Scores(host.Rows, Dim, history, (int)(samples[i].Target / 10));
            var expected = Rellax.Kernels.SubrReference.Select(scores, 7, order == "score" ? Rellax.Kernels.SubrOrder.Score : Rellax.Kernels.SubrOrder.Chronological);
            var positions = root.GetProperty("positions").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.That(positions, Is.EqualTo(expected), $"line {i + 1}");
            Assert.That(root.GetProperty("retrieved").EnumerateArray().Select(e => e.GetInt64()).ToArray(),
                Is.EqualTo(expected.Select(p => samples[i].History[p]).ToArray()), $"line {i + 1}");
        }
    }

    [Test]
    public void IndexCommandBuildsAnIndexThatRetrieveReads([Values(null, 8)] int? pca)
    {
        string vectors = Path.Combine(_dir, $"vectors-{pca}.safetensors"), index = Path.Combine(_dir, $"built-{pca}.safetensors");
        var w = new Rellax.Runtime.SafeTensorsWriter();
        w.Add<float>("vectors", Rellax.Runtime.SafeTensorDType.F32, [Rows, Dim], _vectors);
        w.Add<long>("item_ids", Rellax.Runtime.SafeTensorDType.I64, [Rows], Enumerable.Range(0, Rows).Select(i => 3L * i + 1).ToArray());
        w.Save(vectors);
        var args = new List<string> { "index", "--vectors", vectors, "--output", index, "--storage", "i8", "--backend", "cpu", "--json" };
        if (pca is int k) args.AddRange(["--pca", k.ToString()]);
        var (code, stdout, stderr) = Run([.. args]);
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var summary = JsonDocument.Parse(stdout))
        {
            Assert.That(summary.RootElement.GetProperty("dim").GetInt32(), Is.EqualTo(pca ?? Dim));
            Assert.That(summary.RootElement.GetProperty("storage").GetString(), Is.EqualTo("i8"));
        }
        string input = Path.Combine(_dir, $"idx-samples-{pca}.jsonl"), output = Path.Combine(_dir, $"idx-out-{pca}.jsonl");
        File.WriteAllLines(input, ["{\"id\": \"a\", \"history\": [1, 4, 7, 10, 13], \"target\": 4}"]);
        (code, _, stderr) = Run("retrieve", "--embeddings", index, "--samples", input, "--k", "2", "--order", "score", "--output", output, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(output));
        Assert.That(doc.RootElement.GetProperty("retrieved")[0].GetInt64(), Is.EqualTo(4), "the target's own item scores highest");
        (code, _, stderr) = Run("index", "--vectors", input, "--output", index);
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain(input));
    }

    [Test]
    public void BadInputNamesTheLineAndLeavesNoOutput()
    {
        string input = Path.Combine(_dir, "bad.jsonl"), output = Path.Combine(_dir, "bad-out.jsonl");
        File.WriteAllLines(input, [
            JsonSerializer.Serialize(new { id = 1, history = new[] { 0L, 10L }, target = 20L }),
            JsonSerializer.Serialize(new { id = "x9", history = new[] { 0L, 15L }, target = 20L }),
        ]);
        var (code, stdout, stderr) = Run("retrieve", "--embeddings", _index, "--samples", input, "--k", "3", "--output", output, "--backend", "cpu");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("bad.jsonl:2").And.Contain("'x9'").And.Contain("15"));
        Assert.That(File.Exists(output), Is.False, "no partial output file");
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty);

        File.WriteAllLines(input, ["{\"id\": 1, \"history\": [0, 10], \"target\": 20}", "{\"id\": 2, \"history\": [0, \"ten\"], \"target\": 20}"]);
        (code, _, stderr) = Run("retrieve", "--embeddings", _index, "--samples", input, "--k", "3", "--output", output, "--backend", "cpu");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("bad.jsonl:2").And.Contain("history[1]"));
        Assert.That(File.Exists(output), Is.False);

        (code, _, stderr) = Run("retrieve", "--embeddings", Path.Combine(_dir, "nope.safetensors"), "--samples", input, "--k", "3");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("nope.safetensors"));
        (code, _, stderr) = Run("retrieve", "--embeddings", _index, "--samples", input, "--k", "0");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("--k"));
    }
}
