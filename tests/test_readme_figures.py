"""The README is a front door (at most 400 lines) and the figures live in docs/: every benchmark
table follows the `python benchmarks/...` command that prints it, every command names a script
that exists, every script is cited, and every relative link of the README and the pages resolves,
to a file and, with a #fragment, to one of its headings."""

import json
import re

from tests.conftest import ROOT

README_PATH = ROOT / "README.md"
DOCS = ROOT / "docs"
README = README_PATH.read_text()
PAGES = sorted(DOCS.glob("*.md"))
BENCHMARKS = (DOCS / "benchmarks.md").read_text()
COMMAND = re.compile(r"python benchmarks/([\w.]+\.py)")
MAX_README_LINES = 400


def sections(text):
    """The text under each heading (any level), the heading's own line left out; the text before
    the first heading too."""
    return re.split(r"^#{1,6} .*$", text, flags=re.M)


def section(title, text=README):
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def is_table_row(line):
    return line.lstrip().startswith("|")  # a table may be indented, inside a list item


def tables_and_the_text_before(text):
    """(the prose between the previous table, or the section's start, and a table; the table's first line)."""
    blocks, prose = [], []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if is_table_row(line) and (i == 0 or not is_table_row(lines[i - 1])):
            blocks.append(("\n".join(prose), line.strip()))
            prose = []
        elif not is_table_row(line):
            prose.append(line)
    return blocks


def assert_each_table_follows_a_command(text, where):
    found = 0
    for part in sections(text):
        for prose, table in tables_and_the_text_before(part):
            found += 1
            # A table right after another one belongs to the same command.
            assert not prose.strip() or COMMAND.search(prose), f"{where}: no `python benchmarks/...` command before {table}"
    return found


def test_each_benchmark_table_follows_its_command():
    assert assert_each_table_follows_a_command(BENCHMARKS, "docs/benchmarks.md") >= 10


def test_the_scope_table_has_its_command():
    # The README's short table of who it is for, with the commands its figures come from ...
    prose, table = tables_and_the_text_before(section("Who it is for"))[0]
    assert COMMAND.search(prose), table
    # ... and the full tables where they now live: the page's, each after its command,
    assert assert_each_table_follows_a_command((DOCS / "who-it-is-for.md").read_text(), "docs/who-it-is-for.md") >= 5
    # and the scope check's table (`benchmarks/scope_eval.py`'s columns) on every page that shows it.
    homes = []
    for path in PAGES:
        for part in sections(path.read_text()):
            for prose, table in tables_and_the_text_before(part):
                if table.startswith("| set | images | verdict | not a chest X-ray | outside the population |"):
                    homes.append(path.name)
                    assert COMMAND.search(prose), f"{path.name}: {table}"
    assert "who-it-is-for.md" in homes, homes


def test_the_adult_answers_figures_are_those_of_adult_json():
    """The adult answer's figures, wherever the README and the docs show them, are the bundled adult.json's as
    rounded there, and they cite the command that writes adult.json (benchmarks/adult_eval.py prints its own
    draw, slightly different: 0.925 / 0.870)."""
    adult = json.loads((ROOT / "pneumo" / "bundled_model" / "adult.json").read_text())["cross_validated"]
    films, by = adult["films"], adult["by_projection"]
    shown = {key: f"{adult[key]:.3f}" for key in ("roc_auc", "sensitivity", "specificity", "roc_auc_all_read", "ece",
                                                 "child_model_roc_auc", "projection_alone_roc_auc")}
    writes = "python -m training.checks.scope RUN --adult-data DIR --only-adult"
    # The README's short table, and the command its prose cites
    prose, _ = tables_and_the_text_before(section("Who it is for"))[0]
    assert writes in " ".join(prose.split())
    row = next(line for line in README.splitlines() if line.startswith("| the adult answer"))
    assert all(f"{name} {shown[key]}" in row for name, key in (("ROC AUC", "roc_auc"), ("sensitivity", "sensitivity"),
                                                                ("specificity", "specificity"))), row
    assert f"| {sum(films.values())} radiologist-read NIH films |" in row
    # The full table on Who it is for, after the same command
    page = (DOCS / "who-it-is-for.md").read_text()
    rows = [f"| ROC AUC, `Lung Opacity` ({films['lung_opacity']}) against `Normal` ({films['normal']}) | "
            f"{shown['roc_auc']} |",
            f"| sensitivity at the served threshold | {shown['sensitivity']} |",
            f"| specificity on `Normal` at that threshold | {shown['specificity']} |",
            f"| ROC AUC against every film read without opacity ({films['normal'] + films['other_read']}) | "
            f"{shown['roc_auc_all_read']} |",
            f"| ECE (opacity against normal) | {shown['ece']} |",
            f"| ROC AUC within AP films only ({by['AP']['films']['lung_opacity']} opacities, "
            f"{by['AP']['films']['normal']} normal) | {by['AP']['roc_auc']:.3f} |",
            f"| ROC AUC within PA films only ({by['PA']['films']['lung_opacity']} opacities, "
            f"{by['PA']['films']['normal']} normal) | {by['PA']['roc_auc']:.3f} |",
            f"| the projection alone (AP above PA): ROC AUC | {shown['projection_alone_roc_auc']} |",
            f"| the children's model's own P(pneumonia), unchanged: ROC AUC | {shown['child_model_roc_auc']} |"]
    lines = [line.strip() for line in page.splitlines()]
    for expected in rows:
        assert any(line.startswith(expected) for line in lines), expected
    table = next(i for i, line in enumerate(lines) if line.startswith(rows[0]))
    before = " ".join(" ".join(lines[max(0, table - 25):table]).split())
    assert writes in before, "the adult table does not cite the command that writes adult.json"
    # The same figures in running text: the children's model on adults, and the known limits
    assert f"ROC AUC **{shown['child_model_roc_auc']}**, the adult answer's {shown['roc_auc']}" in " ".join(page.split())
    limits = " ".join((DOCS / "known-limits.md").read_text().split())
    assert f"ROC AUC {shown['roc_auc']} against the bar of 0.90" in limits


def test_the_locked_split_figures_are_the_ledgers_last_scoring():
    """The README's locked-split row and Who it is for's table show the last scoring logged in the ledger
    (training/report/locked_split.py appends one line per scoring of the project's own lock)."""
    last = json.loads((ROOT / "training" / "adults" / "locked_ledger.jsonl").read_text().splitlines()[-1])
    scored = last["by_runtime"]["onnx-int8"]
    row = next(line for line in README.splitlines() if line.startswith("| its method refitted without the locked"))
    for name, key in (("ROC AUC", "roc_auc"), ("sensitivity", "sensitivity"), ("specificity", "specificity")):
        assert f"{name} {scored[key]:.3f}" in row, (name, row)
    assert f"against every film read without opacity {scored['roc_auc_all_read']:.3f}" in row
    assert f"JSRT films called PNEUMONIA {scored['jsrt_called_pneumonia']:.1%}" in row
    assert f"{scored['patients']} locked NIH patients" in row and not last["shipped"] and "does not replace" in row
    page = " ".join((DOCS / "who-it-is-for.md").read_text().split())
    for key, bar in (("roc_auc", "≥ 0.90"), ("sensitivity", "≥ 0.85"), ("specificity", "≥ 0.75"),
                     ("roc_auc_all_read", "≥ 0.82")):
        assert f"| {scored[key]:.3f} | {bar} |" in page, key  # the locked column, beside the rule


def test_every_cited_script_exists_and_every_script_is_cited():
    cited = set(COMMAND.findall(README)).union(*(COMMAND.findall(path.read_text()) for path in PAGES))
    scripts = {path.name for path in (ROOT / "benchmarks").glob("*.py")}
    assert cited <= scripts, cited - scripts
    assert scripts <= cited, f"not in the README or docs/: {scripts - cited}"


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= MAX_README_LINES, len(README.splitlines())
    assert README.startswith("---\n")  # the Space's front matter stays at the very top


def test_the_readme_links_every_page_and_every_page_links_back():
    more = section("More")
    for path in PAGES:
        assert f"(docs/{path.name})" in more, f"docs/{path.name} is not in the README's More list"
        assert "(../README.md)" in path.read_text(), f"docs/{path.name} does not link back to the README"


def test_the_configuration_page_lists_every_variable():
    from pneumo import settings

    page = (DOCS / "configuration.md").read_text()
    assert set(re.findall(r"PNEUMO_[A-Z_]+", page)) == set(settings.VARIABLES)


# Links: [text](target "title"), ![alt](target), <img src="target">, outside code.
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"")
FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1\s*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def without_code(text):
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading):
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", path.read_text()), re.M):
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path):
    text = without_code(path.read_text())
    for target in LINK.findall(text) + IMG.findall(text):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ... are not ours
            yield target


def test_every_relative_link_resolves():
    checked, broken = 0, []
    for source in [README_PATH, *PAGES]:
        for target in relative_links(source):
            checked += 1
            name, _, fragment = target.partition("#")
            linked = (source.parent / name).resolve() if name else source
            if not linked.exists():
                broken.append(f"{source.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{source.relative_to(ROOT)}: {target} (no such heading)")
    assert checked >= 40, checked
    assert not broken, "\n".join(broken)


def test_the_link_checker_sees_what_github_sees():
    assert github_slug("Localisation against radiologists' boxes") == "localisation-against-radiologists-boxes"
    assert github_slug("Quick start (from a fresh clone, Python 3.11)") == "quick-start-from-a-fresh-clone-python-311"
    assert github_slug("Serving: Keras and the default runtime side by side") == \
        "serving-keras-and-the-default-runtime-side-by-side"
    assert github_slug("AI assistants (MCP)") == "ai-assistants-mcp"
    text = "See [a](x.md#y) and ![b](docs/s.png), `[not](a-link.md)`, <img src=\"p.png\" width=\"1\">."
    assert LINK.findall(without_code(text)) == ["x.md#y", "docs/s.png"] and IMG.findall(text) == ["p.png"]


def test_the_childrens_figures_are_those_of_each_runtime():
    """The README's children's row gives what each runtime serves (onnx.json): float, and int8 where a CPU
    with VNNI serves it; the figures of one are never shown as the other's."""
    onnx = json.loads((ROOT / "pneumo" / "bundled_model" / "onnx.json").read_text())
    row = next(line for line in README.splitlines() if line.startswith("| the children's answer"))
    for kind in ("float", "int8"):
        m = onnx[kind]["runtime"]
        words = f"accuracy {m['accuracy']:.3f}, ROC AUC {m['roc_auc']:.3f}, sensitivity {m['sensitivity']:.3f}, " \
                f"specificity {m['specificity']:.3f}"
        bare = ", ".join(f"{m[k]:.3f}" for k in ("accuracy", "roc_auc", "sensitivity", "specificity"))
        assert words in row or bare in row, (kind, row)
    assert row.index("float") < row.index("accuracy 0.928") and "int8" in row
