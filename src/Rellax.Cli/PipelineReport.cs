using Rellax.Runtime;
using System.Globalization;
using Rellax.Rec;

namespace Rellax.Cli;

/// <summary>How <c>rellax eval</c> and <c>rellax demo</c> print metrics and stage timings (text and JSON).</summary>
internal static class PipelineReport
{
    /// <summary>Prints a pipeline warning (e.g. an ignored cache file) as one line on stderr.</summary>
    public static void Warn(string message) => Console.Error.WriteLine($"rellax: warning: {message}");

    /// <summary>A share as a whole percentage, or <c>n/a</c> for NaN.</summary>
    public static string Percent(double v) => double.IsNaN(v) ? "n/a" : (100 * v).ToString("F0", CultureInfo.InvariantCulture) + "%";

    /// <summary>A metric with four decimals, or <c>n/a</c> for NaN (AUC of a one-class split).</summary>
    public static string Metric(double v) => double.IsNaN(v) ? "n/a" : v.ToString("F4", CultureInfo.InvariantCulture);

    /// <summary>A value for JSON: rounded to 6 decimals, or null when not finite (JSON has no NaN).</summary>
    public static double? Json(double v) => double.IsFinite(v) ? Math.Round(v, 6) : null;

    /// <summary>The metrics line.</summary>
    public static string MetricsLine(CtrMetrics m) => $"AUC {Metric(m.Auc)}   LogLoss {Metric(m.LogLoss)}   accuracy {Metric(m.Accuracy)}";

    /// <summary>The metrics as a JSON-ready object.</summary>
    public static object MetricsJson(CtrMetrics m) => new { auc = Json(m.Auc), logloss = Json(m.LogLoss), accuracy = Json(m.Accuracy), count = m.Count, positives = m.Positives };

    /// <summary>Writes the stage table: name, seconds, throughput (and tokens/s for stages that count tokens).</summary>
    public static void WriteStages(TextWriter w, IEnumerable<StageTiming> stages)
    {
        w.WriteLine("stage       seconds   throughput");
        foreach (var s in stages)
            w.WriteLine($"{s.Stage,-10} {s.Seconds,8:F3}   {s.PerSecond,10:F0} {s.Unit}/s" + (s.Tokens > 0 ? $"  {s.TokensPerSecond,8:F0} tokens/s" : "") + (s.Cached ? "  (cached)" : ""));
    }

    /// <summary>The stages as JSON-ready objects.</summary>
    public static IEnumerable<object> StagesJson(IEnumerable<StageTiming> stages) => stages.Select(s => new
    {
        stage = s.Stage, seconds = Json(s.Seconds), count = s.Count, unit = s.Unit, tokens = s.Tokens, per_second = Json(s.PerSecond),
        tokens_per_second = Json(s.TokensPerSecond), cached = s.Cached,
    });

    /// <summary>Writes <c>{"id", "label", "p_yes"}</c> per scored sample to <paramref name="path"/>, atomically.</summary>
    public static void WriteScores(string path, EvaluationResult result, CancellationToken cancel) => Runtime.OutputFile.Write(path, stream =>
    {
        using var w = new StreamWriter(stream, new System.Text.UTF8Encoding(false), leaveOpen: true);
        for (int i = 0; i < result.Samples.Count; i++)
            w.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { id = result.Samples[i].Index, label = result.Samples[i].Label ? 1 : 0, p_yes = result.Scores[i].PYes }));
    }, cancel);
}
