"""Cassettes: record real exchanges to a HAR file, replay them later without the server.

Policy tier (beside hooks, har and redact). A :class:`Cassette` is attached
to a proxy with hooks: a ``request`` hook looks the request up among the
recordings and, on a hit, answers with the recording itself
(``flow.respond``; a body kept in a file streams from it piece by piece,
``respond(body=Path)``); on a miss it records (modes ``once`` without a
file, ``new_episodes``, ``all``) or answers with the strict-mode
explanation. Recorded bodies are spooled to disk chunk by chunk, so neither
recording nor replay holds a large body in memory; bodies over
:data:`INLINE_LIMIT` live in files beside the HAR (``<name>.bodies/``).

Record modes are VCR.py's: ``none`` (replay only), ``once`` (record when the
file does not exist, else replay only), ``new_episodes`` (replay what
matches, record the rest), ``all`` (always go upstream and record).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import har
from .flow import Flow, Request
from .hooks import HookHandle, HookRegistry
from .matching import Candidate, Matcher, check_match_on, differences, explain_miss
from .redact import Redact

RECORD_MODES = ("none", "once", "new_episodes", "all")
#: Bodies up to this size are kept inside the HAR file; larger ones beside it.
INLINE_LIMIT = 1024 * 1024
#: Marks our entries: their bodies are the bytes as sent (Content-Encoding not undone).
_MARK = "_interceptkit"
#: Header fields a replay does not repeat: the proxy frames the recorded body itself.
_FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class Answer:
    """One recorded answer: status, reason, header fields and a body (bytes, or a file beside the HAR)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    body_file: Path | None = None

    def play(self, flow: Flow) -> None:
        """Answer ``flow`` with this recording; a body in a file streams from it."""
        headers = [(n, v) for n, v in self.headers if n.lower() not in _FRAMING]
        body: bytes | Path = self.body_file if self.body_file is not None else self.body
        flow.respond(self.status, headers=headers, reason=self.reason, body=body)


class Recording:
    """One recorded exchange: the request to match and the answer to play."""

    def __init__(self, cassette: Cassette, index: int, request: Request, answer: Answer) -> None:
        self.cassette = cassette
        self.index = index
        self.request = request
        self.answer = answer
        self.plays = 0
        self.label = f"recording {cassette.path.name} #{index} {request.method} {request.url}"

    def differences(self, request: Request) -> list[str]:
        return differences(self.cassette.redact.request(request), self.request, self.cassette.match_on)


class Cassette:
    """Recordings in a HAR 1.2 file; see the module docstring. Use :meth:`Proxy.cassette`.

    ``play_count``: answers replayed so far; ``all_played``: every recording
    replayed at least once; ``new``: the flows recorded in this run.
    """

    def __init__(self, path: str | os.PathLike[str], *, record_mode: str = "once",
                 match_on: Iterable[Matcher] = ("method", "url"), allow_repeats: bool = False,
                 redact: Redact | None = None) -> None:
        if record_mode not in RECORD_MODES:
            raise ValueError(f"unknown record_mode {record_mode!r}; use one of {', '.join(RECORD_MODES)}")
        self.path = Path(path)
        self.record_mode = record_mode
        self.match_on: tuple[Matcher, ...] = check_match_on(match_on)
        self.allow_repeats = allow_repeats
        self.redact = redact if redact is not None else Redact()
        existed = self.path.exists()
        if record_mode == "none" and not existed:
            raise FileNotFoundError(f"cassette {self.path} does not exist (record_mode='none' only replays)")
        #: Whether a request nothing matches is refused (599) instead of recorded.
        self.strict = record_mode == "none" or (record_mode == "once" and existed)
        self.recording = not self.strict
        self._entries: list[dict[str, Any]] = self._load() if existed and record_mode != "all" else []
        self.recordings = [self._recording(i, e) for i, e in enumerate(self._entries, 1)]
        self.new: list[Flow] = []
        self.play_count = 0
        self._spools: dict[int, IO[bytes]] = {}
        self._new_entries: list[tuple[dict[str, Any], IO[bytes]]] = []
        self.handle: HookHandle | None = None

    # -- reading --------------------------------------------------------------------

    def _load(self) -> list[dict[str, Any]]:
        document = har.read(self.path)
        entries = (document.get("log") or {}).get("entries")
        if not isinstance(entries, list):
            raise ValueError(f"{self.path}: not a HAR file (no log.entries list)")
        return [e for e in entries if isinstance(e, dict)]

    def _recording(self, index: int, entry: dict[str, Any]) -> Recording:
        flows = har.from_har({"log": {"entries": [entry]}})
        if not flows:
            raise ValueError(f"{self.path}: entry {index} is not an HTTP(S) exchange")
        flow = flows[0]
        response = entry.get("response") or {}
        headers = [(str(h.get("name", "")), str(h.get("value", ""))) for h in response.get("headers") or ()
                   if not str(h.get("name", "")).startswith(":")]
        content = response.get("content") or {}
        if not entry.get(_MARK):  # a browser's HAR: content.text is decoded (HAR 1.2)
            headers = [(n, v) for n, v in headers if n.lower() != "content-encoding"]
        body_file = None
        body = b""
        if content.get("_file"):
            body_file = self.path.parent / str(content["_file"])
            if not body_file.is_file():
                raise FileNotFoundError(f"{self.path}: entry {index} keeps its body in {body_file}, "
                                        f"which does not exist")
        elif content.get("text") is not None:
            text = str(content["text"])
            body = base64.b64decode(text) if content.get("encoding") == "base64" else text.encode("utf-8")
        answer = Answer(int(response.get("status") or 502), str(response.get("statusText") or ""),
                        tuple(headers), body, body_file)
        return Recording(self, index, flow.request, answer)

    # -- matching -------------------------------------------------------------------

    @property
    def all_played(self) -> bool:
        return all(r.plays for r in self.recordings)

    def candidates(self) -> list[Candidate]:
        return list(self.recordings)

    def lookup(self, request: Request) -> Recording | None:
        """The next recording for ``request``: identical requests get the recorded
        answers in recorded order; with ``allow_repeats`` the last one again."""
        live = self.redact.request(request)
        matching = [r for r in self.recordings if not differences(live, r.request, self.match_on)]
        fresh = [r for r in matching if not r.plays]
        if fresh:
            return fresh[0]
        return matching[-1] if matching and self.allow_repeats else None

    # -- the hooks --------------------------------------------------------------------

    def attach(self, registry: HookRegistry, others: Callable[[], Sequence[Candidate]]) -> HookHandle:
        """Install the hooks; ``others`` gives the mocks a miss report also lists."""
        def on_request(flow: Flow) -> None:
            self._on_request(flow, others)

        hooks = [registry.add("request", on_request, order=1),
                 registry.add("response_chunk", self._spool, where=self._is_recorded),
                 registry.add("done", self._finish, where=self._is_recorded)]
        self.handle = HookHandle(registry, hooks, label=f"cassette {self.path}", acting=True)
        return self.handle

    def _on_request(self, flow: Flow, others: Callable[[], Sequence[Candidate]]) -> None:
        if flow.response is not None or flow.killed or "matched_by" in flow.metadata:
            return  # a mock or a fault answered first
        recording = None if self.record_mode == "all" else self.lookup(flow.request)
        if recording is not None:
            self._replay(flow, recording)
        elif self.recording:
            flow.metadata["matched_by"] = f"recorded to {self.path.name}"
            self._spools[flow.id] = tempfile.SpooledTemporaryFile(max_size=INLINE_LIMIT)
        else:
            refuse(flow, [*others(), *self.candidates()])

    def _replay(self, flow: Flow, recording: Recording) -> None:
        recording.plays += 1
        self.play_count += 1
        assert self.handle is not None
        self.handle.acted(flow)
        recording.answer.play(flow)  # no upstream is asked: the core answers (and streams) it
        flow.metadata["matched_by"] = recording.label
        flow.metadata["replayed"] = True

    def _is_recorded(self, flow: Flow) -> bool:
        return flow.id in self._spools

    def _spool(self, flow: Flow, data: bytes) -> None:
        self._spools[flow.id].write(data)

    def _finish(self, flow: Flow) -> None:
        spool = self._spools.pop(flow.id)
        if flow.response is None or flow.error is not None:
            spool.close()
            return
        if not spool.tell() and flow.response.content and not flow.response.truncated:
            spool.write(flow.response.content)  # a ``response`` hook held the body: no chunks came
        self.new.append(flow)
        self._new_entries.append((self._entry(flow, spool), spool))

    def _entry(self, flow: Flow, spool: IO[bytes]) -> dict[str, Any]:
        copy = self.redact.flow(flow)
        entry: dict[str, Any] = har.to_har([copy], redact=Redact(headers=()))["log"]["entries"][0]
        entry[_MARK] = {"raw_body": True}
        return entry

    def settle(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for flows being recorded to finish: a client has its answer
        a moment before the proxy's ``done`` hook has run."""
        deadline = time.monotonic() + timeout
        while self._spools and time.monotonic() < deadline:
            time.sleep(0.005)

    # -- writing --------------------------------------------------------------------------

    def save(self) -> None:
        """Write the file (atomically) when this run recorded something."""
        if not self._new_entries and self.record_mode != "all":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        bodies = self.path.with_name(self.path.stem + ".bodies")
        entries = list(self._entries)
        for entry, spool in self._new_entries:
            entries.append(entry)
            entry["response"]["content"] = self._content(entry, spool, bodies, len(entries))
            spool.close()
        self._new_entries.clear()
        document = har.to_har([])
        document["log"]["entries"] = entries
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        har.write(document, temporary)
        os.replace(temporary, self.path)
        self._entries = entries

    def _content(self, entry: dict[str, Any], spool: IO[bytes], bodies: Path, number: int) -> dict[str, Any]:
        size = spool.tell()
        spool.seek(0)
        mime = entry["response"]["content"].get("mimeType", "x-unknown")
        entry["response"]["bodySize"] = size
        if size <= INLINE_LIMIT:
            data = self.redact.data(spool.read())
            text, encoding = _text_or_base64(data)
            content = {"size": size, "mimeType": mime, "text": text}
            return {**content, "encoding": encoding} if encoding else content
        bodies.mkdir(exist_ok=True)
        target = bodies / f"{number}.bin"
        with target.open("wb") as out:
            _copy_redacted(spool, out, self.redact.values)
        return {"size": size, "mimeType": mime, "_file": f"{bodies.name}/{target.name}"}


def _text_or_base64(data: bytes) -> tuple[str, str | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _copy_redacted(source: IO[bytes], target: IO[bytes], secrets: list[str]) -> None:
    """Copy in pieces, replacing secrets, also one that straddles two pieces."""
    if not secrets:
        shutil.copyfileobj(source, target, 1024 * 1024)
        return
    keep = max(len(s.encode()) for s in secrets) - 1
    carry = b""
    while piece := source.read(1024 * 1024):
        data = carry + piece
        for secret in secrets:
            data = data.replace(secret.encode(), b"<redacted>")
        cut = max(len(data) - keep, 0)  # a secret may begin in the last bytes and end in the next piece
        target.write(data[:cut])
        carry = data[cut:]
    target.write(carry)


def refuse(flow: Flow, candidates: Sequence[Candidate], status: int = 599) -> None:
    """Answer a request nothing matched with the explanation; mark it ``unmatched``."""
    flow.respond(status, text=explain_miss(flow.request, candidates), reason="Unmatched Request")
    flow.metadata["unmatched"] = True
    flow.metadata["matched_by"] = "unmatched"


class CassetteBlock:
    """``with proxy.cassette(...) as cas``: attach on entry, detach and save on exit."""

    def __init__(self, make: Callable[[], Cassette]) -> None:
        self._make = make
        self.cassette: Cassette | None = None

    def __enter__(self) -> Cassette:
        self.cassette = self._make()
        return self.cassette

    def __exit__(self, *exc_info: object) -> None:
        cassette = self.cassette
        if cassette is not None and cassette.handle is not None:
            cassette.settle()
            cassette.handle.remove()
            cassette.save()
