"""The HTTP/2 layers as the exchange logic uses them: heads translated at the boundary.

The exchange logic speaks one head shape, HTTP/1's (a request-target and a
``Host`` field; a reason phrase), so hooks and flows see the same message
whichever protocol carried it. These subclasses of the h2 layers translate
at their edge (``core/h2translate.py``): an h2 request arrives with ``Host``
from ``:authority`` and cookies joined; a response goes out with names in
lower case and connection-specific fields dropped; towards an h2 origin
``Host`` becomes ``:authority``. ``http_version`` stays ``b"2"`` on what
they report, so flows record the protocol each side spoke.

They also answer what the exchange logic asks of any client side that only
HTTP/1 gives a non-trivial answer to (pipelining, ``100-continue``,
keep-alive cycles): see ``H1ClientLayer`` for those.
"""

from __future__ import annotations

from .h2translate import (
    drop_connection_specific,
    h1_request_to_h2,
    h1_response_to_h2,
    h2_request_to_h1,
    h2_response_to_h1,
    lower_names,
)
from .http2 import H2ClientLayer, H2UpstreamLayer
from .layers import Fields, HeadReceived, InformationalReceived, LayerEvent, RequestHead, ResponseHead

#: What HTTP/2 answers a client-side question HTTP/1 asks: no pipelining, no 100-continue of ours.
VERSIONS_H2 = (b"2",)


class H2Client(H2ClientLayer):
    """HTTP/2 towards the client, shaped for the exchange logic (one stream per exchange).

    Owns, beyond its h2 connection, which streams asked for HEAD (their
    answers carry no body).
    """

    head_bytes = 0  # h2 bounds the header list itself (SETTINGS_MAX_HEADER_LIST_SIZE)
    held_back = False
    pipelined = False
    input_waiting = True  # events may wait in the layer: reading on costs a list
    expects_continue = False
    receiving_body = False

    def __init__(self) -> None:
        super().__init__()
        self.multiplexed = True  # (on the instance, as the HTTP/1 layers have them: see h1layers.py)
        self.versions = VERSIONS_H2
        self._heads: set[int] = set()
        self.head_request = False

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        return [self._translated(event) for event in super().receive_data(data)]

    def _translated(self, event: LayerEvent) -> LayerEvent:
        if not isinstance(event, HeadReceived) or not isinstance(event.head, RequestHead):
            return event
        head = event.head
        if head.method == b"HEAD":
            self._heads.add(event.xid)
        h1 = h2_request_to_h1(head, keep_te_trailers=True)  # the exchange logic passes it to h2 origins only
        h1.http_version = b"2"
        return HeadReceived(xid=event.xid, head=h1, end_stream=event.end_stream)

    def send_head(self, xid: int, head: ResponseHead, *, end_stream: bool = False, validate: bool = True) -> None:
        super().send_head(xid, h1_response_to_h2(head), end_stream=end_stream)

    def send_informational(self, xid: int, head: ResponseHead) -> None:
        if head.status != 101:  # HTTP/2 has no protocol switch (RFC 9113 8.6)
            super().send_informational(xid, h1_response_to_h2(head))

    def send_trailers(self, xid: int, headers: Fields) -> None:
        super().send_trailers(xid, lower_names(drop_connection_specific(headers, keep_te_trailers=False)))

    def can_send_trailers(self, xid: int) -> bool:
        return True

    def send_whole_answer(self, head: ResponseHead, body: bytes, xid: int | None = None) -> None:
        """An answer of our own on stream ``xid`` (the connection stays open)."""
        if xid is None:
            return  # a connection-level failure: the GOAWAY says it
        if xid in self._heads:
            body = b""
        self.send_head(xid, head, end_stream=not body)
        if body:
            self.send_data(xid, body)
            self.end(xid)

    def forget(self, xid: int) -> None:
        """The exchange of ``xid`` is over: nothing of it is kept here (no map grows with streams)."""
        self._heads.discard(xid)

    def take_trailing(self) -> bytes:
        return b""

    def next_cycle(self) -> bool:
        """Streams need no cycle: the connection goes on unless it is finished."""
        return not self.finished


class H2Upstream(H2UpstreamLayer):
    """HTTP/2 towards one origin, shaped for the exchange logic: ``Host`` becomes ``:authority``."""

    def __init__(self, scheme: bytes) -> None:
        super().__init__()
        self.multiplexed = True
        self._scheme = scheme

    @property
    def idle(self) -> bool:
        """Poolable between messages: never (h2 connections live with their TLS session, in the core)."""
        return False

    @property
    def sending(self) -> bool:
        return False  # one stream's end does not touch the others: nothing to drop for it

    def send_head(self, xid: int, head: RequestHead, *, end_stream: bool = False, validate: bool = True) -> None:
        super().send_head(xid, h1_request_to_h2(head, scheme=self._scheme), end_stream=end_stream)

    def send_trailers(self, xid: int, headers: Fields) -> None:
        super().send_trailers(xid, lower_names(drop_connection_specific(headers, keep_te_trailers=False)))

    def can_send_trailers(self, xid: int) -> bool:
        return True

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        return [self._translated(event) for event in super().receive_data(data)]

    def _translated(self, event: LayerEvent) -> LayerEvent:
        if isinstance(event, HeadReceived) and isinstance(event.head, ResponseHead):
            head = h2_response_to_h1(event.head)
            head.http_version = b"2"
            return HeadReceived(xid=event.xid, head=head, end_stream=event.end_stream)
        if isinstance(event, InformationalReceived):
            return InformationalReceived(xid=event.xid, head=h2_response_to_h1(event.head))
        return event

    def take_trailing(self) -> bytes:
        return b""

    def next_cycle(self) -> bool:
        return not self.finished
