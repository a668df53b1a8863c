"""Every figure in the README's benchmarks comes from a script in benchmarks/ with its command:
each table there follows the command that prints it, every command names a script that exists,
and every script is cited."""

import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
COMMAND = re.compile(r"python benchmarks/([\w.]+\.py)")


def section(title):
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def tables_and_the_text_before(text):
    """(the prose between the previous table, or the section's start, and a table; the table's first line)."""
    blocks, prose = [], []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            blocks.append(("\n".join(prose), line))
            prose = []
        elif not line.startswith("|"):
            prose.append(line)
    return blocks


def test_each_benchmark_table_follows_its_command():
    for prose, table in tables_and_the_text_before(section("Benchmarks")):
        # A table right after another one belongs to the same command.
        assert not prose.strip() or COMMAND.search(prose), f"no `python benchmarks/...` command before {table}"


def test_the_scope_table_has_its_command():
    prose, table = tables_and_the_text_before(section("Who it is for"))[0]
    assert COMMAND.search(prose), table


def test_every_cited_script_exists_and_every_script_is_cited():
    cited = set(COMMAND.findall(README))
    scripts = {path.name for path in (ROOT / "benchmarks").glob("*.py")}
    assert cited <= scripts, cited - scripts
    assert scripts <= cited, f"not in the README: {scripts - cited}"
