using System.Text.Json.Nodes;
using PeftSharp.Tokenization;
using PeftSharp.Tokenization.Jinja;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// Real models' chat templates rendered byte for byte as @huggingface/jinja renders them
/// (tests/fixtures/chat-templates, written by tools/chat-template-reference/render.js).
/// </summary>
public class ChatTemplateFixtureTests
{
    static readonly string Folder = Repo.Path("tests", "fixtures", "chat-templates");

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var file in Directory.GetFiles(Folder, "*.json").Order(StringComparer.Ordinal))
        {
            var fixture = JsonNode.Parse(File.ReadAllText(file))!;
            if (fixture["cases"] is not JsonArray cases) continue; // jinja-semantics.json
            foreach (var c in cases)
                data.Add(Path.GetFileNameWithoutExtension(file), (string)c!["name"]!);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Renders_as_the_reference(string model, string caseName)
    {
        var fixture = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, model + ".json")))!;
        var c = fixture["cases"]!.AsArray().Single(x => (string)x!["name"]! == caseName)!;
        var now = DateTime.Parse((string)fixture["now"]!, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AdjustToUniversal);
        var template = ChatTemplate.Parse((string)fixture["template"]!, new Dictionary<string, string?>
        {
            ["bos_token"] = (string?)fixture["bos_token"], ["eos_token"] = (string?)fixture["eos_token"],
        }, now: () => now);

        RenderedChat Render() => template.Render(c["messages"]!.AsArray(), (bool)c["add_generation_prompt"]!,
            c["tools"]?.AsArray(), c["extra"]?.AsObject());

        if (c["error"] is { } error)
            Assert.Equal("chat_template: " + (string)error!, Assert.Throws<TemplateException>(Render).Message);
        else
            Assert.Equal((string)c["expected"]!, Render().Text);
    }
}
