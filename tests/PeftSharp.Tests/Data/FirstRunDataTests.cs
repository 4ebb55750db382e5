using System.Text.Json;
using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

/// <summary>The dataset bundled for `peftsharp train` with no arguments.</summary>
public class FirstRunDataTests
{
    static readonly string Folder = Repo.Path("data", "first-run");

    [Fact]
    public void Is_small_split_and_loads_as_text_records()
    {
        var files = Directory.GetFiles(Folder, "*", SearchOption.AllDirectories);
        Assert.True(files.Sum(f => new FileInfo(f).Length) < 1_000_000, "the bundled data must stay under 1 MB");
        var d = TrainingDataset.Load(new DataOptions { TrainPath = Path.Combine(Folder, "train.jsonl"), EvalPath = Path.Combine(Folder, "eval.jsonl") },
            ToyTokenizer.Functions());
        Assert.Equal(0, d.Report.BadRecords);
        Assert.True(d.Train.Count > 300);
        Assert.True(d.Eval!.Count > 20);
    }

    [Fact]
    public void Every_record_names_a_package_whose_licence_is_bundled_and_eval_packages_are_unseen()
    {
        HashSet<string> Packages(string file) => File.ReadLines(Path.Combine(Folder, file)).Select(l =>
        {
            using var doc = JsonDocument.Parse(l);
            var source = doc.RootElement.GetProperty("source").GetString()!;       // npm:<name>@<version>/<file>
            var name = source["npm:".Length..];
            return name[..name.IndexOf('@', 1)];
        }).ToHashSet();
        var train = Packages("train.jsonl");
        var eval = Packages("eval.jsonl");
        Assert.Empty(train.Intersect(eval));
        var sources = File.ReadAllText(Path.Combine(Folder, "SOURCES.md"));
        foreach (var p in train.Concat(eval))
        {
            Assert.True(File.Exists(Path.Combine(Folder, "LICENSES", p.Replace("/", "__") + ".txt")), $"no licence text for {p}");
            Assert.Contains($"`{p}`", sources);
        }
    }
}
