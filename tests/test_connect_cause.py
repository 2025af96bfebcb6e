"""The transport's typed cause of a failed upstream connect, read from the exception it caught (no sockets)."""

from __future__ import annotations

import errno
import socket

import pytest

from interceptkit.transport.connecterror import UpstreamConnectError, connect_cause
from interceptkit.transport.resolver import ResolveError
from interceptkit.vocab import CONNECT_CAUSES


@pytest.mark.parametrize("exc, cause", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
    (OSError(errno.ECONNREFUSED, "Connection refused"), "refused"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "network_unreachable"),
    (TimeoutError("timed out"), "timeout"),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), "timeout"),
    (ResolveError("cannot resolve nowhere.test: Name or service not known"), "resolve"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "resolve"),
    (OSError(errno.EACCES, "Permission denied"), "other"),
    (OSError("no errno at all"), "other"),
    (None, "other"),  # no address was tried
])
def test_each_exception_gets_its_cause(exc: BaseException | None, cause: str) -> None:
    assert connect_cause(exc) == cause
    assert cause in CONNECT_CAUSES


def test_the_messages_do_not_decide_the_cause() -> None:
    assert connect_cause(OSError(errno.EACCES, "Connection refused")) == "other"


def test_a_timed_out_connect_error_is_a_timeout_whatever_else_it_says() -> None:
    assert UpstreamConnectError("connect timed out after 5 s", timeout=True).cause == "timeout"
    assert UpstreamConnectError("Connection refused", cause="refused").cause == "refused"
    assert UpstreamConnectError("?").cause == "other"
