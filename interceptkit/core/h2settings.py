"""The h2 configuration and SETTINGS of interceptkit's HTTP/2 layers.

What h2 validates and what is switched off (and why) is explained in
docs/http2.md; in short: validate what comes in, forward what we got.
"""

from __future__ import annotations

import h2.config
import h2.errors
import h2.settings
import hyperframe.frame

STREAM_WINDOW = 1 << 20  # per stream: enough for a fast link, small enough to bound a slow reader
CONNECTION_WINDOW = 16 << 20  # all streams together
MAX_FRAME_SIZE = 1 << 16  # fewer frames per MiB than the 16 KiB default, at no memory cost
MAX_CONCURRENT_STREAMS = 100  # what we allow a peer to open (RFC 9113 5.1.2 recommends >= 100)
MAX_HEADER_LIST_SIZE = 1 << 16
ErrorCodes = h2.errors.ErrorCodes
# h2 is documented to raise only ProtocolError, but garbage has produced these
# (python-hyper/h2#1231); they are the peer's fault, never ours to crash on.
GARBAGE_ERRORS = (ValueError, IndexError, KeyError, TypeError, AttributeError)


def h2_config(*, client_side: bool, validate_inbound: bool = True) -> h2.config.H2Configuration:
    """The h2 configuration of a proxy: validate what comes in, forward what we got.

    Outbound validation and normalisation are off because the exchange logic
    decides what is sent (``core/h2translate.py`` does what h2 requires);
    inbound normalisation is off so flows show the bytes the peer sent;
    headers stay bytes.
    """
    return h2.config.H2Configuration(
        client_side=client_side, header_encoding=None,
        validate_inbound_headers=validate_inbound, normalize_inbound_headers=False,
        validate_outbound_headers=False, normalize_outbound_headers=False)


def local_settings(*, client_side: bool) -> h2.settings.Settings:
    """Our SETTINGS: no push, no extended CONNECT (RFC 8441 is out of scope,
    so WebSockets stay on HTTP/1.1), moderate windows, larger frames."""
    codes = h2.settings.SettingCodes
    settings = h2.settings.Settings(client=client_side, initial_values={
        codes.ENABLE_PUSH: 0, codes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        codes.MAX_FRAME_SIZE: MAX_FRAME_SIZE, codes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        codes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE})
    # h2 lists it (as 0) by default; leave it out of SETTINGS altogether, as
    # servers that never heard of RFC 8441 do.
    del settings[codes.ENABLE_CONNECT_PROTOCOL]
    return settings


def error_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error {code}"


def _data_frame_body_repr(self: hyperframe.frame.DataFrame) -> str:
    """``repr`` of a DATA frame's body, the string hyperframe makes, in constant time.

    hyperframe's fallback (``Frame._body_repr``) serialises the whole body and
    hex-encodes all of it to show the first 10 bytes; h2 asks for that repr on
    every frame it receives (``_receive_frame`` builds a trace log line
    whether logging is on or not), which cost a quarter of the proxy's CPU on
    a bulk h2 download. This one looks at the first 10 bytes only; the result
    is the same string (tests/core/test_h2settings.py compares them).
    """
    data = self.data or b""
    pad = self.pad_length
    if pad or "PADDED" in self.flags:  # the pad-length byte, then the data, then ``pad`` zero bytes
        size = 1 + len(data) + pad if "PADDED" in self.flags else len(data) + pad
        head = ((bytes([pad & 0xFF]) if "PADDED" in self.flags else b"") + bytes(data[:10]) + bytes(min(pad, 10)))[:10]
    else:
        size, head = len(data), data[:10]
    if not size:
        return "None"
    return "<hex:" + head.hex() + ("..." if size > 10 else "") + ">"


def quiet_frame_repr() -> None:
    """Give hyperframe's ``DataFrame`` the constant-time body repr above.

    Process-wide, but nothing observable changes: ``repr(frame)`` is the same
    string, made without hex-encoding the whole body. Idempotent; the h2
    layers call it when they are created.
    """
    if hyperframe.frame.DataFrame.__dict__.get("_body_repr") is not _data_frame_body_repr:
        hyperframe.frame.DataFrame._body_repr = _data_frame_body_repr  # type: ignore[method-assign, assignment]
