"""The docs hold together: every relative link in README.md, docs/*.md and the deploy/ and examples/
READMEs resolves (the file, and the #anchor by GitHub's rules), and no docs page is over ``MAX_LINES``
lines unless ``LONG_PAGES`` says why."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Longest a docs page may be: reference pages stay short; measurements go to the dated logs.
MAX_LINES = 400

#: Pages allowed over ``MAX_LINES``, each with its reason. An entry whose page is no longer over the
#: limit fails the test, so the list cannot outlive its reasons.
LONG_PAGES = {
    "docs/benchmark.md": "the benchmark log: one dated section per `python -m bench` run, appended by each round",
    "docs/measurements.md": "the dated measurements log: every figure with its date, model and command, as measured",
}

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text, lower-cased, with everything but letters,
    digits, ``_``, ``-`` and spaces removed and each space made a ``-``."""
    text = _INLINE_LINK_TEXT.sub(r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*)", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown page has on GitHub: heading slugs (repeats get ``-1``, ``-2``, …) and
    explicit ``<a id=…>``/``<a name=…>``."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """``page:line: target (why)`` for each relative link of ``page`` that does not resolve."""
    problems = []
    cache: dict[Path, set[str]] = {}
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            dest = (page.parent / unquote(path_part)).resolve() if path_part else page
            where = f"{page.relative_to(root)}:{number}: {target}"
            if not dest.exists():
                problems.append(f"{where} (no such file)")
            elif fragment and dest.suffix == ".md":
                if dest not in cache:
                    cache[dest] = anchors(dest)
                if unquote(fragment).lower() not in cache[dest]:
                    problems.append(f"{where} (no such anchor)")
    return problems


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / "examples" / "README.md",
            *sorted((ROOT / "docs").glob("*.md"))]


def test_slugs_follow_githubs_rules():
    assert github_slug("`ser-produce AUDIO`") == "ser-produce-audio"
    assert github_slug("2.0.0 over three training seeds, and the 2.1.0 ensemble (2026-11-30)") == (
        "200-over-three-training-seeds-and-the-210-ensemble-2026-11-30")
    assert github_slug('"Before": the **1.2.0** pipeline — on calls') == "before-the-120-pipeline--on-calls"
    assert github_slug("Results: the [interface](docs/x.md)") == "results-the-interface"


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Part\n\n## Part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#part-1) [ok](#page) [ok](https://example.com/x#y) `[not a link](nowhere.md)`\n"
        "[gone](missing.md) [bad](other.md#part-2)\n"
        "```\n[in code](nowhere.md)\n```\n", encoding="utf-8")
    assert broken_links(page, tmp_path) == [
        "page.md:4: missing.md (no such file)", "page.md:4: other.md#part-2 (no such anchor)"]


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_no_docs_page_is_over_the_limit_without_a_reason():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
               for p in sorted((ROOT / "docs").glob("*.md"))}
    too_long = {p: n for p, n in lengths.items() if n > MAX_LINES and p not in LONG_PAGES}
    assert too_long == {}, f"docs pages over {MAX_LINES} lines: split them or give a reason in LONG_PAGES"
    stale = [p for p in LONG_PAGES if lengths.get(p, 0) <= MAX_LINES]
    assert stale == [], "LONG_PAGES entries no longer needed"
