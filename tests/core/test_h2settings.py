"""core/h2settings.py: the constant-time repr of DATA frames is the string hyperframe makes."""

from __future__ import annotations

import hyperframe.frame
from hypothesis import given
from hypothesis import strategies as st

from interceptkit.core.h2settings import _data_frame_body_repr, quiet_frame_repr


def _hyperframe_repr(frame: hyperframe.frame.DataFrame) -> str:
    # hyperframe's own fallback: serialise the whole body, hex-encode it, cut to 20 hex digits
    return hyperframe.frame.Frame._body_repr(frame)


@given(data=st.binary(max_size=40), padded=st.booleans(), pad=st.integers(0, 255))
def test_same_string_as_hyperframe(data: bytes, padded: bool, pad: int) -> None:
    frame = hyperframe.frame.DataFrame(1, data, pad_length=pad if padded else 0)
    if padded:
        frame.flags.add("PADDED")
    assert _data_frame_body_repr(frame) == _hyperframe_repr(frame)


def test_parsed_frames_and_repr_of_the_whole_frame() -> None:
    for data, pad in ((b"", 0), (b"x", 0), (bytes(range(10)), 0), (bytes(range(11)), 0), (b"ab", 3), (b"", 20),
                      (bytes(70000), 0)):
        frame = hyperframe.frame.DataFrame(3, data, pad_length=pad)
        if pad:
            frame.flags.add("PADDED")
        frame.flags.add("END_STREAM")
        parsed, length = hyperframe.frame.Frame.parse_frame_header(memoryview(frame.serialize()[:9]))
        parsed.parse_body(memoryview(frame.serialize()[9:]))
        quiet_frame_repr()
        assert repr(parsed) == f"DataFrame(stream_id=3, flags={parsed.flags!r}): {_hyperframe_repr(parsed)}"


def test_installed_once_by_the_layers() -> None:
    from interceptkit.core.http2 import H2ClientLayer

    H2ClientLayer()
    assert hyperframe.frame.DataFrame._body_repr is _data_frame_body_repr
    quiet_frame_repr()
    assert hyperframe.frame.DataFrame.__dict__["_body_repr"] is _data_frame_body_repr
