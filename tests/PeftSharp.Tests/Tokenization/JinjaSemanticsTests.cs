using System.Text.Json.Nodes;
using PeftSharp.Tokenization.Jinja;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// Small templates that pin Jinja's semantics (whitespace control, loops, scoping, filters, tests, tojson, ...)
/// against Python's jinja2 configured as transformers configures it (tests/fixtures/chat-templates/jinja-semantics.json,
/// written by tools/chat-template-reference/python_check.py).
/// </summary>
public class JinjaSemanticsTests
{
    static readonly JsonArray Snippets = JsonNode.Parse(File.ReadAllText(
        Repo.Path("tests", "fixtures", "chat-templates", "jinja-semantics.json")))!["snippets"]!.AsArray();

    public static TheoryData<string> Names() => [.. Snippets.Select(s => (string)s!["name"]!)];

    [Theory]
    [MemberData(nameof(Names))]
    public void Renders_as_python_jinja2(string name)
    {
        var snippet = Snippets.Single(s => (string)s!["name"]! == name)!;
        var context = (Dictionary<string, object?>?)JinjaTemplate.FromJson(snippet["context"]) ?? [];
        context["strftime_now"] = Builtins.StrftimeNow(() => new DateTime(2026, 1, 15, 12, 0, 0));

        var render = () => JinjaTemplate.Parse((string)snippet["template"]!).Render(context);

        if (snippet["error"] is { } error)
        {
            Assert.Contains((string)error!, Assert.Throws<TemplateException>(() => render()).Message);
            return;
        }
        var (text, generation) = render();
        Assert.Equal((string)snippet["expected"]!, text);
        var expectedSpans = snippet["generation"]?.AsArray().Select(s => ((int)s![0]!, (int)s[1]!)).ToList() ?? [];
        Assert.Equal(expectedSpans, generation);
    }

    [Theory]
    [InlineData("{% for x in y %}", "line 1: the template ends before '{% endfor %}'")]
    [InlineData("a\n{{ x | frobnicate }}", "line 2: the filter 'frobnicate' is not supported by PeftSharp's Jinja interpreter")]
    [InlineData("\n\n{% extends 'base' %}", "line 3: the statement '{% extends %}' is not supported by PeftSharp's Jinja interpreter")]
    [InlineData("{{ x is prime }}", "line 1: the test 'is prime' is not supported by PeftSharp's Jinja interpreter")]
    [InlineData("{{ 'a' + }}", "line 1: expected an expression, found '}}'")]
    [InlineData("x\n{{ 'open", "line 2: string literal is never closed")]
    [InlineData("{% endif %}", "line 1: '{% endif %}' without a matching opening tag")]
    [InlineData("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "line 1: macro 'f' nests deeper than 200 calls (endless recursion?)")]
    public void Unsupported_or_broken_templates_name_the_construct_and_line(string template, string message)
    {
        var e = Assert.Throws<TemplateException>(() => JinjaTemplate.Parse(template).Render(new Dictionary<string, object?>()));

        Assert.Equal(message, e.Message);
    }
}
