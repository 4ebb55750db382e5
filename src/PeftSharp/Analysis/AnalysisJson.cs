using System.Text.Json;

namespace PeftSharp.Analysis;

/// <summary>
/// The JSON form of an analysis: <c>{"top_k", "epsilon", "layers": [{"module", "shape", "intruders", "intruder_indices",
/// "effective_rank", "cosines", "singular_values", "base_singular_values"}], "total_intruders"}</c>. Spectra are cut to
/// the top k, like the cosines, so the output stays small for large models.
/// </summary>
public static class AnalysisJson
{
    public static string Serialize(IReadOnlyList<LayerReport> reports, IntruderOptions options)
    {
        var doc = new Dictionary<string, object>
        {
            ["top_k"] = options.TopK,
            ["epsilon"] = options.Epsilon,
            ["layers"] = reports.Select(x => new Dictionary<string, object>
            {
                ["module"] = x.Module,
                ["shape"] = new[] { x.Rows, x.Cols },
                ["intruders"] = x.IntruderCount,
                ["intruder_indices"] = x.Scan.Intruders,
                ["effective_rank"] = x.DeltaEffectiveRank,
                ["cosines"] = x.Scan.Cosines,
                ["singular_values"] = x.Scan.TunedSpectrum.Take(options.TopK).ToArray(),
                ["base_singular_values"] = x.Scan.BaseSpectrum.Take(options.TopK).ToArray(),
            }).ToList(),
            ["total_intruders"] = reports.Sum(x => x.IntruderCount),
        };
        return JsonSerializer.Serialize(doc);
    }
}
