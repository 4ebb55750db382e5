using PeftSharp.Analysis;
using ScottPlot;

namespace PeftSharp.Cli.Commands;

/// <summary>One heatmap: <see cref="Values"/>[row, column] is module <see cref="Rows"/>[row]'s use of expert <see cref="Columns"/>[column].</summary>
internal sealed record RoutingPanel(string Title, string[] Rows, string[] Columns, double[,] Values, string ColourLabel, string ColumnLabel);

/// <summary>The first record's routing: <see cref="Top1"/>[row, token] is the expert that got the largest weight there.</summary>
internal sealed record TokenPanel(string[] Rows, string[] Tokens, int[,] Top1, int Experts);

/// <summary>
/// <c>analyze --routing --plot</c>: heatmaps of a routed adapter's tally, rows = routed modules in model order, columns =
/// experts (MixLoRA), adapters (MeteoRA) or skills (Poly; MHR's n_splits × n_skills, split-major), with a colour bar.
/// Below them, for per-token routers, the first record's tokens (x) against the layers (y), coloured by the top-1 expert.
/// </summary>
internal static class RoutingPlot
{
    public const int MaxTaskPanels = 8;
    const int MaxTokens = 64;
    const int LabelWidth = 230, CellWidth = 64, BarWidth = 130, RowHeight = 26, TitleHeight = 80, TokenWidth = 16, TokenLabels = 90;

    /// <summary>The heatmaps <see cref="Save"/> draws, in order.</summary>
    public static List<RoutingPanel> Panels(RoutingTally tally)
    {
        var layers = tally.Layers;
        // A top-k router's picks say which experts a token went to. Where every routing gives every expert a weight (Poly's
        // σ-normalised mixing, or k = all experts) the picks are all 100% and only the weights say anything.
        bool dense = layers.All(l => l.PickShare.All(p => p >= 1 - 1e-12));
        string label = dense ? "mean weight" : "pick share";
        Func<RoutingReport, double[]> value = dense ? r => r.MeanWeight : r => r.PickShare;
        var tasks = layers.SelectMany(l => l.ByTask.Keys).Distinct().Order().ToList();
        bool perRow = layers.All(l => l.FirstRecordTop1.Length == 0);
        var panels = new List<RoutingPanel>();
        // Poly routes by task: in evaluation a task's weights are fixed by its router row, so a tally over all records only
        // mirrors how many records each task has. One panel per task shows what was learned, the task-to-skill allocation
        // (Polytropon's figure). Token routers get the whole data first, then per task if the records name tasks.
        if (!(perRow && tasks.Count > 0)) panels.Add(Panel("all records", layers, layers.Select(value).ToList(), label, dense));
        foreach (var t in tasks.Take(MaxTaskPanels))
        {
            var rows = layers.Where(l => l.ByTask.ContainsKey(t)).ToList();
            panels.Add(Panel($"task {t}", rows, rows.Select(l => value(l.ByTask[t])).ToList(), label, dense));
        }
        return panels;
    }

    static RoutingPanel Panel(string what, IReadOnlyList<RoutingReport> rows, List<double[]> values, string label, bool dense)
    {
        int experts = rows.Max(r => r.Experts);
        var m = new double[rows.Count, experts];
        for (int i = 0; i < rows.Count; i++)
            for (int e = 0; e < experts; e++) m[i, e] = e < values[i].Length ? values[i][e] : double.NaN;
        long decisions = rows.Max(r => r.Decisions);
        string title = dense ? $"{what}: mean mixing weight of each skill ({decisions} routings a module)"
            : $"{what}: share of the {decisions} tokens routed to each expert (top-k: a row sums to k)";
        return new RoutingPanel(title, [.. rows.Select(r => Short(r.Module))], [.. Enumerable.Range(0, experts).Select(e => e.ToString())], m, label,
            dense ? "skill (MHR: n_skills columns per split, split after split)" : "expert (MixLoRA) / adapter (MeteoRA)");
    }

    /// <summary>The first record's top-1 experts, or null when no layer routes per token.</summary>
    public static TokenPanel? Tokens(RoutingTally tally, Func<long, string> token)
    {
        var rows = tally.Layers.Where(l => l.FirstRecordTop1.Length > 0).ToList();
        if (rows.Count == 0) return null;
        int n = Math.Min(MaxTokens, tally.FirstRecordIds.Length);
        var top = new int[rows.Count, n];
        for (int i = 0; i < rows.Count; i++)
            for (int j = 0; j < n; j++) top[i, j] = rows[i].FirstRecordTop1[j];
        return new TokenPanel([.. rows.Select(r => Short(r.Module))], [.. tally.FirstRecordIds.Take(n).Select(token)], top, rows.Max(r => r.Experts));
    }

    /// <summary>Width and height of the picture for these panels.</summary>
    public static (int Width, int Height) Size(IReadOnlyList<RoutingPanel> panels, TokenPanel? tokens)
    {
        int width = LabelWidth + BarWidth + CellWidth * panels.Max(p => p.Columns.Length);
        if (tokens is not null) width = Math.Max(width, LabelWidth + BarWidth + TokenWidth * tokens.Tokens.Length);
        return (Math.Max(width, 640), Heights(panels, tokens).Sum());
    }

    static List<int> Heights(IReadOnlyList<RoutingPanel> panels, TokenPanel? tokens) =>
        [.. panels.Select(p => TitleHeight + RowHeight * p.Rows.Length), .. tokens is null ? [] : new[] { TitleHeight + TokenLabels + RowHeight * tokens.Rows.Length }];

    public static void Save(RoutingTally tally, Func<long, string> token, string path)
    {
        var panels = Panels(tally);
        var tokens = Tokens(tally, token);
        var (width, height) = Size(panels, tokens);
        var multiplot = new Multiplot();
        multiplot.AddPlots(panels.Count + (tokens is null ? 0 : 1));
        var layout = new ScottPlot.MultiplotLayouts.DraggableRows();
        layout.SetHeights(Heights(panels, tokens).Select(h => (float)h));
        multiplot.Layout = layout;
        for (int i = 0; i < panels.Count; i++) Heatmap(multiplot.GetPlot(i), panels[i]);
        if (tokens is not null) TokenMap(multiplot.GetPlot(panels.Count), tokens);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var temp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp.png");
        try
        {
            multiplot.SavePng(temp, width, height);
            File.Move(temp, path, overwrite: true);
        }
        finally { File.Delete(temp); }
    }

    static void Heatmap(Plot plot, RoutingPanel p)
    {
        int rows = p.Rows.Length, cols = p.Columns.Length;
        var map = plot.Add.Heatmap(p.Values);
        map.Colormap = new ScottPlot.Colormaps.Viridis();
        map.ManualRange = new ScottPlot.Range(0, 1);
        // ScottPlot's default places cell (i, j) at x = j, y = rows - 1 - i: the first module on top, as the table lists them.
        var bar = plot.Add.ColorBar(map);
        bar.Label = p.ColourLabel;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
            {
                if (double.IsNaN(p.Values[i, j])) continue;
                var text = plot.Add.Text($"{p.Values[i, j]:0.00}", j, rows - 1 - i);
                text.LabelAlignment = Alignment.MiddleCenter;
                text.LabelFontSize = 11;
                text.LabelFontColor = p.Values[i, j] > 0.6 ? Colors.Black : Colors.White;
            }
        plot.Axes.Left.SetTicks([.. Enumerable.Range(0, rows).Select(i => (double)(rows - 1 - i))], p.Rows);
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, cols).Select(j => (double)j)], p.Columns);
        plot.Axes.SetLimits(-0.5, cols - 0.5, -0.5, rows - 0.5);
        plot.Title(p.Title, size: 13);
        plot.XLabel(p.ColumnLabel, size: 12);
    }

    static void TokenMap(Plot plot, TokenPanel p)
    {
        int rows = p.Rows.Length, n = p.Tokens.Length;
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n; j++)
            {
                double y = rows - 1 - i;
                var cell = plot.Add.Rectangle(j - 0.5, j + 0.5, y - 0.5, y + 0.5);
                cell.FillColor = palette.GetColor(p.Top1[i, j]);
                cell.LineWidth = 0;
            }
        for (int e = 0; e < p.Experts; e++)
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = $"expert {e}", FillColor = palette.GetColor(e) });
        plot.ShowLegend(Edge.Right);
        plot.Axes.Left.SetTicks([.. Enumerable.Range(0, rows).Select(i => (double)(rows - 1 - i))], p.Rows);
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, n).Select(j => (double)j)], p.Tokens);
        plot.Axes.Bottom.TickLabelStyle.Rotation = 90;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = TokenLabels;      // room for the rotated labels, which the layout does not measure
        plot.Axes.SetLimits(-0.5, n - 0.5, -0.5, rows - 0.5);
        plot.Title($"first record: the top-1 expert of each token (first {n})", size: 13);
    }

    // "model.layers.3.mlp" -> "layers.3.mlp".
    static string Short(string module) => module.StartsWith("model.", StringComparison.Ordinal) ? module["model.".Length..] : module;
}
