namespace PeftSharp.IO;

/// <summary>A checkpoint file that cannot be read as it is; the message names the file and what is wrong.</summary>
public sealed class SafetensorsException(string file, string problem)
    : IOException($"{file}: {problem}")
{
    public string File { get; } = file;
    public string Problem { get; } = problem;
}
