using Rellax.Runtime;
using Rellax.Runtime.Training;

namespace Rellax.Rec;

/// <summary>Labelled prompts built from a prepared dataset by <see cref="CtrTrainingData.Build"/>.</summary>
/// <param name="Examples">One example per sample, or two with ReiT (recent-K, then SUBR-K), in sample order.</param>
/// <param name="Samples">The sample each example came from (same length and order as <paramref name="Examples"/>).</param>
/// <param name="Tokens">Prompt tokens in all (as the scorer counts them).</param>
/// <param name="Stages">Timings of the stages run (embed, pca, retrieve with SUBR; prompts; tokenize).</param>
public sealed record CtrTrainingSet(IReadOnlyList<CtrExample> Examples, IReadOnlyList<ReLLaSample> Samples, long Tokens, IReadOnlyList<StageTiming> Stages);

/// <summary>
/// Training and validation examples for an <see cref="AdapterTrainer"/> from a prepared dataset (<c>rellax train
/// --data</c>): the prompts and requests are those <c>rellax eval</c> scores (<see cref="CtrEvaluation.BuildPrompts"/>),
/// labelled with the samples' labels.
/// </summary>
public static class CtrTrainingData
{
    /// <summary>
    /// The samples of <paramref name="split"/>, or <paramref name="count"/> of them drawn as the reference's few-shot runs
    /// draw (<c>random.seed(seed); random.sample(range(n), count)</c>, <see cref="TrainingFile.SampleRows"/>), in drawn order.
    /// </summary>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="split">Which split.</param>
    /// <param name="count">How many to draw, or null for every sample in split order.</param>
    /// <param name="seed">The draw's seed (the reference: 42).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or more than the split holds (the
    /// message gives both numbers).</exception>
    public static IReadOnlyList<ReLLaSample> Draw(SampleSet set, SampleSplit split, int? count, int seed)
    {
        ArgumentNullException.ThrowIfNull(set);
        var all = set.InSplit(split).ToList();
        if (count is not int n) return all;
        if (n < 0 || n > all.Count)
            throw new ArgumentOutOfRangeException(nameof(count), n, $"cannot draw {n} rows from the {all.Count} samples of the {SampleSet.NameOf(split)} split");
        return [.. TrainingFile.SampleRows(all.Count, n, seed).Select(i => all[i])];
    }

    /// <summary>
    /// Builds the labelled examples of <paramref name="samples"/>: with <paramref name="mixed"/> false, one per sample
    /// with <see cref="EvaluationOptions.Retrieval"/>'s history; with <paramref name="mixed"/> true, ReLLa's ReiT: two per
    /// sample, its recent-K prompt then its SUBR-K prompt.
    /// </summary>
    /// <param name="scorer">The scorer of the model and adapter to train (prompts are checked against it; nothing is scored).</param>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="samples">The samples (at least one).</param>
    /// <param name="crm">CRM features covering the samples and their items (when the adapter has generators or a projector).</param>
    /// <param name="options">K, retrieval, SUBR settings, cache.</param>
    /// <param name="mixed">ReiT (recent-K and SUBR-K per sample).</param>
    /// <param name="progress">Stage progress (<c>embed</c>, <c>retrieve</c>; see <see cref="CtrEvaluation.BuildPrompts"/>).</param>
    /// <param name="warn">Warnings.</param>
    /// <param name="cancellationToken">Checked between samples and batches.</param>
    /// <exception cref="ArgumentException">As <see cref="CtrEvaluation.BuildPrompts"/>: missing CRM features, a prompt that
    /// is too long (naming the sample and K).</exception>
    public static CtrTrainingSet Build(CtrScorer scorer, SampleSet set, IReadOnlyList<ReLLaSample> samples, CrmFeatures? crm, EvaluationOptions options,
        bool mixed, IProgress<WorkProgress>? progress = null, Action<string>? warn = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!mixed)
        {
            var built = CtrEvaluation.BuildPrompts(scorer, set, samples, crm, options, progress, warn, cancellationToken);
            return new CtrTrainingSet([.. built.Requests.Select((r, i) => new CtrExample(r, built.Samples[i].Label ? 1 : 0))], built.Samples, built.Tokens, built.Stages);
        }
        var recent = CtrEvaluation.BuildPrompts(scorer, set, samples, crm, options with { Retrieval = HistoryRetrieval.Recent }, progress, warn, cancellationToken);
        var subr = CtrEvaluation.BuildPrompts(scorer, set, samples, crm, options with { Retrieval = HistoryRetrieval.Subr }, progress, warn, cancellationToken);
        var examples = new List<CtrExample>(2 * samples.Count);
        var from = new List<ReLLaSample>(2 * samples.Count);
        for (int i = 0; i < recent.Samples.Count; i++)
        {
            int label = recent.Samples[i].Label ? 1 : 0;
            examples.Add(new CtrExample(recent.Requests[i], label));
            examples.Add(new CtrExample(subr.Requests[i], label));
            from.Add(recent.Samples[i]);
            from.Add(recent.Samples[i]);
        }
        return new CtrTrainingSet(examples, from, recent.Tokens + subr.Tokens, [.. recent.Stages, .. subr.Stages]);
    }
}
