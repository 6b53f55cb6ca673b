using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// A seeded random CFLoRA + SPA adapter (for the demo and tests): LoRA on q_proj and v_proj of every layer with CFLoRA
/// generators and an SPA projector, with magnitudes that move p(click) visibly. Untrained: it shows the pipeline runs,
/// never that it recommends well.
/// </summary>
internal static class RandomAdapter
{
    /// <summary>Creates the adapter.</summary>
    /// <param name="model">The base model's config (dimensions, layers).</param>
    /// <param name="rank">r.</param>
    /// <param name="instanceDim">d_h: the CRM user state size.</param>
    /// <param name="embedDim">E: the CRM item embedding size.</param>
    /// <param name="seed">Same seed, same adapter.</param>
    public static RellaxAdapter Create(LlamaConfig model, int rank, int instanceDim, int embedDim, int seed)
    {
        var rng = new Random(seed);
        float[] U(int n, double scale, double centre = 0)
        {
            var a = new float[n];
            for (int i = 0; i < n; i++) a[i] = (float)(centre + scale * (2 * rng.NextDouble() - 1));
            return a;
        }
        int h = model.HiddenSize, q = model.NumAttentionHeads * model.HeadDim, kv = model.NumKeyValueHeads * model.HeadDim;
        int r2 = rank * rank;
        var targets = new List<LoraTarget>();
        for (int layer = 0; layer < model.NumHiddenLayers; layer++)
            foreach (var (module, dout) in new[] { (LlamaModule.QProj, q), (LlamaModule.VProj, kv) })
            {
                var generator = new CfloraGeneratorWeights(U(instanceDim, 0.3, 1), U(instanceDim, 0.3), U(2 * r2 * instanceDim, 0.6),
                    U(2 * r2, 0.3), U(r2 * 2 * r2, 0.3), U(r2, 0.3));
                targets.Add(new LoraTarget(layer, module, h, dout, U(rank * h, 1.5 / Math.Sqrt(h)), U(dout * rank, 0.5 / rank), generator));
            }
        var projector = new SpaProjectorWeights(U(h * embedDim, 1.0 / Math.Sqrt(embedDim)), U(h, 0.1), U(h * h, 1.5 / Math.Sqrt(h)), U(h, 0.1));
        var config = new AdapterConfig
        {
            Rank = rank, Alpha = 2 * rank, TargetModules = [LlamaModule.QProj, LlamaModule.VProj], InstanceDim = instanceDim,
            CrmEmbedDim = embedDim, BaseModelName = "random demo adapter (seed " + seed + ")",
        };
        return RellaxAdapter.Create(config, targets, projector, model, $"random CFLoRA+SPA (seed {seed})");
    }
}
