"""The documentation: a README a newcomer reads in two minutes, whose install and test commands are the ones CI runs
(``.ci/run``), and relative links in README.md, docs/ and the model card that all lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bundles" / "infnet_covid" / "docs" / "README.md"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(path: Path) -> list[str]:
    """The lines of ``path`` outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (a repeated heading gets ``-1``, ``-2``, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose_lines(path):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    """The link and image targets of ``path`` that point inside the repository (no scheme, no ``mailto:``)."""
    targets = []
    for line in _prose_lines(path):
        for target in _LINK.findall(line):
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                targets.append(target)
    return targets


def test_slug_follows_github():
    assert slug("`burden.csv` columns") == "burdencsv-columns"
    assert slug("2D, the paper's protocol") == "2d-the-papers-protocol"
    assert slug("Inference backends (`configs/inference.json`: `backend`, `precision`)") == (
        "inference-backends-configsinferencejson-backend-precision"
    )


def test_links_are_found_outside_code_only(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "See [a](a.md), ![b](img/b.png \"title\") and [c](https://example.org) [d](#here).\n"
        "Not a link: `[0.1, 20] mm` (spacing) or [-1060, 195] HU (window).\n"
        "```bash\n[x](not_checked.md)\n```\n"
    )
    assert relative_links(page) == ["a.md", "img/b.png", "#here"]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, over {MAX_README_LINES}: move the details into docs/ and link them"
    )


def test_readme_install_and_test_commands_are_those_ci_runs():
    """``.ci/run`` installs and tests exactly as the README says: the two must not drift apart."""
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in ("pip install torch==2.13.0", 'pip install -e ".[test]"', "python -m pytest -q"):
        assert command in readme, f"README.md lost {command!r}"
        assert re.search(rf"^{re.escape(command)}$", ci, re.M), f".ci/run does not run {command!r}"
    assert "```bash\npython -m pytest -q\n```" in readme


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"
