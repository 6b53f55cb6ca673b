using Rellax.Kernels;

namespace Rellax.Rec;

/// <summary>Options of <see cref="Pca.Fit(ComputeBackend, ReadOnlySpan{float}, int, int, PcaOptions?)"/> (placeholder).</summary>
public sealed record PcaOptions
{
    /// <summary>k.</summary>
    public int Components { get; init; } = 512;

    /// <summary>Seed.</summary>
    public int Seed { get; init; }
}

/// <summary>PCA placeholder (the randomized-SVD fit lands with issue 4).</summary>
public sealed class Pca
{
    /// <summary>k.</summary>
    public int Components => throw new NotImplementedException();

    /// <summary>Ratios.</summary>
    public IReadOnlyList<double> ExplainedVarianceRatio => throw new NotImplementedException();

    /// <summary>Fit.</summary>
    public static Pca Fit(ComputeBackend backend, ReadOnlySpan<float> x, int rows, int dim, PcaOptions? options = null) => throw new NotImplementedException();

    /// <summary>Transform.</summary>
    public void Transform(ReadOnlySpan<float> x, int rows, Span<float> output) => throw new NotImplementedException();
}
