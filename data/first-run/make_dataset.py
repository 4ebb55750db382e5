"""Builds train.jsonl / eval.jsonl from permissively licensed JavaScript that ships with npm on Debian.

JavaScript is a domain tinycode-3m (trained on Python only) has not seen. Each record is one chunk of a source file
(consecutive top-level blocks up to about 1,500 characters) with its origin. The held-out packages appear only in
eval.jsonl, so the held-out loss measures JavaScript in general, not memorised files.

Run from this folder:  python3 make_dataset.py [/usr/lib/node_modules/npm/node_modules]
The output is deterministic for a given npm install. Licences are copied to LICENSES/ and listed in SOURCES.md.
"""
import json, os, shutil, sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "/usr/lib/node_modules/npm/node_modules"
ALLOWED = {"MIT", "ISC", "BSD-2-Clause", "BSD-3-Clause"}
EVAL = ["archy", "debug", "ini", "ms", "text-table"]
TRAIN = ["semver", "hosted-git-info", "npm-package-arg", "nopt", "ssri", "cacache", "pacote", "make-fetch-happen",
         "npm-registry-fetch", "graceful-fs", "@npmcli/package-json", "@npmcli/git", "bin-links", "cmd-shim",
         "write-file-atomic", "init-package-json", "npm-packlist", "ignore-walk", "@npmcli/run-script", "@npmcli/fs",
         "treeverse", "promzard", "proggy", "npm-audit-report", "spdx-expression-parse", "jsonparse", "negotiator",
         "minipass-pipeline", "libnpmversion", "libnpmdiff", "libnpmexec", "libnpmpublish", "npm-pick-manifest",
         "npm-install-checks", "@npmcli/metavuln-calculator", "@npmcli/redact", "validate-npm-package-name",
         "@npmcli/query", "npm-profile", "read", "which", "abbrev"]
MAX_CHUNK, MIN_CHUNK, MAX_LINE = 1500, 80, 200
TRAIN_BUDGET = 430_000  # characters of source text; keeps both files well under 1 MB together
PER_PACKAGE = 16_000    # so that no single package dominates


def package_files(pkg_dir):
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in ("node_modules", "esm", "test", "tests"))
        for f in sorted(filenames):
            if f.endswith((".js", ".cjs", ".mjs")) and not f.endswith(".min.js"):
                yield os.path.join(dirpath, f)


def chunks(text):
    blocks, current = [], ""
    for block in text.replace("\r\n", "\n").split("\n\n"):
        block = block.strip("\n")
        if not block:
            continue
        if current and len(current) + len(block) + 2 > MAX_CHUNK:
            blocks.append(current)
            current = ""
        current = block if not current else current + "\n\n" + block
        while len(current) > 2 * MAX_CHUNK:  # one huge block: cut at a line break
            cut = current.rfind("\n", 0, MAX_CHUNK)
            cut = cut if cut > 0 else MAX_CHUNK
            blocks.append(current[:cut])
            current = current[cut:].lstrip("\n")
    if current:
        blocks.append(current)
    return [b + "\n" for b in blocks if len(b) >= MIN_CHUNK]


def licence_file(pkg_dir):
    for f in sorted(os.listdir(pkg_dir)):
        if f.lower().startswith(("license", "licence")):
            return os.path.join(pkg_dir, f)
    return None


def collect(names, budget=None, per_package=None):
    """Records from each package in turn, at most per_package characters from one and budget in all."""
    records, sources, used = [], [], 0
    for name in names:
        if budget is not None and used >= budget - MIN_CHUNK:
            break
        pkg_dir = os.path.join(ROOT, name)
        meta = json.load(open(os.path.join(pkg_dir, "package.json")))
        lic = meta.get("license")
        lic_file = licence_file(pkg_dir)
        if lic not in ALLOWED or lic_file is None:
            print(f"skip {name}: licence {lic!r}, file {lic_file}")
            continue
        files, taken = set(), 0
        for path in package_files(pkg_dir):
            text = open(path, encoding="utf-8").read()
            if any(len(line) > MAX_LINE for line in text.splitlines()):
                continue  # minified or generated
            rel = os.path.relpath(path, pkg_dir)
            for c in chunks(text):
                if (budget is not None and used + len(c) > budget) or (per_package is not None and taken + len(c) > per_package):
                    break
                records.append({"text": c, "source": f"npm:{name}@{meta['version']}/{rel}"})
                used += len(c)
                taken += len(c)
                files.add(rel)
        if files:
            sources.append((name, meta["version"], lic, lic_file, len(files)))
    return records, sources, used


def main():
    train, train_src, train_chars = collect(TRAIN, TRAIN_BUDGET, PER_PACKAGE)
    evals, eval_src, eval_chars = collect(EVAL)
    for name, recs in (("train.jsonl", train), ("eval.jsonl", evals)):
        with open(name, "w", encoding="utf-8", newline="\n") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    shutil.rmtree("LICENSES", ignore_errors=True)
    os.makedirs("LICENSES")
    rows = []
    for split, srcs in (("train", train_src), ("eval", eval_src)):
        for name, version, lic, lic_file, files in srcs:
            safe = name.replace("/", "__")
            with open(lic_file, encoding="utf-8") as src, open(os.path.join("LICENSES", safe + ".txt"), "w", encoding="utf-8") as dst:
                dst.write(src.read())
            rows.append(f"| {split} | `{name}` | {version} | {lic} | {files} | [LICENSES/{safe}.txt](LICENSES/{safe}.txt) |")
    with open("SOURCES.md", "w", encoding="utf-8") as f:
        f.write(SOURCES_HEAD.format(train=len(train), train_chars=train_chars, eval=len(evals), eval_chars=eval_chars))
        f.write("\n".join(rows) + "\n")
    print(f"train: {len(train)} records, {train_chars} chars; eval: {len(evals)} records, {eval_chars} chars")


SOURCES_HEAD = """# Sources of the first-run dataset

`train.jsonl` ({train} records, {train_chars} characters of code) and `eval.jsonl` ({eval} records, {eval_chars} characters)
hold chunks of JavaScript source files from packages bundled with npm (Debian 12, `/usr/lib/node_modules/npm/node_modules`).
Every package used is under the MIT, ISC, BSD-2-Clause or BSD-3-Clause licence; each package's licence text is
reproduced in `LICENSES/`, and each record's `source` field names the package, version and file it comes from.
The packages of the eval split do not appear in the train split.
The files were built by `make_dataset.py` in this folder; the code is unchanged except for being cut into chunks
(at blank lines, about 1,500 characters at most, at most 16,000 characters per training package) and leaving out files with lines over 200 characters (minified or generated).

| split | package | version | licence | files | licence text |
|---|---|---|---|---|---|
"""

if __name__ == "__main__":
    main()
