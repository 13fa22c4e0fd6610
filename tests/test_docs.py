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
