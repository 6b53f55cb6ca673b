namespace Rellax.Rec;

/// <summary>
/// What a conventional recommender (CRM, SPEC §5) gives the LLM side: an item embedding (E floats, for SPA's soft tokens)
/// per item and a user state h_u (d_h floats, for CFLoRA's generators) per sample. Item ids are the rows of
/// <see cref="RatingDataset.Items"/> (the <c>id</c> of a prepared <c>items.jsonl</c>); sample ids are
/// <see cref="ReLLaSample.Index"/>. Either part may be absent (dimension 0).
/// File form (safetensors): <c>item_ids</c> I64 [N], <c>item_embeddings</c> F32 [N, E], <c>sample_ids</c> I64 [S],
/// <c>user_states</c> F32 [S, d_h]; metadata <c>format</c> = <c>rellax-crm-features</c>.
/// PLACEHOLDER (CRM helper).
/// </summary>
public sealed class CrmFeatures
{
    /// <summary>The <c>format</c> metadata value.</summary>
    public const string FormatName = "rellax-crm-features";

    /// <summary>Creates features from arrays (kept, not copied).</summary>
    /// <param name="itemIds">[N] item ids, unique.</param>
    /// <param name="itemEmbeddings">[N, <paramref name="embedDim"/>] row-major.</param>
    /// <param name="embedDim">E (0 when there are no item embeddings).</param>
    /// <param name="sampleIds">[S] sample ids, unique.</param>
    /// <param name="userStates">[S, <paramref name="stateDim"/>] row-major.</param>
    /// <param name="stateDim">d_h (0 when there are no user states).</param>
    /// <exception cref="ArgumentException">Sizes that disagree, a duplicate id, or a non-finite value (named).</exception>
    public CrmFeatures(long[] itemIds, float[] itemEmbeddings, int embedDim, long[] sampleIds, float[] userStates, int stateDim) =>
        throw new NotImplementedException("PLACEHOLDER: CrmFeatures");

    /// <summary>E, the item embedding size (0 when absent).</summary>
    public int EmbedDim { get; }

    /// <summary>d_h, the user state size (0 when absent).</summary>
    public int StateDim { get; }

    /// <summary>The embedding of item <paramref name="itemId"/> [E].</summary>
    /// <exception cref="KeyNotFoundException">The item is not in the file (the message names it).</exception>
    public ReadOnlySpan<float> ItemEmbedding(long itemId) => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>The user state of sample <paramref name="sampleId"/> [d_h].</summary>
    /// <exception cref="KeyNotFoundException">The sample is not in the file (the message names it).</exception>
    public ReadOnlySpan<float> UserState(long sampleId) => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>Reads a features file.</summary>
    /// <exception cref="InvalidDataException">A malformed file; the message names the file and the tensor.</exception>
    public static CrmFeatures Load(string path) => throw new NotImplementedException("PLACEHOLDER");

    /// <summary>Writes the features to <paramref name="path"/> atomically.</summary>
    public void Save(string path) => throw new NotImplementedException("PLACEHOLDER");
}
