"""Every ```python block of docs/*.md and README.md runs.

The blocks of one file run in order in one namespace (later blocks use earlier names),
with the repository root as the working directory and warnings as errors (the suite's
setting), so a snippet that shows a warning must catch it itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, source) of each ```python block in a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def _run_file(path: Path, tmp_path, monkeypatch) -> None:
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no python blocks")
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    ns: dict = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    for line, src in blocks:
        code = compile(src, f"{path.name}:{line}", "exec")
        try:
            exec(code, ns)
        except Exception as e:  # noqa: BLE001 - re-raise with the snippet's location
            raise AssertionError(
                f"{path.name}, block at line {line} failed: {type(e).__name__}: {e}"
            ) from e


def test_docs_exist():
    names = {p.name for p in DOCS}
    for required in (
        "quickstart.md",
        "concepts.md",
        "empirical-kernels.md",
        "migration.md",
        "cli.md",
    ):
        assert required in names, f"docs/{required} is missing"
    for p in DOCS:
        assert python_blocks(p), f"docs/{p.name} has no python snippet"


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_doc_snippets_run(path, tmp_path, monkeypatch):
    _run_file(path, tmp_path, monkeypatch)


def test_readme_snippets_run(tmp_path, monkeypatch):
    if not README.exists():
        pytest.skip("no README.md")
    _run_file(README, tmp_path, monkeypatch)


def test_block_extraction():
    import tempfile

    text = "intro\n```python\nx = 1\n```\n\n```\nnot python\n```\n```python\ny = x + 1\n```\n"
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.md"
        p.write_text(text, encoding="utf-8")
        blocks = python_blocks(p)
    assert [src for _, src in blocks] == ["x = 1\n", "y = x + 1\n"]
    assert [line for line, _ in blocks] == [3, 10]  # line of the first code line
    assert os.path.basename(str(p)) == "t.md"


_CITE = re.compile(r"docs/numerics\.md((?:\s*§\d+(?:\.\d+)?(?:\s*[–,/-]\s*§?\d+(?:\.\d+)?)*)?)")
_SECTION = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)


def _repo_text_files():
    for sub in ("python", "rust", "docs", "tests", "benches", ".ci"):
        for p in sorted((ROOT / sub).rglob("*")):
            if p.is_file() and p.suffix in {".py", ".pyi", ".rs", ".md", ".txt", ""}:
                yield p
    yield README
    yield ROOT / "Makefile"


def test_citations_resolve_inside_the_repository():
    """Code and docs cite this repository's docs only: every ``docs/numerics.md §N`` names
    an existing section, and nothing cites a specification outside the repository."""
    sections = set(_SECTION.findall((ROOT / "docs" / "numerics.md").read_text("utf-8")))
    assert {"2", "3.2", "5", "11"} <= sections
    bad, foreign = [], []
    for p in _repo_text_files():
        if not p.exists() or p.name == "test_docs.py":
            continue
        text = p.read_text("utf-8", errors="replace")
        if re.search(r"semantics\s*§|semantics\.md|(?<!docs/)performance\.md", text):
            foreign.append(str(p.relative_to(ROOT)))
        for m in _CITE.finditer(text):
            for num in re.findall(r"\d+(?:\.\d+)?", m.group(1)):
                if num not in sections:
                    bad.append(f"{p.relative_to(ROOT)}: §{num}")
    assert not foreign, f"citations of documents outside the repository: {foreign}"
    assert not bad, f"citations of missing docs/numerics.md sections: {bad}"


def test_readme_rcond_and_dtype_claims_match_the_code():
    import numpy as np

    from tangentflow import Predictor

    text = README.read_text("utf-8") + (ROOT / "docs" / "concepts.md").read_text("utf-8")
    assert "N·ε" not in text and "rcond = D·ε" in text
    k = np.eye(6) + 0.1
    assert Predictor(k, np.ones(6)).rcond == 6 * np.finfo(np.float64).eps
    for dt, out in ((np.float16, np.float64), (np.int64, np.float64), (np.float32, np.float32)):
        assert Predictor(k.astype(dt), np.ones(6)).at(2.0).train.dtype == out
