using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Miss;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>MiSS has no PEFT fixture: its maths is checked against PEFT's formulas written out by hand, and by properties.</summary>
public class MissTests
{
    // r=5 does not divide 64: the balance forward pads x and the last block is partial.
    public static TheoryData<string, int, int> Modes => new()
    {
        { "true", 4, 1 }, { "true", 5, 1 }, { "false", 4, 1 }, { "bat", 4, 1 }, { "mini", 4, 8 },
    };

    static PeftModel Create(string init, int r, int miniR, bool randomize)
    {
        var pm = PeftModel.Create(new AdapterFixture("llama-lora-qv").LoadBase(),
            new MissConfig { R = r, MiniR = miniR, InitWeights = init, TargetModules = ModuleSelector.Of("q_proj", "v_proj", "down_proj") });
        if (randomize)
            using (no_grad())
                foreach (var (_, layer) in pm.TunerLayers())
                    ((MissLayer)layer).Block("default").normal_(0, 0.02);
        return pm;
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Merged_weights_give_the_unmerged_output_and_unmerging_restores_them(string init, int r, int miniR)
    {
        using var scope = NewDisposeScope();
        var pm = Create(init, r, miniR, randomize: true);
        var inputs = new AdapterFixture("llama-lora-qv").Inputs();
        using var _ = no_grad();
        var before = pm.Base.named_parameters().ToDictionary(p => p.name, p => p.parameter.clone());
        var unmerged = pm.Forward(inputs);
        Assert.True(Numerics.MaxAbsDiff(MethodTrainingTests.BaseLogits(), unmerged) > 1e-3, "the random blocks must change the logits");
        pm.MergeAdapter(safeMerge: true);
        Numerics.Close(unmerged, pm.Forward(inputs), 1e-4, "merged");
        pm.UnmergeAdapter();
        foreach (var (n, p) in pm.Base.named_parameters()) Numerics.Close(before[n], p, 1e-6, n);
    }

    [Theory]
    [InlineData("true")]
    [InlineData("bat")]
    [InlineData("mini")]
    public void Zero_init_leaves_the_model_unchanged(string init)
    {
        using var scope = NewDisposeScope();
        var pm = Create(init, 4, 8, randomize: false);
        using var _ = no_grad();
        Numerics.Close(MethodTrainingTests.BaseLogits(), pm.Forward(new AdapterFixture("llama-lora-qv").Inputs()), 1e-5, init);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Saved_adapter_loads_back_with_peft_names_and_shapes(string init, int r, int miniR)
    {
        using var scope = NewDisposeScope();
        var pm = Create(init, r, miniR, randomize: true);
        var inputs = new AdapterFixture("llama-lora-qv").Inputs();
        var dir = Path.Combine(Tests.IO.SafetensorsTests.TempDir(), $"miss-{init}-{r}");
        pm.Save(dir);
        using (var f = SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFile)))
        {
            // q_proj is [64, 64]: balance [r, out], bat [out/r, r, r], mini [r, mini_r].
            long[] expected = init switch { "bat" => [16, r, r], "mini" => [r, miniR], _ => [r, 64] };
            Assert.Equal(expected, f.Load("base_model.model.model.layers.0.self_attn.q_proj.miss_block").shape);
            Assert.Equal(6, f.Names.Count());
        }
        var json = File.ReadAllText(Path.Combine(dir, PeftConfigJson.FileName));
        Assert.Contains("\"peft_type\": \"MISS\"", json);
        using var _ = no_grad();
        Numerics.Close(pm.Forward(inputs), PeftModel.FromPretrained(new AdapterFixture("llama-lora-qv").LoadBase(), dir).Forward(inputs), 1e-6);
    }

    /// <summary>PEFT's formulas, entry by entry: balance ΔW[o, i] = M[i mod r, o]; bat ΔW_ab = W_ab B_a + B_a.</summary>
    [Theory]
    [InlineData("true", 3)]
    [InlineData("mini", 2)]
    [InlineData("bat", 2)]
    public void Output_follows_peft_formulas_written_out(string init, int r)
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        const int inF = 6, outF = 4, miniR = 2;
        var linear = nn.Linear(inF, outF);
        var layer = new MissLayer(linear);
        layer.AddAdapter("default", new MissConfig { R = r, MiniR = miniR, InitWeights = init });
        ((PeftSharp.Tuners.ITunerLayer)layer).ActiveAdapters = ["default"];
        using var _ = no_grad();
        var block = layer.Block("default");
        block.normal_();
        var w = linear.weight!.detach().clone();
        var m = block.detach();
        var dw = zeros(outF, inF);
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
            {
                float v;
                if (init == "bat")
                {
                    int a = o / r, oi = o % r, bj = i / r, ij = i % r;
                    v = m[a, oi, ij].item<float>();
                    for (int k = 0; k < r; k++) v += w[o, bj * r + k].item<float>() * m[a, k, ij].item<float>();
                }
                else v = init == "mini" ? m[i % r, o % miniR].item<float>() : m[i % r, o].item<float>();
                dw[o, i] = v;
            }
        var x = randn(3, inF);
        Numerics.Close(nn.functional.linear(x, w + dw, linear.bias), layer.call(x), 1e-5, init);
        Numerics.Close(dw, layer.DeltaWeight("default"), 1e-5, "delta");
    }

    [Fact]
    public void Bat_needs_square_blocks_that_tile_the_weight()
    {
        using var scope = NewDisposeScope();
        var e = Assert.Throws<ArgumentException>(() => Create("bat", 5, 1, randomize: false));
        Assert.Contains("divisible by r", e.Message);
    }
}
