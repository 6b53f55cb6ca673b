using NUnit.Framework;
using System.Text.Json;

namespace Rellax.Tests.Cli;

/// <summary><c>--weights auto|f32|bf16|f16|int8</c> and <c>--int8-threshold</c> on the model commands, as a user runs them.</summary>
[TestFixture]
public sealed class WeightsOptionTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    /// <summary>Int8 stories260K keeps the documented greedy ids for the first 60 tokens (Int8WeightsModelTests: it first
    /// differs at token 61) and reports the quantization on stderr.</summary>
    [TestCase("generate")]
    public void Int8GenerateKeepsTheDocumentedIdsAndReportsTheLoad(string command)
    {
        var (code, stdout, stderr) = Run(command, "--weights", "int8", "--max-new-tokens", "20", "--json", "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetProperty("generated_ids").EnumerateArray().Select(e => e.GetInt32()),
            Is.EqualTo(Model.Stories260KTests.DocumentedIds.Take(20)));
        Assert.That(stderr, Does.Match(@"weights int8: quantized in \d+\.\d\d s \(outlier threshold 6\); \d+\.\d MiB resident"));
    }

    [TestCase("--weights", "int4", "--weights must be one of auto, f32, bf16, f16, int8; got 'int4'")]
    [TestCase("--int8-threshold", "0", "--int8-threshold must be > 0 and <= 1000000, got 0")]
    [TestCase("--int8-threshold", "-1", "--int8-threshold must be > 0 and <= 1000000, got -1")]
    [TestCase("--int8-threshold", "NaN", "--int8-threshold: 'NaN' is not a finite number")]
    public void BadValuesAreOneClearLine(string option, string value, string message)
    {
        // Each command with its required options present, so that the bad value is the only error.
        foreach (var command in new[] { new[] { "generate" }, ["score", "--input", "x"], ["embed", "--items", "x", "--output", "y"], ["eval", "--data", "x"], ["demo"] })
        {
            var (code, stdout, stderr) = Run([.. command, option, value, "--backend", "cpu"]);
            Assert.That(code, Is.Not.EqualTo(0), command[0]);
            Assert.That(stderr, Does.Contain(message), command[0]);
        }
    }

    [Test]
    public void BackendsNamesTheInt8Paths()
    {
        var (code, stdout, stderr) = Run("backends");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Match(@"int8 linear: (AvxVnni|Avx512BW|Scalar) \(AVX-VNNI (yes|no), AVX-512BW (yes|no), scalar yes\)"));
    }
}
