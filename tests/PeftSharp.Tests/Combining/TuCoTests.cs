using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Models.Decoder;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary>TuCo on a tiny Llama with a random LoRA: its definition, and the steering it allows.</summary>
public class TuCoTests
{
    static readonly PeftModel Tuned = RandomLora(TinyLlama.Load(TinyLlama.Weights(seed: 7)), scale: 0.3);

    // An explicit static constructor runs before xunit builds the instance, so the model never loads inside a test's
    // dispose scope (which would free its weights when that test ends).
    static TuCoTests() { }

    static PeftModel RandomLora(PretrainedModel model, double scale)
    {
        var pm = PeftModel.Create(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj", "up_proj", "down_proj"] });
        using var g = new Generator(9, device: null);
        using (no_grad())
            foreach (var (name, p) in pm.TrainableParameters())
                if (name.Contains("lora_B")) p.copy_(randn(p.shape, generator: g) * scale);
        pm.Base.eval();
        return pm;
    }

    static Tensor Ids(int length = 9) => randint(0, TinyLlama.Vocab, [1, length], dtype: ScalarType.Int64, generator: new Generator(21));

    static Tensor Logits(ILanguageModel m, Tensor ids)
    {
        using var _ = no_grad();
        return m.Forward(ModelInputs.Ids(ids));
    }

    static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Fact]
    public void Tuco_is_the_paper_s_ratio_of_summed_last_token_components()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var report = TuningContribution.Measure(Tuned, ids);

        // Algorithm 1 of the paper, block by block: PTC_l = f_PT(x_l), FTC_l = f_FT(x_l) - PTC_l, x_{l+1} = x_l + PTC_l + FTC_l
        var stack = ((DecoderForCausalLM)Tuned.Base).Model;
        using var _ = no_grad();
        var x = stack.Embed(ids);
        var pos = arange(ids.shape[1]).unsqueeze(0);
        var (cos, sin) = stack.Rope.CosSin(pos, x.dtype);
        var inputs = new LayerInputs(cos, sin, AttentionMasks.Build(ModelInputs.Ids(ids), 0, causal: true, x.dtype, x.device));
        var ptcSum = zeros(x.shape[2], dtype: ScalarType.Float64);
        var ftcSum = zeros(x.shape[2], dtype: ScalarType.Float64);
        for (int l = 0; l < stack.layers.Count; l++)
        {
            var block = (IDecoderLayer)stack.layers[l];
            Tensor pt;
            using (Tuned.DisableAdapters()) pt = block.Forward(x, inputs, null) - x;
            var ft = block.Forward(x, inputs, null) - x - pt;
            var (p, f) = (pt[0, -1].to(ScalarType.Float64), ft[0, -1].to(ScalarType.Float64));
            double pn = p.abs().sum().item<double>(), fn = f.abs().sum().item<double>();
            Assert.Equal(pn, report.Layers[l].Ptc, 1e-9);
            Assert.Equal(fn, report.Layers[l].Ftc, 1e-9);
            Assert.Equal(fn / (pn + fn), report.Layers[l].Share, 1e-9);
            ptcSum += p;
            ftcSum += f;
            x = x + pt + ft;
        }
        double ptc = ptcSum.abs().sum().item<double>(), ftc = ftcSum.abs().sum().item<double>();
        Assert.Equal(ftc / (ptc + ftc), report.TuCo, 1e-9);
        Assert.InRange(report.TuCo, 0.01, 0.99);
    }

    [Fact]
    public void A_zero_adapter_contributes_nothing()
    {
        using var scope = NewDisposeScope();
        var zero = RandomLora(TinyLlama.Load(TinyLlama.Weights(seed: 7)), scale: 0);
        var report = TuningContribution.Measure(zero, Ids());
        Assert.Equal(0, report.TuCo);
        Assert.All(report.Layers, l => Assert.Equal(0, l.Ftc));
    }

    [Fact]
    public void Scale_one_is_the_tuned_model_and_scale_zero_the_base()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var tuned = Logits(Tuned, ids);
        var untuned = Logits(new AdaptersOff(Tuned), ids);
        Assert.True(MaxDiff(tuned, untuned) > 0.1, "the random LoRA must move the logits");
        Assert.True(MaxDiff(Logits(new TuningScaled(Tuned, 1), ids), tuned) < 1e-5);
        Assert.True(MaxDiff(Logits(new TuningScaled(Tuned, 0), ids), untuned) < 1e-5);
        // in between and beyond, the blocks' outputs move with the scale
        var half = Logits(new TuningScaled(Tuned, 0.5), ids);
        Assert.True(MaxDiff(half, tuned) > 1e-3 && MaxDiff(half, untuned) > 1e-3);
        Assert.Null(((DecoderForCausalLM)Tuned.Base).Model.LayerHook);
    }

    [Fact]
    public void The_scaled_model_s_two_caches_give_what_a_full_forward_gives()
    {
        using var scope = NewDisposeScope();
        var ids = Ids(10);
        var scaled = new TuningScaled(Tuned, 1.7);
        var full = Logits(scaled, ids);
        using var cache = scaled.NewCache();
        using var _ = no_grad();
        scaled.Forward(new ModelInputs { InputIds = ids[.., ..7], Cache = cache });
        var stepped = scaled.Forward(new ModelInputs { InputIds = ids[.., 7..], Cache = cache });
        Assert.True(MaxDiff(stepped, full[.., 7..]) < 1e-5);
    }

    [Fact]
    public void Analyze_prints_tuco_per_layer_and_generate_takes_a_scale()
    {
        var dir = Merging.TestDirs.New();
        try
        {
            var adapter = Path.Combine(dir, "adapter");
            LogitMixTests.RandomLora().Save(adapter);
            var r = CliRun.Run(["analyze", "--model", CliRun.TinyCode, "--adapter", adapter, "--tuco", "--prompt", "def add(a, b):", "--json"]);
            Assert.True(r.Code == 0, r.Err);
            using var doc = System.Text.Json.JsonDocument.Parse(r.Out);
            Assert.InRange(doc.RootElement.GetProperty("tuco").GetDouble(), 1e-6, 1);
            Assert.Equal(6, doc.RootElement.GetProperty("layers").GetArrayLength());

            var one = CliRun.Run(["generate", "--model", CliRun.TinyCode, "--adapter", adapter, "--prompt", "def add(a, b):", "--max-new-tokens", "6", "--tuco-scale", "1"]);
            var tuned = CliRun.Run(["generate", "--model", CliRun.TinyCode, "--adapter", adapter, "--prompt", "def add(a, b):", "--max-new-tokens", "6"]);
            Assert.True(one.Code == 0, one.Err);
            Assert.Equal(tuned.Out, one.Out);
            CliRun.Run(["generate", "--model", CliRun.TinyCode, "--prompt", "x", "--tuco-scale", "0.5"]).AssertError("--tuco-scale", "--adapter");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
