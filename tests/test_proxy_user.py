"""``flow.proxy_user``: a column, shown when set, kept through save/load and HAR."""

from __future__ import annotations

from pathlib import Path

from interceptkit import Flow, FlowTable, Request, Response


def flow(flow_id: int, user: str | None) -> Flow:
    f = Flow(id=flow_id, request=Request(method="GET", scheme="http", host="origin.test", port=80, path="/"),
             response=Response(status=200), state="done", proxy_user=user)
    f.timings.start, f.timings.end = 1_700_000_000.0, 1_700_000_000.5
    return f


def test_the_column_and_the_default_view() -> None:
    table = FlowTable([flow(1, "ada"), flow(2, None)])
    assert table["proxy_user"] == ["ada", None]
    assert "proxy_user" in table.display_columns and "ada" in str(table)
    assert "proxy_user" not in FlowTable([flow(1, None)]).display_columns  # no auth: no column


def test_save_load_and_har_keep_the_user(tmp_path: Path) -> None:
    table = FlowTable([flow(1, "ada"), flow(2, None)])
    table.save(tmp_path / "flows.jsonl")
    loaded = FlowTable.load(tmp_path / "flows.jsonl")
    assert [f.proxy_user for f in loaded] == ["ada", None]
    document = table.to_har()
    assert document["log"]["entries"][0]["_proxyUser"] == "ada"
    assert "_proxyUser" not in document["log"]["entries"][1]
    assert [f.proxy_user for f in FlowTable.from_har(document)] == ["ada", None]


def test_credentials_are_public_and_accepted_by_proxy() -> None:
    import pytest

    from interceptkit import Credentials, Proxy

    users = Credentials.from_lines("# team\nada:pw\nbob:x:y\n")
    assert users.check("bob", "x:y") and not users.check("bob", "x")
    assert "pw" not in repr(users)
    Proxy(port=0, proxy_auth=users, mode="socks5")  # not started: nothing listens
    with pytest.raises(TypeError, match="pair of strings or a callable"):
        Proxy(port=0, proxy_auth=["ada", "pw"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not reverse"):
        Proxy(port=0, proxy_auth=users, mode="reverse", routes={"/": "http://127.0.0.1:1"})
