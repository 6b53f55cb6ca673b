namespace Rellax.Rec;

/// <summary>
/// The shape of a <see cref="DinModel"/>. PLACEHOLDER (CRM helper): the fields, sizes and the documented feature layout.
/// </summary>
public sealed record DinConfig
{
    /// <summary>E: the size of every field embedding.</summary>
    public int EmbedDim { get; init; } = 32;

    /// <summary>The config whose feature layout fits <paramref name="dataset"/> (see the layout in the class remarks).</summary>
    public static DinConfig For(RatingDataset dataset, int embedDim = 32) => throw new NotImplementedException("PLACEHOLDER: DinConfig.For");
}

/// <summary>
/// DIN (SPEC §5), run on the CPU from a safetensors checkpoint whose tensor names follow the reference code's
/// <c>ctr_base</c> DIN. It produces what SPA and CFLoRA take: item embeddings and the user state h_u (the last hidden
/// layer of the MLP tower). PLACEHOLDER (CRM helper).
/// </summary>
public sealed class DinModel
{
    private DinModel() => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>The model's shape.</summary>
    public DinConfig Config { get; } = null!;

    /// <summary>E: the item embedding size.</summary>
    public int EmbedDim => Config.EmbedDim;

    /// <summary>d_h: the user state size (the tower's last hidden layer).</summary>
    public int StateDim => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>Loads <c>config.json</c> and <c>model.safetensors</c> from <paramref name="directory"/>.</summary>
    public static DinModel Load(string directory) => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>A model with seeded random weights (for demos and tests).</summary>
    public static DinModel CreateRandom(DinConfig config, int seed) => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>Writes the model in the format <see cref="Load"/> reads.</summary>
    public void Save(string directory) => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>
    /// Runs the model on <paramref name="samples"/> of <paramref name="set"/> (each with its most recent
    /// <paramref name="maxHistory"/> history events) and returns their user states, with the embeddings of every item of
    /// the dataset.
    /// </summary>
    public CrmFeatures Featurize(SampleSet set, IReadOnlyList<ReLLaSample> samples, int maxHistory = 30) =>
        throw new NotImplementedException("PLACEHOLDER");
}
