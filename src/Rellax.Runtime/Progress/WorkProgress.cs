namespace Rellax.Runtime;

/// <summary>
/// The one progress record of the library's long calls (model load, scoring, embedding, SUBR retrieval, training,
/// evaluation, prepared-dataset loading, DIN scoring and features): <paramref name="Done"/> of <paramref name="Total"/>
/// units of <paramref name="Stage"/>. Every such call takes <c>IProgress&lt;WorkProgress&gt;? progress = null</c> followed
/// by <c>CancellationToken cancellationToken = default</c> as its last parameter.
/// </summary>
/// <remarks>
/// Within one stage, reports come in order with <paramref name="Done"/> rising (never falling) and
/// <paramref name="Total"/> fixed; a stage that finishes reports <c>Done == Total</c> last. A call with several stages
/// (the evaluation pipeline: embed, retrieve, forward) reports them one after another. Reports are synchronous and one
/// at a time (on the calling thread, or, where a call says so, on one of its worker threads), between units of work: a
/// handler may cancel the call's token and the call throws <see cref="OperationCanceledException"/> at its next check.
/// A training run that early stopping (patience) ends reports its last step and stops short of the total (see
/// <see cref="Training.TrainingLoop.Run"/>).
/// </remarks>
/// <param name="Stage">What is counted: <c>load</c> (model parts, or a prepared dataset's files), <c>score</c> (requests,
/// or DIN samples), <c>embed</c> (items), <c>retrieve</c> (samples), <c>forward</c> (prompts), <c>train</c> (optimizer
/// steps), <c>featurize</c> (samples).</param>
/// <param name="Done">Units finished so far, 1 to <paramref name="Total"/> (a report follows a finished unit).</param>
/// <param name="Total">Units at completion.</param>
public readonly record struct WorkProgress(string Stage, int Done, int Total);

/// <summary>Forwards a call's reports to another sink under another stage name (the pipeline's stage names).</summary>
internal sealed class RelabelledProgress(IProgress<WorkProgress> target, string stage) : IProgress<WorkProgress>
{
    /// <summary>Null when <paramref name="target"/> is null.</summary>
    public static IProgress<WorkProgress>? Of(IProgress<WorkProgress>? target, string stage) => target is null ? null : new RelabelledProgress(target, stage);

    public void Report(WorkProgress value) => target.Report(value with { Stage = stage });
}
