using System.Runtime.CompilerServices;

namespace Rellax.Runtime;

/// <summary>
/// A validated request: token ids (negative for SPA slots: <see cref="CtrPromptEncoder.HistSlot"/>,
/// <see cref="CtrPromptEncoder.TargetSlot"/>) ending with the answers' common prefix, the two answer ids that tell them
/// apart, the number of history and target slots, and how many of the last ids are the answers' common prefix.
/// </summary>
internal sealed record PreparedPrompt(CtrRequest Request, int[] Ids, int YesId, int NoId, int Hist, int Target, int Common);

/// <summary>
/// Turns <see cref="CtrRequest"/>s into token ids and left-padded <see cref="ForwardBatch"/>es for one model, adapter,
/// template and answer pair: shared by scoring (<see cref="CtrScorer"/>) and training
/// (<see cref="Training.AdapterTrainer"/>), so both see exactly the same prompts and answer tokens.
/// </summary>
internal sealed class CtrPromptEncoder
{
    public const int HistSlot = -1, TargetSlot = -2;

    private readonly LlamaModel _model;
    private readonly RellaxAdapter? _adapter;
    private readonly PromptTemplate _template;
    private readonly string _yes, _no;
    private readonly string[] _markers;

    /// <summary>
    /// Tokenizations of requests already validated (keyed by reference; the template and markers are fixed per encoder),
    /// so validating then scoring tokenizes each prompt once. The vector checks, which are cheap and read arrays a caller
    /// could have changed, run again every time.
    /// </summary>
    private readonly ConditionalWeakTable<CtrRequest, PreparedPrompt> _prepared = new();

    public CtrPromptEncoder(LlamaModel model, RellaxAdapter? adapter, PromptTemplate template, string yes, string no)
    {
        if (string.IsNullOrEmpty(yes) || string.IsNullOrEmpty(no) || yes == no)
            throw new ArgumentException($"the yes and no answers must be non-empty and different; got '{yes}' and '{no}'");
        if (adapter is not null) CheckAdapterFits(adapter, model.Config);
        _model = model;
        _adapter = adapter;
        _template = template;
        _yes = yes;
        _no = no;
        _markers = adapter is null ? ["[hist]", "[target]"] : [adapter.Config.HistToken, adapter.Config.TargetToken];
        var c = model.Config;
        MaxTokens = c.SlidingWindow is int window ? Math.Min(window, c.MaxPositionEmbeddings) : c.MaxPositionEmbeddings;
    }

    /// <summary>Most tokens a prompt may have (the context, or a sliding window).</summary>
    public int MaxTokens { get; }

    /// <summary>The validated, tokenized request (cached per request object).</summary>
    /// <exception cref="ArgumentException">What is wrong with the request (see <see cref="CtrScorer.Validate"/>).</exception>
    public PreparedPrompt Prepare(CtrRequest request)
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

    /// <summary>
    /// The tokens of <paramref name="answer"/> as it follows the templated prompt of <paramref name="prepared"/> minus the
    /// answers' common prefix already in <see cref="PreparedPrompt.Ids"/>: the teacher-forced continuation of an LM loss.
    /// </summary>
    public int[] Continuation(PreparedPrompt prepared, string answer)
    {
        var (lead, tail) = LastPiece(_template.Apply(prepared.Request.Prompt));
        int[] baseIds = _model.Tokenizer.EncodeWithMarkers(lead + tail, _markers, addSpecialTokens: false);
        int[] all = ContinuationOf(lead + tail + answer, baseIds, answer);
        // The answers' common prefix is already the last Common ids of the prompt.
        var common = prepared.Ids.AsSpan(prepared.Ids.Length - prepared.Common);
        if (all.Length <= common.Length || !all.AsSpan(0, common.Length).SequenceEqual(common))
            throw new ArgumentException($"the answer '{answer}' does not start with the tokens the yes/no answers share ([{string.Join(", ", common.ToArray())}])");
        return all[common.Length..];
    }

    /// <summary>
    /// A left-padded batch of <paramref name="members"/> padded to <paramref name="tokens"/> (at least the longest),
    /// with each member's extra tokens (LM answers) appended after its prompt when <paramref name="extra"/> is given.
    /// </summary>
    public ForwardBatch Batch(IReadOnlyList<PreparedPrompt> members, int tokens, IReadOnlyList<int[]>? extra = null)
    {
        int b = members.Count, t = tokens;
        var ids = new int[b * t];
        var lengths = new int[b];
        var slotRows = new List<int>();
        var slotInputs = new List<float>();
        int dh = _adapter?.HasGenerators == true ? _adapter.Config.InstanceDim ?? 0 : 0;
        var instances = new float[b * dh];
        for (int j = 0; j < b; j++)
        {
            var p = members[j];
            int[] more = extra?[j] ?? [];
            int length = p.Ids.Length + more.Length;
            if (length > t) throw new ArgumentException($"member {j} has {length} tokens, more than the batch's {t}");
            int pad = t - length;
            lengths[j] = length;
            int hist = 0;
            for (int i = 0; i < p.Ids.Length; i++)
            {
                int id = p.Ids[i], row = j * t + pad + i;
                if (id >= 0) { ids[row] = id; continue; }
                slotRows.Add(row);
                slotInputs.AddRange(id == HistSlot ? p.Request.HistEmbeddings![hist++] : p.Request.TargetEmbedding!);
            }
            more.CopyTo(ids, j * t + pad + p.Ids.Length);
            if (dh > 0) p.Request.Instance.AsSpan().CopyTo(instances.AsSpan(j * dh, dh));
        }
        return new ForwardBatch(b, t, ids, lengths, [.. slotRows], [.. slotInputs], instances);
    }

    private (string Lead, string Tail) LastPiece(string text)
    {
        // Answers as they follow the prompt: tokenize the last piece (after the last marker) with and without each answer.
        int lastMarker = -1, lastMarkerLength = 0;
        foreach (var m in _markers)
        {
            int i = text.LastIndexOf(m, StringComparison.Ordinal);
            if (i > lastMarker || (i == lastMarker && i >= 0 && m.Length > lastMarkerLength)) (lastMarker, lastMarkerLength) = (i, m.Length);
        }
        string lead = lastMarker < 0 ? "" : _markers[0];
        string tail = lastMarker < 0 ? text : text[(lastMarker + lastMarkerLength)..];
        return (lead, tail);
    }

    private int[] ContinuationOf(string withAnswer, int[] without, string answer)
    {
        int[] all = _model.Tokenizer.EncodeWithMarkers(withAnswer, _markers, addSpecialTokens: false);
        if (all.Length <= without.Length || !all.AsSpan(0, without.Length).SequenceEqual(without))
            throw new ArgumentException($"the answer '{answer}' merges with the end of the prompt when tokenized, so its tokens cannot be " +
                "told apart from the prompt's; end the prompt differently or choose other answers (--yes/--no)");
        return all[without.Length..];
    }

    private PreparedPrompt Tokenize(CtrRequest request)
    {
        if (request.Prompt is null) throw new ArgumentException("prompt is missing");
        var tokenizer = _model.Tokenizer;
        string text = _template.Apply(request.Prompt);
        // Tokenization stops once the prompt is certain to pass the context, so a huge prompt costs little.
        var prefix = tokenizer.PrefixIds;
        if (!tokenizer.TryEncodeWithMarkers(text, _markers, Math.Max(0, MaxTokens - prefix.Count), out int[] body, out long atLeast, addSpecialTokens: false))
            throw new PromptTooLongException(prefix.Count + atLeast, exact: false, MaxTokens, ContextName());
        int hist = body.Count(id => id == HistSlot), target = body.Count(id => id == TargetSlot);
        CheckVectors(request, hist, target);

        var (lead, tail) = LastPiece(text);
        int[] baseIds = tokenizer.EncodeWithMarkers(lead + tail, _markers, addSpecialTokens: false);
        int[] yes = ContinuationOf(lead + tail + _yes, baseIds, _yes);
        int[] no = ContinuationOf(lead + tail + _no, baseIds, _no);
        int common = 0;
        while (common < yes.Length && common < no.Length && yes[common] == no[common]) common++;
        if (common == yes.Length || common == no.Length)
            throw new ArgumentException($"the answers '{_yes}' and '{_no}' tokenize to [{string.Join(", ", yes)}] and " +
                $"[{string.Join(", ", no)}]: one is a prefix of the other, so no single token tells them apart");

        var ids = new int[prefix.Count + body.Length + common];
        for (int i = 0; i < prefix.Count; i++) ids[i] = prefix[i];
        body.CopyTo(ids, prefix.Count);
        yes.AsSpan(0, common).CopyTo(ids.AsSpan(prefix.Count + body.Length));
        if (ids.Length > MaxTokens) throw new PromptTooLongException(ids.Length, exact: true, MaxTokens, ContextName());
        return new PreparedPrompt(request, ids, yes[common], no[common], hist, target, common);
    }

    /// <summary>What bounds a prompt's length, for messages.</summary>
    public string ContextName() =>
        _model.Config.SlidingWindow is int w && w < _model.Config.MaxPositionEmbeddings
            ? $"sliding window of {w} tokens (attention beyond the window is not implemented)"
            : $"max_position_embeddings = {_model.Config.MaxPositionEmbeddings}";

    private void CheckVectors(CtrRequest request, int hist, int target)
    {
        var cfg = _adapter?.Config;
        if ((hist > 0 || target > 0) && _adapter?.Projector is null)
            throw new ArgumentException($"the prompt has {hist} {_markers[0]} and {target} {_markers[1]} markers, but " +
                (_adapter is null ? "there is no adapter" : "the adapter has no SPA projector") + " to turn CRM embeddings into soft tokens");
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
        if (_adapter?.HasGenerators == true)
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

    public static void CheckAdapterFits(RellaxAdapter adapter, LlamaConfig c)
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
}
