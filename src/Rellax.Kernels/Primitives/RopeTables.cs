namespace Rellax.Kernels;

/// <summary>
/// Host-side construction of the RoPE angle tables consumed by <see cref="Primitives.Rope"/>:
/// angle(p, i) = p · invFreq[i], with invFreq[i] = theta^(-2i/D), optionally rescaled the Llama-3 way.
/// </summary>
public static class RopeTables
{
    /// <summary>Inverse frequencies for head dimension <paramref name="headDim"/>: length D/2.</summary>
    public static float[] InverseFrequencies(int headDim, double theta)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head dimension must be positive and even");
        if (!(theta > 1)) throw new ArgumentOutOfRangeException(nameof(theta), theta, "rope theta must be > 1");
        var inv = new float[headDim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = (float)(1.0 / Math.Pow(theta, 2.0 * i / headDim));
        return inv;
    }

    /// <summary>
    /// Llama-3 <c>rope_scaling</c> ("rope_type": "llama3"): long wavelengths are divided by <paramref name="factor"/>,
    /// short ones kept, the band between interpolated smoothly. Modifies <paramref name="invFreq"/> in place.
    /// </summary>
    public static void ApplyLlama3Scaling(Span<float> invFreq, double factor, double lowFreqFactor, double highFreqFactor, int originalMaxPositions)
    {
        double lowWavelen = originalMaxPositions / lowFreqFactor, highWavelen = originalMaxPositions / highFreqFactor;
        for (int i = 0; i < invFreq.Length; i++)
        {
            double f = invFreq[i], wavelen = 2 * Math.PI / f;
            if (wavelen > lowWavelen) f /= factor;
            else if (wavelen >= highWavelen)
            {
                double smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                f = (1 - smooth) * f / factor + smooth * f;
            }
            invFreq[i] = (float)f;
        }
    }

    /// <summary>cos and sin tables, each [positions, invFreq.Length] row-major, computed in double then rounded.</summary>
    public static (float[] Cos, float[] Sin) Build(ReadOnlySpan<float> invFreq, int positions)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(positions);
        int half = invFreq.Length;
        var cos = new float[(long)positions * half];
        var sin = new float[(long)positions * half];
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < half; i++)
            {
                // HF computes the angle in float32 (positions × inv_freq), then cos/sin of it.
                float angle = p * invFreq[i];
                cos[p * half + i] = MathF.Cos(angle);
                sin[p * half + i] = MathF.Sin(angle);
            }
        return (cos, sin);
    }
}
