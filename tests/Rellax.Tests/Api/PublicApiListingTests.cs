using System.Reflection;
using NUnit.Framework;

namespace Rellax.Tests.Api;

/// <summary>
/// The public API of every shipped assembly is recorded in <c>api/&lt;Assembly&gt;.txt</c> (issue 21 item 3), so that a
/// change of the surface shows in review as a change of that file. Each test renders the assembly by reflection
/// (<see cref="PublicApiListing"/>) and compares it with the file. When a change is intended, regenerate the files with
/// <c>RELLAX_UPDATE_API=1 dotnet test tests/Rellax.Tests -c Release --filter FullyQualifiedName~PublicApiListingTests</c>
/// and commit them with the change.
/// </summary>
[TestFixture]
public sealed class PublicApiListingTests
{
    private const string UpdateVariable = "RELLAX_UPDATE_API";

    /// <summary>The assemblies of the packages: the four libraries and the rellax tool (whose API should stay empty).</summary>
    public static IEnumerable<TestCaseData> Assemblies()
    {
        yield return new TestCaseData(typeof(Rellax.Interop.CudaException).Assembly).SetArgDisplayNames("Rellax.Interop");
        yield return new TestCaseData(typeof(Rellax.Kernels.ComputeBackend).Assembly).SetArgDisplayNames("Rellax.Kernels");
        yield return new TestCaseData(typeof(Rellax.Runtime.LlamaModel).Assembly).SetArgDisplayNames("Rellax.Runtime");
        yield return new TestCaseData(typeof(Rellax.Rec.SubrIndex).Assembly).SetArgDisplayNames("Rellax.Rec");
        yield return new TestCaseData(typeof(Rellax.Cli.RellaxCli).Assembly).SetArgDisplayNames("rellax");
    }

    [TestCaseSource(nameof(Assemblies))]
    public void PublicApiMatchesTheCheckedInListing(Assembly assembly)
    {
        string name = assembly.GetName().Name!;
        string path = Path.Combine(TestData.RepoRoot(), "api", name + ".txt");
        string actual = PublicApiListing.Render(assembly);
        if (Environment.GetEnvironmentVariable(UpdateVariable) == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, actual);
            Assert.Pass($"{UpdateVariable}=1: wrote {path}");
        }
        string expected = File.Exists(path) ? File.ReadAllText(path).ReplaceLineEndings("\n") : "";
        if (expected == actual) return;

        var expectedLines = expected.Split('\n');
        var actualLines = actual.Split('\n');
        var removed = expectedLines.Except(actualLines, StringComparer.Ordinal).ToList();
        var added = actualLines.Except(expectedLines, StringComparer.Ordinal).ToList();
        const int shown = 40;
        string diff = removed.Count + added.Count == 0
            ? "(the same lines in another order or count: the file was edited by hand)"
            : string.Join("\n", removed.Take(shown).Select(l => "- " + l).Concat(added.Take(shown).Select(l => "+ " + l)));
        Assert.Fail($"The public API of {name} differs from {path} ({(File.Exists(path) ? "" : "missing; ")}{removed.Count} line(s) " +
                    $"only in the file, {added.Count} only in the assembly; up to {shown} of each):\n{diff}\n" +
                    $"If the change is intended, regenerate the listings and commit them with it:\n" +
                    $"  {UpdateVariable}=1 dotnet test tests/Rellax.Tests -c Release --filter FullyQualifiedName~PublicApiListingTests");
    }

    /// <summary>
    /// The rellax command compiles against the public API only (issue 21): no library grants it its internals, so what
    /// the CLI needs, a service can have too. The libraries still open their internals to the tests and benchmarks
    /// (checked here too, so the attribute this test reads is the one the build emits).
    /// </summary>
    [TestCaseSource(nameof(Assemblies))]
    public void NoLibraryOpensItsInternalsToTheCli(Assembly assembly)
    {
        var friends = assembly.GetCustomAttributes<System.Runtime.CompilerServices.InternalsVisibleToAttribute>()
            .Select(a => a.AssemblyName.Split(',')[0].Trim()).ToList();
        string cli = typeof(Rellax.Cli.RellaxCli).Assembly.GetName().Name!;
        Assert.That(cli, Is.EqualTo("rellax"));
        Assert.That(friends, Has.None.EqualTo(cli), $"{assembly.GetName().Name} grants InternalsVisibleTo(\"{cli}\")");
        if (assembly.GetName().Name is "Rellax.Kernels" or "Rellax.Runtime" or "Rellax.Rec")
            Assert.That(friends, Does.Contain("Rellax.Tests"), "the tests' grant is visible, so the attribute is read");
    }

    /// <summary>The renderer itself: a sample of the lines it must produce for known members (keywords, nullability,
    /// defaults, init accessors, enums), so a listing that silently drops members cannot pass.</summary>
    [Test]
    public void TheListingRendersKnownMembersAsTheyAreDeclared()
    {
        string kernels = PublicApiListing.Render(typeof(Rellax.Kernels.ComputeBackend).Assembly);
        string runtime = PublicApiListing.Render(typeof(Rellax.Runtime.LlamaModel).Assembly);
        Assert.Multiple(() =>
        {
            Assert.That(kernels, Does.Contain("\nstatic class Rellax.Kernels.Backends\n"));
            Assert.That(kernels, Does.Contain("\n  method static Rellax.Kernels.ComputeBackend Create(string name, int threads = 0)\n"));
            Assert.That(kernels, Does.Contain("\nsealed class Rellax.Kernels.Cpu.CpuBackend : Rellax.Kernels.ComputeBackend, System.IDisposable\n"));
            Assert.That(runtime, Does.Contain(
                "\n  method static Rellax.Runtime.LlamaModel Load(string directory, Rellax.Kernels.ComputeBackend backend, Rellax.Runtime.ModelLoadOptions? options = null, " +
                "System.IProgress<Rellax.Runtime.WorkProgress>? progress = null, System.Threading.CancellationToken cancellationToken = default)\n"));
            Assert.That(runtime, Does.Contain("\n  property int Rank { get; init; }\n"));
            Assert.That(runtime, Does.Contain("\n  property required int HiddenSize { get; init; }\n"));
            Assert.That(runtime, Does.Contain("\n  method Rellax.Runtime.CtrScore[] Score(System.Collections.Generic.IReadOnlyList<Rellax.Runtime.CtrRequest> requests, " +
                                              "System.IProgress<Rellax.Runtime.WorkProgress>? progress = null, System.Threading.CancellationToken cancellationToken = default)\n"));
            Assert.That(kernels, Does.Not.Contain("<Clone>$"), "compiler-generated members are left out");
        });
    }
}
