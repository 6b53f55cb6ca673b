using Rellax.Kernels.Cpu;

namespace Rellax.Kernels;

/// <summary>Creates backends by name, as the command line and configuration files spell them.</summary>
public static class Backends
{
    /// <summary>Names accepted by <see cref="Create"/>.</summary>
    public static IReadOnlyList<string> Names { get; } = ["cpu"];

    /// <summary>Creates the backend called <paramref name="name"/>.</summary>
    /// <param name="name">One of <see cref="Names"/> (case-insensitive).</param>
    /// <param name="threads">CPU worker threads (0: one per core); ignored by GPU backends.</param>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static ComputeBackend Create(string name, int threads = 0) => name.ToLowerInvariant() switch
    {
        "cpu" => new CpuBackend(threads),
        _ => throw new ArgumentException($"unknown backend '{name}'; expected one of: {string.Join(", ", Names)}", nameof(name)),
    };
}
