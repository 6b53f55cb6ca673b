namespace Rellax.Cli;

/// <summary>The demo's chart: every arm's valid AUC during its training, as a PNG (ScottPlot).</summary>
internal static class DemoPlot
{
    /// <summary>Chart size in pixels.</summary>
    private const int Width = 900, Height = 540;

    /// <summary>
    /// Writes <paramref name="path"/> atomically: one line per arm, x = the share of the arm's training done (DIN's epochs
    /// and the LLM arms' steps on one axis), y = valid AUC, with AUC 0.5 (chance) marked.
    /// </summary>
    /// <param name="path">The PNG to write.</param>
    /// <param name="curves">Per arm: its name and (share of training in (0, 1], valid AUC) points; NaN AUCs are skipped.</param>
    public static void SaveCurves(string path, IReadOnlyList<(string Arm, IReadOnlyList<(double Share, double Auc)> Points)> curves)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (arm, points) in curves)
        {
            var finite = points.Where(p => double.IsFinite(p.Auc)).ToArray();
            if (finite.Length == 0) continue;
            var line = plot.Add.Scatter(finite.Select(p => p.Share).ToArray(), finite.Select(p => p.Auc).ToArray());
            line.LegendText = arm;
            line.MarkerSize = 6;
        }
        var chance = plot.Add.HorizontalLine(0.5);
        chance.LinePattern = ScottPlot.LinePattern.Dashed;
        chance.LegendText = "chance";
        plot.Title("rellax demo: valid AUC during training");
        plot.XLabel("share of the arm's training (DIN: epochs; LLM arms: steps)");
        plot.YLabel("valid AUC");
        plot.Axes.SetLimitsX(0, 1.02);
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        Runtime.OutputFile.Write(path, stream =>
        {
            byte[] png = plot.GetImageBytes(Width, Height, ScottPlot.ImageFormat.Png);
            stream.Write(png);
        });
    }
}
