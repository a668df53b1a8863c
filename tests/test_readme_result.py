"""The README and the docs describe the result the program gives: their tables, the Python client's
snippet and the library's table name every field of a real analysis (a child's film and an adult's),
`threshold` is the cut that gave the label, and the ways to use it are as many as the README says."""

import re

import pytest

from tests.conftest import ROOT

from pneumo.analysis import analyse
from pneumo.model.loading import load_model

README = (ROOT / "README.md").read_text()
RESULT_PAGE = (ROOT / "docs" / "result.md").read_text()
LIBRARY_PAGE = (ROOT / "docs" / "library.md").read_text()
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@pytest.fixture(scope="module")
def results():
    """As every entry point returns it: a child's film and an adult's, on the bundled model."""
    loaded = load_model()
    results = {name: analyse(ROOT / "examples" / f"{name}.jpeg", loaded) for name in ("child-normal", "adult")}
    assert [result.population for result in results.values()] == ["child", "adult"]
    return results


def section(text, heading) -> str:
    """The lines under the heading that starts with `heading` ("## The result"), up to the next heading of
    its level or above (a "# comment" in a code block is none)."""
    level, lines, in_code = len(heading.split()[0]), [], False
    for line in text[text.index(f"\n{heading}") + 1:].splitlines()[1:]:
        in_code ^= line.startswith("```")
        if not in_code and re.match(rf"#{{1,{level}}} ", line):
            break
        lines.append(line)
    return "\n".join(lines)


def table_rows(text) -> dict:
    """A table's rows by the `names` in their first cell: {"label": "| `label`, ... | ... |", ...}."""
    rows = {}
    for row in re.findall(r"^\| `.*$", text, flags=re.M):
        for name in re.findall(r"`(\w+)`", row.split(" | ")[0]):
            rows[name] = row
    return rows


@pytest.mark.parametrize("page", ["README.md", "docs/result.md"])
def test_the_result_table_names_every_field_and_every_model_field(results, page):
    table = table_rows(section(README, "## The result") if page == "README.md" else RESULT_PAGE)
    for result in results.values():
        assert list(table) == list(result.as_dict()), page
        assert [key for key in result.model if f"`{key}`" not in table["model"]] == [], (page, table["model"])


def test_the_client_snippet_names_what_the_result_holds(results):
    snippet = section(README, "### Python client")
    model_comment = re.search(r'print\(result\["model"\]\)\s*# (.*)', snippet).group(1)
    assert model_comment.split(", ") == list(results["adult"].model)
    classes = re.search(r'print\(result\["probabilities"\]\)\s*# (.*)', snippet).group(1)
    for result in results.values():  # the children's classes and the adults' both
        assert [name for name in result.probabilities if f'"{name}"' not in classes] == [], classes


def test_threshold_is_the_cut_of_the_answer_that_gave_the_label(results):
    child, adult = results["child-normal"], results["adult"]
    assert child.threshold == child.model["threshold"] and adult.threshold == adult.model["adult_threshold"]
    assert adult.model["threshold"] != adult.model["adult_threshold"]  # else the pages' distinction says nothing
    for text in (section(README, "### Python client"), RESULT_PAGE, LIBRARY_PAGE):
        assert "model.adult_threshold" in text or 'model["adult_threshold"]' in text


def test_the_library_table_names_every_field(results):
    table = table_rows(section(LIBRARY_PAGE, "## What an `Analysis` holds"))
    assert [name for name in [*results["adult"].as_dict(), "heatmap", "image"] if name not in table] == []


def test_the_ways_to_use_it_are_counted():
    heading = re.search(r"^## (\w+) ways to use it$", README, flags=re.M)
    ways = re.findall(r"^### (.*)$", section(README, heading.group(0)), flags=re.M)
    assert NUMBERS[heading.group(1).lower()] == len(ways), ways
    assert "### " not in section(README, "## The result")  # nothing to use sits under the result
