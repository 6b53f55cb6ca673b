using System.Runtime.CompilerServices;
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
    private readonly string[] _markers;
    private readonly int _maxTokens;
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
        if (adapter is not null) CheckAdapterFits(adapter, model.Config);
        Model = model;
        Adapter = adapter;
        Options = options;
        _markers = adapter is null ? ["[hist]", "[target]"] : [adapter.Config.HistToken, adapter.Config.TargetToken];
        var c = model.Config;
        _maxTokens = c.SlidingWindow is int window ? Math.Min(window, c.MaxPositionEmbeddings) : c.MaxPositionEmbeddings;
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
        return Prepare(request).Ids.Length;
    }

    /// <summary>Scores <paramref name="requests"/>; the result has one score per request, in the same order.</summary>
    /// <param name="requests">The prompts.</param>
    /// <param name="progress">Receives the number of requests scored so far after each batch.</param>
    /// <param name="cancellationToken">Checked between batches.</param>
    /// <exception cref="RecordException">A request fails <see cref="Validate"/>: <see cref="RecordException.Record"/> is its
    /// index (the message starts with <c>request {index}:</c>) and nothing is scored.</exception>
    public CtrScore[] Score(IReadOnlyList<CtrRequest> requests, IProgress<int>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(requests);
        var prepared = new Prepared[requests.Count];
        for (int i = 0; i < prepared.Length; i++)
        {
            try
            {
                prepared[i] = Prepare(requests[i] ?? throw new ArgumentException("the request is null"));
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
            progress?.Report(done);
        }
        return scores;
    }

    private void ScoreBatch(int[] members, Prepared[] prepared, int t, CtrScore[] scores)
    {
        int b = members.Length;
        var ids = new int[b * t];
        var lengths = new int[b];
        var slotRows = new List<int>();
        var slotInputs = new List<float>();
        int dh = Adapter?.HasGenerators == true ? Adapter.Config.InstanceDim ?? 0 : 0;
        var instances = new float[b * dh];
        var answerIds = new List<int>();
        for (int j = 0; j < b; j++)
        {
            var p = prepared[members[j]];
            int pad = t - p.Ids.Length;
            lengths[j] = p.Ids.Length;
            int hist = 0;
            for (int i = 0; i < p.Ids.Length; i++)
            {
                int id = p.Ids[i], row = j * t + pad + i;
                if (id >= 0) { ids[row] = id; continue; }
                slotRows.Add(row);
                slotInputs.AddRange(id == HistSlot ? p.Request.HistEmbeddings![hist++] : p.Request.TargetEmbedding!);
            }
            if (dh > 0) p.Request.Instance.AsSpan().CopyTo(instances.AsSpan(j * dh, dh));
            if (!answerIds.Contains(p.YesId)) answerIds.Add(p.YesId);
            if (!answerIds.Contains(p.NoId)) answerIds.Add(p.NoId);
        }
        var batch = new ForwardBatch(b, t, ids, lengths, [.. slotRows], [.. slotInputs], instances);
        var hidden = _forward.LastHidden(batch);
        var logits = _forward.Logits(hidden, [.. answerIds]);
        int n = answerIds.Count;
        for (int j = 0; j < b; j++)
        {
            var p = prepared[members[j]];
            float yes = logits[j * n + answerIds.IndexOf(p.YesId)], no = logits[j * n + answerIds.IndexOf(p.NoId)];
            scores[members[j]] = new CtrScore(1.0 / (1.0 + Math.Exp((double)no - yes)), yes, no);
        }
    }

    private const int HistSlot = -1, TargetSlot = -2;

    /// <summary>
    /// A validated request: token ids (negative for SPA slots) ending with the answers' common prefix, the two answer ids,
    /// and the number of history and target slots.
    /// </summary>
    private sealed record Prepared(CtrRequest Request, int[] Ids, int YesId, int NoId, int Hist, int Target);

    /// <summary>
    /// Tokenizations of requests already validated by this scorer (keyed by reference; the template and markers are fixed
    /// per scorer), so <see cref="Validate"/> followed by <see cref="Score"/> tokenizes each prompt once. The vector checks,
    /// which are cheap and read arrays a caller could have changed, run again every time.
    /// </summary>
    private readonly ConditionalWeakTable<CtrRequest, Prepared> _prepared = new();

    private Prepared Prepare(CtrRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (_prepared.TryGetValue(request, out var cached))
        {
            CheckVectors(request, cached.Hist, cached.Target);
            return cached;
        }
        var prepared = Tokenize(request);
        _prepared.AddOrUpdate(request, prepared);
        return prepared;
    }

    private Prepared Tokenize(CtrRequest request)
    {
        if (request.Prompt is null) throw new ArgumentException("prompt is missing");
        var tokenizer = Model.Tokenizer;
        string text = Options.Template.Apply(request.Prompt);
        // Tokenization stops once the prompt is certain to pass the context, so a huge prompt costs little.
        var prefix = tokenizer.PrefixIds;
        if (!tokenizer.TryEncodeWithMarkers(text, _markers, Math.Max(0, _maxTokens - prefix.Count), out int[] body, out long atLeast, addSpecialTokens: false))
            throw new PromptTooLongException(prefix.Count + atLeast, exact: false, _maxTokens, ContextName());
        int hist = body.Count(id => id == HistSlot), target = body.Count(id => id == TargetSlot);
        CheckVectors(request, hist, target);

        // Answers as they follow the prompt: tokenize the last piece (after the last marker) with and without each answer.
        int lastMarker = -1, lastMarkerLength = 0;
        foreach (var m in _markers)
        {
            int i = text.LastIndexOf(m, StringComparison.Ordinal);
            if (i > lastMarker || (i == lastMarker && i >= 0 && m.Length > lastMarkerLength)) (lastMarker, lastMarkerLength) = (i, m.Length);
        }
        string lead = lastMarker < 0 ? "" : _markers[0];
        string tail = lastMarker < 0 ? text : text[(lastMarker + lastMarkerLength)..];
        int[] baseIds = tokenizer.EncodeWithMarkers(lead + tail, _markers, addSpecialTokens: false);
        int[] yes = Continuation(lead + tail + Options.YesAnswer, baseIds, Options.YesAnswer);
        int[] no = Continuation(lead + tail + Options.NoAnswer, baseIds, Options.NoAnswer);
        int common = 0;
        while (common < yes.Length && common < no.Length && yes[common] == no[common]) common++;
        if (common == yes.Length || common == no.Length)
            throw new ArgumentException($"the answers '{Options.YesAnswer}' and '{Options.NoAnswer}' tokenize to [{string.Join(", ", yes)}] and " +
                $"[{string.Join(", ", no)}]: one is a prefix of the other, so no single token tells them apart");

        var ids = new int[prefix.Count + body.Length + common];
        for (int i = 0; i < prefix.Count; i++) ids[i] = prefix[i];
        body.CopyTo(ids, prefix.Count);
        yes.AsSpan(0, common).CopyTo(ids.AsSpan(prefix.Count + body.Length));
        if (ids.Length > _maxTokens) throw new PromptTooLongException(ids.Length, exact: true, _maxTokens, ContextName());
        return new Prepared(request, ids, yes[common], no[common], hist, target);

        int[] Continuation(string withAnswer, int[] without, string answer)
        {
            int[] all = tokenizer.EncodeWithMarkers(withAnswer, _markers, addSpecialTokens: false);
            if (all.Length <= without.Length || !all.AsSpan(0, without.Length).SequenceEqual(without))
                throw new ArgumentException($"the answer '{answer}' merges with the end of the prompt when tokenized, so its tokens cannot be " +
                    "told apart from the prompt's; end the prompt differently or choose other answers (--yes/--no)");
            return all[without.Length..];
        }
    }

    /// <summary>What bounds a prompt's length, for messages.</summary>
    private string ContextName() =>
        Model.Config.SlidingWindow is int w && w < Model.Config.MaxPositionEmbeddings
            ? $"sliding window of {w} tokens (attention beyond the window is not implemented)"
            : $"max_position_embeddings = {Model.Config.MaxPositionEmbeddings}";

    private void CheckVectors(CtrRequest request, int hist, int target)
    {
        var cfg = Adapter?.Config;
        if ((hist > 0 || target > 0) && Adapter?.Projector is null)
            throw new ArgumentException($"the prompt has {hist} {_markers[0]} and {target} {_markers[1]} markers, but " +
                (Adapter is null ? "there is no adapter" : "the adapter has no SPA projector") + " to turn CRM embeddings into soft tokens");
        int histGiven = request.HistEmbeddings?.Count ?? 0;
        if (hist != histGiven)
            throw new ArgumentException(hist > histGiven
                ? $"the prompt has {hist} {_markers[0]} markers but hist_embeddings has {histGiven} vectors"
                : $"hist_embeddings has {histGiven} vectors but the prompt has only {hist} {_markers[0]} markers");
        if (target > 0 && request.TargetEmbedding is null)
            throw new ArgumentException($"the prompt has a {_markers[1]} marker but target_embedding is missing");
        if (hist > 0 || target > 0)
        {
            int e = cfg!.CrmEmbedDim ?? 0;
            for (int i = 0; i < hist; i++) CheckVector(request.HistEmbeddings![i], e, $"hist_embeddings[{i}]");
            if (target > 0) CheckVector(request.TargetEmbedding!, e, "target_embedding");
        }
        if (Adapter?.HasGenerators == true)
        {
            if (request.Instance is null)
                throw new ArgumentException($"the adapter has CFLoRA generators, so the request needs an instance vector h_u of length {cfg!.InstanceDim}; instance is missing");
            CheckVector(request.Instance, cfg!.InstanceDim ?? 0, "instance");
        }
    }

    private static void CheckVector(float[]? v, int length, string name)
    {
        if (v is null) throw new ArgumentException($"{name} is missing");
        if (v.Length != length) throw new ArgumentException($"{name} has length {v.Length}, expected {length}");
        for (int i = 0; i < v.Length; i++)
            if (!float.IsFinite(v[i])) throw new ArgumentException($"{name}[{i}] is {v[i]}; vectors must be finite");
    }

    private static void CheckAdapterFits(RellaxAdapter adapter, LlamaConfig c)
    {
        foreach (var t in adapter.Targets)
        {
            if (t.Layer >= c.NumHiddenLayers)
                throw new ArgumentException($"adapter '{adapter.Directory}' adapts layer {t.Layer} but the model has {c.NumHiddenLayers} layers", nameof(adapter));
            var (din, dout) = t.Module switch
            {
                LlamaModule.QProj => (c.HiddenSize, c.NumAttentionHeads * c.HeadDim),
                LlamaModule.KProj or LlamaModule.VProj => (c.HiddenSize, c.NumKeyValueHeads * c.HeadDim),
                LlamaModule.OProj => (c.NumAttentionHeads * c.HeadDim, c.HiddenSize),
                LlamaModule.GateProj or LlamaModule.UpProj => (c.HiddenSize, c.IntermediateSize),
                _ => (c.IntermediateSize, c.HiddenSize),
            };
            if (t.InFeatures != din || t.OutFeatures != dout)
                throw new ArgumentException($"adapter '{adapter.Directory}' has layer {t.Layer} {t.Module} for [{t.OutFeatures}, {t.InFeatures}] but the model's is [{dout}, {din}]", nameof(adapter));
        }
        if (adapter.Projector is { } p && p.B1.Length != c.HiddenSize)
            throw new ArgumentException($"adapter '{adapter.Directory}' projects CRM embeddings to {p.B1.Length} but the model's hidden size is {c.HiddenSize}", nameof(adapter));
    }

    /// <summary>Frees the adapter and scratch memory on the backend.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _forward.Dispose();
    }
}
