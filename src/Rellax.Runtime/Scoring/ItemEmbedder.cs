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
    private readonly BatchForward _forward;
    private bool _disposed;

    /// <summary>Creates an embedder.</summary>
    /// <param name="model">The model; it must outlive the embedder.</param>
    /// <param name="template">Template around each item text (default <see cref="PromptTemplate.None"/>).</param>
    /// <param name="attention">Attention precision of the forward pass.</param>
    /// <param name="batchSize">Most items per forward pass, at least 1.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is below 1.</exception>
    /// <exception cref="NotSupportedException">The model's head dimension is not supported by <see cref="FlashAttention"/>.</exception>
    public ItemEmbedder(LlamaModel model, PromptTemplate? template = null, AttentionPrecision attention = AttentionPrecision.Fp32, int batchSize = 32)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (!Enum.IsDefined(attention)) throw new ArgumentOutOfRangeException(nameof(attention), attention, "must be Fp32 or Int8");
        Model = model;
        Template = template ?? PromptTemplate.None;
        BatchSize = batchSize;
        _forward = new BatchForward(model, null, attention);
    }

    /// <summary>The model.</summary>
    public LlamaModel Model { get; }

    /// <summary>The template around each item text.</summary>
    public PromptTemplate Template { get; }

    /// <summary>Most items per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>Most padded tokens (batch × longest text) per forward pass, bounding activation memory as in
    /// <see cref="ScoringOptions.MaxBatchTokens"/>.</summary>
    public const int MaxBatchTokens = 8192;

    /// <summary>Embedding width: the model's hidden size H.</summary>
    public int Dimension => Model.Config.HiddenSize;

    /// <summary>Tokens (BOS included) of the texts of the last <see cref="Embed"/> call, as the forward ran them: what a
    /// caller's tokens/s is measured over, without tokenizing the texts a second time.</summary>
    public long LastTokenCount { get; private set; }

    /// <summary>Embeds <paramref name="texts"/>: row-major [N, H] f32, row i for texts[i].</summary>
    /// <param name="texts">Item texts (e.g. titles).</param>
    /// <param name="progress">Receives <c>("embed", items embedded so far, texts.Count)</c> after each batch.</param>
    /// <param name="cancellationToken">Checked between batches.</param>
    /// <exception cref="RecordException">A text is null or too long for the model (<see cref="RecordException.Record"/> is its index).</exception>
    public float[] Embed(IReadOnlyList<string> texts, IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(texts);
        cancellationToken.ThrowIfCancellationRequested();
        var c = Model.Config;
        int maxTokens = c.SlidingWindow is int window ? Math.Min(window, c.MaxPositionEmbeddings) : c.MaxPositionEmbeddings;
        var tokens = new int[texts.Count][];
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((i & 255) == 255) cancellationToken.ThrowIfCancellationRequested();
            if (texts[i] is null) throw new RecordException("item", i, null, "the text is null");
            var ids = new List<int>(Model.Tokenizer.PrefixIds);
            // Tokenization stops once the text is certain to pass the context, so a huge text costs little.
            if (!Model.Tokenizer.TryEncodeWithMarkers(Template.Apply(texts[i]), [], Math.Max(0, maxTokens - ids.Count), out int[] body, out long atLeast, addSpecialTokens: false))
                throw new RecordException("item", i, null, $"at least {ids.Count + atLeast} tokens, more than the model's {maxTokens} (tokenization stopped there)");
            ids.AddRange(body);
            if (ids.Count == 0) throw new RecordException("item", i, null, "the templated text has no tokens (the tokenizer adds no BOS)");
            tokens[i] = [.. ids];
        }
        LastTokenCount = tokens.Sum(t => (long)t.Length);

        int h = c.HiddenSize;
        var result = new float[(long)texts.Count * h];
        int[] order = [.. Enumerable.Range(0, tokens.Length).OrderByDescending(i => tokens[i].Length).ThenBy(i => i)];
        var sum = new double[h];
        int done = 0;
        for (int start = 0, b; start < order.Length; start += b)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int t = tokens[order[start]].Length;
            b = Math.Min(Math.Max(1, Math.Min(BatchSize, MaxBatchTokens / t)), order.Length - start);
            var ids = new int[b * t];
            var lengths = new int[b];
            for (int j = 0; j < b; j++)
            {
                var seq = tokens[order[start + j]];
                lengths[j] = seq.Length;
                seq.CopyTo(ids, j * t + t - seq.Length);
            }
            var hidden = _forward.AllHidden(new ForwardBatch(b, t, ids, lengths, [], [], [])).ToArray<float>();
            // Mean over each sequence's real rows (the last Lengths[j] rows of its block), in double.
            for (int j = 0; j < b; j++)
            {
                Array.Clear(sum);
                for (int row = j * t + t - lengths[j]; row < (j + 1) * t; row++)
                    for (int k = 0; k < h; k++) sum[k] += hidden[(long)row * h + k];
                var dst = result.AsSpan().Slice(order[start + j] * h, h);
                for (int k = 0; k < h; k++) dst[k] = (float)(sum[k] / lengths[j]);
            }
            done += b;
            progress?.Report(new WorkProgress("embed", done, order.Length));
        }
        return result;
    }

    /// <summary>Frees scratch memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _forward.Dispose();
    }
}
