"""ProxyConnection, part: connections towards servers: binding, TLS, failures, retries.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from itertools import count

from ..flow import Request
from . import commands as cmd
from . import events as ev
from .base import ConnectionBase
from .exchange import Exchange, FORWARDING, SentEnd, SentPart, bind
from .http1 import format_authority
from .layers import RequestHead, ResponseHead, StreamReset
from .state import IN_HTTP, Phase, Upstream, UpstreamKey, tls_info
from .upstreamproxy import ParentAnswer, ParentTunnel, UpstreamProxy
from .tls import (
    TLSEndpoint,
    TLSError,
)
from .websocket import SERVER
from ..vocab import UpstreamPause
from .alpn import H2, h2_enabled, listen_protocols, upstream_offer
from .h2sides import H2Upstream


class Upstreams(ConnectionBase):
    """Connections towards servers: owns the upstreams (each with its layer and TLS), their ids, pausing.

    Binding and releasing (to the pool when it sits between messages), TLS
    towards the server, failures, and the retry of an idempotent request.
    """

    def _init_upstreams(self) -> None:
        #: The upstream connections this client connection uses, by id. HTTP/1
        #: clients, tunnels and WebSockets use one at a time (``_primary``);
        #: an HTTP/2 client's streams may use several at once.
        self._upstreams: dict[int, Upstream] = {}
        self._upstream_ids = count(1)
        #: One of them has spoken HTTP/2 (it stays True): only then does _flush look for
        #: bytes an upstream layer framed on its own (HTTP/1's are taken as each part is framed).
        self._h2_upstreams = False

    def _primary(self) -> Upstream | None:
        """The upstream an HTTP/1 client, a tunnel or a WebSocket is bound to."""
        upstreams = self._upstreams
        return next(iter(upstreams.values())) if upstreams else None

    def _pause_upstream(self, up: Upstream, reason: UpstreamPause = "hook") -> None:
        """Stop reading ``up`` for ``reason``: bound what piles up meanwhile (its layer holds what came)."""
        if up.id not in self._upstreams:
            return
        if not up.paused_for:
            self._emit(cmd.PauseUpstream(upstream=up.id))
            if not up.layer.multiplexed:
                up.layer.pause(0)
        up.paused_for.add(reason)

    def _resume_upstream(self, up: Upstream, reason: UpstreamPause) -> None:
        """Read ``up`` again once no reason to pause it is left (the caller pumps what its layer holds)."""
        if reason not in up.paused_for:
            return
        up.paused_for.discard(reason)
        if not up.paused_for:
            if not up.layer.multiplexed:
                up.layer.resume(0)
            self._emit(cmd.ResumeUpstream(upstream=up.id))

    def _resume_upstreams(self, reason: UpstreamPause = "hook") -> None:
        for up in list(self._upstreams.values()):
            self._resume_upstream(up, reason)

    def _current_upstream(self, upstream_id: int) -> Upstream | None:
        return self._upstreams.get(upstream_id)

    def _drop_upstream(self, up: Upstream) -> None:
        if up.id in self._upstreams:
            self._flush()
            del self._upstreams[up.id]
            self._out.append(cmd.CloseUpstream(upstream=up.id))

    def _release_upstream(self) -> None:
        """Give every upstream back (the client connection ends)."""
        for up in list(self._upstreams.values()):
            self._release(up)

    def _release(self, up: Upstream) -> None:
        """Give ``up`` back: to the pool if it sits between messages."""
        self._flush()
        # A relayed tunnel's connection carries bytes h11 never saw: never pool it.
        relayed = self._phase in (Phase.TUNNEL, Phase.CONNECTING, Phase.SNIFF, Phase.WEBSOCKET)
        idle = up.ready and up.tls is None and not relayed and up.layer.idle
        if idle and up.paused_for:
            self._out.append(cmd.ResumeUpstream(upstream=up.id))  # the pool must get a connection it reads
        del self._upstreams[up.id]
        self._out.append(cmd.CloseUpstream(upstream=up.id, reusable=idle))

    def _drop_upstream_if_busy(self, up: Upstream | None) -> None:
        if up is not None and up.layer.sending:
            self._drop_upstream(up)

    def _bind_upstream(self, scheme: str, host: str, port: int) -> Upstream:
        """An upstream for a new request to ``host:port``: one free for it here, else a new one."""
        key = (host, port, scheme in ("https", "wss"))
        for up in self._upstreams.values():
            if up.key == key and (up.layer.multiplexed or not up.exchanges) and up.layer.can_start_exchange():
                return up  # HTTP/2: one connection carries the streams; HTTP/1: a free one
        if not self._client.multiplexed:
            self._release_upstream()  # HTTP/1: one upstream at a time, kept while the host stays
        return self._open_upstream(key, reuse=True)

    def _open_upstream(self, key: UpstreamKey, *, reuse: bool, for_exchange: Exchange | None = None) -> Upstream:
        tunnel = self._tunnel
        in_tunnel = tunnel.origin is not None and key[0] == tunnel.origin[1]
        server_name = tunnel.server_name if in_tunnel and tunnel.server_name else key[0]
        # TLS sessions live in the core, so TLS connections are never pooled.
        up = Upstream(next(self._upstream_ids), key, self._now, server_name)
        self._upstreams[up.id] = up
        if key[2] and H2 in self._upstream_alpn() and self._phase is not Phase.CONNECTING:
            up.deferred = []  # h2 or HTTP/1.1: TLS will say; frame nothing before
        if for_exchange is not None:
            for_exchange.flow.timings.connect_start = self._now
        parent = self._parent_for(key[0], key[1])
        if parent is None:
            self._emit(cmd.OpenUpstream(upstream=up.id, host=key[0], port=key[1], tls=key[2],
                                        reuse=reuse and not key[2]))
            return up
        up.parent = parent
        if key[2] or self._phase is Phase.CONNECTING:
            # TLS and relayed tunnels go through a CONNECT: one tunnel per
            # connection, never pooled (the pool only holds plain ones).
            up.tunnel_to = (key[0], key[1])
            self._emit(cmd.OpenUpstream(upstream=up.id, host=parent.host, port=parent.port, reuse=False))
        else:
            # Plain HTTP in absolute-form: any origin can share a parent
            # connection, so the pool key is the parent's address.
            self._emit(cmd.OpenUpstream(upstream=up.id, host=parent.host, port=parent.port, reuse=reuse))
        return up

    def _parent_for(self, host: str, port: int) -> UpstreamProxy | None:
        parent = self._config.upstream_proxy
        bypass = self._config.upstream_proxy_bypass
        if parent is None or (bypass is not None and bypass(host, port)):
            return None
        return parent

    def _for_parent(self, up: Upstream, request: Request,
                    fields: list[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The request-target and fields for ``up``: absolute-form plus the parent's credentials.

        The client's own Proxy-Authorization was removed as hop-by-hop; the
        parent's is added only here, so it never reaches an origin.
        """
        target = request.path.encode("latin-1")
        if up.parent is None or up.tunnel_to is not None:
            return target, fields
        scheme = "http" if request.scheme in ("http", "ws") else request.scheme
        target = (scheme.encode("ascii") + b"://" + format_authority(request.host, request.port, scheme)
                  + (target if target.startswith(b"/") else b"/" + target))
        if up.parent.authorization is not None:
            fields = [*fields, up.parent.authorization]
        return target, fields

    def _on_upstream_connected(self, event: ev.UpstreamConnected) -> None:
        up = self._current_upstream(event.upstream)
        if up is None:  # we gave up on it meanwhile
            self._emit(cmd.CloseUpstream(upstream=event.upstream))
            return
        up.connected = True
        up.reused = event.reused
        up.last_activity = self._now
        self._record_connect(event)
        if up.tunnel_to is not None:
            self._ask_parent(up, *up.tunnel_to)
            return
        self._connected_to_server(up)

    def _connected_to_server(self, up: Upstream) -> None:
        """``up`` reaches the server (directly or through the parent's tunnel): TLS or ready."""
        if self._phase is Phase.CONNECTING:
            self._start_tunnel(up)
        elif up.key[2]:
            self._start_upstream_tls(up)
        else:
            self._upstream_ready(up)

    def _ask_parent(self, up: Upstream, host: str, port: int) -> None:
        """Connected to the parent: ask it for a tunnel (``up.parent_answer`` reads its answer)."""
        parent = up.parent
        assert parent is not None
        tunnel = up.parent_answer = ParentTunnel(parent, host, port)
        self._send_upstream_raw(up, tunnel.request_bytes())

    def _parent_answered(self, up: Upstream, data: bytes) -> None:
        """Bytes from the parent before its tunnel is open: 2xx opens it, anything else fails."""
        reader, parent = up.parent_answer, up.parent
        assert reader is not None and parent is not None
        verdict = reader.receive(data)
        if verdict.kind is ParentAnswer.WAIT:
            return
        if verdict.kind is ParentAnswer.FAILED:
            self._upstream_failed(up, parent.refused(verdict.what))
            return
        trailing = verdict.trailing
        up.parent_answer = None
        self._connected_to_server(up)
        if trailing and self._current_upstream(up.id) is up:
            self._on_upstream_data(ev.UpstreamDataReceived(time=self._now, upstream=up.id, data=trailing))

    def _parent_refused(self, up: Upstream, response: ResponseHead) -> bool:
        """A 407 to a plain request is the parent's, not the origin's: a 502 naming it.

        Relayed as is, it would ask the client for credentials for *this* proxy.
        """
        parent = up.parent
        if parent is None or up.tunnel_to is not None or response.status != 407:
            return False
        what = f"{response.status} {response.reason.decode('latin-1')}".strip()
        self._upstream_failed(up, parent.refused(f"answered {what}"))
        return True

    def _frame(self, ex: Exchange, up: Upstream, part: SentPart) -> None:
        """Send a part of ``ex``'s request through ``up``'s layer; kept unframed while its protocol is unknown."""
        if up.deferred is not None:
            up.deferred.append((ex, part))
            return
        _send_part(up, ex, part)
        self._to_upstream(up, up.layer.bytes_to_send())

    def _upstream_alpn(self) -> tuple[str, ...]:
        """What to offer an upstream in ALPN: what the client offered (of h2, http/1.1); in reverse mode, both."""
        http2 = h2_enabled(self._config.http2)
        offer = self._tunnel.client_offer
        if self._config.mode == "reverse" and not offer:
            return listen_protocols(http2=http2)
        return upstream_offer(offer, http2=http2)

    def _frame_deferred(self, up: Upstream) -> None:
        """TLS chose the protocol: the layer that speaks it frames what waited."""
        deferred, up.deferred = up.deferred or [], None
        tls = up.tls
        if tls is not None and tls.alpn == H2:
            up.layer = H2Upstream(b"https")
            self._h2_upstreams = True
            for ex in list(up.exchanges.values()):
                bind(ex, up, up.layer.start_exchange())
        for ex, part in deferred:
            if ex.upstream is up and ex.live:
                _send_part(up, ex, part)
        self._to_upstream(up, up.layer.bytes_to_send())

    def _start_upstream_tls(self, up: Upstream) -> None:
        up.alpn_offer = self._upstream_alpn()
        context = self._config.upstream_context_for(up.alpn_offer)
        if context is None:
            self._upstream_failed(up, "no TLS context for HTTPS upstreams was configured")
            return
        up.tls = TLSEndpoint(context, server_side=False, server_hostname=up.server_name)
        self._send_upstream_raw(up, up.tls.start())

    def _upstream_ready(self, up: Upstream) -> None:
        up.ready = True
        if up.deferred is not None:
            self._frame_deferred(up)
        if self._awaiting_alpn():
            self._alpn_chosen(up)
        for ex in up.exchanges.values():
            if ex.request_complete and ex.flow.timings.request_sent is None:
                ex.flow.timings.request_sent = self._now
        if up.pending:
            if not up.out:
                self._dirty.append(up)
            up.out.extend(up.pending)
            up.pending, up.pending_size = [], 0
        self._resume_client("pending")

    def _record_connect(self, event: ev.UpstreamConnected) -> None:
        up = self._upstreams[event.upstream]
        tunnel = self._tunnel.flow
        flows = [ex.flow for ex in up.exchanges.values()] or ([tunnel] if tunnel else [])
        for flow in flows:
            flow.timings.connect_end = self._now
            flow.server_address = event.address

    def _on_upstream_connect_failed(self, event: ev.UpstreamConnectFailed) -> None:
        up = self._current_upstream(event.upstream)
        if up is None:
            return
        status = 504 if event.timeout else 502
        if up.parent is not None:
            reason = up.parent.refused(f"cannot be reached (for {up.key[0]}:{up.key[1]}): {event.reason}")
        else:
            reason = f"cannot connect to {up.key[0]}:{up.key[1]}: {event.reason}"
        self._connect_failed(up, reason, status, event.cause)

    def _on_upstream_data(self, event: ev.UpstreamDataReceived) -> None:
        up = self._upstreams.get(event.upstream)
        if up is None or up.eof:
            return
        up.last_activity = self._now
        data, closed = event.data, False
        if up.parent_answer is not None:
            self._parent_answered(up, data)
            return
        if up.tls is not None:
            decrypted = self._decrypt_upstream(up, data)
            if decrypted is None:
                return
            data, closed = decrypted
        if self._phase is IN_HTTP:  # the common case, without a table lookup
            self._http_response_bytes(up, data, closed)
        else:
            _UPSTREAM_BYTES.get(self._phase, Upstreams._http_response_bytes)(self, up, data, closed)

    def _http_response_bytes(self, up: Upstream, data: bytes, closed: bool) -> None:
        if not data and not closed:
            return  # a TLS record with no plaintext (a session ticket after the handshake)
        layer, exchanges, size = up.layer, up.exchanges, len(data)
        if layer.multiplexed:
            for ex in exchanges.values():
                ex.upstream_bytes += size
        elif not exchanges:
            # Nobody asked this connection anything (a server's "408" before
            # it closes an idle connection, say): it cannot be trusted again.
            self._drop_upstream(up)
            return
        else:
            ex = next(iter(exchanges.values()))  # HTTP/1: one at a time
            ex.upstream_bytes += size
            if ex.waiting is not None or self._hook_blocks_client():
                # A hook (or a fault's hold) keeps it waiting: its layer holds the rest until it returns.
                self._pause_upstream(up)
        events = layer.receive_data(data) if data else []
        if closed:
            events += layer.receive_data(b"")
        self._upstream_events(up, events)

    def _tunnel_bytes(self, up: Upstream, data: bytes, closed: bool) -> None:
        self._relay_to_client(data)

    def _websocket_bytes(self, up: Upstream, data: bytes, closed: bool) -> None:
        self._ws_receive(SERVER, data if data or not closed else None)
        if closed and data:
            self._ws_receive(SERVER, None)

    def _decrypt_upstream(self, up: Upstream, data: bytes) -> tuple[bytes, bool] | None:
        tls = up.tls
        assert tls is not None
        try:
            result = tls.receive(data)
        except TLSError as exc:
            what = "TLS with the upstream failed" if up.ready else "TLS handshake with the upstream failed"
            self._upstream_failed(up, f"{what}: {exc.reason}")
            return None
        self._send_upstream_raw(up, result.to_send)
        if result.handshake_done:
            for ex in up.exchanges.values():
                ex.flow.timings.tls_end = self._now
                ex.flow.server_tls = tls_info(up)
            self._upstream_ready(up)
        return result.plaintext, result.closed

    def _on_upstream_closed(self, event: ev.ConnectionClosed) -> None:
        up = self._current_upstream(event.upstream or 0)
        if up is None or up.eof:
            return
        up.eof = True
        if up.parent_answer is not None:
            self._parent_answered(up, b"")
            return
        _UPSTREAM_CLOSED.get(self._phase, Upstreams._http_upstream_closed)(self, up)

    def _http_upstream_closed(self, up: Upstream) -> None:
        self._upstream_events(up, up.layer.receive_data(b""))

    def _tunnel_upstream_closed(self, up: Upstream) -> None:
        self._finish_tunnel(None)

    def _websocket_upstream_closed(self, up: Upstream) -> None:
        self._ws_receive(SERVER, None)

    def _upstream_failed(self, up: Upstream, reason: str, status: int = 502, *, timeout: bool = False) -> None:
        """The upstream of the exchange failed: retry, answer ``status``, or close.

        Only a reused connection that was closed before any response byte is
        retried; a ``timeout`` never is (the server may be working on it).
        """
        if self._awaiting_alpn():
            self._alpn_failed(up, reason, status)
            return
        self._drop_upstream(up)
        if self._phase is Phase.CONNECTING:
            self._fail_tunnel(reason, status)
            return
        for ex in list(up.exchanges.values()):  # none: an idle connection went away, nothing was lost
            self._exchange_lost_upstream(ex, up, reason, status, timeout)

    def _exchange_lost_upstream(self, ex: Exchange, up: Upstream, reason: str, status: int, timeout: bool) -> None:
        if ex.replay is not None and up.reused and ex.upstream_bytes == 0 and not ex.retried and not timeout:
            self._retry(ex)
            return
        started = ex.response_started
        self._fail_exchange(ex, reason)
        if started:
            # Never let a truncated answer look complete: close instead.
            self._end_stream_badly(ex)
        else:
            self._answer(status, reason, ex.xid)

    def _abandon_upstream(self, ex: Exchange, up: Upstream) -> None:
        """``ex`` ended early on our side: HTTP/2 resets its stream; HTTP/1 drops a connection mid-request."""
        if up.layer.multiplexed:
            up.layer.reset(ex.up_xid, "the client went away")
        else:
            self._drop_upstream_if_busy(up)

    def _upstream_stream_failed(self, ex: Exchange, up: Upstream, event: StreamReset) -> None:
        """An HTTP/2 origin reset ``ex``'s stream, or did not process it (GOAWAY): retry, answer, or reset."""
        if event.retryable and not ex.response_started and ex.replay is not None and not ex.retried:
            self._retry(ex)
            return
        started = ex.response_started
        reason = f"the upstream reset the stream: {event.reason}"
        self._fail_exchange(ex, reason)
        if started:
            self._end_stream_badly(ex)
        else:
            self._answer(502, reason, ex.xid)

    def _retry(self, ex: Exchange) -> None:
        """Resend an idempotent request on a fresh connection (RFC 9110 9.2.2).

        What was sent is replayed through the new connection's layer, not as
        bytes, so its framing state sees the same request the old one did.
        """
        replay = ex.replay or []
        ex.retried, ex.replay = True, None
        request = ex.flow.request
        self._log("debug", f"reused upstream connection was closed; retrying {request.url}")
        key = (request.host, request.port, request.scheme in ("https", "wss"))
        up = self._open_upstream(key, reuse=False, for_exchange=ex)
        bind(ex, up, up.layer.start_exchange())
        ex.enter(FORWARDING)
        for part in replay:
            self._frame(ex, up, part)
        if ex.request_complete:
            self._arm_read_timer(self._config.read_timeout)  # the retry is timed like the first try


def _send_part(up: Upstream, ex: Exchange, part: SentPart) -> None:
    """One part of a request through ``up``'s layer (a head was checked before it was kept).

    A request the client sent without a body (HTTP/2 END_STREAM on HEADERS)
    goes out the same way: its end rides on the head, never on an empty DATA frame.
    """
    xid = ex.up_xid
    if isinstance(part, RequestHead):
        up.layer.send_head(xid, part, validate=False, end_stream=ex.request_bodyless)
    elif ex.request_bodyless:
        return  # ended with the head
    elif not isinstance(part, SentEnd):
        up.layer.send_data(xid, part)
    elif part.trailers and up.layer.can_send_trailers(xid):
        up.layer.send_trailers(xid, part.trailers)
    else:
        up.layer.end(xid)


#: Who takes an upstream's (decrypted) bytes in each phase; others: the HTTP response path.
_UPSTREAM_BYTES = {
    Phase.TUNNEL: Upstreams._tunnel_bytes,
    Phase.WEBSOCKET: Upstreams._websocket_bytes,
}
#: What an upstream's EOF means in each phase; others: the end of an HTTP response, or an error.
_UPSTREAM_CLOSED = {
    Phase.TUNNEL: Upstreams._tunnel_upstream_closed,
    Phase.WEBSOCKET: Upstreams._websocket_upstream_closed,
}
