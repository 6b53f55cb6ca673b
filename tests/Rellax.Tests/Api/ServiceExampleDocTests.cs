using NUnit.Framework;

namespace Rellax.Tests.Api;

/// <summary>
/// Keeps the example in docs/ARCHITECTURE.md ("Using Rellax from your service") true: every code line of its C# block
/// (comment lines and trailing comments aside) must be a line of samples/Consumer/Program.cs, in the same order. CI
/// builds and runs that program from the packages (.ci/packages.sh), so the documented calls compile and run.
/// </summary>
[TestFixture]
public sealed class ServiceExampleDocTests
{
    [Test]
    public void TheDocumentedExampleIsTheConsumersCode()
    {
        string root = TestData.RepoRoot();
        var doc = File.ReadAllLines(Path.Combine(root, "docs", "ARCHITECTURE.md"));
        var program = File.ReadAllLines(Path.Combine(root, "samples", "Consumer", "Program.cs")).Select(l => l.Trim()).ToList();

        int section = Array.FindIndex(doc, l => l.StartsWith("### Using Rellax from your service", StringComparison.Ordinal));
        Assert.That(section, Is.GreaterThanOrEqualTo(0), "docs/ARCHITECTURE.md has no section \"Using Rellax from your service\"");
        int open = Array.FindIndex(doc, section, l => l.StartsWith("```csharp", StringComparison.Ordinal));
        int close = open < 0 ? -1 : Array.FindIndex(doc, open + 1, l => l.StartsWith("```", StringComparison.Ordinal));
        Assert.That(open > section && close > open, Is.True, "the section has no ```csharp block");

        var code = doc[(open + 1)..close].Select(Code).Where(l => l.Length > 0).ToList();
        Assert.That(code, Has.Count.GreaterThan(10), "the example is too short to be the consumer's code");
        int at = 0;
        foreach (string line in code)
        {
            int found = program.FindIndex(at, l => l == line);
            Assert.That(found, Is.GreaterThanOrEqualTo(0),
                $"this line of the ARCHITECTURE example is not in samples/Consumer/Program.cs after line {at} (or not in that order):\n  {line}");
            at = found + 1;
        }
    }

    /// <summary>The line without indentation and without a comment: a whole-line comment gives "", and a trailing one
    /// (two spaces, then <c>//</c>) is cut off.</summary>
    private static string Code(string line)
    {
        string trimmed = line.Trim();
        if (trimmed.StartsWith("//", StringComparison.Ordinal)) return "";
        int comment = trimmed.IndexOf("  //", StringComparison.Ordinal);
        return comment < 0 ? trimmed : trimmed[..comment].TrimEnd();
    }
}
