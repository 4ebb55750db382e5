using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary><c>peftsharp generate --chat</c> runs the prompt through the model folder's chat template.</summary>
public class GenerateChatCliTests
{
    const string Template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

    [Fact]
    public void Chat_prompt_is_the_rendered_template_with_the_generation_prompt()
    {
        using var dir = new TempDir();
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Repo.Path("models", "tinycode-3m", f), dir.Combine(f));
        dir.File("chat_template.jinja", Template);

        var (exit, output) = RunCli("generate", "--model", dir.Path, "--prompt", "def f(", "--chat", "--max-new-tokens", "2", "--json");

        Assert.True(exit == 0, output);
        var ids = JsonDocument.Parse(output).RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var prompt = HfTokenizer.Load(dir.Path).Encode("<user>def f(\n<assistant>", addSpecialTokens: false);
        Assert.Equal(prompt, ids[..prompt.Length]);
        Assert.Equal(prompt.Length + 2, ids.Length);
    }

    static (int ExitCode, string Output) RunCli(params string[] args)
    {
        // tests/PeftSharp.Tests/bin/<Configuration>/<tfm>/ -> src/PeftSharp.Cli/bin/<Configuration>/<tfm>/
        var tfmDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var dll = Repo.Path("src", "PeftSharp.Cli", "bin", tfmDir.Parent!.Name, tfmDir.Name, "PeftSharp.Cli.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}
