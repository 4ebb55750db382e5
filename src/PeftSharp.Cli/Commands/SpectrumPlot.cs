using PeftSharp.Analysis;
using ScottPlot;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// One panel per matrix: log10 singular values of W0 (gray) and W0 + dW (blue) by index, intruders as red dots on the
/// tuned spectrum. Panels sit in a grid, four a row; past <see cref="MaxPanels"/> matrices the rest are left out.
/// </summary>
internal static class SpectrumPlot
{
    const int MaxPanels = 48, Columns = 4, PanelWidth = 420, PanelHeight = 300;

    public static void Save(IReadOnlyList<LayerReport> reports, IntruderOptions options, string path)
    {
        if (reports.Count == 0) throw new ArgumentException($"--plot {path}: nothing to plot, no weight differs from the base");
        var shown = reports.Take(MaxPanels).ToList();
        int rows = (shown.Count + Columns - 1) / Columns;
        var multiplot = new Multiplot();
        multiplot.AddPlots(shown.Count);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Grid(rows, Math.Min(Columns, shown.Count));
        for (int i = 0; i < shown.Count; i++) Panel(multiplot.GetPlot(i), shown[i], options);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var temp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp.png");
        try
        {
            multiplot.SavePng(temp, Math.Min(Columns, shown.Count) * PanelWidth, rows * PanelHeight);
            File.Move(temp, path, overwrite: true);
        }
        finally { File.Delete(temp); }
    }

    static void Panel(Plot plot, LayerReport report, IntruderOptions options)
    {
        // Enough of the spectrum to see the top-k and what follows, in log10 so that small values stay visible.
        int n = Math.Min(report.Scan.TunedSpectrum.Length, Math.Max(4 * options.TopK, 32));
        double[] Log(float[] s) => s.Take(n).Select(v => Math.Log10(Math.Max(v, 1e-12))).ToArray();
        var xs = Enumerable.Range(0, n).Select(i => (double)i).ToArray();
        var baseLine = plot.Add.Scatter(xs, Log(report.Scan.BaseSpectrum));
        baseLine.Color = Colors.Gray;
        baseLine.MarkerSize = 0;
        baseLine.LegendText = "W0";
        var tunedLine = plot.Add.Scatter(xs, Log(report.Scan.TunedSpectrum));
        tunedLine.Color = Colors.Blue;
        tunedLine.MarkerSize = 3;
        tunedLine.LegendText = "W0 + dW";
        if (report.IntruderCount > 0)
        {
            var ix = report.Scan.Intruders.Select(i => (double)i).ToArray();
            var iy = report.Scan.Intruders.Select(i => Math.Log10(Math.Max(report.Scan.TunedSpectrum[i], 1e-12))).ToArray();
            var dots = plot.Add.ScatterPoints(ix, iy);
            dots.Color = Colors.Red;
            dots.MarkerSize = 9;
            dots.LegendText = "intruder";
        }
        plot.Title($"{Short(report.Module)}: {report.IntruderCount} intruder(s), erank(dW) {report.DeltaEffectiveRank:F1}", size: 12);
        plot.XLabel("singular value index", size: 11);
        plot.YLabel("log10 singular value", size: 11);
        plot.ShowLegend(Alignment.UpperRight);
    }

    // "model.layers.3.self_attn.q_proj" -> "layers.3.self_attn.q_proj": the panels are narrow.
    static string Short(string module) => module.StartsWith("model.", StringComparison.Ordinal) ? module["model.".Length..] : module;
}
