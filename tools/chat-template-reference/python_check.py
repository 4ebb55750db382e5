"""Cross-checks the chat-template fixtures with Python's jinja2, configured as transformers configures it for
apply_chat_template (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, a {% generation %}
tag, raise_exception, strftime_now, and a tojson that keeps non-ASCII text), and writes the expected renders of
tests/fixtures/chat-templates/jinja-semantics.json from its 'template'/'context' pairs.

    /usr/bin/python3 tools/chat-template-reference/python_check.py tests/fixtures/chat-templates
"""
import datetime
import json
import pathlib
import sys

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

FIXED_NOW = datetime.datetime(2026, 1, 15, 12, 0, 0)


class Generation(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: renders its body and records where it landed (by marker)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller):
        return "\x02" + caller() + "\x03"


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: FIXED_NOW.strftime(fmt)
    return env


def render(env, source, context):
    """The text and the generation spans, as transformers' render with return_assistant_tokens_mask."""
    marked = env.from_string(source).render(**context)
    text, spans, start = "", [], None
    for ch in marked:
        if ch == "\x02":
            start = len(text)
        elif ch == "\x03":
            spans.append([start, len(text)])
        else:
            text += ch
    return text, spans


def check_models(env, folder):
    mismatches = 0
    for path in sorted(folder.glob("*.json")):
        fixture = json.loads(path.read_text(encoding="utf-8"))
        if "cases" not in fixture:
            continue
        for case in fixture["cases"]:
            context = {"messages": case["messages"], "tools": case.get("tools"), "documents": None,
                       "add_generation_prompt": case["add_generation_prompt"], **case.get("extra", {})}
            for key in ("bos_token", "eos_token"):
                if fixture[key] is not None:
                    context[key] = fixture[key]
            try:
                got, error = render(env, fixture["template"], context)[0], None
            except jinja2.exceptions.TemplateError as e:
                got, error = None, str(e)
            if got != case.get("expected") or error != case.get("error"):
                mismatches += 1
                print(f"{path.stem}/{case['name']}: python jinja2 differs from @huggingface/jinja")
                print("  python:", json.dumps(got if error is None else "error: " + error, ensure_ascii=False))
                print("  js:    ", json.dumps(case.get("expected", "error: " + str(case.get("error"))), ensure_ascii=False))
    return mismatches


def write_semantics(env, folder):
    path = folder / "jinja-semantics.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for case in data["snippets"]:
        case.pop("expected", None), case.pop("error", None), case.pop("generation", None)
        try:
            text, spans = render(env, case["template"], case.get("context", {}))
            case["expected"] = text
            if spans:
                case["generation"] = spans
        except jinja2.exceptions.TemplateError as e:
            case["error"] = str(e)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{path}: {len(data['snippets'])} snippets rendered with jinja2 {jinja2.__version__}")


if __name__ == "__main__":
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/chat-templates")
    env = environment()
    n = check_models(env, folder)
    print(f"model fixtures: {n} renders differ between python jinja2 {jinja2.__version__} and @huggingface/jinja")
    write_semantics(env, folder)
