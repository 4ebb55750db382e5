using System.Reflection;
using System.Xml.Linq;

namespace PeftSharp.Cli;

/// <summary>
/// The library's XML documentation (embedded in this assembly at build time), so that help text for an option and the
/// doc comment of the property behind it are one text.
/// </summary>
internal static class LibraryDocs
{
    public const string ResourceName = "PeftSharp.xml";

    static readonly Lazy<Dictionary<string, XElement>> Members = new(Load);

    /// <summary>The summary of a property as one line of plain text; <paramref name="crefName"/> renders each cref.</summary>
    public static string? Summary(PropertyInfo property, Func<string, string> crefName) =>
        Members.Value.GetValueOrDefault($"P:{property.DeclaringType!.FullName}.{property.Name}")?.Element("summary") is { } summary
            ? string.Join(' ', Text(summary, crefName).Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries))
            : null;

    static Dictionary<string, XElement> Load()
    {
        using var stream = typeof(LibraryDocs).Assembly.GetManifestResourceStream(ResourceName);
        if (stream is null) return [];
        return XDocument.Load(stream).Descendants("member")
            .Where(m => m.Attribute("name") is not null)
            .GroupBy(m => m.Attribute("name")!.Value)
            .ToDictionary(g => g.Key, g => g.First());
    }

    static string Text(XNode node, Func<string, string> crefName) => node switch
    {
        XText t => t.Value,
        XElement { Name.LocalName: "see" or "seealso" } e => e.Attribute("cref") is { } cref ? crefName(cref.Value)
            : e.Attribute("langword")?.Value ?? e.Value,
        XElement { Name.LocalName: "paramref" or "typeparamref" } e => e.Attribute("name")?.Value ?? "",
        XElement e => string.Concat(e.Nodes().Select(n => Text(n, crefName))),
        _ => "",
    };
}
