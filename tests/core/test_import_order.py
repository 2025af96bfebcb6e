"""The package's modules import only down the module order (DESIGN.md), never up.

wire helpers -> flow data model (flow, headers, export) -> core -> policy,
certs, hooks, transport, display, har, store, columns, filters, redact, views,
budget, arrow, matching, faults -> table, replay, proxy, cli, live,
breakpoints, cassette, testkit, scripts, pytest_plugin. A module may
import its own ring and the rings below it; an import of a higher ring is
refused wherever it is written: at module level, inside a function, inside
a try. Imports under ``if TYPE_CHECKING:`` are types only and never run.
Optional extras (pandas, pyarrow, brotli, ...) are outside the package and
not checked here; each lazy import of one carries a comment saying why.

Every module is parsed with ``ast`` (never imported), so modules nobody
imports yet are covered too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "interceptkit"

#: The rings, lowest first. A module's ring is named by its first dotted part.
RINGS: list[frozenset[str]] = [
    frozenset({"_wire", "errors_base", "vocab"}),
    frozenset({"flow", "flow_owner", "headers", "export", "codings"}),
    frozenset({"core"}),
    frozenset({"policy", "certs", "hooks", "transport", "display", "har", "store", "columns", "filters",
               "redact", "views", "budget", "arrow", "matching", "faults",
               "flowlog", "clientenv", "loops"}),
    frozenset({"table", "replay", "proxy", "cli", "__main__", "pytest_plugin", "scripts", "live", "breakpoints",
               "cassette", "testkit", "cli_env", "cli_network", "proxy_callbacks", "proxy_testing"}),
]


def ring_of(parts: tuple[str, ...]) -> int | None:
    for index, names in enumerate(RINGS):
        if parts and parts[0] in names:
            return index
    return None


def _module_parts(path: Path) -> tuple[str, ...]:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return tuple(p for p in rel.parts if p != "__init__")


def _typing_only_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def _targets(node: ast.Import | ast.ImportFrom, parts: tuple[str, ...], is_package: bool) -> list[tuple[str, ...]]:
    """The package modules an import names, as dotted parts under interceptkit."""
    if isinstance(node, ast.Import):
        names = [alias.name.split(".") for alias in node.names]
        return [tuple(n[1:]) for n in names if n[0] == "interceptkit" and len(n) > 1]
    if node.level == 0:
        module = (node.module or "").split(".")
        if module[0] != "interceptkit":
            return []
        base = module[1:]
    else:
        base = list(parts if is_package else parts[:-1])
        del base[len(base) - (node.level - 1):]
        base += node.module.split(".") if node.module else []
    if node.module is None or not base:
        return [(*base, alias.name) for alias in node.names]
    return [tuple(base)]


def upward_imports(source: str, parts: tuple[str, ...], *, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (the module ``parts``) of a ring above its own."""
    here = ring_of(parts)
    if here is None:
        return []
    tree = ast.parse(source)
    typing_only = _typing_only_lines(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in typing_only:
            continue
        for target in _targets(node, parts, is_package):
            there = ring_of(target)
            if there is not None and there > here:
                found.append(f"line {node.lineno}: {'.'.join(parts)} imports {'.'.join(target)}")
    return found


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_ring() -> None:
    unplaced = [str(p.relative_to(PACKAGE)) for p in package_modules()
                if _module_parts(p) and ring_of(_module_parts(p)) is None]
    assert unplaced == []


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_down_the_order(path: Path) -> None:
    parts = _module_parts(path)
    if not parts:
        return  # interceptkit/__init__.py re-exports the public names of every ring
    assert upward_imports(path.read_text(encoding="utf-8"), parts, is_package=path.name == "__init__.py") == []


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("from .core.http1 import parse_absolute_url", ("flow",)),
        ("def f():\n    from .replay import replay\n    return replay", ("flow",)),
        ("def f():\n    from .table import COLUMNS", ("display",)),
        ("from ..flow import Flow", ("_wire",)),
        ("from ..proxy import Proxy", ("core", "base")),
        ("try:\n    from ...hooks import x\nexcept ImportError:\n    pass", ("core", "tls", "inner")),
        ("import interceptkit.proxy", ("core", "http1")),
        ("from interceptkit import table", ("store",)),
        ("from . import replay", ("flow",)),
    ],
)
def test_the_scan_catches(source: str, parts: tuple[str, ...]) -> None:
    assert upward_imports(source, parts)


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("from ._wire import bracket", ("flow",)),
        ("from ..flow import Flow", ("core", "base")),
        ("from .http1 import sized", ("core", "base")),
        ("from .flow import Flow\nfrom .core import commands", ("store",)),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .table import FlowTable", ("display",)),
        ("import pandas", ("table",)),
        ("from .display import flow_html", ("har",)),
        ("from .proxy import Proxy", ("cli",)),
    ],
)
def test_the_scan_allows(source: str, parts: tuple[str, ...]) -> None:
    assert upward_imports(source, parts) == []
