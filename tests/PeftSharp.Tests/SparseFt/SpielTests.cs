using System.Text.Json;
using PeftSharp.Training;
using PeftSharp.Tuners.SparseFt;
using PeftSharp.Tuners.SparseFt.Spiel;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>
/// SpIEL-AG against its authors' code: tests/fixtures/spiel/reference.json is their SftSelector and SftAdamW
/// (AlanAnsell/peft) run on one delta with fixed gradients (make_reference.py beside it).
/// </summary>
[Collection(SerialRng.Name)]
public class SpielTests
{
    static float Gradient(int u, long i) => (float)(Math.Sin(0.37 * i + 1.3 * u) * (1 + i % 7) / 7);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Drop_grow_seeded_moments_and_updates_equal_the_authors_selector_and_optimizer_step_for_step(int accumulation)
    {
        using var scope = NewDisposeScope();
        using var doc = JsonDocument.Parse(File.ReadAllText(Repo.Path("tests", "fixtures", "spiel", "reference.json")));
        var r = doc.RootElement;
        int rows = r.GetProperty("rows").GetInt32(), cols = r.GetProperty("cols").GetInt32(), steps = r.GetProperty("steps").GetInt32();
        var run = r.GetProperty("gradient_accumulation_steps").GetProperty(accumulation.ToString());
        var c = Config("spiel", "layers.0.self_attn.v_proj") with
        {
            ReselectionSteps = r.GetProperty("reselection_steps").GetInt32(), TotalSteps = steps,
            Spiel = new() { SelectionAccumulationSteps = r.GetProperty("selection_accumulation_steps").GetInt32(), InitialReselectionRate = r.GetProperty("initial_reselection_rate").GetDouble() },
        };
        var pm = Create(c);
        var target = Assert.Single(SparseFtTuner.Targets(pm, "default"));
        var d = target.Delta;
        Assert.Equal(new long[] { rows, cols }, d.Shape);
        Assert.Equal(r.GetProperty("k").GetInt64(), d.K);
        using (no_grad()) d.Indices.copy_(Longs(run.GetProperty("initial_indices")));

        var model = Methods.Trainable(pm, "causal_lm");
        var betas = r.GetProperty("betas");
        var o = new TrainingOptions { Optim = "auto", AdamBeta1 = betas[0].GetDouble(), AdamBeta2 = betas[1].GetDouble(), AdamEpsilon = r.GetProperty("eps").GetDouble(), WeightDecay = r.GetProperty("weight_decay").GetDouble(), GradientAccumulationSteps = accumulation };
        using var optimizer = Assert.IsType<SftAdamW>(model.NewOptimizer!(o));
        var name = Assert.Single(model.Parameters).Name;
        var lr = r.GetProperty("lr").GetDouble();
        var grid = arange(rows * cols, dtype: ScalarType.Int64).data<long>().ToArray();
        for (int step = 1; step <= steps; step++)
        {
            // Micro-batch m: dL/dW = G_u / accumulation for every entry, active (through the values) or not (through the probe).
            for (int m = 0; m < accumulation; m++)
            {
                using (var s = NewDisposeScope())
                {
                    var u = accumulation * (step - 1) + m + 1;
                    var g = tensor(grid.Select(i => Gradient(u, i)).ToArray()).view(rows, cols);
                    ((d.AddTo(target.Weight.detach()) * g).sum() / accumulation).backward();
                }
                model.AfterBackward!();
            }
            optimizer.Step(lr);
            model.AfterOptimizerStep!(step);
            foreach (var (p, entries) in model.StaleOptimizerEntries!()) optimizer.ResetEntries(name, entries);
            optimizer.ZeroGrad();

            if (!run.GetProperty("after_step").TryGetProperty(step.ToString(), out var expected)) continue;
            Assert.True(Numerics.Same(Longs(expected.GetProperty("indices")), d.Indices), $"indices after step {step}");
            Numerics.Close(Floats(expected.GetProperty("values")), d.Values.detach(), 1e-6, $"values after step {step}");
            var state = optimizer.StateOf(name);
            Numerics.Close(Floats(expected.GetProperty("exp_avg")), state["exp_avg"], 1e-7, $"exp_avg after step {step}");
            Numerics.Close(Floats(expected.GetProperty("exp_avg_sq")), state["exp_avg_sq"], 1e-9, $"exp_avg_sq after step {step}");
            Assert.True(Numerics.Same(Floats(expected.GetProperty("age")), state["age"]), $"age after step {step}");
        }
    }

    [Fact]
    public void Windows_and_reselections_follow_the_authors_step_counter()
    {
        foreach (var (k, s) in new[] { (20, 5), (4, 2), (3, 1), (7, 3) })
        {
            const int total = 50;
            var schedule = new SpielSchedule([], Config("spiel") with { ReselectionSteps = k, TotalSteps = total, Spiel = new() { SelectionAccumulationSteps = s, InitialReselectionRate = 0.3 } });
            // SftSelector.step(): after each step, begin a window when (completed + 1) % k == 0, end it (and reselect) when completed % k == s.
            bool open = true;   // the constructor begins the first window
            for (int completed = 1; completed <= total; completed++)
            {
                Assert.True(open == schedule.Probing(completed), $"k={k} s={s}: gradient of step {completed}");
                bool begins = (completed + 1) % k == 0, ends = completed % k == s;
                if (begins) open = true;
                if (ends) open = false;
                Assert.True(ends == schedule.Reselects(completed), $"k={k} s={s}: reselection after step {completed}");
                if (ends) Assert.Equal(completed == s ? 1 : 0.3 * (1 - (double)completed / total), schedule.RateAt(completed), 12);
            }
        }
    }

    [Fact]
    public void An_accumulation_window_that_meets_the_next_one_is_refused()
    {
        using var scope = NewDisposeScope();
        var c = Config("spiel") with { ReselectionSteps = 4, Spiel = new() { SelectionAccumulationSteps = 3 } };
        var e = Assert.Throws<ArgumentException>(() => Methods.Trainable(Create(c), "causal_lm"));
        Assert.Contains("selection_accumulation_steps must be in [1, reselection_steps - 2 = 2], got 3", e.Message);
    }

    [Fact]
    public void With_an_explicit_optimizer_grown_slots_start_at_zero_with_zeroed_moments()
    {
        using var scope = NewDisposeScope();
        var c = Config("spiel") with { ReselectionSteps = 4, TotalSteps = 10, Spiel = new() { SelectionAccumulationSteps = 1 } };
        var pm = Create(c);
        var stepper = new Stepper(pm);
        var targets = SparseFtTuner.Targets(pm, "default");
        var before = targets.Select(t => t.Delta.Indices.clone()).ToList();
        stepper.Step();   // the first reselection (all of the support) follows step s = 1
        long grown = 0;
        for (int i = 0; i < targets.Count; i++)
        {
            var d = targets[i].Delta;
            var old = Set(before[i]);
            var name = stepper.Parameters.First(p => p.P.Handle == d.Values.Handle).Name;
            var state = stepper.Optimizer.StateDict()[name + ".exp_avg"];
            var slots = Enumerable.Range(0, (int)d.K).Where(k => !old.Contains(d.Indices[k].item<long>())).ToArray();
            Assert.All(slots, k => Assert.Equal(0f, d.Values[k].item<float>()));
            Assert.All(slots, k => Assert.Equal(0f, state[k].item<float>()));
            grown += slots.Length;
        }
        Assert.True(grown > 0);
    }

    [Fact]
    public void Resuming_another_optimizers_state_with_the_authors_optimizer_is_refused_with_what_to_do()
    {
        using var scope = NewDisposeScope();
        var model = Methods.Trainable(Create(Config("spiel") with { ReselectionSteps = 4, Spiel = new() { SelectionAccumulationSteps = 1 } }), "causal_lm");
        var path = Path.Combine(IO.SafetensorsTests.TempDir(), "optimizer.safetensors");
        using (var adam = new PeftSharp.Training.AdamW(model.Parameters)) adam.Save(path);
        using var sft = Assert.IsType<SftAdamW>(model.NewOptimizer!(new TrainingOptions()));
        var e = Assert.Throws<InvalidDataException>(() => sft.Load(path));
        Assert.Contains("optimizer state saved by 'adamw', but SpIEL with --optim auto trains with its authors' SftAdamW ('sft_adamw'); resume with --optim adamw_torch", e.Message);
    }

    static Tensor Longs(JsonElement a) => tensor(a.EnumerateArray().Select(x => x.GetInt64()).ToArray());
    static Tensor Floats(JsonElement a) => tensor(a.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray());
}
