"""The README and the pages it sends readers to (docs/instructors.md, docs/researchers.md): the two
set-up commands stay in the README under its instructors' heading, the course map lists every
notebook with its time and peak memory, and every relative link, benchmark script and
`jepa_lite.*` name these pages mention exists. Reads files only: nothing is imported or run.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "docs" / "instructors.md", ROOT / "docs" / "researchers.md"]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of the same or a higher level."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (lower case, punctuation dropped, spaces -> -)."""
    found = set()
    for line in without_code(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#+\s+(.*)", line)
        if match:
            found.add(re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-"))
    return found


def test_the_two_setup_commands_are_under_the_instructors_heading():
    instructors = section(README.read_text(encoding="utf-8"), "For instructors")
    for command in ("make course", "make test"):
        assert re.search(rf"^{command}\b", instructors, flags=re.M), f"`{command}` left README's 'For instructors'"
    assert "build/notebooks" in instructors


def test_the_course_map_lists_every_notebook_with_its_time_and_memory():
    course_map = section(README.read_text(encoding="utf-8"), "Course map")
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        row = next((line for line in course_map.splitlines() if f"(notebooks/{path.name})" in line), None)
        assert row is not None, f"the course map has no row for {path.name}"
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        assert re.fullmatch(r"\d+ s", cells[-2]) and re.fullmatch(r"\d+ MiB", cells[-1]), row
    assert "jepa-lite course --profile cpu" in course_map      # how the numbers were measured


def test_the_readme_has_no_placeholder_for_a_missing_measurement():
    assert "not measured" not in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for url in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", url):      # https:, mailto: ...: external
            continue
        path, _, fragment = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{url}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{url}: no heading #{fragment} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_benchmark_script_named_exists(page):
    scripts = set(re.findall(r"benchmarks/([\w.-]+\.(?:py|sh))", page.read_text(encoding="utf-8")))
    missing = sorted(name for name in scripts if not (ROOT / "benchmarks" / name).is_file())
    assert not missing, f"{page.relative_to(ROOT)} names benchmarks that do not exist: {missing}"


def _defined_in(module_file: Path, name: str) -> bool:
    text = module_file.read_text(encoding="utf-8")
    return re.search(rf"^(?:def |class )?{re.escape(name)}\b\s*[(:=]", text, flags=re.M) is not None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_jepa_lite_name_mentioned_exists(page):
    """`jepa_lite.a.b` is a module or package, or `jepa_lite.a.b.NAME` a name defined at the top of one."""
    missing = []
    for dotted in sorted(set(re.findall(r"\bjepa_lite(?:\.\w+)+", page.read_text(encoding="utf-8")))):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            base = ROOT.joinpath(*parts[:cut])
            module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
            if module.is_file():
                rest = parts[cut:]
                if rest and not (len(rest) == 1 and _defined_in(module, rest[0])):
                    missing.append(dotted)
                break
        else:
            missing.append(dotted)
    assert not missing, f"{page.relative_to(ROOT)} names what jepa_lite does not have: {missing}"
