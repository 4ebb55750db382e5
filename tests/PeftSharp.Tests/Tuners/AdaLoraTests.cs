using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class AdaLoraTests
{
    // 2 llama layers x (q_proj, v_proj): 4 adapted modules, 6 -> 2 singular values each on average.
    static AdaLoraConfig Config() => new()
    {
        InitR = 6, TargetR = 2, LoraAlpha = 8, Tinit = 1, Tfinal = 2, DeltaT = 1, TotalStep = 8,
        TargetModules = ModuleSelector.Of("q_proj", "v_proj"),
    };

    [Fact]
    public void Budget_falls_on_peft_cubic_schedule()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(new AdapterFixture("llama-adalora").LoadBase(), Config());
        var allocator = new RankAllocator(pm);
        Assert.Equal((24, 8), (allocator.InitialBudget, allocator.TargetBudget));
        // remaining = 1 - (step - tinit) / (total - tfinal - tinit); budget = int(16 remaining^3 + 8)
        int[] expected = [24, 24, 16, 11, 9, 8, 8, 8, 8];
        bool[] prunes = [false, false, true, true, true, true, true, true, true];
        for (int step = 0; step <= 8; step++)
            Assert.Equal((expected[step], prunes[step]), allocator.BudgetSchedule(step));
    }

    [Fact]
    public void Training_with_the_allocator_prunes_singular_values_to_the_budget_and_keeps_them_pruned()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var f = new AdapterFixture("llama-adalora");
        var pm = PeftModel.Create(f.LoadBase(), Config());
        var allocator = new RankAllocator(pm);
        var kept = new List<(int Budget, int Pattern, int NonZero)>();
        var losses = MethodTrainingTests.Train(pm, f.Inputs(), steps: 8, lr: 5e-2,
            afterBackward: (m, step) =>
            {
                allocator.UpdateAndAllocate(m, step + 1);
                int pattern = allocator.RankPattern?.Values.Sum(v => v.Count(k => k)) ?? allocator.InitialBudget;
                int nonZero = m.TunerLayers().Sum(l => ((AdaLoraLayer)l.Layer).E("default").ne(0).sum().item<long>() is var n ? (int)n : 0);
                kept.Add((allocator.Budget, pattern, nonZero));
            },
            extraLoss: allocator.OrthogonalRegularization);
        // Steps 1..8: warm-up (step 1 = tinit), then 16, 11, 9, 8, 8 (final allocation at step 6), then fixed at 8.
        Assert.Equal([24, 16, 11, 9, 8, 8, 8, 8], kept.Select(k => k.Pattern));
        Assert.All(kept.Skip(1), k => Assert.True(k.NonZero <= k.Pattern, $"{k.NonZero} non-zero singular values but {k.Pattern} kept"));
        Assert.Equal(8, kept[^1].NonZero);
        Assert.True(losses[^1] < losses[0], $"loss {losses[0]:F4} -> {losses[^1]:F4}");
        Assert.All(allocator.RankPattern!.Keys, k => Assert.Matches(@"^model\.layers\.\d\.self_attn\.[qv]_proj\.lora_E$", k));

        // PEFT saves an allocated adapter with only the kept singular values and the rank_pattern; it loads back the same.
        using var _ = no_grad();
        var trained = pm.Forward(f.Inputs());
        var dir = Path.Combine(Tests.IO.SafetensorsTests.TempDir(), "adalora-pruned");
        Directory.CreateDirectory(dir);
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (path, layer) in pm.TunerLayers())
        {
            var a = (AdaLoraLayer)layer;
            var keep = tensor(allocator.RankPattern![$"{path}.lora_E"]).nonzero().view(-1);
            tensors[$"base_model.model.{path}.lora_A"] = a.A("default").index_select(0, keep).contiguous();
            tensors[$"base_model.model.{path}.lora_E"] = a.E("default").index_select(0, keep).contiguous();
            tensors[$"base_model.model.{path}.lora_B"] = a.B("default").index_select(1, keep).contiguous();
        }
        SafetensorsWriter.Save(Path.Combine(dir, PeftModel.WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        PeftConfigJson.Save(Config() with { RankPattern = allocator.RankPattern!.ToDictionary(kv => kv.Key, kv => kv.Value) }, dir);
        var back = PeftModel.FromPretrained(f.LoadBase(), dir);
        Assert.Equal(8, back.TunerLayers().Sum(l => ((AdaLoraLayer)l.Layer).Rank("default")));
        Numerics.Close(trained, back.Forward(f.Inputs()), 1e-5, "pruned adapter loaded back");
    }

    [Fact]
    public void Orthogonal_regularization_is_zero_for_orthonormal_factors_and_pulls_others_towards_them()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(new AdapterFixture("llama-adalora").LoadBase(), Config() with { OrthRegWeight = 0.5 });
        var allocator = new RankAllocator(pm);
        var layers = pm.TunerLayers().Select(l => (AdaLoraLayer)l.Layer).ToList();
        var reg = allocator.OrthogonalRegularization(pm);
        // By hand: 0.5 * mean over the 8 factors of ||cov - I||_F.
        double byHand = 0;
        foreach (var l in layers)
        {
            using var qq = matmul(l.A("default"), l.A("default").t()) - eye(6);
            using var pp = matmul(l.B("default").t(), l.B("default")) - eye(6);
            byHand += qq.norm().item<float>() + pp.norm().item<float>();
        }
        Assert.Equal(0.5 * byHand / 8, reg.item<float>(), 4);
        reg.backward();
        Assert.True(layers[0].A("default").grad!.abs().sum().item<float>() > 0, "the penalty must reach Q");
        using (no_grad())
            foreach (var l in layers)
            {
                l.A("default").copy_(linalg.qr(randn(64, 6)).Q.t()); // orthonormal rows
                l.B("default").copy_(linalg.qr(randn(l.OutFeatures, 6)).Q); // orthonormal columns
            }
        Assert.True(allocator.OrthogonalRegularization(pm).item<float>() < 1e-5);
    }

    [Fact]
    public void The_allocator_needs_total_step()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(new AdapterFixture("llama-adalora").LoadBase(), Config() with { TotalStep = null });
        Assert.Contains("total_step", Assert.Throws<ArgumentException>(() => new RankAllocator(pm)).Message);
    }
}
