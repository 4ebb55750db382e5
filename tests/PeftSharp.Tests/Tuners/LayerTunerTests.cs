using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.BitFit;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.LnTuning;
using PeftSharp.Tuners.Ssf;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>LN tuning, bottleneck adapters, SSF and BitFit: what is particular to each (the shared checks are MethodContractTests).</summary>
public class LayerTunerTests
{
    static PretrainedModel Load(string model) => AutoModel.Load(Repo.Fixture("models", model));

    // Rows of the method table (Contract/MethodCases), whose shared checks run in MethodContractTests.
    internal static (string Model, PeftConfig Config) Case(string name)
    {
        var c = Contract.MethodCases.Get(name);
        return (c.Model, c.Config());
    }

    static ModelInputs Inputs() => new AdapterFixture("llama-lora-qv").Inputs();

    static PeftModel Trained(string name, int steps = 3)
    {
        var (model, config) = Case(name);
        var pm = PeftModel.Create(Load(model), config);
        TrainingLoop.Run(pm, TrainingLoop.Batch(), steps: steps, lr: 2e-2);
        return pm;
    }

    [Fact]
    public void Saved_names_are_relative_to_the_wrapped_module()
    {
        using var scope = NewDisposeScope();
        var keys = new Dictionary<string, string>
        {
            ["ln-tuning-llama"] = "base_model.model.model.layers.0.input_layernorm.ln_tuning_layers.weight",
            ["ln-tuning-gpt2"] = "base_model.model.transformer.ln_f.ln_tuning_layers.bias",
            ["bottleneck-houlsby-llama"] = "base_model.model.model.layers.1.mlp.adapter_up.weight",
            ["bottleneck-parallel-attn-gpt2"] = "base_model.model.transformer.h.0.attn.c_proj.adapter_down.bias",
            ["ssf-llama"] = "base_model.model.model.layers.0.self_attn.q_proj.ssf_scale",
            ["bitfit-gpt2"] = "base_model.model.transformer.h.1.mlp.c_fc.bitfit_bias",
        };
        foreach (var (name, key) in keys)
        {
            var (model, config) = Case(name);
            Assert.Contains(key, PeftModel.Create(Load(model), config).AdapterStateDict("default").Keys);
        }
    }

    [Fact]
    public void Bottleneck_placement_wraps_the_named_modules_with_the_right_sizes()
    {
        using var scope = NewDisposeScope();
        var llama = PeftModel.Create(Load("tiny-llama"), new BottleneckConfig { AdapterType = "parallel", Placement = "both", ReductionFactor = 16 });
        Assert.Equal(["model.layers.0.mlp", "model.layers.0.self_attn.o_proj", "model.layers.1.mlp", "model.layers.1.self_attn.o_proj"],
            llama.TunerLayers().Select(x => x.Path).Order());
        var sd = llama.AdapterStateDict("default");
        Assert.Equal([4L, 64], sd["base_model.model.model.layers.0.self_attn.o_proj.adapter_down.weight"].shape);  // in = heads*head_dim = 64, 64/16
        Assert.Equal([64L, 4], sd["base_model.model.model.layers.0.mlp.adapter_up.weight"].shape);
        var bert = PeftModel.Create(Load("tiny-bert-cls"), new BottleneckConfig { TaskType = "SEQ_CLS" });
        Assert.Equal(["bert.encoder.layer.0.attention.output.dense", "bert.encoder.layer.0.output.dense",
                      "bert.encoder.layer.1.attention.output.dense", "bert.encoder.layer.1.output.dense"],
            bert.TunerLayers().Select(x => x.Path).Order());
        // Sequential on BERT's FFN output reads the dense layer's 64 outputs, not its 128 inputs.
        Assert.Equal([4L, 64], bert.AdapterStateDict("default")["base_model.model.bert.encoder.layer.0.output.dense.adapter_down.weight"].shape);
        Assert.Throws<NotSupportedException>(() => bert.MergeAdapter());
    }

    [Fact]
    public void Bottleneck_adapters_train_on_the_bert_classifier()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(Load("tiny-bert-cls"), new BottleneckConfig { TaskType = "SEQ_CLS", ReductionFactor = 8 });
        var inputs = new AdapterFixture("bert-cls-lora").Inputs();
        var labels = tensor(new long[] { 0, 2 });
        using var opt = optim.Adam(pm.TrainableParameters().Select(x => x.P), 3e-2);
        var losses = new List<double>();
        for (int i = 0; i < 6; i++)
        {
            using var step = NewDisposeScope();
            opt.zero_grad();
            var loss = nn.functional.cross_entropy(pm.Forward(inputs), labels);
            loss.backward();
            opt.step();
            losses.Add(loss.item<float>());
        }
        Assert.True(losses[^1] < losses[0] - 0.05, string.Join(", ", losses));
    }

    [Fact]
    public void Ssf_merge_refuses_a_shift_without_a_bias_to_go_into()
    {
        using var scope = NewDisposeScope();
        var pm = Trained("ssf-llama");
        var e = Assert.Throws<NotSupportedException>(() => pm.MergeAdapter());
        Assert.Contains("cannot be merged", e.Message);
        // Scale-only SSF (shift kept at zero) merges into bias-free layers.
        var scaleOnly = PeftModel.Create(Load("tiny-llama"), Case("ssf-llama").Config);
        using var _ = no_grad();
        foreach (var (key, t) in scaleOnly.AdapterStateDict("default"))
            if (key.EndsWith("ssf_scale", StringComparison.Ordinal)) t.uniform_(0.5, 1.5);
        var before = scaleOnly.Forward(Inputs());
        scaleOnly.MergeAdapter(safeMerge: true);
        Numerics.Close(before, scaleOnly.Forward(Inputs()), 1e-5, "scale-only merge");
    }

    [Fact]
    public void Ssf_merge_is_diag_scale_times_weight_plus_shift()
    {
        using var scope = NewDisposeScope();
        var pm = Trained("ssf-gpt2");
        var sd = pm.AdapterStateDict("default");
        var prefix = "base_model.model.transformer.h.0.mlp.c_fc.";
        var s = sd[prefix + "ssf_scale"].detach().clone();
        var t = sd[prefix + "ssf_shift"].detach().clone();
        var original = Load("tiny-gpt2").named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var merged = pm.MergeAndUnload().named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var w = original["transformer.h.0.mlp.c_fc.weight"];   // Conv1D: [in, out]
        var b = original["transformer.h.0.mlp.c_fc.bias"];
        Numerics.Close(w * s, merged["transformer.h.0.mlp.c_fc.weight"], 1e-6, "W' = W diag(s)");
        Numerics.Close(b * s + t, merged["transformer.h.0.mlp.c_fc.bias"], 1e-6, "b' = s b + t");
    }

    [Fact]
    public void BitFit_on_bias_free_llama_says_there_is_nothing_to_train()
    {
        var e = Assert.Throws<NotSupportedException>(() => PeftModel.Create(Load("tiny-llama"), new BitFitConfig()));
        Assert.Contains("LlamaForCausalLM", e.Message);
        Assert.Contains("nothing to train", e.Message);
    }

    [Fact]
    public void BitFit_trains_biases_only_and_leaves_the_classifier_to_modules_to_save()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(Load("tiny-bert-cls"), new BitFitConfig { TaskType = "SEQ_CLS" });
        var keys = pm.AdapterStateDict("default").Keys.ToList();
        Assert.All(keys.Where(k => !k.Contains(".classifier.")), k => Assert.EndsWith(".bitfit_bias", k));
        Assert.Contains("base_model.model.classifier.weight", keys);
        Assert.Contains("base_model.model.bert.encoder.layer.0.attention.self.query.bitfit_bias", keys);
        Assert.Contains("base_model.model.bert.embeddings.LayerNorm.bitfit_bias", keys);
    }

    [Fact]
    public void LN_tuning_adapters_switch_and_only_one_is_active()
    {
        using var scope = NewDisposeScope();
        var pm = Trained("ln-tuning-llama");
        pm.AddAdapter("other", new LnTuningConfig());
        using var _ = no_grad();
        var first = pm.Forward(Inputs());
        pm.SetAdapter("other");
        Numerics.Close(Load("tiny-llama").Forward(Inputs()), pm.Forward(Inputs()), 1e-6, "fresh copy = base");
        pm.SetAdapter("default");
        Numerics.Close(first, pm.Forward(Inputs()), 0, "back");
        pm.SetAdapter("default", "other");
        Assert.Throws<InvalidOperationException>(() => pm.Forward(Inputs()));
        // Copies are part of the model (state_dict, to(device)) until deleted.
        Assert.Contains("model.norm.ln_tuning_layers.other.weight", pm.Base.state_dict().Keys);
        pm.SetAdapter("default");
        pm.DeleteAdapter("other");
        Assert.DoesNotContain(pm.Base.state_dict().Keys, k => k.Contains(".other."));
    }

    [Fact]
    public void LN_tuning_names_what_it_cannot_wrap()
    {
        var e = Assert.Throws<NotSupportedException>(() => PeftModel.Create(Load("tiny-llama"), new LnTuningConfig { TargetModules = ModuleSelector.Of("q_proj") }));
        Assert.Contains("model.layers.0.self_attn.q_proj", e.Message);
    }
}
