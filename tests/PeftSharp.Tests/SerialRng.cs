namespace PeftSharp.Tests;

/// <summary>
/// Tests that depend on torch's global random generator (dropout, seeded inits) run in this collection, never
/// alongside other tests, which would draw from the same generator and change the stream.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialRng
{
    public const string Name = "torch global RNG";
}
