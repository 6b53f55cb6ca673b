using Rellax.Runtime;
using Rellax.Runtime.Training;

namespace Rellax.Cli;

/// <summary>
/// The output folder of a training command (<c>crm train</c>, <c>train</c>): filled in a hidden temporary sibling through
/// <see cref="OutputFile.WriteFolder"/> and renamed into place at the end. When training stops early (a NaN/∞ loss,
/// Ctrl+C) after a complete best checkpoint was written, the folder is committed with it; otherwise the temporary folder
/// is removed and nothing is left behind.
/// </summary>
internal static class TrainingOutput
{
    /// <summary>How a run ended.</summary>
    /// <param name="Result">What <c>train</c> returned, or null when it stopped.</param>
    /// <param name="Stopped">The <see cref="TrainingDivergedException"/> or <see cref="OperationCanceledException"/> that
    /// stopped it, or null.</param>
    /// <param name="Kept">Whether the folder was committed with the last good checkpoint although training stopped.</param>
    public sealed record Outcome<T>(T? Result, Exception? Stopped, bool Kept) where T : class;

    /// <summary>Runs <paramref name="train"/> into a temporary folder and commits it as described on the class.</summary>
    /// <param name="outputDir">The folder to write.</param>
    /// <param name="refuse">Why an existing folder must not be replaced (null: replace it).</param>
    /// <param name="train">Trains, writing into the temporary folder it is given.</param>
    /// <param name="complete">Whether the temporary folder holds a complete checkpoint.</param>
    /// <exception cref="Exception">Anything else <paramref name="train"/> or the commit throws (a cancellation at the commit
    /// itself included), after the temporary folder is removed.</exception>
    public static Outcome<T> Write<T>(string outputDir, Func<string, string?> refuse, Func<string, T> train, Func<string, bool> complete) where T : class
    {
        T? result = null;
        Exception? stopped = null;
        bool kept = false;
        try
        {
            // The token is None: a stopped run with a complete checkpoint is still committed. The commands' Ctrl+C reaches
            // training through its own token, and the test hold point through OutputFile's AppContext hook (TestHooks).
            OutputFile.WriteFolder(outputDir, refuse, temp =>
            {
                try
                {
                    result = train(temp);
                }
                catch (Exception e) when (e is TrainingDivergedException or OperationCanceledException)
                {
                    stopped = e;
                    if (!complete(temp)) throw;
                    kept = true;
                }
            }, CancellationToken.None);
        }
        catch (Exception e) when (e is TrainingDivergedException or OperationCanceledException && ReferenceEquals(e, stopped))
        {
            // Stopped before any complete checkpoint: nothing was written; reported by the caller.
        }
        return new Outcome<T>(result, stopped, kept);
    }

    /// <summary>Prints the one line of a stopped run and returns its exit code: 1 after a NaN/∞ loss or parameter, 130 after Ctrl+C
    /// (<c>rellax: cancelled</c>, the line every command prints, when nothing was kept).</summary>
    /// <param name="stopped">The exception in <see cref="Outcome{T}.Stopped"/>.</param>
    /// <param name="kept">Whether the last good checkpoint was committed.</param>
    /// <param name="where">Where training diverged, e.g. <c>epoch 1, step 2</c>.</param>
    /// <param name="keptText">What was kept, e.g. <c>the last good checkpoint is in DIR</c>.</param>
    /// <param name="nothingText">Why nothing was written, e.g. <c>no epoch finished, so nothing was written</c>.</param>
    public static int ReportStopped(Exception stopped, bool kept, string where, string keptText, string nothingText)
    {
        string what = kept ? keptText : nothingText;
        if (stopped is TrainingDivergedException d)
        {
            Console.Error.WriteLine(d.Parameter is null
                ? $"rellax: the training loss became NaN or infinite at {where}; stopped ({what})"
                : $"rellax: the update of {where} made {d.Parameter} NaN or infinite; stopped ({what})");
            return 1;
        }
        Console.Error.WriteLine(kept ? $"rellax: cancelled ({what})" : "rellax: cancelled");
        return 130;
    }
}
