using System.Text.Json;
using PeftSharp.Analysis;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Analysis;

/// <summary>Against tests/fixtures/intruders/reference.json: PEFT's reduce_intruder_dimension steps run in PyTorch (make_reference.py).</summary>
public sealed class PeftReferenceTests
{
    [Fact]
    public void Cosines_intruders_and_mitigated_delta_match_PyTorch()
    {
        using var scope = NewDisposeScope();
        using var doc = JsonDocument.Parse(File.ReadAllText(Repo.Path("tests", "fixtures", "intruders", "reference.json")));
        var j = doc.RootElement;
        int rows = j.GetProperty("rows").GetInt32(), cols = j.GetProperty("cols").GetInt32(), r = j.GetProperty("r").GetInt32();
        Tensor Matrix(string name, long n, long m) => tensor(j.GetProperty(name).EnumerateArray().Select(e => e.GetSingle()).ToArray()).reshape(n, m);
        var w = Matrix("W", rows, cols);
        var a = Matrix("A", r, cols);
        var b = Matrix("B", rows, r);
        double scaling = j.GetProperty("lora_alpha").GetDouble() / r;
        var options = new IntruderOptions(j.GetProperty("top_k").GetInt32(), j.GetProperty("epsilon").GetDouble());
        var dw = b.matmul(a) * scaling;

        var scan = Spectra.Intruders(w, w + dw, options.TopK, options.Epsilon);
        var cosines = j.GetProperty("cosines").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        Assert.Equal(cosines.Length, scan.Cosines.Length);
        for (int i = 0; i < cosines.Length; i++) Assert.Equal(cosines[i], scan.Cosines[i], 4);
        Assert.Equal(j.GetProperty("intruders").EnumerateArray().Select(e => e.GetInt32()), scan.Intruders);

        var reduced = IntruderMitigation.Reduce(w, dw, scaling, r, transposed: false, options, j.GetProperty("lambda").GetDouble())!.Value;
        Numerics.Close(Matrix("delta_new", rows, cols), scaling * reduced.B.matmul(reduced.A), 1e-4, "mitigated delta");
    }
}
