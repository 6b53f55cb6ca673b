using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Tests;

/// <summary>A named way to create a fresh backend; the name shows up in test names.</summary>
public sealed record BackendFactory(string Name, Func<ComputeBackend> Create)
{
    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>
/// Every backend the backend-generic fixtures (e.g. <see cref="Oracle.PrimitivesOracleTests"/>) run on.
/// Adding a backend is one line in <see cref="Factories"/>.
/// </summary>
public static class TestBackends
{
    /// <summary>The backends under test.</summary>
    public static IEnumerable<BackendFactory> Factories()
    {
        yield return new BackendFactory("cpu-1-thread", () => new CpuBackend(threads: 1));
        yield return new BackendFactory("cpu-2-threads", () => new CpuBackend(threads: 2));
    }

    /// <summary>The factories as fixture arguments for <c>[TestFixtureSource]</c>.</summary>
    public static IEnumerable<TestFixtureData> All() =>
        Factories().Select(f => new TestFixtureData(f).SetArgDisplayNames(f.Name));
}
