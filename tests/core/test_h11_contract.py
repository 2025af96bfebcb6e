"""Guard what the core relies on of h11's internals: how its events are built.

core/http1.py builds the ``h11.Request``/``h11.Response`` it sends by setting
their slots directly (the fields are in h11's normal form already: h11 parsed
them, or ``check_request_head`` checked them), skipping h11's checks of values
it produced a moment ago. That is only sound while the installed h11 is the
series pyproject pins and while those events equal, byte for byte, the ones
h11's own constructor builds; the tests below prove both.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import h11
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from interceptkit.core.errors import ProxyError
from interceptkit.core.h1layers import check_request_head
from interceptkit.core.http1 import h11_request, h11_response
from interceptkit.core.layers import RequestHead

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

Fields = list[tuple[bytes, bytes]]


def h11_pin() -> Requirement:
    """The h11 requirement in pyproject's dependencies (a regex: tomllib needs 3.11)."""
    text = PYPROJECT.read_text(encoding="utf-8")
    [pin] = [Requirement(dep) for dep in re.findall(r'^\s*"(h11\b[^"]*)"', text, re.MULTILINE)]
    return pin


def test_installed_h11_is_within_the_pin() -> None:
    pin = h11_pin()
    installed = version("h11")
    assert installed == getattr(h11, "__version__", installed)
    assert pin.specifier.contains(installed, prereleases=True), (installed, str(pin.specifier))


def test_the_pin_stays_on_one_minor_series() -> None:
    # A new h11 minor may change its events' slots or normal form: widening the pin needs this file re-checked.
    spec = h11_pin().specifier
    assert spec.contains("0.16.0") and not spec.contains("0.17.0") and not spec.contains("0.15.0")
    assert Version(version("h11")).release[:2] == (0, 16)


def test_the_slots_set_directly_are_all_of_the_events_fields() -> None:
    # A new field h11 added would be left unset on the events built by h11_request/h11_response.
    assert set(h11.Request.__slots__) == {"method", "headers", "target", "http_version"}
    assert set(h11.Response.__slots__) == {"headers", "http_version", "reason", "status_code"}


# Header sets as they come out of h11's parser (raw names, casing, repeats, latin-1 bytes).
REQUESTS = {
    "simple": b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    "casing and repeats": (b"GET / HTTP/1.1\r\nhOsT: example.com\r\nX-Dup: 1\r\nx-dup: 2\r\n"
                           b"Cookie: a=1\r\nCOOKIE: b=2\r\n\r\n"),
    "body": b"POST /up HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc",
    "chunked": b"POST /up HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    "duplicate length": b"PUT / HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
    "odd values": (b"GET /%7E?q=%E9 HTTP/1.1\r\nHost: [::1]:8080\r\nX-Empty:\r\nX-Latin: caf\xe9\r\n"
                   b"X-Folded: a\r\n  b\r\nX-Tabs: \tv\t\r\n\r\n"),
}

RESPONSES = {
    "simple": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "no reason": b"HTTP/1.1 204 \r\nETag: \"x\"\r\n\r\n",
    "chunked": b"HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n0\r\n\r\n",
    "odd values": b"HTTP/1.1 404 Nicht gef\xfcnden\r\nContent-Length: 0\r\nX-Latin: \xe9\r\nX-Empty:\r\n\r\n",
}


def parsed_request(raw: bytes) -> h11.Request:
    server = h11.Connection(h11.SERVER)
    server.receive_data(raw)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    return event


def parsed_response(raw: bytes) -> h11.Response:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "e")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    event = client.next_event()
    assert isinstance(event, h11.Response)
    return event


def sent_by_client(request: h11.Request) -> bytes:
    return h11.Connection(h11.CLIENT).send(request) or b""


def sent_by_server(response: h11.Response) -> bytes:
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: e\r\n\r\n")
    server.next_event()
    return server.send(response) or b""


def with_via(fields: Fields) -> Fields:
    return [*fields, (b"Via", b"1.1 interceptkit (interceptkit)")]


@pytest.mark.parametrize("name", list(REQUESTS))
def test_parsed_request_is_byte_identical(name: str) -> None:
    event = parsed_request(REQUESTS[name])
    fields = with_via(event.headers.raw_items())
    fast = h11_request(event.method, event.target, fields)
    checked = h11.Request(method=event.method, target=event.target, headers=fields)
    assert fast == checked
    assert sent_by_client(fast) == sent_by_client(checked)
    assert sent_by_client(fast).startswith(event.method + b" " + event.target + b" HTTP/1.1\r\n")


@pytest.mark.parametrize("name", list(RESPONSES))
def test_parsed_response_is_byte_identical(name: str) -> None:
    event = parsed_response(RESPONSES[name])
    fields = with_via(event.headers.raw_items())
    fast = h11_response(event.status_code, event.reason, fields)
    checked = h11.Response(status_code=event.status_code, reason=event.reason, headers=fields)
    assert fast == checked
    assert sent_by_server(fast) == sent_by_server(checked)


@pytest.mark.parametrize("fields", [
    [(b"Host", b"a"), (b"Content-Length", b"1"), (b"Content-Length", b"2")],
    [],  # HTTP/1.1 without Host
    [(b"Host", b"a"), (b"Host", b"b")],
    [(b"Host", b"a"), (b"Transfer-Encoding", b"gzip")],
])
def test_fields_h11_did_not_parse_are_refused_before_the_fast_path(fields: Fields) -> None:
    # h11_request checks nothing: a hook's or an HTTP/2 client's fields pass check_request_head first.
    with pytest.raises(ProxyError) as caught:
        check_request_head(RequestHead(method=b"POST", target=b"/", headers=fields))
    assert caught.value.status == 502


def test_checked_fields_are_put_in_h11s_normal_form() -> None:
    head = RequestHead(method=b"POST", target=b"/", headers=[(b"Host", b"a"), (b"Content-Length", b"2, 2"),
                                                             (b"X-Case", b"KeepMe")])
    check_request_head(head)
    assert head.headers == [(b"Host", b"a"), (b"Content-Length", b"2"), (b"X-Case", b"KeepMe")]
    fast = h11_request(head.method, head.target, head.headers)
    assert sent_by_client(fast) == sent_by_client(h11.Request(method=b"POST", target=b"/", headers=head.headers))


