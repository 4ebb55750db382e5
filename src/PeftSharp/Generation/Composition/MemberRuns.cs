using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>
/// Runs the members of a decoding-time ensemble. Members that are views of one adapted model (the model with one
/// active adapter, <see cref="AdapterView"/>, <see cref="AdaptersOff"/>) run as one forward whose batch repeats the
/// inputs once per member, each copy with its own adapter or none (<see cref="PeftModel.RowAdapters"/>): a tuned and
/// untuned pair costs one forward of 2B rows instead of two of B, and members with the same adapter share their rows.
/// A model member counts with the adapter active when the ensemble is built. Where rows cannot mix (training mode, merged or
/// prompt-learning adapters, methods other than LoRA) each member runs alone. One KV cache per run.
/// </summary>
internal sealed class MemberRuns
{
    // A run: a model alone (Rows null), or one adapted model over several row copies (each copy's adapter, null = off).
    sealed record Run(ILanguageModel Model, int[] Members, string?[]? Rows);

    readonly Run[] runs;
    readonly int count;

    public MemberRuns(IReadOnlyList<ILanguageModel> members)
    {
        count = members.Count;
        var views = members.Select(View).ToArray();
        var list = new List<Run>();
        var placed = new bool[count];
        for (int i = 0; i < count; i++)
        {
            if (placed[i]) continue;
            int[] group = [i];
            if (views[i] is { } v)
            {
                var same = Enumerable.Range(i, count - i).Where(j => !placed[j] && views[j] is { } w && ReferenceEquals(w.Model, v.Model)).ToArray();
                string?[] rows = [.. same.Select(j => views[j]!.Value.Adapter)];
                if (same.Length > 1 && v.Model.CanRunRowAdapters(rows))
                {
                    list.Add(new Run(v.Model, same, rows));
                    group = same;
                }
            }
            if (group.Length == 1) list.Add(new Run(members[i], [i], null));
            foreach (var j in group) placed[j] = true;
        }
        runs = [.. list];
    }

    /// <summary>How many forwards one step takes (and member caches the composed cache holds).</summary>
    public int Forwards => runs.Length;

    /// <summary>The first member's device (the large model's, in the ensembles here): where the scores are combined.</summary>
    public Device Device => runs[0].Model.Device;

    public KvCache NewCache() => KvCache.Of([.. runs.Select(r => r.Model.NewCache())]);

    public bool CacheExpires(long cached, long total) => runs.Any(r => r.Model.CacheExpires(cached, total));

    /// <summary>Each member's logits [B, T, V], float32 on <paramref name="device"/>, in member order.</summary>
    public Tensor[] Logits(ModelInputs inputs, Device device, string maker)
    {
        var caches = inputs.Cache?.Members;
        if (inputs.Cache is not null && caches!.Count != runs.Length)
            throw new ArgumentException($"this cache has {caches.Count} member caches but the ensemble runs {runs.Length}: make it with {maker}.NewCache()");
        var logits = new Tensor[count];
        for (int r = 0; r < runs.Length; r++)
        {
            var (model, members, rows) = (runs[r].Model, runs[r].Members, runs[r].Rows);
            var cache = caches?[r];
            if (rows is null)
            {
                logits[members[0]] = model.Forward(inputs with { Cache = cache }).to(ScalarType.Float32, device);
                continue;
            }
            long b = inputs.Batch;
            var pm = (PeftModel)model;
            var distinct = rows.Distinct().ToArray();   // members with the same adapter (a shared untuned model) share rows
            Tensor all;
            using (pm.RowAdapters([.. distinct.SelectMany(a => Enumerable.Repeat(a, (int)b))]))
                all = pm.Forward(Repeated(inputs, distinct.Length) with { Cache = cache });
            for (int k = 0; k < members.Length; k++)
                logits[members[k]] = all.narrow(0, Array.IndexOf(distinct, rows[k]) * b, b).to(ScalarType.Float32, device);
        }
        return logits;
    }

    // The member as (adapted model, its adapter or null for off), or null when it is no view of an adapted model.
    static (PeftModel Model, string? Adapter)? View(ILanguageModel m) => m switch
    {
        AdapterView v => (v.Model, v.Adapter),
        AdaptersOff o => (o.Model, null),
        PeftModel p when p.ActiveAdapters.Count == 1 => (p, p.ActiveAdapters[0]),
        _ => null,
    };

    // Every per-row input repeated n times along the batch: row k B + i is row i of copy k.
    static ModelInputs Repeated(ModelInputs x, int n)
    {
        Tensor? Rep(Tensor? t) => t is null ? null : cat(Enumerable.Repeat(t, n).ToArray(), 0);
        return x with
        {
            InputIds = Rep(x.InputIds), InputsEmbeds = Rep(x.InputsEmbeds), AttentionMask = Rep(x.AttentionMask),
            PositionIds = Rep(x.PositionIds), SegmentIds = Rep(x.SegmentIds), TokenTypeIds = Rep(x.TokenTypeIds), TaskIds = Rep(x.TaskIds),
        };
    }
}
