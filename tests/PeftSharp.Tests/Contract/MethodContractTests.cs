using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Tuners;
using PeftSharp.Tuners;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Contract;

/// <summary>
/// The promises every method keeps, checked on every row of <see cref="MethodCases"/> (PEFT's TEST_CASES idea).
/// Parity with the PEFT reference outputs is in MethodParityTests and LoraParityTests, for the rows with a fixture.
/// </summary>
public class MethodContractTests
{
    public static TheoryData<string> All => MethodCases.Names();
    public static TheoryData<string> Identity => MethodCases.Names(c => c.Identity);
    public static TheoryData<string> Mergeable => MethodCases.Names(c => c.Mergeable);

    static PretrainedModel Load(MethodCase c)
    {
        var m = AutoModel.Load(Repo.Fixture("models", c.Model));
        m.eval();   // inference, as after loading: adapters added now must not start in training mode
        return m;
    }

    static ModelInputs Inputs(MethodCase c) => ModelInputs.Ids(TrainingLoop.Batch(seed: 3)) with { TaskIds = TaskIds(c) };

    static Tensor? TaskIds(MethodCase c) => c.TaskIds is { } ids ? tensor(ids) : null;

    static PeftModel Fresh(MethodCase c)
    {
        manual_seed(1);
        var pm = PeftModel.Create(Load(c), c.Config());
        c.Prepare?.Invoke(pm);
        return pm;
    }

    static PeftModel Trained(MethodCase c, int steps = 2)
    {
        var pm = Fresh(c);
        pm.Base.train();
        TrainingLoop.Run(pm, TrainingLoop.Batch(), steps, c.Lr, c.VirtualTokens, TaskIds(c));
        pm.Base.eval();
        return pm;
    }

    static Tensor Logits(ILanguageModel m, MethodCase c)
    {
        using var _ = no_grad();
        return m.Forward(Inputs(c));
    }

    [Theory]
    [MemberData(nameof(Identity))]
    public void A_fresh_adapter_is_the_identity(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Fresh(c);
        Numerics.Close(Logits(Load(c), c), Logits(pm, c), 1e-6, name);
    }

    [Theory]
    [MemberData(nameof(All))]
    public void The_eval_forward_is_deterministic(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Fresh(c);
        using (no_grad())
            foreach (var (_, p) in pm.TrainableParameters()) p.add_(randn_like(p) * 0.1);   // a branch of zeros hides dropout
        Assert.True(Numerics.Same(Logits(pm, c), Logits(pm, c)), $"{name}: two eval forwards differ");
        if (!c.Random) return;
        pm.Base.train();
        Assert.False(Numerics.Same(Logits(pm, c), Logits(pm, c)), $"{name}: the row's dropout must act in training for this test to mean anything");
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Training_changes_the_adapter_and_nothing_else(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Fresh(c);
        var trainable = pm.TrainableParameters().Select(x => x.P).ToList();
        var frozen = pm.Base.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => (p.name, p.parameter, Copy: p.parameter.detach().clone())).ToList();
        var before = trainable.Select(p => p.detach().clone()).ToList();
        pm.Base.train();
        var losses = TrainingLoop.Run(pm, TrainingLoop.Batch(), steps: 4, c.Lr, c.VirtualTokens, TaskIds(c));
        Assert.True(losses[^1] < losses[0], $"{name}: loss {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.Contains(trainable.Zip(before), x => !Numerics.Same(x.First.detach(), x.Second));
        foreach (var (n, p, copy) in frozen) Assert.True(Numerics.Same(copy, p.detach()), $"{name}: frozen '{n}' changed");
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Save_then_load_gives_the_same_logits(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Trained(c);
        var dir = Saved(pm);
        var back = PeftModel.FromPretrained(Load(c), dir);
        Assert.Empty(back.TrainableParameters());
        var trained = Logits(pm, c);
        Numerics.Close(trained, Logits(back, c), 1e-6, name);
        Assert.True(c.VirtualTokens > 0 || Numerics.MaxAbsDiff(trained, Logits(Load(c), c)) > 1e-4,
            "training must have changed the logits for this test to mean anything");
    }

    [Theory]
    [MemberData(nameof(All))]
    public void A_stray_tensor_is_refused_by_name(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Trained(c, steps: 1);
        var dir = Saved(pm);
        var module = pm.TunerLayers().Select(x => $"base_model.model.{x.Path}.").FirstOrDefault() ?? "";
        // LoRA's case of old: a DoRA magnitude in a file whose config lost use_dora loaded as plain LoRA.
        var stray = module + "lora_magnitude_vector";
        Rewrite(dir, t =>
        {
            if (t.ContainsKey(stray)) stray = module + "stray_tensor";
            t[stray] = ones(4);
        });
        var e = Assert.ThrowsAny<Exception>(() => PeftModel.FromPretrained(Load(c), dir));
        Assert.Contains(stray, e.Message);
        Assert.Contains(Path.Combine(dir, PeftModel.WeightsFile), e.Message);
    }

    [Theory]
    [MemberData(nameof(All))]
    public void A_missing_tensor_is_refused_by_name(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Trained(c, steps: 1);
        var dir = Saved(pm);
        string missing = "";
        Rewrite(dir, t => { missing = t.Keys.Order(StringComparer.Ordinal).Last(); t.Remove(missing); });
        var e = Assert.ThrowsAny<Exception>(() => PeftModel.FromPretrained(Load(c), dir));
        Assert.Contains(missing.Split('.')[^1], e.Message);
        Assert.Contains(missing.StartsWith("base_model.model.") ? missing : "", e.Message);
        Assert.Contains(Path.Combine(dir, PeftModel.WeightsFile), e.Message);
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Disabling_gives_the_base_logits(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Trained(c);
        var adapted = Logits(pm, c);
        Tensor disabled;
        using (pm.DisableAdapters()) disabled = Logits(pm, c);
        if (!c.ResidualBase) Numerics.Close(Logits(Load(c), c), disabled, 1e-5, name);
        Assert.True(c.VirtualTokens > 0 || Numerics.MaxAbsDiff(adapted, disabled) > 1e-4, "training must have changed the logits for this test to mean anything");
        Numerics.Close(adapted, Logits(pm, c), 0, "re-enabled");
    }

    [Theory]
    [MemberData(nameof(Mergeable))]
    public void Merged_equals_unmerged_and_unmerging_restores_the_base_exactly(string name)
    {
        using var scope = NewDisposeScope();
        var c = MethodCases.Get(name);
        var pm = Trained(c);
        var before = pm.Base.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var unmerged = Logits(pm, c);
        pm.MergeAdapter(safeMerge: true);
        Assert.All(pm.TunerLayers(), l => Assert.Equal(["default"], l.Layer.MergedAdapters));
        Numerics.Close(unmerged, Logits(pm, c), 1e-4, "merged");
        Assert.Throws<InvalidOperationException>(() => pm.TunerLayers().First().Layer.DeleteAdapter("default"));
        pm.UnmergeAdapter();
        foreach (var (n, p) in pm.Base.named_parameters()) Assert.True(Numerics.Same(before[n], p.detach()), $"{name}: '{n}' not restored exactly");
        Numerics.Close(unmerged, Logits(pm, c), 0, "unmerged");
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Adapter_config_round_trips_every_key(string name)
    {
        var config = MethodCases.Get(name).Config();
        var json = PeftConfigJson.Serialize(config);
        var back = PeftConfigJson.Parse(json);
        Assert.Equal(config.GetType(), back.GetType());
        Assert.Null(back.Extra);
        Assert.Equal(json, PeftConfigJson.Serialize(back));
        var keys = JsonNode.Parse(json)!.AsObject().Select(kv => kv.Key).ToList();
        Assert.Contains("peft_type", keys);
        Assert.DoesNotContain("is_prompt_learning", keys);
    }

    static string Saved(PeftModel pm)
    {
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "adapter");
        pm.Save(dir);
        return dir;
    }

    static void Rewrite(string dir, Action<Dictionary<string, Tensor>> change)
    {
        var path = Path.Combine(dir, PeftModel.WeightsFile);
        Dictionary<string, Tensor> tensors;
        using (var f = SafetensorsFile.Open(path)) tensors = f.LoadAll();
        change(tensors);
        SafetensorsWriter.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }
}
