"""docs/testing.md runs as written: its conftest.py and test_shop.py blocks, run by pytest twice.

The first run records the cassettes (mode ``once``), the second replays them
in mode ``none``; the page's tests pass both times and no secret reaches a
cassette file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
QUIET = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")


def doc_files() -> dict[str, str]:
    """The page's Python blocks: the one headed ``# conftest.py``, and ``test_shop.py``
    made of the block headed so plus every later Python block."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    files: dict[str, str] = {}
    current = None
    for block in blocks:
        first = block.splitlines()[0].strip()
        if first.startswith("# ") and first.endswith(".py"):
            current = first[2:]
            files[current] = ""
        assert current is not None, "a Python block before the first file block"
        files[current] += block + "\n\n"
    return files


def test_the_testing_page_runs_as_written(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    files = doc_files()
    assert set(files) == {"conftest.py", "test_shop.py"}
    pytester.makeconftest(files["conftest.py"])
    pytester.makepyfile(test_shop=files["test_shop.py"])
    tests = len(re.findall(r"^def test_", files["test_shop.py"], flags=re.M))
    assert tests >= 5
    pytester.runpytest(*QUIET, "--record-mode=once").assert_outcomes(passed=tests)
    cassettes = sorted((Path(pytester.path) / "cassettes" / "test_shop").glob("*.har"))
    assert [c.name for c in cassettes] == ["test_recorded.har", "test_redacted.har"]
    recorded = cassettes[1].read_text(encoding="utf-8")
    assert "s3cret-token" not in recorded and '"value": "<redacted>"' in recorded
    pytester.runpytest(*QUIET, "--record-mode=none").assert_outcomes(passed=tests)
