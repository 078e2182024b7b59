"""``vsearch serve`` against what a client may send (issue 20): strict numbers and JSON, a strict
Host header, no server path in an error, no GET that writes or costs seconds, and a search that
still answers when the click log cannot be written. Each of these answered 500, leaked, or
wrote before; tests/test_fuzz_page.py looks for the rest."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import vsearch  # noqa: E402
from tests.test_actions import plant_copies, tree_bytes  # noqa: E402
from tests.test_api import make_photos  # noqa: E402
from tests.test_serve import BASE, post, search  # noqa: E402
from vsearch.learning.clicks import read_click_log  # noqa: E402
from vsearch.learning.judgments import DB_FILE, read_judgments  # noqa: E402
from vsearch.serve import app as web  # noqa: E402


@pytest.fixture
def indexed(tmp_path, fake_model):
    """photos/ (as the API docs' folder) indexed with the fake model; yields (index, photos)."""
    photos = make_photos(tmp_path / "work")
    index = vsearch.build_index(photos, index_dir=tmp_path / "idx", model="fake")
    yield index, photos
    index.close()


def bare_client(index, **kwargs) -> TestClient:
    """A client that answers a server error as a 500 (as a browser sees it), not as an exception."""
    client = TestClient(web.create_app(index, **kwargs), base_url=BASE, raise_server_exceptions=False)
    client.token = client.get("/").cookies[web.CSRF_COOKIE]  # type: ignore[attr-defined]
    return client


def post_raw(client, url: str, body: str | bytes, **headers):
    return post(client, url, content=body, headers={"Content-Type": "application/json", **headers})


# --- numbers: finite whole numbers within SQLite's range ---------------------------------------

BAD_NUMBERS = ["Infinity", "-Infinity", "NaN", "1e400", "-1e400", str(2**63), str(-(2**63) - 1), "10" * 40, "1.5",
               "true", '"12abc"', "[1]"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("where", ["judgment row", "click row", "click rank", "click query_id", "keeper", "member row"])
def test_a_number_that_is_not_a_whole_int64_is_a_400_never_a_500(indexed, value, where):
    index, photos = indexed
    client = bare_client(index)
    body = {
        "judgment row": '{"row": %s, "query": "q", "label": "relevant"}',
        "click row": '{"kind": "click", "query": "q", "query_id": 1, "results": [{"row": %s, "rank": 1}]}',
        "click rank": '{"kind": "click", "query": "q", "query_id": 1, "results": [{"row": 0, "rank": %s}]}',
        "click query_id": '{"kind": "click", "query": "q", "query_id": %s, "results": [{"row": 0, "rank": 1}]}',
        "keeper": '{"action": "trash", "keeper": %s, "members": [{"row": 0, "digest": "a"}, {"row": 1, "digest": "b"}]}',
        "member row": '{"action": "trash", "keeper": 0, "members": [{"row": %s, "digest": "a"}, {"row": 1, "digest": "b"}]}',
    }[where] % value
    url = {"judgment": "/api/judgment", "click": "/api/event"}.get(where.split()[0], "/api/duplicates/act")
    before = tree_bytes(photos)
    resp = post_raw(client, url, body)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json" and resp.json()["error"]
    assert tree_bytes(photos) == before and read_judgments(index.index_dir) == []


def test_the_largest_int64_query_id_is_a_number_and_is_refused_as_unknown(indexed):
    index, _ = indexed
    client = bare_client(index)
    resp = post_raw(client, "/api/event", f'{{"kind": "click", "query": "q", "query_id": {2**63 - 1}, '
                                        '"results": [{"row": 0, "rank": 1}]}')
    assert resp.status_code == 400 and "did not show" in resp.json()["error"]


# --- JSON: bounded nesting, no lone surrogates ----------------------------------------------------


@pytest.mark.parametrize("url", ["/api/judgment", "/api/event", "/api/duplicates/act", "/api/duplicates"])
@pytest.mark.parametrize("body", ["[" * 100_000, '{"a": ' + "[" * 5_000 + "]" * 5_000 + "}",
                                  '{"a": ' + "[" * 50 + "]" * 50 + "}", '{"query": "\\udc80"}', b'{"q": "\xff"}'])
def test_deep_nesting_bad_utf8_and_lone_surrogates_are_400(indexed, url, body):
    index, _ = indexed
    resp = post_raw(bare_client(index), url, body)
    assert resp.status_code == 400, resp.text[:200]
    assert resp.json()["error"]


def test_a_verdict_on_a_query_with_a_lone_surrogate_is_refused_and_nothing_recorded(indexed):
    index, _ = indexed
    client = bare_client(index)
    resp = post_raw(client, "/api/judgment", '{"row": 0, "query": "\\udc80", "label": "relevant"}')
    assert resp.status_code == 400 and "surrogate" in resp.json()["error"]
    assert read_judgments(index.index_dir) == []


def test_an_origin_that_is_not_a_url_is_403(indexed):
    index, _ = indexed
    resp = post(bare_client(index), "/api/judgment", origin="http://[bad", json={"row": 0, "label": "relevant"})
    assert resp.status_code == 403 and "cross-origin" in resp.json()["error"]


# --- the Host header, parsed whole ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost:8731@evil.example", "127.0.0.1:8000@evil.example", "localhost:8000/x",
                                  "localhost:99999", "localhost:", "localhost:80:80", "127.0.0.1 evil.example",
                                  "[::1", "[::1]x", "[evil.example]", "localhost#evil.example", "", "a..b:80"])
def test_a_host_header_that_is_not_exactly_name_and_port_is_refused(indexed, host):
    index, _ = indexed
    for allowed in (web.LOOPBACK_NAMES, ["*"]):
        client = TestClient(web.create_app(index, allowed_hosts=allowed), base_url=BASE)
        resp = client.get("/api/info", headers={"Host": host})
        assert resp.status_code == 400, (host, allowed)
        assert "Host header" in resp.json()["error"]


# --- uploads: the page never sees the server's temporary path ---------------------------------------


def test_an_upload_that_fails_to_decode_does_not_show_the_temporary_path(indexed, tmp_path):
    import tempfile

    index, _ = indexed
    truncated = (tmp_path / "work" / "new.jpg").read_bytes()[:2000]  # a JPEG header, then nothing
    resp = post(bare_client(index), "/api/search", content=truncated, headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]
    assert "the upload" in message
    assert "vsearch-upload" not in message and tempfile.gettempdir() not in message


# --- a GET never writes and never costs seconds ------------------------------------------------------


def test_a_search_is_a_post_a_get_logs_nothing_and_a_cross_origin_post_is_refused(indexed):
    index, _ = indexed
    client = bare_client(index)
    assert client.get("/api/search", params={"row": 0}).status_code == 405
    assert client.get("/api/search", params={"text": "a cat"}).status_code == 405
    assert post(client, "/api/search", params={"row": 0}, origin="http://evil.example").status_code == 403
    assert post(client, "/api/search", params={"row": 0}, token="wrong").status_code == 403
    assert read_click_log(index.index_dir) == []
    assert search(client, row=0).status_code == 200
    assert len(read_click_log(index.index_dir)) == 1


def test_finding_duplicates_is_a_post_and_a_get_finds_nothing(tmp_path, fake_model, monkeypatch):
    photos = plant_copies(tmp_path / "photos")
    with vsearch.build_index(photos, index_dir=tmp_path / "idx", model="fake") as index:
        calls = []
        monkeypatch.setattr(index, "duplicates", lambda *a, **kw: calls.append(kw) or [])
        client = bare_client(index)
        assert client.get("/api/duplicates", params={"fresh": "1"}).status_code == 405
        assert client.get("/api/duplicates").status_code == 405
        assert post(client, "/api/duplicates", json={"fresh": True}, origin="http://evil.example").status_code == 403
        assert calls == []
        assert post(client, "/api/duplicates", json={"fresh": True}).status_code == 200 and len(calls) == 1
        assert post(client, "/api/duplicates", json={"fresh": "yes"}).status_code == 400


# --- a click log that cannot be written does not stop a search -------------------------------------


def _damage(index_dir) -> bytes:
    """Write a judgment, then overwrite the database's header: what a damaged file looks like."""
    vsearch.api.record_verdict(index_dir, "q", "r", True, source="cli")
    path = index_dir / DB_FILE
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = b"not a database, but someone's judgments" + path.read_bytes()[40:]
    path.write_bytes(damaged)
    return damaged


@pytest.mark.parametrize("how", ["damaged", "empty"])
def test_a_search_answers_with_logging_off_and_says_why_when_judgments_sqlite_is_damaged(indexed, how):
    index, _ = indexed
    path = index.index_dir / DB_FILE
    kept = _damage(index.index_dir) if how == "damaged" else b""
    if how == "empty":
        path.write_bytes(b"")
    client = bare_client(index)
    resp = search(client, row=0, k=3)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert len(got["results"]) == 3 and got["query_id"] is None
    assert "not logged" in got["logging"] and str(path) in got["logging"]
    assert ("empty (0 bytes)" if how == "empty" else "damaged") in got["logging"]
    assert 'id="note"' in client.get("/").text  # where the page shows it
    verdict = post(client, "/api/judgment", json={"query": got["query"], "row": got["results"][1]["row"],
                                                   "label": "relevant"})
    assert verdict.status_code == 400 and str(path) in verdict.json()["error"]  # a verdict cannot be kept: said
    assert path.read_bytes() == kept  # left as it is, for a person to recover
    with pytest.raises(vsearch.VsearchError, match="damaged"):
        read_judgments(index.index_dir)


def test_a_search_logs_again_once_the_damaged_file_is_moved_away(indexed):
    index, _ = indexed
    _damage(index.index_dir)
    client = bare_client(index)
    assert search(client, row=0).json()["logging"]
    (index.index_dir / DB_FILE).rename(index.index_dir / "judgments.damaged")
    got = search(client, row=0).json()
    assert got["logging"] is None and got["query_id"] == read_click_log(index.index_dir)[0].query_id
