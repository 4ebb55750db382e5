using System.Text.Json;
using PeftSharp.Analysis;
using PeftSharp.Cli.Commands;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners;
using PeftSharp.Tuners.MixLora;
using PeftSharp.Tuners.Poly;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Mixtures;

/// <summary>
/// <c>analyze --routing --plot</c> on tinycode-3m: the heatmaps' matrices are the tally's numbers (MixLoRA's pick shares,
/// Poly's per-task mixing weights written out from its router), the first record's top-1 experts are what a forward of
/// that record alone routes, and the PNG is a well-formed picture of the size the panels ask for.
/// </summary>
public sealed class RoutingPlotTests
{
    static readonly Lazy<(string Adapter, string Data)> mixlora = new(() => Make(new MixLoraConfig
    {
        R = 4, NumExperts = 4, TopK = 2, RouterInitRange = 1.0, TargetModules = ModuleSelector.Of("gate_proj", "up_proj", "down_proj"),
    }, records => records.Take(3).Select((r, i) => JsonSerializer.Serialize(new { text = ((string)r.Fields!["text"]!)[..(100 + 60 * i)] }))));

    // Two tasks, three skills in two splits (MHR) on q and v; the routers drawn from N(0, 1) so the tasks' mixtures differ.
    static readonly Lazy<(string Adapter, string Data)> poly = new(() => Make(new PolyConfig
    {
        R = 4, NTasks = 3, NSkills = 3, NSplits = 2, TargetModules = ModuleSelector.Of("q_proj", "v_proj"),
    }, records => records.Take(4).Select((r, i) => JsonSerializer.Serialize(new { text = ((string)r.Fields!["text"]!)[..80], task_id = i % 2 }))));

    static (string, string) Make(PeftConfig config, Func<IEnumerable<RawRecord>, IEnumerable<string>> records)
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(AutoModel.Load(CliRun.TinyCode), config);
        using (no_grad())
            foreach (var (_, layer) in pm.TunerLayers())
                foreach (var (key, t) in layer.StateDict("default"))
                    if (key.Contains("router")) t.normal_(0, 1);
        var dir = IO.SafetensorsTests.TempDir();
        pm.Save(Path.Combine(dir, "adapter"));
        var data = Path.Combine(dir, "data.jsonl");
        File.WriteAllLines(data, records(DataReader.Read(Repo.Path("data", "first-run", "eval.jsonl"))));
        return (Path.Combine(dir, "adapter"), data);
    }

    [Fact]
    public void Mixlora_heatmap_is_the_pick_share_tally_in_model_order_over_real_tokens_only()
    {
        var (adapter, data) = mixlora.Value;
        var tally = RoutingAnalysis.Tally(CliRun.TinyCode, adapter, data);
        var panel = Assert.Single(RoutingPlot.Panels(tally));
        Assert.Equal([.. Enumerable.Range(0, 6).Select(i => $"layers.{i}.mlp")], panel.Rows);   // model order, not "layers.0, layers.10, ..."
        Assert.Equal(["0", "1", "2", "3"], panel.Columns);
        Assert.Equal("pick share", panel.ColourLabel);
        for (int i = 0; i < 6; i++)
            for (int e = 0; e < 4; e++) Assert.Equal(tally.Layers[i].PickShare[e], panel.Values[i, e]);
        // Padding is not routing: each layer saw exactly the records' tokens, each picking two experts.
        var lengths = DataReader.Read(data).Select(r => CliRunTokens((string)r.Fields!["text"]!)).ToList();
        foreach (var l in tally.Layers)
        {
            Assert.Equal(lengths.Sum(), l.Decisions);
            Assert.Equal(2.0, l.PickShare.Sum(), 9);
        }
        Assert.True(lengths.Distinct().Count() > 1, "records of one length would not pad");
    }

    // The analysis encodes as training does: bos, the text's tokens, eos.
    static int CliRunTokens(string text)
    {
        var tok = PeftSharp.Training.FineTune.TokenizerFunctionsFor(PeftSharp.Tokenization.HfTokenizer.Load(CliRun.TinyCode), "causal_lm");
        return (tok.BosId is null ? 0 : 1) + tok.Encode(text).Length + (tok.EosId is null ? 0 : 1);
    }

    [Fact]
    public void The_token_panel_is_the_top1_expert_of_the_first_record_run_alone()
    {
        var (adapter, data) = mixlora.Value;
        var tally = RoutingAnalysis.Tally(CliRun.TinyCode, adapter, data);
        var tokens = RoutingPlot.Tokens(tally, id => id.ToString())!;
        Assert.Equal([.. tally.FirstRecordIds.Take(tokens.Tokens.Length).Select(id => id.ToString())], tokens.Tokens);

        using var scope = NewDisposeScope();
        var pm = PeftModel.FromPretrained(AutoModel.Load(CliRun.TinyCode), adapter);
        pm.Base.eval();
        var top1 = new List<long[]>();
        pm.Routing.Observer = (_, _, w) => top1.Add(w.argmax(-1).data<long>().ToArray());
        using (no_grad()) pm.Forward(ModelInputs.Ids(tensor(tally.FirstRecordIds).unsqueeze(0)));
        Assert.Equal(6, top1.Count);
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < tokens.Tokens.Length; j++) Assert.Equal(top1[i][j], tokens.Top1[i, j]);
        Assert.True(top1.SelectMany(t => t).Distinct().Count() > 1, "a router sending every token to one expert would not tell the panel apart");
    }

    [Fact]
    public void Poly_gets_one_panel_per_task_with_its_routers_mixing_weights()
    {
        var (adapter, data) = poly.Value;
        var tally = RoutingAnalysis.Tally(CliRun.TinyCode, adapter, data);
        var panels = RoutingPlot.Panels(tally);
        Assert.Equal(["task 0", "task 1"], panels.Select(p => p.Title.Split(':')[0]));
        Assert.Null(RoutingPlot.Tokens(tally, id => id.ToString()));              // one routing per row: no per-token picture
        using var scope = NewDisposeScope();
        var logits = PeftModel.FromPretrained(AutoModel.Load(CliRun.TinyCode), adapter).TunerLayers()
            .Select(l => l.Layer.StateDict("default").Single(kv => kv.Key == "poly_router.module_logits").Value).ToList();
        Assert.Equal(12, logits.Count);                                          // q and v of six layers
        foreach (var (panel, task) in panels.Select((p, t) => (p, t)))
        {
            Assert.Equal("mean weight", panel.ColourLabel);
            Assert.Equal(["0", "1", "2", "3", "4", "5"], panel.Columns);         // 2 splits x 3 skills, split-major
            Assert.Equal("layers.0.self_attn.q_proj", panel.Rows[0]);
            Assert.Equal("layers.0.self_attn.v_proj", panel.Rows[1]);
            for (int m = 0; m < 12; m++)
            {
                // PEFT's eval routing of task t: σ(logits[t]) as [splits, skills], normalised over each split's skills.
                var z = sigmoid(logits[m][task].to(ScalarType.Float64)).view(2, 3);
                var w = (z / (z.sum(-1, keepdim: true) + 1e-12)).flatten().data<double>().ToArray();
                for (int c = 0; c < 6; c++) Assert.True(Math.Abs(w[c] - panel.Values[m, c]) < 1e-6, $"task {task}, {panel.Rows[m]}, column {c}: {panel.Values[m, c]} vs {w[c]}");
            }
        }
        Assert.True(Math.Abs(panels[0].Values[0, 0] - panels[1].Values[0, 0]) > 1e-3, "the two tasks' routers should differ");
    }

    [Fact]
    public void Token_routers_on_records_with_tasks_get_the_whole_data_then_each_task_whose_counts_add_up()
    {
        var (adapter, _) = mixlora.Value;
        var dir = IO.SafetensorsTests.TempDir();
        var data = Path.Combine(dir, "tasks.jsonl");
        var lines = DataReader.Read(Repo.Path("data", "first-run", "eval.jsonl")).Take(4)
            .Select((r, i) => JsonSerializer.Serialize(new { text = ((string)r.Fields!["text"]!)[..(60 + 20 * i)], task_id = i % 2 == 0 ? 0 : 3 })).ToList();
        File.WriteAllLines(data, lines);
        var tally = RoutingAnalysis.Tally(CliRun.TinyCode, adapter, data);
        // Task 3's tally is what its records alone give (each token's routing does not depend on its batch).
        var only3 = Path.Combine(dir, "task3.jsonl");
        File.WriteAllLines(only3, lines.Where((_, i) => i % 2 == 1));
        var alone = RoutingAnalysis.Tally(CliRun.TinyCode, adapter, only3);
        var panels = RoutingPlot.Panels(tally);
        Assert.Equal(["all records", "task 0", "task 3"], panels.Select(p => p.Title.Split(':')[0]));
        foreach (var (l, i) in tally.Layers.Select((l, i) => (l, i)))
        {
            Assert.Equal(l.Decisions, l.ByTask.Values.Sum(t => t.Decisions));
            Assert.Equal(alone.Layers[i].Decisions, l.ByTask[3].Decisions);
            for (int e = 0; e < 4; e++)
            {
                // The whole data's share is the tasks' shares weighted by their token counts.
                Assert.Equal(l.PickShare[e], l.ByTask.Values.Sum(t => t.PickShare[e] * t.Decisions) / l.Decisions, 12);
                Assert.Equal(l.ByTask[3].PickShare[e], panels[2].Values[i, e]);
                Assert.Equal(alone.Layers[i].PickShare[e], l.ByTask[3].PickShare[e], 12);
            }
        }
        Assert.NotEqual(tally.Layers[0].ByTask[0].PickShare, tally.Layers[0].ByTask[3].PickShare);
    }

    [Fact]
    public void Cli_writes_a_png_of_the_panels_size_and_the_json_by_task()
    {
        var (adapter, data) = poly.Value;
        var dir = IO.SafetensorsTests.TempDir();
        var png = Path.Combine(dir, "new-folder", "routing.png");
        var r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter, "--routing", data, "--plot", png, "--json");
        Assert.True(r.Code == 0, r.Err);
        var tally = RoutingAnalysis.Tally(CliRun.TinyCode, adapter, data);
        var (width, height) = RoutingPlot.Size(RoutingPlot.Panels(tally), null);
        Assert.Equal((width, height), PngSize(File.ReadAllBytes(png)));
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(png)!, "*.tmp.png"));
        var layers = JsonDocument.Parse(r.Out).RootElement.EnumerateArray().ToList();
        var task1 = layers[0].GetProperty("by_task").GetProperty("1");
        Assert.Equal(tally.Layers[0].ByTask[1].MeanWeight, task1.GetProperty("mean_weight").EnumerateArray().Select(e => e.GetDouble()).ToArray());
        Assert.Equal(2, task1.GetProperty("decisions").GetInt64());                  // two records of task 1, one routing each

        (adapter, data) = mixlora.Value;
        r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter, "--routing", data, "--plot", png);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains($"plot written to {png}", r.Out);                       // an existing picture is replaced
        tally = RoutingAnalysis.Tally(CliRun.TinyCode, adapter, data);
        Assert.Equal(RoutingPlot.Size(RoutingPlot.Panels(tally), RoutingPlot.Tokens(tally, id => "")), PngSize(File.ReadAllBytes(png)));
    }

    [Fact]
    public void A_plot_path_that_is_a_folder_or_lies_under_a_file_is_named()
    {
        var (adapter, data) = mixlora.Value;
        var dir = IO.SafetensorsTests.TempDir();
        CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter, "--routing", data, "--plot", dir).AssertError("--plot", dir, "is a folder");
        var file = Path.Combine(dir, "file.txt");
        File.WriteAllText(file, "");
        CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter, "--routing", data, "--plot", Path.Combine(file, "r.png")).AssertError("--plot", file, "which is a file");
    }

    /// <summary>
    /// Width and height from IHDR, after checking that the file is a PNG whose IDAT inflates to exactly the rows its header
    /// declares (8-bit RGB or RGBA: H rows of a filter byte and W pixels).
    /// </summary>
    static (int, int) PngSize(byte[] png)
    {
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A], png[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
        int width = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16));
        int height = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20));
        Assert.Equal(8, png[24]);
        int channels = png[25] switch { 2 => 3, 6 => 4, var c => throw new Xunit.Sdk.XunitException($"PNG colour type {c}") };
        using var idat = new MemoryStream();
        var at = 8;
        string type = "";
        while (at < png.Length && type != "IEND")
        {
            var len = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(at));
            type = System.Text.Encoding.ASCII.GetString(png, at + 4, 4);
            if (type == "IDAT") idat.Write(png, at + 8, len);
            at += 12 + len;
        }
        Assert.Equal("IEND", type);
        idat.Position = 0;
        using var z = new System.IO.Compression.ZLibStream(idat, System.IO.Compression.CompressionMode.Decompress);
        using var raw = new MemoryStream();
        z.CopyTo(raw);
        Assert.Equal((long)height * (1 + channels * width), raw.Length);
        return (width, height);
    }
}
