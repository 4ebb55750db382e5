using PeftSharp.Models;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt.Dsee;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>DSEE: the sparse support of W's decomposition, and LoRA plus the sparse delta in the forward and the merge.</summary>
[Collection(SerialRng.Name)]
public class DseeTests
{
    static DseeConfig Config(bool init = true) => new()
    {
        R = 4, LoraAlpha = 8, Density = 0.05, DecompositionRank = 4, DecompositionIterations = 3, InitWeights = init,
        TargetModules = ModuleSelector.Of("q_proj", "v_proj", "down_proj"),
    };

    static List<(string Path, DseeLayer Layer)> Layers(Peft.PeftModel pm) => pm.TunerLayers().Select(x => (x.Path, (DseeLayer)x.Layer)).ToList();

    [Fact]
    public void The_sparse_support_is_the_top_k_of_the_sparse_part_of_the_godec_decomposition()
    {
        using var scope = NewDisposeScope();
        var pm = Create(Config());
        var layers = Layers(pm);
        Assert.Equal(6, layers.Count);
        bool differsFromMagnitude = false;
        foreach (var (path, layer) in layers)
        {
            // GoDec written out: L = SVD_4(W − S); S = the K largest entries of W − L; three times from S = 0.
            var w = layer.Weight.detach().to(ScalarType.Float64);
            long k = (long)Math.Ceiling(0.05m * w.numel());
            var s = zeros_like(w);
            Tensor top = null!;
            for (int i = 0; i < 3; i++)
            {
                var (u, sv, vh) = linalg.svd(w - s, fullMatrices: false);
                var low = u[.., ..4].matmul(diag(sv[..4])).matmul(vh[..4, ..]);
                var residual = (w - low).flatten();
                top = residual.abs().topk((int)k).indexes;
                s = zeros_like(residual).index_put_(residual.index_select(0, top), top).view(w.shape);
            }
            var support = Set(layer.Sparse("default").Indices);
            Assert.Equal(k, support.Count);
            Assert.Equal(Set(top), support);
            differsFromMagnitude |= !Set(w.abs().flatten().topk((int)k).indexes).SetEquals(support);
        }
        Assert.True(differsFromMagnitude, "the decomposition must choose other entries than |W| alone for this test to mean anything");
    }

    [Fact]
    public void The_forward_is_the_base_plus_lora_plus_the_sparse_delta_and_merging_keeps_it()
    {
        using var scope = NewDisposeScope();
        var pm = Create(Config(init: false));
        var (_, layer) = Layers(pm)[0];
        var x = randn(2, 5, layer.InFeatures);
        using (no_grad())
        {
            var w = layer.Weight.detach();
            var d = layer.Sparse("default");
            var dense = zeros(w.numel()).index_put_(d.Values.detach(), d.Indices).view(w.shape);
            var expected = x.matmul(w.t()) + 2.0 * x.matmul(layer.A("default").t()).matmul(layer.B("default").t()) + x.matmul(dense.t());
            Numerics.Close(expected, layer.forward(x), 1e-5, "forward");
            Assert.Equal(2.0, layer.Scaling("default"));
            Assert.True(Numerics.MaxAbsDiff(layer.forward(x), x.matmul(w.t())) > 1e-3, "both parts must be non-zero");

            var ids = Tuners.TrainingLoop.Batch(seed: 3);
            var unmerged = pm.Forward(ModelInputs.Ids(ids));
            var bases = Layers(pm).Select(l => l.Layer.Weight.detach().clone()).ToList();
            pm.MergeAdapter();
            Numerics.Close(unmerged, pm.Forward(ModelInputs.Ids(ids)), 1e-5, "merged");
            pm.UnmergeAdapter();
            foreach (var ((_, l), b) in Layers(pm).Zip(bases)) Assert.True(Numerics.Same(b, l.Weight.detach()));
        }
    }
}
