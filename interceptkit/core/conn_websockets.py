"""ProxyConnection, part: WebSocket frames after a 101, through wsproto on both sides.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from typing import Any

from .base import ConnectionBase
from .exchange import Exchange
from .state import Phase
from .websocket import (
    CLIENT,
    SERVER,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
    WebSocketData,
    WebSocketMessage,
    _other,
    agreed_extensions,
    data_message,
    message_of,
    outgoing,
)
from .wssession import WebSocketSession


class WebSockets(ConnectionBase):
    """A WebSocket after its 101: what to do with each message and close, and the bytes that go out.

    Owns one attribute, ``_ws``: the connection's :class:`~.wssession.WebSocketSession`
    (both wsproto sides, their queue, fragments and streamed counts, the
    exchange), None before a 101 and after the close.
    """

    def _init_websockets(self) -> None:
        self._ws: WebSocketSession | None = None

    def _start_websocket(self, ex: Exchange, upstream_rest: bytes) -> None:
        response = ex.flow.response
        values = [v for n, v in response.headers.fields if n.lower() == b"sec-websocket-extensions"] if response else []
        agreed, usable = agreed_extensions(values)
        if not usable:
            # The server agreed to something we never offered it: relay the
            # frames unparsed rather than misread them.
            self._log("warning", f"WebSocket extension we cannot parse ({values!r}); relaying it unparsed")
            self._relay_upgrade(ex.flow, upstream_rest)
            return
        ex.flow.kind = "websocket"
        ex.flow.websocket = WebSocketData(max_messages=self._config.websocket_max_messages,
                                          max_content=self._config.websocket_max_content)
        ws = self._ws = WebSocketSession(ex, agreed)
        self._enter(Phase.WEBSOCKET)
        self._resume_client("pipeline")
        early = self._tunnel.take_early()
        if early:
            ws.receive(CLIENT, early)
        if upstream_rest:
            ws.receive(SERVER, upstream_rest)
        self._pump_ws()

    def _ws_receive(self, side: str, data: bytes | None) -> None:
        if self._ws is None:
            return
        self._ws.receive(side, data)
        if not self._calls:
            self._pump_ws()
            return
        # A hook is deciding on an earlier message: hold both sides meanwhile.
        self._pause_client("hook")
        up = self._primary()
        if up is not None:
            self._pause_upstream(up)

    def _ws_client_bytes(self, data: bytes) -> None:
        plain = self._client_plaintext(data)
        if plain is None:
            return
        data, closed = plain
        if data:
            self._ws_receive(CLIENT, data)
        if closed:
            self._ws_receive(CLIENT, None)

    def _pump_ws(self) -> None:
        ws = self._ws
        while ws is not None and ws.has_pending and not self._calls and self._ws is ws:
            side, event = ws.next_event()
            self._ws_event(side, event)
        if self._ws is not None and self._ws.finished():
            self._end_websocket(None)

    def _ws_event(self, side: str, event: Any) -> None:
        if isinstance(event, (TextMessage, BytesMessage)):
            self._ws_data(side, event)
        elif isinstance(event, (Ping, Pong)):
            self._ws_record(message_of(side, event, self._now))
            self._ws_send(_other(side), type(event)(payload=bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            self._ws_close(side, event)

    def _ws_data(self, side: str, event: TextMessage | BytesMessage) -> None:
        ws = self._ws
        assert ws is not None
        size = ws.add_fragment(side, event.data if isinstance(event.data, str) else bytes(event.data))
        hooked = "websocket_message" in self._config.hooks
        if not event.message_finished:
            if not hooked or size > self._config.hook_body_limit:
                # Stream what we have: the message is too large to hold (or nobody asked).
                for part in ws.take_fragments(side):
                    self._ws_send(_other(side), outgoing(part, finished=False))
                ws.add_streamed(side, size)
            return
        streamed = ws.take_streamed(side)
        message = data_message(side, ws.take_fragments(side), self._now)
        if streamed:
            self._ws_send(_other(side), outgoing(message.content, finished=True))
            message.size += streamed
            self._ws_record(message)
        elif hooked:
            self._hook("websocket_message", ws.exchange, payload=message)
        else:
            self._ws_forward(message)

    def _ws_after_hook(self, message: Any, result: Any) -> None:
        assert isinstance(message, WebSocketMessage)
        if isinstance(result, (str, bytes)):
            message.content = result
        self._ws_forward(message)
        data = self._ws.flow.websocket if self._ws is not None else None
        if isinstance(data, WebSocketData):
            outbox, data.outbox = data.outbox, []
            for to, content in outbox:
                injected = WebSocketMessage(_other(to), "text" if isinstance(content, str) else "binary",
                                            content, self._now, len(content), injected=True)
                self._ws_forward(injected)

    def _ws_forward(self, message: WebSocketMessage) -> None:
        self._ws_record(message)
        if not message.dropped:
            self._ws_send(_other(message.direction), outgoing(message.content))

    def _ws_record(self, message: WebSocketMessage | None) -> None:
        if self._ws is not None:
            self._ws.record(message)

    def _ws_send(self, to: str, event: Any) -> None:
        ws = self._ws
        if ws is None:
            return
        data = ws.send(to, event)
        self._ws_write(to, data)

    def _ws_write(self, to: str, data: bytes) -> None:
        if not data:
            return
        if to == CLIENT:
            self._to_client(data)
        else:
            up = self._primary()
            if up is not None:
                self._to_upstream(up, data)

    def _ws_close(self, side: str, event: CloseConnection) -> None:
        ws = self._ws
        assert ws is not None
        data = ws.data
        if event.code == 1006 or ws.is_protocol_error(side, event):
            lost = event.code == 1006
            reason = (f"the {side} closed the connection without a close frame" if lost
                      else f"the {side} broke the WebSocket protocol: {event.reason}")
            if not lost:
                # wsproto names the fault: 1007 bad UTF-8, 1009 too big, else 1002.
                code = event.code if event.code in (1002, 1007, 1009) else 1002
                self._ws_write(side, ws.close_frame(side, code, "protocol error"))
            self._ws_write(_other(side), ws.close_frame(_other(side), 1001 if lost else 1002,
                                                        "the other side went away" if lost else "protocol error"))
            if data.closed_by is None:  # a close frame seen before the TCP close says more
                data.close_code, data.closed_by = event.code, side
            self._end_websocket(None if lost else reason)
            return
        if data.closed_by is None:
            data.close_code, data.close_reason, data.closed_by = event.code, event.reason or "", side
        self._ws_record(message_of(side, event, self._now))
        self._ws_write(_other(side), ws.close_frame(_other(side), event.code, event.reason or ""))

    def _ws_idle_close(self) -> None:
        """Both peers fell silent: say goodbye properly (1001) on both sides."""
        ws = self._ws
        if ws is not None:
            for side in (CLIENT, SERVER):
                self._ws_write(side, ws.close_frame(side, 1001, "idle timeout"))
            data = ws.flow.websocket
            if isinstance(data, WebSocketData):
                data.close_code = data.close_code or 1001
                data.close_reason = data.close_reason or "idle timeout"
        self._end_websocket(None)

    def _end_websocket(self, error: str | None) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            self._end_flow(ws.flow, error)
        self._close_client()
