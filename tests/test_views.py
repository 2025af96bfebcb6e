"""The richer flow views: JSON trees, server-sent events, forms, multipart, WebSocket messages; HAR
import of Chromium's WebSocket messages."""

from __future__ import annotations

import base64
import json
import re

from interceptkit import Flow, FlowTable, Headers, Request, Response
from interceptkit.core.websocket import WebSocketData, WebSocketMessage
from interceptkit.views import MAX_NODES, multipart_parts, sse_events


def flow_with(body: bytes, ctype: str, *, request_body: bytes = b"", request_type: str | None = None) -> Flow:
    headers = Headers([("Host", "api.test")] + ([("Content-Type", request_type)] if request_type else []))
    request = Request(method="POST", scheme="https", host="api.test", port=443, path="/x", headers=headers,
                      content=request_body)
    flow = Flow(id=1, request=request, state="done")
    flow.response = Response(status=200, headers=Headers([("Content-Type", ctype)]), content=body)
    return flow


def text_of(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")


def test_json_is_a_tree_of_details_open_two_levels_deep() -> None:
    doc = {"user": {"name": "<script>alert(1)</script>", "roles": ["admin", {"deep": {"deeper": 1}}]}}
    html = flow_with(json.dumps(doc).encode(), "application/json")._repr_html_()
    assert html.count("<details") == 5 and html.count("<details open") == 2
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '"name": "<script>alert(1)</script>"' in text_of(html)
    assert '"user": { 2 keys"name"' in text_of(html) and '{ 1 key"deep"' in text_of(html)
    assert '"roles": [ 2 items"admin"' in text_of(html)


def test_a_huge_json_body_makes_a_bounded_view() -> None:
    html = flow_with(json.dumps(list(range(50_000))).encode(), "application/json")._repr_html_()
    assert "view truncated" in html and html.count("margin-left") <= MAX_NODES + 5


def test_invalid_json_falls_back_to_text() -> None:
    html = flow_with(b"{not json", "application/json")._repr_html_()
    assert "{not json" in html and "<details" not in html


def test_server_sent_events_are_reassembled() -> None:
    stream = (b": keep-alive comment\r\nevent: update\r\nid: 7\r\ndata: line one\r\ndata: line two\r\n\r\n"
              b"data:{\"n\": 2}\n\nretry: 1000\nevent: cut-off\ndata: partial")
    events = sse_events(stream.decode())
    assert events == [{"event": "update", "id": "7", "data": "line one\nline two"}, {"data": '{"n": 2}'},
                      {"retry": "1000", "event": "cut-off", "data": "partial"}]
    html = flow_with(stream, "text/event-stream")._repr_html_()
    assert "3 server-sent events" in html and ">update<" in html and "line one\nline two" in html


def test_form_fields_are_listed() -> None:
    flow = flow_with(b"ok", "text/plain", request_body=b"user=ada&note=a%26b+c&empty=",
                     request_type="application/x-www-form-urlencoded")
    html = flow._repr_html_()
    assert "form, 3 fields" in html
    assert re.search(r">note</td><td[^>]*>a&amp;b c</td>", html) and re.search(r">empty</td><td[^>]*></td>", html)


def test_multipart_parts_are_listed_with_files() -> None:
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02\xff\r\n--XyZ--\r\n")
    parts = multipart_parts(body, "multipart/form-data; boundary=XyZ")
    assert parts == [
        {"name": "title", "filename": None, "content_type": "text/plain", "content": b"Hello"},
        {"name": "file", "filename": "a.bin", "content_type": "application/octet-stream",
         "content": b"\x00\x01\x02\xff"},
    ]
    html = flow_with(b"ok", "text/plain", request_body=body,
                     request_type="multipart/form-data; boundary=XyZ")._repr_html_()
    assert "multipart form, 2 parts" in html and ">a.bin<" in html and "binary: 00 01 02 ff" in html
    assert multipart_parts(b"no boundary here", "multipart/form-data; boundary=QQ") is None


def _ws_flow() -> Flow:
    flow = flow_with(b"", "text/plain")
    flow.response = Response(status=101, reason="Switching Protocols")
    flow.timings.start = 1000.0
    ws = WebSocketData()
    ws.record(WebSocketMessage("client", "text", "hello <server>", 1000.5, 14))
    ws.record(WebSocketMessage("server", "binary", b"\x00\xffdata", 1001.25, 6))
    ws.close_code, ws.close_reason, ws.closed_by = 1000, "bye", "client"
    flow.websocket = ws
    return flow


def test_websocket_messages_are_shown() -> None:
    html = _ws_flow()._repr_html_()
    assert "WebSocket, 2 messages" in html and "closed 1000 bye by client" in html
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("interceptkit-websocket")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows[1:3]]
    assert cells[0] == ["→ to server", "+0.500 s", "text", "14 B", "hello &lt;server&gt;"]
    assert cells[1] == ["← to client", "+1.250 s", "binary", "6 B", "binary: 00 ff 64 61 74 61"]


def test_har_import_rebuilds_chromium_websocket_messages() -> None:
    entry = {
        "startedDateTime": "2024-05-01T10:00:00.000Z", "time": 5,
        "request": {"method": "GET", "url": "wss://chat.test/socket", "httpVersion": "HTTP/1.1",
                    "headers": [{"name": "Upgrade", "value": "websocket"}], "queryString": [], "cookies": [],
                    "headersSize": -1, "bodySize": 0},
        "response": {"status": 101, "statusText": "Switching Protocols", "httpVersion": "HTTP/1.1",
                     "headers": [], "cookies": [], "content": {"size": 0, "mimeType": ""}, "redirectURL": "",
                     "headersSize": -1, "bodySize": 0},
        "cache": {}, "timings": {"send": 0, "wait": 5, "receive": 0}, "_resourceType": "websocket",
        "_webSocketMessages": [
            {"type": "send", "time": 1714557600.1, "opcode": 1, "data": "{\"hi\": 1}"},
            {"type": "receive", "time": 1714557600.2, "opcode": 2,
             "data": base64.b64encode(b"\x01\x02").decode()},
            {"type": "receive", "time": 1714557600.3, "opcode": 99, "data": "unknown opcode: skipped"},
            "not even a dict",
        ],
    }
    [flow] = FlowTable.from_har({"log": {"version": "1.2", "entries": [entry]}})
    messages = list(flow.websocket.messages)
    assert [(m.direction, m.type, m.content, m.size) for m in messages] == [
        ("client", "text", '{"hi": 1}', 9), ("server", "binary", b"\x01\x02", 2)]
    assert messages[0].time == 1714557600.1
    # and it survives a round trip through our own HAR export
    [again] = FlowTable.from_har(FlowTable([flow]).to_har())
    assert [(m.direction, m.content) for m in again.websocket.messages] == [("client", '{"hi": 1}'),
                                                                           ("server", b"\x01\x02")]
