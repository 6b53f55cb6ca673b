using System.Diagnostics;
using Rellax.Kernels;
using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>How a prompt's history is chosen.</summary>
public enum HistoryRetrieval
{
    /// <summary>The K most recent events (the reference code's <c>simple</c> prompts).</summary>
    Recent,
    /// <summary>SUBR: the K events most similar to the target by LLM item vectors (SPEC §2).</summary>
    Subr,
}

/// <summary>What <see cref="CtrEvaluation.Run"/> does.</summary>
public sealed record EvaluationOptions
{
    /// <summary>The split to score (default test).</summary>
    public SampleSplit Split { get; init; } = SampleSplit.Test;

    /// <summary>Score only the first N samples of the split (0 = all).</summary>
    public int Limit { get; init; }

    /// <summary>History events per prompt (SPEC: 30 for MovieLens, 60 for Book-Crossing).</summary>
    public int K { get; init; } = 30;

    /// <summary>Recent-K or SUBR-K.</summary>
    public HistoryRetrieval Retrieval { get; init; } = HistoryRetrieval.Subr;

    /// <summary>SUBR's order in the prompt: chronological (the default, the reference's <c>sequential</c>) or best first.</summary>
    public SubrOrder Order { get; init; } = SubrOrder.Chronological;

    /// <summary>PCA components for SUBR's item vectors (SPEC: 512); capped at min(items, dimension) by <see cref="Pca.Honour"/>, which warns; null: no PCA.</summary>
    public int? PcaComponents { get; init; } = 512;

    /// <summary>Cosine (default) or raw dot product (the reference code's choice for ML-25M and Book-Crossing).</summary>
    public SubrSimilarity Similarity { get; init; } = SubrSimilarity.Cosine;

    /// <summary>Template around each item sentence when embedding items (SPEC §2: the chat template, one user turn).</summary>
    public PromptTemplate ItemTemplate { get; init; } = PromptTemplate.Vicuna;

    /// <summary>Items per embedding forward pass.</summary>
    public int EmbedBatchSize { get; init; } = 32;

    /// <summary>SUBR's item vectors from the caller (e.g. <see cref="Rec.ItemVectors.Load"/> of a <c>rellax embed</c> file or
    /// another model's); null: the LLM embeds the items (the <c>embed</c> stage).</summary>
    public ItemVectors? ItemVectors { get; init; }

    /// <summary>Folder of the on-disk cache of item vectors and SUBR positions; null: no cache.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>The scorer's options (template, attention, batch sizes, answers).</summary>
    public ScoringOptions Scoring { get; init; } = new();
}

/// <summary>Time and throughput of one pipeline stage.</summary>
/// <param name="Stage">embed, pca, retrieve, prompts, tokenize, forward, or crm.</param>
/// <param name="Seconds">Wall time.</param>
/// <param name="Count">Units processed (items, samples, prompts).</param>
/// <param name="Unit">What <paramref name="Count"/> counts.</param>
/// <param name="Tokens">Tokens processed (0 when the stage does not run the model or tokenizer, or came from the cache).</param>
/// <param name="Cached">True when the result came from the on-disk cache.</param>
public sealed record StageTiming(string Stage, double Seconds, long Count, string Unit, long Tokens = 0, bool Cached = false)
{
    /// <summary><see cref="Count"/> per second (0 when no time passed).</summary>
    public double PerSecond => Seconds > 0 ? Count / Seconds : 0;

    /// <summary><see cref="Tokens"/> per second (0 when no time passed).</summary>
    public double TokensPerSecond => Seconds > 0 ? Tokens / Seconds : 0;
}

/// <summary>What <see cref="CtrEvaluation.Run"/> returns.</summary>
/// <param name="Metrics">AUC, LogLoss, accuracy.</param>
/// <param name="Stages">Per-stage timings, in order.</param>
/// <param name="Samples">The scored samples.</param>
/// <param name="Prompts">Their prompts.</param>
/// <param name="Scores">Their scores (p(click) = <see cref="CtrScore.PYes"/>).</param>
/// <param name="Quality">How often the listed history shares the target's category.</param>
/// <param name="PcaExplainedVariance">Share of the item vectors' variance the PCA kept (null without SUBR or PCA).</param>
public sealed record EvaluationResult(CtrMetrics Metrics, IReadOnlyList<StageTiming> Stages, IReadOnlyList<ReLLaSample> Samples,
    IReadOnlyList<ReLLaPrompt> Prompts, IReadOnlyList<CtrScore> Scores, RetrievalQuality Quality, double? PcaExplainedVariance);

/// <summary>What <see cref="CtrEvaluation.RetrieveSubr"/> returns.</summary>
/// <param name="Positions">Per sample, in the order given, the positions in its history (0 = its oldest event) of the K
/// events SUBR lists (fewer when the history is shorter), in <see cref="EvaluationOptions.Order"/>.</param>
/// <param name="Stages">Timings of the stages run: embed (not with given item vectors), pca, retrieve.</param>
/// <param name="PcaExplainedVariance">Share of the item vectors' variance the PCA kept (null without PCA).</param>
public sealed record SubrRetrieval(int[][] Positions, IReadOnlyList<StageTiming> Stages, double? PcaExplainedVariance);

/// <summary>
/// Retrieval quality a user can see: the share of listed history events whose category (first genre) is the target's.
/// </summary>
/// <param name="Listed">For the prompts' histories (SUBR-K or recent-K, whichever ran).</param>
/// <param name="RecentK">For recent-K over the same samples (the baseline SUBR should beat).</param>
/// <param name="FullHistory">For the whole history (what random picks would average).</param>
public readonly record struct RetrievalQuality(double Listed, double RecentK, double FullHistory);

/// <summary>
/// The prompts and scoring requests of a list of samples, built by <see cref="CtrEvaluation.BuildPrompts"/> as
/// <c>rellax eval</c> scores them and <c>rellax train</c> trains on them.
/// </summary>
/// <param name="Samples">The samples, in the order given.</param>
/// <param name="Prompts">Their prompts (SPA markers when the adapter has a projector).</param>
/// <param name="Requests">Their requests: the templated-later prompt text, h_u when the adapter has generators, the CRM item
/// embeddings of the listed history and of the target when it has a projector. Every one fits the model's context.</param>
/// <param name="Positions">The history positions each prompt lists (recent-K or SUBR-K), in prompt order.</param>
/// <param name="RecentPositions">Each sample's recent-K positions (the baseline of <see cref="RetrievalQuality"/>).</param>
/// <param name="Tokens">Prompt tokens in all, as the scorer counts them (template and answer prefix included).</param>
/// <param name="Stages">Timings of the stages run: embed, pca, retrieve (SUBR only), prompts, tokenize.</param>
/// <param name="PcaExplainedVariance">Share of the item vectors' variance the PCA kept (null without SUBR or PCA).</param>
public sealed record CtrPromptSet(IReadOnlyList<ReLLaSample> Samples, IReadOnlyList<ReLLaPrompt> Prompts, IReadOnlyList<CtrRequest> Requests,
    int[][] Positions, int[][] RecentPositions, long Tokens, IReadOnlyList<StageTiming> Stages, double? PcaExplainedVariance);

/// <summary>
/// The ReLLaX evaluation pipeline over prepared samples: (SUBR only) LLM item vectors → PCA → index → retrieval, then
/// prompts (with SPA markers when the adapter has a projector) → tokenize → batched forward → metrics, timing each stage.
/// Item vectors and SUBR positions are cached on disk when <see cref="EvaluationOptions.CacheDirectory"/> is set.
/// </summary>
public static class CtrEvaluation
{
    /// <summary>Runs the evaluation.</summary>
    /// <param name="model">The base model (its backend runs everything).</param>
    /// <param name="adapter">LoRA / CFLoRA / SPA adapter, or null for the base model.</param>
    /// <param name="set">The samples.</param>
    /// <param name="crm">CRM features: user states for CFLoRA generators (by sample index) and item embeddings for SPA (by
    /// item row); required when the adapter has generators or a projector.</param>
    /// <param name="options">Null for the defaults.</param>
    /// <param name="progress">Stage progress, stage after stage: <c>embed</c> (items; SUBR without cached vectors),
    /// <c>retrieve</c> (samples; SUBR without cached positions), <c>forward</c> (prompts scored).</param>
    /// <param name="warn">Receives warnings (one line each): an unusable cache file, a PCA size that was capped.</param>
    /// <param name="cancellationToken">Checked between batches.</param>
    /// <exception cref="ArgumentException">The split is empty, the adapter needs CRM features that are missing, of the wrong
    /// size or lack a sample or item, or a prompt is too long for the model (the message says which).</exception>
    public static EvaluationResult Run(LlamaModel model, RellaxAdapter? adapter, SampleSet set, CrmFeatures? crm, EvaluationOptions? options = null,
        IProgress<WorkProgress>? progress = null, Action<string>? warn = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(set);
        var o = options ?? new EvaluationOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(o.K, 1);
        if (o.Retrieval == HistoryRetrieval.Subr) ArgumentOutOfRangeException.ThrowIfGreaterThan(o.K, SubrTopK.MaxK);
        ArgumentOutOfRangeException.ThrowIfNegative(o.Limit);
        CheckCrm(adapter, crm);
        cancellationToken.ThrowIfCancellationRequested();

        var samples = set.InSplit(o.Split).ToList();
        if (o.Limit > 0 && samples.Count > o.Limit) samples = samples.GetRange(0, o.Limit);
        if (samples.Count == 0) throw new ArgumentException($"the {SampleSet.NameOf(o.Split)} split of '{set.Dataset.Name}' has no samples", nameof(set));

        using var scorer = new CtrScorer(model, adapter, o.Scoring);
        var built = BuildPrompts(scorer, set, samples, crm, o, progress, warn, cancellationToken);
        var stages = built.Stages.ToList();
        var clock = Stopwatch.StartNew();
        var scores = scorer.Score(built.Requests, RelabelledProgress.Of(progress, "forward"), cancellationToken);
        stages.Add(new StageTiming("forward", clock.Elapsed.TotalSeconds, samples.Count, "prompts", built.Tokens));

        var p1 = scores.Select(s => s.PYes).ToArray();
        var labels = samples.Select(s => s.Label).ToArray();
        var metrics = CtrMetrics.Compute(p1, labels);
        var quality = new RetrievalQuality(
            SampleRetrieval.CategoryAgreement(set, samples, built.Positions),
            SampleRetrieval.CategoryAgreement(set, samples, built.RecentPositions),
            SampleRetrieval.CategoryAgreement(set, samples, null));
        return new EvaluationResult(metrics, stages, samples, built.Prompts, scores, quality, built.PcaExplainedVariance);
    }

    /// <summary>
    /// Builds the prompts and requests of <paramref name="samples"/> as <see cref="Run"/> scores them: recent-K or
    /// (<see cref="EvaluationOptions.Retrieval"/>) SUBR-K histories, ReLLa prompts with SPA markers when the scorer's
    /// adapter has a projector, h_u and the CRM item embeddings the adapter needs, and every request checked against
    /// the model (with SUBR, each sample's longest possible prompt is checked before any item is embedded).
    /// </summary>
    /// <param name="scorer">Its model embeds items and tokenizes; its adapter decides markers and vectors; its options the
    /// template. Nothing is scored.</param>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="samples">Samples of <paramref name="set"/> (any split, any order; at least one).</param>
    /// <param name="crm">CRM features covering the samples and their items; required when the adapter has generators or a projector.</param>
    /// <param name="options">K, retrieval, SUBR settings, cache; <see cref="EvaluationOptions.Split"/> and
    /// <see cref="EvaluationOptions.Limit"/> are not used. Null for the defaults.</param>
    /// <param name="progress">Stage progress: <c>embed</c> (items) and <c>retrieve</c> (samples), with SUBR when not cached.</param>
    /// <param name="warn">Receives warnings (an unusable cache file, a capped PCA size).</param>
    /// <param name="cancellationToken">Checked between samples and batches.</param>
    /// <exception cref="ArgumentException">The adapter needs CRM features that are missing or of the wrong size, or a
    /// prompt is too long (a <see cref="RecordException"/> naming the sample, with K and a K that fits).</exception>
    public static CtrPromptSet BuildPrompts(CtrScorer scorer, SampleSet set, IReadOnlyList<ReLLaSample> samples, CrmFeatures? crm, EvaluationOptions? options = null,
        IProgress<WorkProgress>? progress = null, Action<string>? warn = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(samples);
        if (samples.Count == 0) throw new ArgumentException("there are no samples to build prompts for", nameof(samples));
        var o = options ?? new EvaluationOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(o.K, 1);
        if (o.Retrieval == HistoryRetrieval.Subr) ArgumentOutOfRangeException.ThrowIfGreaterThan(o.K, SubrTopK.MaxK);
        CheckCrm(scorer.Adapter, crm);
        cancellationToken.ThrowIfCancellationRequested();
        var sampleList = samples as List<ReLLaSample> ?? [.. samples];
        var stages = new List<StageTiming>();
        var model = scorer.Model;
        var adapter = scorer.Adapter;
        var cache = o.CacheDirectory is null ? null : new PipelineCache(o.CacheDirectory, warn);
        var builder = new ReLLaPromptBuilder(set, new PromptOptions
        {
            SpaMarkers = adapter?.Projector is not null,
            HistToken = adapter?.Config.HistToken ?? "[hist]",
            TargetToken = adapter?.Config.TargetToken ?? "[target]",
        });
        bool generators = adapter?.HasGenerators == true, spa = adapter?.Projector is not null;
        int[][] recent = SampleRetrieval.Recent(set, sampleList, o.K);
        int[][] positions = recent;
        double? explained = null;
        if (o.Retrieval == HistoryRetrieval.Subr)
        {
            // SUBR may list any K of a sample's history items. Check each sample's longest case (its K history items with the
            // most title tokens) now, so that a K or a template that cannot fit the context fails in seconds, not after the
            // LLM has embedded every item.
            var titleTokens = new int[set.Dataset.Items.Count];
            for (int j = 0; j < titleTokens.Length; j++)
                titleTokens[j] = model.Tokenizer.Encode(set.Dataset.Items[j].Title, addSpecialTokens: false).Count;
            for (int i = 0; i < sampleList.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var longest = LongestPositions(set, sampleList[i], o.K, titleTokens);
                Validate(i, Request(i, builder.Build(sampleList[i], longest)), longest.Length < sampleList[i].HistoryLength ? titleTokens : null);
            }
            positions = Subr(model.Backend, model, set, sampleList, o, cache, stages, progress, warn, cancellationToken, out explained);
        }

        var clock = Stopwatch.StartNew();
        var prompts = new ReLLaPrompt[sampleList.Count];
        var requests = new CtrRequest[sampleList.Count];
        for (int i = 0; i < sampleList.Count; i++)
        {
            if ((i & 1023) == 1023) cancellationToken.ThrowIfCancellationRequested();
            requests[i] = Request(i, prompts[i] = builder.Build(sampleList[i], positions[i]));
        }
        stages.Add(new StageTiming("prompts", clock.Elapsed.TotalSeconds, sampleList.Count, "prompts"));

        clock.Restart();
        long tokens = 0;
        for (int i = 0; i < requests.Length; i++)
        {
            if ((i & 255) == 255) cancellationToken.ThrowIfCancellationRequested();
            tokens += Validate(i, requests[i]);
        }
        stages.Add(new StageTiming("tokenize", clock.Elapsed.TotalSeconds, sampleList.Count, "prompts", tokens));
        return new CtrPromptSet(sampleList, prompts, requests, positions, recent, tokens, stages, explained);

        CtrRequest Request(int i, ReLLaPrompt p)
        {
            try
            {
                return new CtrRequest(p.Text,
                    generators ? crm!.UserState(sampleList[i].Index).ToArray() : null,
                    spa ? p.HistoryItems.Select(item => crm!.ItemEmbedding(item).ToArray()).ToArray() : null,
                    spa ? crm!.ItemEmbedding(p.TargetItem).ToArray() : null);
            }
            catch (KeyNotFoundException e)
            {
                throw new ArgumentException($"sample {sampleList[i].Index}: the CRM features do not cover it: {e.Message}", nameof(crm), e);
            }
        }

        // titleTokens: set when the request lists the sample's longest K history items (SUBR's check before embedding).
        int Validate(int i, CtrRequest request, int[]? titleTokens = null)
        {
            try { return scorer.Validate(request); }
            catch (ArgumentException e)
            {
                bool tooLong = e is PromptTooLongException;
                throw new RecordException("sample", sampleList[i].Index, null,
                    (tooLong && titleTokens is not null ? $"with its {o.K} longest history items (SUBR may list any {o.K}), " : "") + e.Message +
                    (tooLong ? TooLongAdvice(scorer, builder, set, sampleList[i], o, titleTokens, r => Request(i, r)) : ""), e);
            }
        }
    }

    /// <summary>What to change when <paramref name="sample"/>'s prompt is too long: the largest K whose prompt fits (its
    /// recent-K, or with <paramref name="titleTokens"/> its longest K), and the chat template's cost in tokens when one is applied.</summary>
    private static string TooLongAdvice(CtrScorer scorer, ReLLaPromptBuilder builder, SampleSet set, in ReLLaSample sample, EvaluationOptions o,
        int[]? titleTokens, Func<ReLLaPrompt, CtrRequest> request)
    {
        int fits = 0;
        for (int k = Math.Min(o.K - 1, sample.HistoryLength); k >= 1 && fits == 0; k--)
        {
            try
            {
                var positions = titleTokens is null ? ReLLaPromptBuilder.RecentPositions(sample.HistoryLength, k) : LongestPositions(set, sample, k, titleTokens);
                scorer.Validate(request(builder.Build(sample, positions)));
                fits = k;
            }
            catch (ArgumentException) { }
        }
        var template = scorer.Options.Template;
        string templateAdvice = template.Name == PromptTemplate.None.Name ? ""
            : $"; --template none drops the {template.Name} template's {scorer.Model.Tokenizer.Encode(template.Apply(""), addSpecialTokens: false).Count} tokens";
        return $" (K = {o.K} history items per prompt; " + (fits > 0 ? $"K = {fits} fits this sample" : "even K = 1 does not fit") + templateAdvice + ")";
    }

    /// <summary>The positions of the <paramref name="k"/> history events of <paramref name="sample"/> whose items' titles
    /// have the most tokens (ties: the more recent), in time order: the longest prompt SUBR-K could produce.</summary>
    private static int[] LongestPositions(SampleSet set, in ReLLaSample sample, int k, int[] titleTokens)
    {
        var history = set.History(sample);
        if (history.Length <= k) return ReLLaPromptBuilder.RecentPositions(history.Length, k);
        var order = new int[history.Length];
        for (int p = 0; p < order.Length; p++) order[p] = p;
        var keys = new long[history.Length];
        for (int p = 0; p < keys.Length; p++) keys[p] = -((long)titleTokens[history[p].Item] << 32 | (uint)p);
        Array.Sort(keys, order);
        var chosen = order.AsSpan(0, k).ToArray();
        Array.Sort(chosen);
        return chosen;
    }

    /// <summary>Checks that the CRM features cover what the adapter needs, with sizes.</summary>
    private static void CheckCrm(RellaxAdapter? adapter, CrmFeatures? crm)
    {
        if (adapter is null) return;
        if (adapter.HasGenerators)
        {
            if (crm is null || crm.StateDim == 0)
                throw new ArgumentException($"adapter '{adapter.Directory}' has CFLoRA generators and needs a user state (d_h = {adapter.Config.InstanceDim}) per sample: give CRM features", nameof(crm));
            if (crm.StateDim != adapter.Config.InstanceDim)
                throw new ArgumentException($"the CRM user states have {crm.StateDim} values, but adapter '{adapter.Directory}' expects instance_dim = {adapter.Config.InstanceDim}", nameof(crm));
        }
        if (adapter.Projector is not null)
        {
            if (crm is null || crm.EmbedDim == 0)
                throw new ArgumentException($"adapter '{adapter.Directory}' has an SPA projector and needs CRM item embeddings (E = {adapter.Config.CrmEmbedDim}): give CRM features", nameof(crm));
            if (crm.EmbedDim != adapter.Config.CrmEmbedDim)
                throw new ArgumentException($"the CRM item embeddings have {crm.EmbedDim} values, but adapter '{adapter.Directory}' expects crm_embed_dim = {adapter.Config.CrmEmbedDim}", nameof(crm));
        }
    }

    /// <summary>
    /// The SUBR-K histories of <paramref name="samples"/> alone, chosen as <see cref="Run"/> and <see cref="BuildPrompts"/>
    /// choose them (SPEC §2): the item vectors (<see cref="EvaluationOptions.ItemVectors"/>, or the LLM's embedding of
    /// every item's sentence), PCA to <see cref="EvaluationOptions.PcaComponents"/> (capped, with a warning), a centred
    /// cosine or dot index, and each sample's K history events most similar to its target. Item vectors and positions are
    /// read from and written to <see cref="EvaluationOptions.CacheDirectory"/> when it is set. For a service that builds
    /// its own prompts (or exports them) from the retrieved histories; no prompt is built or checked here.
    /// </summary>
    /// <param name="backend">Runs the PCA and the index.</param>
    /// <param name="model">Embeds the items when <see cref="EvaluationOptions.ItemVectors"/> is null (on its own backend);
    /// null when the vectors are given.</param>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="samples">Samples of <paramref name="set"/> (any split, any order; at least one).</param>
    /// <param name="options">K, order, similarity, PCA, item template, item vectors, cache; the split, limit and scoring
    /// settings other than the attention precision are not used. Null for the defaults.</param>
    /// <param name="progress">Stage progress (embed, retrieve).</param>
    /// <param name="warn">Receives warnings (one line each): an unusable cache file, a capped PCA size.</param>
    /// <param name="cancellationToken">Checked between batches and samples.</param>
    /// <returns>Per sample, in the order given, the positions in its history of the events SUBR lists.</returns>
    /// <exception cref="ArgumentException">No samples; K outside [1, <see cref="SubrTopK.MaxK"/>]; no model and no item
    /// vectors; item vectors whose rows are not the dataset's items.</exception>
    public static SubrRetrieval RetrieveSubr(ComputeBackend backend, LlamaModel? model, SampleSet set, IReadOnlyList<ReLLaSample> samples,
        EvaluationOptions? options = null, IProgress<WorkProgress>? progress = null, Action<string>? warn = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(samples);
        if (samples.Count == 0) throw new ArgumentException("there are no samples to retrieve histories for", nameof(samples));
        var o = options ?? new EvaluationOptions();
        if (o.K < 1 || o.K > SubrTopK.MaxK)
            throw new ArgumentException($"K = {o.K} must be in [1, {SubrTopK.MaxK}]", nameof(options));
        var stages = new List<StageTiming>();
        var cache = o.CacheDirectory is null ? null : new PipelineCache(o.CacheDirectory, warn);
        var positions = Subr(backend, model, set, samples as List<ReLLaSample> ?? [.. samples], o, cache, stages, progress, warn, cancellationToken,
            out double? explained);
        return new SubrRetrieval(positions, stages, explained);
    }

    /// <summary>The SUBR stages: item vectors (cached), PCA + index, retrieval (cached); appends their timings to <paramref name="stages"/>.</summary>
    internal static int[][] Subr(ComputeBackend backend, LlamaModel? model, SampleSet set, List<ReLLaSample> samples, EvaluationOptions o, PipelineCache? cache,
        List<StageTiming> stages, IProgress<WorkProgress>? progress, Action<string>? warn, CancellationToken cancellationToken, out double? explained)
    {
        int rows = set.Dataset.Items.Count;

        float[] vectors;
        int dim;
        string vectorsKey;
        var clock = Stopwatch.StartNew();
        if (o.ItemVectors is { } given)
        {
            if (given.Rows != rows)
                throw new ArgumentException($"the given item vectors have {given.Rows} rows, but the dataset has {rows} items", nameof(o));
            (vectors, dim) = (given.Values, given.Dim);
            using var key = new CacheKey("given item-vectors v1");
            vectorsKey = key.Add(dim).Add<float>(vectors).Finish();
        }
        else if (model is null)
        {
            throw new ArgumentException("SUBR needs item vectors: give a model to embed the items, or the vectors themselves", nameof(model));
        }
        else
        {
            int hidden = model.Config.HiddenSize;
            var texts = set.Dataset.Items.Select(i => ItemText.Describe(i, set.Dataset.Domain)).ToList();
            // Item vectors from the LLM, keyed by the model files' identity, the template, the attention precision and every item text.
            using (var key = new CacheKey("item-vectors v1"))
            {
                key.Add(Path.GetFullPath(model.Directory));
                foreach (var f in Directory.EnumerateFiles(model.Directory).Order(StringComparer.Ordinal)) key.AddFileIdentity(f);
                key.Add(o.ItemTemplate.Prefix).Add(o.ItemTemplate.Suffix).Add((long)o.Scoring.Attention).Add(rows);
                foreach (var t in texts) key.Add(t);
                vectorsKey = key.Finish();
            }
            dim = hidden;
            float[]? cachedVectors = cache?.TryLoadVectors(vectorsKey, rows, hidden);
            long tokens = 0;
            bool fromCache = cachedVectors is not null;
            if (cachedVectors is null)
            {
                // Tokens are counted only when the model runs: the stage's tokens/s is the embedding forward's.
                using var embedder = new ItemEmbedder(model, o.ItemTemplate, o.Scoring.Attention, o.EmbedBatchSize);
                cachedVectors = embedder.Embed(texts, progress, cancellationToken);
                tokens = embedder.LastTokenCount;
                cache?.SaveVectors(vectorsKey, cachedVectors, rows, hidden);
            }
            vectors = cachedVectors;
            stages.Add(new StageTiming("embed", clock.Elapsed.TotalSeconds, rows, "items", tokens, fromCache));
        }

        clock.Restart();
        int? components = Pca.Honour(o.PcaComponents, rows, dim, warn);
        // Without PCA, a cosine index is centred first, as `rellax index` builds it by default: one rule everywhere, so
        // that `retrieve` on such an index and this stage pick the same items.
        using var index = SubrIndex.Build(backend, vectors, rows, dim, default,
            new SubrIndexOptions { PcaComponents = components, Similarity = o.Similarity, Center = true }, cancellationToken);
        explained = index.ExplainedVarianceRatio?.Sum();
        stages.Add(new StageTiming("pca", clock.Elapsed.TotalSeconds, rows, "items"));

        string positionsKey;
        using (var key = new CacheKey("subr-positions v2"))
        {
            key.Add(vectorsKey).Add(components ?? 0).Add((long)o.Similarity).Add(o.K).Add((long)o.Order);
            for (int u = 0; u < set.Dataset.UserKeys.Count; u++)
            {
                var timeline = set.Timeline(u);
                var ids = new int[timeline.Length];
                for (int j = 0; j < ids.Length; j++) ids[j] = timeline[j].Item;
                key.Add<int>(ids);
            }
            foreach (var s in samples) key.Add(s.Index).Add(s.User).Add(s.Item).Add(s.HistoryLength);
            positionsKey = key.Finish();
        }
        clock.Restart();
        int[][]? positions = cache?.TryLoadPositions(positionsKey, samples, o.K);
        bool cached = positions is not null;
        if (positions is null)
        {
            positions = SampleRetrieval.Subr(index, set, samples, o.K, o.Order, progress: progress,
                cancellationToken: cancellationToken);
            cache?.SavePositions(positionsKey, positions);
        }
        stages.Add(new StageTiming("retrieve", clock.Elapsed.TotalSeconds, samples.Count, "samples", 0, cached));
        return positions;
    }
}
