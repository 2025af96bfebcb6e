"""The sans-IO core imports no I/O, no clock, no threads, and no private h11 module.

Every module under interceptkit/core is parsed with ``ast`` (never imported),
so the check also covers modules that are not imported anywhere yet.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "interceptkit" / "core"
FORBIDDEN = frozenset({"asyncio", "socket", "selectors", "threading", "time", "subprocess"})
IMPORT_FUNCTIONS = frozenset({"__import__", "import_module"})


def _forbidden(module: str) -> str | None:
    """Why importing ``module`` (a dotted absolute name) is not allowed, if it is not."""
    top = module.split(".")[0]
    if top in FORBIDDEN:
        return f"I/O or clock module {module!r}"
    parts = module.split(".")
    if top == "h11" and any(part.startswith("_") for part in parts[1:]):
        return f"private h11 module {module!r}"
    return None


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Every forbidden import in ``source``, as ``file:line: reason``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from h11 import _util`` imports a private submodule too.
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in IMPORT_FUNCTIONS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                modules = [node.args[0].value]
        for module in modules:
            reason = _forbidden(module)
            if reason:
                found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {reason}")
    return found


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_scan_sees_the_core() -> None:
    names = {path.name for path in core_modules()}
    assert {"events.py", "commands.py", "config.py", "http1.py", "connection.py", "errors.py"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_io(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), str(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import asyncio.events",
        "import socket as s",
        "import os, selectors",
        "from threading import Lock",
        "from time import monotonic",
        "from asyncio.streams import StreamReader",
        "import subprocess",
        "def f():\n    import time\n    return time.time()",
        "if True:\n    from socket import socket",
        "import h11._util",
        "from h11._readers import READERS",
        "from h11 import _readers",
        "__import__('socket')",
        "importlib.import_module('asyncio')",
    ],
)
def test_the_scan_catches(source: str) -> None:
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    ["import h11", "from h11 import Connection, SERVER", "import ssl", "from . import events",
     "from .time_utils import x", "import timeit", "from .socket_like import y", "import dataclasses"],
)
def test_the_scan_allows(source: str) -> None:
    assert violations(source) == []
