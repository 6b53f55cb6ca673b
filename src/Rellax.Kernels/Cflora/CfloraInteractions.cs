namespace Rellax.Kernels;

/// <summary>
/// Builders for the per-sample interaction matrices G [S, r, r] (row-major, applied as t'_j = Σ_i t_i G[s][i][j],
/// i.e. C_s = G_sᵀ in <c>B C_s A</c>) that make <see cref="CfloraLinear"/> compute each member of the LoRA family.
/// All return host arrays of S·r·r floats to upload with <see cref="ComputeBackend.Upload{T}"/>.
/// </summary>
public static class CfloraInteractions
{
    /// <summary>Vanilla LoRA (any PEFT adapter): C = I for every sample.</summary>
    /// <param name="samples">S, at least 1.</param>
    /// <param name="rank">r, at least 1.</param>
    public static float[] Identity(int samples, int rank)
    {
        CheckCounts(samples, rank);
        var g = new float[(long)samples * rank * rank];
        for (int s = 0; s < samples; s++)
            for (int i = 0; i < rank; i++) g[((long)s * rank + i) * rank + i] = 1;
        return g;
    }

    /// <summary>
    /// iLoRA: n experts of rank r/n each, stacked (A = [A_1; …; A_n], B = [B_1 … B_n]), mixed per sample by gate
    /// weights w: C = blockdiag(w_1 I, …, w_n I), so B C A x = Σ_k w_k B_k A_k x.
    /// </summary>
    /// <param name="gateWeights">Gate weights per sample, [S, n] row-major.</param>
    /// <param name="experts">n, at least 1.</param>
    /// <param name="rank">Total rank r = n · (rank of one expert); must be divisible by n.</param>
    public static float[] ILora(ReadOnlySpan<float> gateWeights, int experts, int rank)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        if (rank % experts != 0)
            throw new ArgumentException($"rank {rank} must be a multiple of the number of experts ({experts})", nameof(rank));
        int samples = RowsOf(gateWeights, experts, nameof(gateWeights));
        CheckCounts(samples, rank);
        int block = rank / experts;
        var g = new float[(long)samples * rank * rank];
        for (int s = 0; s < samples; s++)
            for (int k = 0; k < experts; k++)
                for (int i = 0; i < block; i++)
                {
                    int d = k * block + i;
                    g[((long)s * rank + d) * rank + d] = gateWeights[s * experts + k];
                }
        return g;
    }

    /// <summary>
    /// RecLoRA: m meta-LoRAs of rank r each, stacked (A = [A_1; …; A_m], B = [B_1 … B_m], total rank m·r), mixed
    /// per sample by weights w: C = (w wᵀ) ⊗ I_r, so B C A x = (Σ_k w_k B_k)(Σ_l w_l A_l) x.
    /// </summary>
    /// <param name="mixWeights">Mixing weights per sample, [S, m] row-major.</param>
    /// <param name="metaLoras">m, at least 1.</param>
    /// <param name="rankPerLora">r of one meta-LoRA, at least 1; the returned matrices are (m·r) × (m·r).</param>
    public static float[] RecLora(ReadOnlySpan<float> mixWeights, int metaLoras, int rankPerLora)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(metaLoras, 1);
        int samples = RowsOf(mixWeights, metaLoras, nameof(mixWeights));
        int rank = checked(metaLoras * rankPerLora);
        CheckCounts(samples, rankPerLora);
        var g = new float[(long)samples * rank * rank];
        for (int s = 0; s < samples; s++)
            for (int k = 0; k < metaLoras; k++)
                for (int l = 0; l < metaLoras; l++)
                {
                    // C is symmetric, so G = Cᵀ = C.
                    float wkl = mixWeights[s * metaLoras + k] * mixWeights[s * metaLoras + l];
                    for (int i = 0; i < rankPerLora; i++)
                        g[((long)s * rank + k * rankPerLora + i) * rank + l * rankPerLora + i] = wkl;
                }
        return g;
    }

    /// <summary>
    /// Dense C_s given in the paper's orientation (y += B C_s A x), [S, r, r]: returns G_s = C_sᵀ. The CFLoRA
    /// generator (<see cref="CfloraLinear.Generate"/>) already produces G and needs no builder.
    /// </summary>
    public static float[] FromC(ReadOnlySpan<float> c, int rank)
    {
        int samples = RowsOf(c, checked(rank * rank), nameof(c));
        CheckCounts(samples, rank);
        var g = new float[c.Length];
        for (int s = 0; s < samples; s++)
            for (int i = 0; i < rank; i++)
                for (int j = 0; j < rank; j++)
                    g[((long)s * rank + i) * rank + j] = c[(s * rank + j) * rank + i];
        return g;
    }

    private static int RowsOf(ReadOnlySpan<float> values, int width, string name)
    {
        if (values.Length == 0 || values.Length % width != 0)
            throw new ArgumentException($"{name} has {values.Length} values: not a positive multiple of {width}", name);
        return values.Length / width;
    }

    private static void CheckCounts(int samples, int rank)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(rank, 1);
    }
}
