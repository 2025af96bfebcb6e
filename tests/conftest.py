"""Suite-wide options, and pytest's own ``pytester`` for the plugin tests (tests/test_pytest_plugin.py).

``--loop asyncio`` (default) or ``--loop uvloop`` picks the event loop every
proxy in the suite runs on, CLI subprocesses included: it sets
``INTERCEPTKIT_LOOP``, which decides what ``loop="auto"`` (the default of
``Proxy`` and ``--loop``) means. The default run uses asyncio's loop, the one
every user has; tests/test_suite_on_uvloop.py runs the transport-heavy tests
again on uvloop, so the one test command covers both loops.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

# Helpers shared by the whole tree (tlspair.py) import by name from any test directory.
sys.path.insert(0, os.path.dirname(__file__))

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                     help="event loop for every proxy in the suite (sets INTERCEPTKIT_LOOP)")


@pytest.fixture(autouse=True, scope="session")
def _event_loop_choice(request: pytest.FixtureRequest) -> Iterator[str]:
    loop = request.config.getoption("--loop")
    previous = os.environ.get("INTERCEPTKIT_LOOP")
    os.environ["INTERCEPTKIT_LOOP"] = loop
    yield loop
    if previous is None:
        os.environ.pop("INTERCEPTKIT_LOOP", None)
    else:
        os.environ["INTERCEPTKIT_LOOP"] = previous


def pytest_report_header(config: pytest.Config) -> str:
    return f"interceptkit event loop: {config.getoption('--loop')}"
