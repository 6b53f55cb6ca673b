using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>
/// LLM item embeddings for SUBR (SPEC §2): each item's text, wrapped in a template, runs through the model, and its
/// embedding is the mean of the final-norm hidden states over every position of the templated prompt, BOS included.
/// Items run in left-padded batches; an embedding does not depend on the batch it ran in, beyond float rounding.
/// Not thread-safe; dispose to free scratch memory.
/// </summary>
public sealed class ItemEmbedder : IDisposable
{
    /// <summary>Creates an embedder.</summary>
    /// <param name="model">The model.</param>
    /// <param name="template">Template around each item text (default <see cref="PromptTemplate.None"/>).</param>
    /// <param name="attention">Attention precision of the forward pass.</param>
    /// <param name="batchSize">Most items per forward pass, at least 1.</param>
    public ItemEmbedder(LlamaModel model, PromptTemplate? template = null, AttentionPrecision attention = AttentionPrecision.Fp32, int batchSize = 32) =>
        throw new NotImplementedException();

    /// <summary>Embedding width: the model's hidden size H.</summary>
    public int Dimension => throw new NotImplementedException();

    /// <summary>Embeds <paramref name="texts"/>: row-major [N, H] f32, row i for texts[i].</summary>
    /// <param name="texts">Item texts (e.g. titles).</param>
    /// <param name="progress">Receives the number of items embedded so far after each batch.</param>
    /// <param name="cancellationToken">Checked between batches.</param>
    /// <exception cref="ArgumentException">A text is too long for the model (the message names its index).</exception>
    public float[] Embed(IReadOnlyList<string> texts, IProgress<int>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotImplementedException();

    /// <summary>Frees scratch memory.</summary>
    public void Dispose() { }
}
