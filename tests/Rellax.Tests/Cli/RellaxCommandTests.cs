using NUnit.Framework;
using System.Diagnostics;
using System.Text.Json;

namespace Rellax.Tests.Cli;

/// <summary>The <c>rellax</c> executable as a user runs it: output, JSON shape, exit codes, error lines.</summary>
[TestFixture]
public sealed class RellaxCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
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
