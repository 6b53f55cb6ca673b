using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>One prompt to score, with the vectors its adapter needs.</summary>
/// <param name="Prompt">The user message (before the template), possibly with SPA markers (<c>[hist]</c>, <c>[target]</c>,
/// or the adapter's own marker strings).</param>
/// <param name="Instance">The CRM vector h_u [d_h] of this sample; required when the adapter has CFLoRA generators,
/// ignored otherwise.</param>
/// <param name="HistEmbeddings">One CRM item embedding [E] per history marker, in prompt order; required when the prompt has
/// history markers.</param>
/// <param name="TargetEmbedding">The target item's CRM embedding [E]; required when the prompt has a target marker.</param>
public sealed record CtrRequest(string Prompt, float[]? Instance = null, IReadOnlyList<float[]>? HistEmbeddings = null, float[]? TargetEmbedding = null);

/// <summary>The score of one prompt.</summary>
/// <param name="PYes">p(click) = softmax([logit_no, logit_yes])[1], in [0, 1].</param>
/// <param name="LogitYes">The logit of the first token of the yes answer where it differs from the no answer, at the last position.</param>
/// <param name="LogitNo">The same for the no answer.</param>
public readonly record struct CtrScore(double PYes, float LogitYes, float LogitNo);

/// <summary>How a <see cref="CtrScorer"/> builds and runs its batches.</summary>
public sealed record ScoringOptions
{
    /// <summary>The chat template around each prompt (default <see cref="PromptTemplate.Vicuna"/>).</summary>
    public PromptTemplate Template { get; init; } = PromptTemplate.Vicuna;

    /// <summary>Attention scores in the forward pass: fp32 (default) or int8 (SPEC §7).</summary>
    public AttentionPrecision Attention { get; init; } = AttentionPrecision.Fp32;

    /// <summary>Most prompts per forward pass (default 8); at least 1.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>
    /// Most padded tokens (batch × longest prompt) per forward pass (default 8192): bounds activation memory, which is
    /// about <c>tokens · (3·H + 2·I + 2·Hq·D + 2·Hkv·D) · 4</c> bytes (0.9 GB for 8192 tokens at H = 2048, I = 5632). A longer single prompt still runs alone.
    /// </summary>
    public int MaxBatchTokens { get; init; } = 8192;

    /// <summary>The positive answer as it follows the templated prompt (default <c>" Yes"</c>).</summary>
    public string YesAnswer { get; init; } = " Yes";

    /// <summary>The negative answer (default <c>" No"</c>).</summary>
    public string NoAnswer { get; init; } = " No";
}

/// <summary>
/// CTR scoring with a Llama-family model and an optional ReLLaX adapter (SPEC §1, §3, §4): each prompt is wrapped in the
/// template, tokenized with its SPA markers as soft-token slots, and run through the model in left-padded batches; the
/// score compares the yes and no answer logits at the last position.
/// </summary>
/// <remarks>
/// <para><b>Answer tokens.</b> The two answers are tokenized as they follow each templated prompt. When their encodings
/// share leading tokens (small vocabularies split <c>▁Yes</c>/<c>▁No</c> into <c>▁</c> <c>Y</c>… and <c>▁</c> <c>N</c>…),
/// that common prefix is appended to the prompt and the first differing tokens are compared. For Llama-2 vocabularies
/// this is <c>▁Yes</c> against <c>▁No</c> at the last prompt position.</para>
/// <para><b>Batching.</b> Requests are sorted by length and packed into batches (<see cref="ScoringOptions.BatchSize"/>,
/// <see cref="ScoringOptions.MaxBatchTokens"/>), each left-padded to its longest prompt with masked padding keys.
/// Positions restart at 0 for every prompt, so a score does not depend on which other prompts share its batch, beyond
/// float rounding in the GEMMs (differences of order 1e-6 in the logits).</para>
/// <para><b>Cost.</b> One forward pass over the prompt tokens; lm_head is applied to the last position only, and only to
/// the answer tokens' rows (2·H FLOPs per prompt instead of 2·V·H).</para>
/// Not thread-safe; dispose to free the adapter and scratch memory on the backend.
/// </remarks>
public sealed class CtrScorer : IDisposable
{
    private readonly BatchForward _forward;
    private readonly CtrPromptEncoder _encoder;
    private bool _disposed;

    /// <summary>Creates a scorer over <paramref name="model"/>, uploading <paramref name="adapter"/> to the model's backend.</summary>
    /// <param name="model">The base model; it must outlive the scorer.</param>
    /// <param name="adapter">A ReLLaX adapter loaded for this model's dimensions, or null for the bare model.</param>
    /// <param name="options">Template, attention, batching and answers; null for the defaults.</param>
    /// <exception cref="ArgumentException">The adapter was loaded for other dimensions, the options are out of range, or the
    /// yes/no answers are empty or equal.</exception>
    /// <exception cref="NotSupportedException">The model's head dimension is not supported by <see cref="FlashAttention"/>.</exception>
    public CtrScorer(LlamaModel model, RellaxAdapter? adapter = null, ScoringOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new ScoringOptions();
        ArgumentNullException.ThrowIfNull(options.Template, nameof(options) + ".Template");
        if (options.BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(options), options.BatchSize, "BatchSize must be at least 1");
        if (options.MaxBatchTokens < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxBatchTokens, "MaxBatchTokens must be at least 1");
        if (!Enum.IsDefined(options.Attention)) throw new ArgumentOutOfRangeException(nameof(options), options.Attention, "Attention must be Fp32 or Int8");
        if (string.IsNullOrEmpty(options.YesAnswer) || string.IsNullOrEmpty(options.NoAnswer) || options.YesAnswer == options.NoAnswer)
            throw new ArgumentException($"the yes and no answers must be non-empty and different; got '{options.YesAnswer}' and '{options.NoAnswer}'", nameof(options));
        _encoder = new CtrPromptEncoder(model, adapter, options.Template, options.YesAnswer, options.NoAnswer);
        Model = model;
        Adapter = adapter;
        Options = options;
        _forward = new BatchForward(model, adapter, options.Attention);
    }

    /// <summary>The model.</summary>
    public LlamaModel Model { get; }

    /// <summary>The adapter, or null.</summary>
    public RellaxAdapter? Adapter { get; }

    /// <summary>The options.</summary>
    public ScoringOptions Options { get; }

    /// <summary>
    /// Checks one request without running the model: SPA markers need a projector and one embedding each (of length E);
    /// a CFLoRA adapter needs an instance vector of length d_h; the tokenized prompt must fit in
    /// <c>max_position_embeddings</c> (and a Mistral sliding window). Returns the request's token count (BOS and the
    /// answers' common prefix included).
    /// </summary>
    /// <exception cref="ArgumentException">What is wrong, in one sentence naming the field and the expected and actual sizes.</exception>
    public int Validate(CtrRequest request)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _encoder.Prepare(request).Ids.Length;
    }

    /// <summary>Scores <paramref name="requests"/>; the result has one score per request, in the same order.</summary>
    /// <param name="requests">The prompts.</param>
    /// <param name="progress">Receives <c>("score", requests scored so far, requests.Count)</c> after each batch.</param>
    /// <param name="cancellationToken">Checked between batches.</param>
    /// <exception cref="RecordException">A request fails <see cref="Validate"/>: <see cref="RecordException.Record"/> is its
    /// index (the message starts with <c>request {index}:</c>) and nothing is scored.</exception>
    public CtrScore[] Score(IReadOnlyList<CtrRequest> requests, IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(requests);
        cancellationToken.ThrowIfCancellationRequested();
        var prepared = new PreparedPrompt[requests.Count];
        for (int i = 0; i < prepared.Length; i++)
        {
            if ((i & 255) == 255) cancellationToken.ThrowIfCancellationRequested();
            try
            {
                prepared[i] = _encoder.Prepare(requests[i] ?? throw new ArgumentException("the request is null"));
            }
            catch (ArgumentException e)
            {
                throw new RecordException("request", i, null, e.Message, e);
            }
        }

        var scores = new CtrScore[prepared.Length];
        // Longest first, so each batch pads to its first prompt and similar lengths share a batch.
        int[] order = [.. Enumerable.Range(0, prepared.Length).OrderByDescending(i => prepared[i].Ids.Length).ThenBy(i => i)];
        int done = 0;
        for (int start = 0; start < order.Length;)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int t = prepared[order[start]].Ids.Length;
            int count = Math.Max(1, Math.Min(Options.BatchSize, Options.MaxBatchTokens / t));
            count = Math.Min(count, order.Length - start);
            var members = order.AsSpan(start, count).ToArray();
            ScoreBatch(members, prepared, t, scores);
            start += count;
            done += count;
            progress?.Report(new WorkProgress("score", done, order.Length));
        }
        return scores;
    }

    private void ScoreBatch(int[] members, PreparedPrompt[] prepared, int t, CtrScore[] scores)
    {
        var batch = _encoder.Batch([.. members.Select(m => prepared[m])], t);
        var answerIds = new List<int>();
        foreach (int m in members)
        {
            if (!answerIds.Contains(prepared[m].YesId)) answerIds.Add(prepared[m].YesId);
            if (!answerIds.Contains(prepared[m].NoId)) answerIds.Add(prepared[m].NoId);
        }
        var hidden = _forward.LastHidden(batch);
        var logits = _forward.Logits(hidden, [.. answerIds]);
        int n = answerIds.Count;
        for (int j = 0; j < members.Length; j++)
        {
            var p = prepared[members[j]];
            float yes = logits[j * n + answerIds.IndexOf(p.YesId)], no = logits[j * n + answerIds.IndexOf(p.NoId)];
            scores[members[j]] = new CtrScore(1.0 / (1.0 + Math.Exp((double)no - yes)), yes, no);
        }
    }

    /// <summary>Frees the adapter and scratch memory on the backend.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _forward.Dispose();
    }
}
