namespace Rellax.Runtime;

/// <summary>
/// Seeded random numbers that do not depend on the .NET version: xoshiro256** (Blackman and Vigna 2018) seeded through
/// SplitMix64, 53-bit uniforms, and standard normals by the Box-Muller transform (both outputs used). PCA's random
/// projection (<c>Rellax.Rec.Pca</c>) and new adapters' initialisation (<see cref="AdapterInit"/>) draw from it.
/// </summary>
internal sealed class GaussianSource
{
    private ulong _s0, _s1, _s2, _s3;
    private double _spare;
    private bool _hasSpare;

    /// <summary>A generator whose whole stream is fixed by <paramref name="seed"/>.</summary>
    public GaussianSource(long seed)
    {
        ulong x = unchecked((ulong)seed);
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = unchecked(x += 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }

    /// <summary>Next 64 random bits (xoshiro256**).</summary>
    public ulong NextUInt64()
    {
        ulong result = unchecked(ulong.RotateLeft(_s1 * 5, 7) * 9);
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1), 53 bits.</summary>
    public double NextUniform() => (NextUInt64() >> 11) * (1.0 / 9007199254740992.0);

    /// <summary>Uniform in (0, 1]: never 0, so the logarithm in Box-Muller is finite.</summary>
    private double NextUniformOpen() => ((NextUInt64() >> 11) + 1) * (1.0 / 9007199254740992.0);

    /// <summary>Next standard-normal sample.</summary>
    public double NextGaussian()
    {
        if (_hasSpare) { _hasSpare = false; return _spare; }
        double u1 = NextUniformOpen(), u2 = NextUniformOpen();
        double r = Math.Sqrt(-2 * Math.Log(u1));
        double angle = 2 * Math.PI * u2;
        _spare = r * Math.Sin(angle);
        _hasSpare = true;
        return r * Math.Cos(angle);
    }

    /// <summary>Fills <paramref name="destination"/> with standard-normal samples, in order.</summary>
    public void Fill(Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = (float)NextGaussian();
    }

    /// <summary>Fills <paramref name="destination"/> with standard-normal samples, in order.</summary>
    public void Fill(Span<double> destination)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = NextGaussian();
    }
}
