using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt.Shira;
using TorchSharp;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>
/// SHiRA against its definition in PEFT 0.21 (tuners/shira), written out with plain ops: mask = randperm(numel) from a
/// generator seeded with random_seed, first r(out + in); indices = torch.where(mask) (row-major); forward
/// F.linear(x, W + sparse_coo(indices, shira_weight * 1.0).to_dense(), b); saved as int32 [2, K] shira_indices.
/// </summary>
[Collection(SerialRng.Name)]
public class ShiraTests
{
    static readonly ShiraConfig Config = new() { R = 2, RandomSeed = 42, InitWeights = false, TargetModules = ModuleSelector.Of(["q_proj", "down_proj"]) };

    static (Tensor Rows, Tensor Cols) ShiraIndices(long outF, long inF, int r, long seed)
    {
        using var g = new Generator((ulong)seed);
        var idx = randperm(outF * inF, generator: g).narrow(0, 0, r * (outF + inF));
        var mask = zeros(outF * inF, dtype: ScalarType.Bool).index_fill_(0, idx, true).view(outF, inF);
        var where = nonzero(mask);   // row-major, as torch.where
        return (where[.., 0], where[.., 1]);
    }

    [Fact]
    public void Shira_matches_its_definition_written_with_plain_ops()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var pm = PeftModel.Create(TinyLlama(), Config);
        var plain = TinyLlama();
        var weights = plain.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var saved = pm.AdapterStateDict("default");
        Assert.Equal(4, pm.TunerLayers().Count());
        using (no_grad())
            foreach (var (path, layer) in pm.TunerLayers())
            {
                var w = weights[path + ".weight"];
                var (rows, cols) = ShiraIndices(w.shape[0], w.shape[1], 2, 42);
                var indices = saved[$"base_model.model.{path}.shira_indices"];
                var values = saved[$"base_model.model.{path}.shira_weight"];
                Assert.Equal(ScalarType.Int32, indices.dtype);
                Assert.True(Numerics.Same(stack([rows, cols]).to(ScalarType.Int32), indices), path);
                Assert.Equal([2 * (w.shape[0] + w.shape[1])], values.shape);
                var dense = sparse_coo_tensor(stack([rows, cols]), values.detach(), [w.shape[0], w.shape[1]]).to_dense();
                w.add_(dense);
            }
        var ids = Tuners.TrainingLoop.Batch(seed: 3);
        using (no_grad()) Numerics.Close(plain.Forward(ModelInputs.Ids(ids)), pm.Forward(ModelInputs.Ids(ids)), 1e-5, "SHiRA forward");
    }

    [Fact]
    public void A_shira_file_in_peft_layout_loads_with_its_own_indices()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var pm = PeftModel.Create(TinyLlama(), Config);
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "shira");
        pm.Save(dir);
        Assert.Contains("\"peft_type\": \"SHIRA\"", File.ReadAllText(Path.Combine(dir, PeftConfigJson.FileName)));
        // PEFT loads the file's indices over the mask it drew: give the file other (valid) ones and see them used.
        var path = Path.Combine(dir, PeftModel.WeightsFile);
        Dictionary<string, Tensor> tensors;
        using (var f = SafetensorsFile.Open(path)) tensors = f.LoadAll();
        var key = tensors.Keys.First(k => k.EndsWith(".shira_indices"));
        var k = tensors[key].shape[1];
        var flat = arange(k, dtype: ScalarType.Int32);
        tensors[key] = stack([flat.div(64, RoundingMode.floor), flat.remainder(64)]);   // the first k entries, row by row (q_proj is [64, 64])
        SafetensorsWriter.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var back = PeftModel.FromPretrained(TinyLlama(), dir);
        var module = key["base_model.model.".Length..^".shira_indices".Length];
        var layer = back.TunerLayers().Single(x => x.Path == module).Layer;
        Assert.True(Numerics.Same(arange(k, dtype: ScalarType.Int64), ((PeftSharp.Tuners.SparseFt.SparseFtLayer)layer).Delta("default").Indices));
        // Out-of-range coordinates are refused naming the tensor.
        tensors[key] = stack([full(k, 9999, dtype: ScalarType.Int32), arange(k, dtype: ScalarType.Int32)]);
        SafetensorsWriter.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var e = Assert.Throws<InvalidDataException>(() => PeftModel.FromPretrained(TinyLlama(), dir));
        Assert.Contains(key, e.Message);
    }
}
