"""A TLS handshake between two SSLObjects over memory BIOs, for tests that check contexts without sockets."""

from __future__ import annotations

import ssl


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              server_hostname: str) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run the handshake; returns (client, server); the first side to fail raises."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    pending = [client, server]
    for _ in range(10):
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if not pending:
            return client, server
    raise AssertionError("handshake did not finish")


def selected(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
             server_hostname: str) -> tuple[str | None, str | None]:
    """What (client, server) selected in ALPN after a handshake."""
    client, server = handshake(server_ctx, client_ctx, server_hostname)
    return client.selected_alpn_protocol(), server.selected_alpn_protocol()
