"""``vsearch serve``: the Starlette app over an open index (TestClient), its security checks,
the thumbnail cache, and judgments read back through the CLI."""

from __future__ import annotations

import io
import json
import sys

import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import vsearch  # noqa: E402
from tests.conftest import make_photo  # noqa: E402
from tests.helpers import cli, fails, ok  # noqa: E402
from tests.test_api import CLIP_NAME, FakeClip, make_photos  # noqa: E402
from vsearch.models import loading as models  # noqa: E402
from vsearch.errors import VsearchError  # noqa: E402
from vsearch.learning.clicks import read_click_log  # noqa: E402
from vsearch.learning.judgments import read_judgments  # noqa: E402
from vsearch.serve import app as web  # noqa: E402
from vsearch.serve.thumbs import ThumbCache  # noqa: E402
from vsearch.storage.store import file_digest  # noqa: E402

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def indexed(tmp_path, fake_model):
    """photos/ (as the API docs' folder) indexed with the fake model; yields (index, photos)."""
    photos = make_photos(tmp_path / "work")
    index = vsearch.build_index(photos, index_dir=tmp_path / "idx", model="fake")
    yield index, photos
    index.close()


def client_for(index, **kwargs) -> TestClient:
    """A client that loaded the page (so it holds the session's CSRF cookie); .token is the token."""
    client = TestClient(web.create_app(index, **kwargs), base_url=BASE)
    page = client.get("/")
    assert page.status_code == 200
    client.token = page.cookies[web.CSRF_COOKIE]  # type: ignore[attr-defined]
    assert client.token in page.text  # type: ignore[attr-defined]
    return client


def post(client, url, *, origin=BASE, token=None, **kwargs):
    headers = {"X-CSRF-Token": client.token if token is None else token}
    if origin:
        headers["Origin"] = origin
    return client.post(url, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)


def row_of(index, name: str) -> int:
    return next(h.row for h in index.query(index.root / name, k=len(index)) if h.path.name == name)


def search(client, **params):
    """A search as the page makes it: a POST (the server logs what it shows), options in the query."""
    return post(client, "/api/search", params=params)


def urls_of(index, row: int) -> tuple[str, str]:
    """The thumbnail and image URLs of ``row``, named by content as the page names them."""
    digest = index.entry_of_row(row).digest
    return f"/thumb/{row}/{digest}", f"/image/{row}/{digest}"


# --- searching -----------------------------------------------------------------------------


def test_a_page_of_results_names_each_file_as_row_file_would(indexed):
    """digests_of_rows (one manifest lookup for a page of results) agrees with row_file, row by
    row: a file gone since indexing and a row beyond the index get no digest."""
    from vsearch.serve.state import LockedIndex

    index, photos = indexed
    api = LockedIndex(index)
    gone = row_of(index, sorted(p.name for p in photos.iterdir() if p.is_file())[0])
    (index.root / index.entry_of_row(gone).path).unlink()
    rows = [*range(len(index)), len(index), len(index) + 5, -1]

    def one(row):
        try:
            return api.row_file(row)[1]
        except LookupError:
            return None

    digests = api.digests_of_rows(rows)
    assert digests == [one(r) for r in rows]
    assert digests[gone] is None and digests[-3:] == [None, None, None]
    assert sum(d is not None for d in digests) == len(index) - 1


def test_search_by_row_returns_the_photo_and_its_copy(indexed):
    index, photos = indexed
    client = client_for(index)
    dog = row_of(index, "dog.jpg")
    got = search(client, row=dog, k=3).json()
    assert [r["path"] for r in got["results"][:2]] == ["dog.jpg", "dog-copy.jpg"]
    excluded = search(client, row=dog, k=3, exclude_self="1").json()
    assert excluded["results"][0]["path"] == "dog-copy.jpg"
    beach = search(client, row=dog, k=5, path="beach/*").json()
    assert beach["results"] and all(r["path"].startswith("beach/") for r in beach["results"])
    assert search(client, row=dog, k=5, diverse="0.5").status_code == 200
    assert search(client, row=10_000).status_code == 404
    assert "diverse" in search(client, row=dog, diverse="7").json()["error"]


def test_search_by_upload_embeds_it_and_finds_its_original(indexed, tmp_path, fake_model):
    index, photos = indexed
    client = client_for(index)
    before = set(p.name for p in photos.rglob("*"))
    calls = fake_model.calls
    resp = post(client, "/api/search?k=3", content=(tmp_path / "work" / "new.jpg").read_bytes(),
                headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["path"] == "beach/b7.jpg"  # new.jpg is a re-encoded b7.jpg
    assert fake_model.calls == calls + 1  # embedded with the index's model
    assert set(p.name for p in photos.rglob("*")) == before  # nothing written into the photo folder


def test_a_request_never_imports_torch(indexed, tmp_path):
    index, _ = indexed
    if "torch" in sys.modules:
        pytest.skip("torch was imported by an earlier test in this process")
    client = client_for(index)
    post(client, "/api/search", content=(tmp_path / "work" / "new.jpg").read_bytes())
    search(client, row=0)
    client.get(urls_of(index, 0)[0])
    assert "torch" not in sys.modules


def test_text_search_on_a_clip_index(tmp_path):
    photos = make_photos(tmp_path / "work")
    clip = FakeClip(CLIP_NAME, photos)
    models.register(CLIP_NAME, lambda name, device, threads: clip)
    try:
        with vsearch.build_index(photos, index_dir=tmp_path / "idx", model=CLIP_NAME) as index:
            client = client_for(index)
            page = client.get("/").text  # the page's script reads the token and the text switch from <body>
            assert 'data-csrf="' in page and 'data-text="true"' in page
            got = search(client, text="a cat", k=2).json()
            assert {r["path"] for r in got["results"]} == {"cat.jpg", "cat-small.png"}
            assert got["query"] == "text:a cat"
    finally:
        models.unregister(CLIP_NAME)


def test_text_search_on_an_image_only_index_is_a_clear_400(indexed):
    index, _ = indexed
    client = client_for(index)
    assert 'data-text="false"' in client.get("/").text
    resp = search(client, text="a cat")
    assert resp.status_code == 400 and "CLIP" in resp.json()["error"]


# --- uploads -------------------------------------------------------------------------------


def test_oversized_upload_is_413_with_a_clear_message(indexed, tmp_path):
    index, _ = indexed
    client = client_for(index, max_upload_bytes=1000)
    resp = post(client, "/api/search", content=(tmp_path / "work" / "new.jpg").read_bytes())
    assert resp.status_code == 413 and "larger than the limit" in resp.json()["error"]


def test_upload_over_the_pixel_cap_is_413_and_garbage_is_400(indexed):
    index, _ = indexed
    client = client_for(index, max_upload_pixels=100 * 100)
    big = io.BytesIO()
    Image.new("RGB", (200, 200)).save(big, "PNG")
    resp = post(client, "/api/search", content=big.getvalue())
    assert resp.status_code == 413 and "40,000 pixels" in resp.json()["error"]
    assert post(client, "/api/search", content=b"not an image").status_code == 400
    assert post(client, "/api/search", content=b"").status_code == 400


# --- files: by row only ----------------------------------------------------------------------


def test_thumbnails_and_images_are_served_by_row_and_content(indexed):
    index, photos = indexed
    client = client_for(index)
    dog = row_of(index, "dog.jpg")
    thumb_url, image_url = urls_of(index, dog)
    thumb = client.get(thumb_url)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    assert len(list((index.index_dir / "thumbs").iterdir())) == 1
    assert client.get(thumb_url).content == thumb.content  # from the cache
    image = client.get(image_url)
    assert image.content == (photos / "dog.jpg").read_bytes()
    for served in (thumb, image):  # a URL names its content: a browser may keep it for good
        assert served.headers["x-content-type-options"] == "nosniff"
        assert "immutable" in served.headers["cache-control"]
        assert index.entry_of_row(dog).digest in served.headers["etag"]
    other = index.entry_of_row(row_of(index, "cat.jpg")).digest
    assert client.get(f"/thumb/{dog}/{other}").status_code == 404  # another file's content: not this row's
    assert client.get(f"/image/{dog}/{other}").status_code == 404
    assert client.get(f"/thumb/{dog}").status_code == 404  # a row alone names nothing


def test_a_file_edited_since_indexing_is_404_and_never_cached_under_the_old_content(indexed):
    index, photos = indexed
    client = client_for(index)
    dog = row_of(index, "dog.jpg")
    thumb_url, image_url = urls_of(index, dog)
    (photos / "dog.jpg").write_bytes((photos / "cat.jpg").read_bytes())  # another picture, same name
    assert client.get(thumb_url).status_code == 404 and client.get(image_url).status_code == 404
    assert not (index.index_dir / "thumbs").exists() or not list((index.index_dir / "thumbs").iterdir())


@pytest.mark.parametrize("url", [
    "/thumb/../../etc/passwd", "/thumb/..%2f..%2fetc%2fpasswd", "/image/%2e%2e/%2e%2e/etc/passwd",
    "/image/..%2F..%2Fetc%2Fpasswd", "/thumb/-1", "/image/99999", "/thumb/1.5", "/image//etc/passwd",
    "/thumb/0/..%2f..%2fetc%2fpasswd", "/image/0/../../etc/passwd", "/image/0/%2e%2e", "/thumb/0/abc",
    "/image/99999/" + "0" * 32, "/thumb/-1/" + "0" * 32,
])
def test_path_traversal_attempts_are_404(indexed, url):
    index, _ = indexed
    resp = client_for(index).get(url)
    assert resp.status_code == 404
    assert b"root:" not in resp.content


def test_a_deleted_file_is_404(indexed):
    index, photos = indexed
    client = client_for(index)
    thumb_url, image_url = urls_of(index, row_of(index, "dog.jpg"))
    (photos / "dog.jpg").unlink()
    assert client.get(thumb_url).status_code == 404
    assert client.get(image_url).status_code == 404


def test_a_symlink_out_of_the_root_is_404(tmp_path, fake_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_photo(photos / f"p{i}.jpg", seed=i)
    secret = make_photo(tmp_path / "secret.jpg", seed=9)
    (photos / "link.jpg").symlink_to(secret)
    with vsearch.build_index(photos, index_dir=tmp_path / "idx", model="fake") as index:
        rows = {h.path.name: h.row for h in index.query(photos / "p0.jpg", k=len(index))}
        client = client_for(index)
        assert client.get(urls_of(index, rows["p0.jpg"])[1]).status_code == 200
        if "link.jpg" in rows:  # the indexer may follow the link; the server must not
            thumb_url, image_url = urls_of(index, rows["link.jpg"])
            assert client.get(image_url).status_code == 404
            assert client.get(thumb_url).status_code == 404
        else:  # not indexed: then swap an indexed file for a link out of the root
            thumb_url, image_url = urls_of(index, rows["p1.jpg"])
            (photos / "p1.jpg").unlink()
            (photos / "p1.jpg").symlink_to(secret)
            assert client.get(image_url).status_code == 404
            assert client.get(thumb_url).status_code == 404


def test_thumbnail_cache_stays_under_its_cap(tmp_path):
    images = [make_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(8)]
    cache = ThumbCache(tmp_path / "idx", cap_bytes=20_000)
    (tmp_path / "idx").mkdir()
    sizes = [len(cache.get(p, file_digest(p.read_bytes()))) for p in images]
    assert sum(sizes) > 20_000  # the cap bit
    assert cache.size() <= 20_000


# --- POST guards ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "wrong"])
def test_post_without_the_right_csrf_token_is_403(indexed, token):
    index, _ = indexed
    client = client_for(index)
    resp = post(client, "/api/judgment", token=token, json={"query": "q", "row": 0, "label": "relevant"})
    assert resp.status_code == 403 and "CSRF" in resp.json()["error"]
    assert read_judgments(index.index_dir) == []


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:8000.evil.example", "http://127.0.0.1:9999", None])
def test_cross_origin_post_is_403(indexed, origin):
    index, _ = indexed
    client = client_for(index)
    resp = post(client, "/api/judgment", origin=origin, json={"query": "q", "row": 0, "label": "relevant"})
    assert resp.status_code == 403 and "cross-origin" in resp.json()["error"]
    assert read_judgments(index.index_dir) == []


def test_a_host_header_not_of_this_machine_is_refused(indexed):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    index, _ = indexed
    client = TestClient(web.create_app(index), base_url="http://evil.example:8000")
    assert client.get("/").status_code == 400
    image_url = urls_of(index, 0)[1]
    assert client.get(image_url).status_code == 400
    for loopback in ("http://localhost:8000", "http://[::1]:8000", "http://[::1]", "http://LocalHost.:8000",
                     "http://[0:0:0:0:0:0:0:1]:8000"):
        assert TestClient(web.create_app(index), base_url=loopback).get(image_url).status_code == 200
    remote = TestClient(web.create_app(index, allowed_hosts=["*"]), base_url="http://evil.example:8000")
    assert remote.get(image_url).status_code == 200


def test_a_referer_from_this_server_is_accepted(indexed):
    index, _ = indexed
    client = client_for(index)
    resp = post(client, "/api/judgment", origin=None, headers={"Referer": BASE + "/"},
                json={"query": "q", "row": 0, "label": "relevant"})
    assert resp.status_code == 200


# --- judgments and clicks --------------------------------------------------------------------


def test_judgments_round_trip_through_the_cli(indexed):
    index, photos = indexed
    client = client_for(index)
    dog = row_of(index, "dog.jpg")
    query = search(client, row=dog, k=3).json()
    copy = next(r for r in query["results"] if r["path"] == "dog-copy.jpg")
    ok_resp = post(client, "/api/judgment", json={"query": query["query"], "row": copy["row"], "label": "relevant"})
    assert ok_resp.status_code == 200, ok_resp.text
    bad = post(client, "/api/judgment", json={"query": query["query"], "row": copy["row"], "label": "maybe"})
    assert bad.status_code == 400 and "label" in bad.json()["error"]
    listed = json.loads(ok(cli("judgments", "--index-dir", index.index_dir, "-f", "json")).stdout)
    assert len(listed) == 1
    assert listed[0]["relevant"] is True and listed[0]["result_path"] == "dog-copy.jpg"
    assert listed[0]["source"] == "page" and listed[0]["grade"] == 1
    assert listed[0]["rank"] == next(r["rank"] for r in query["results"] if r["row"] == copy["row"])
    digest = file_digest((photos / "dog-copy.jpg").read_bytes())
    assert listed[0]["result"] == digest
    assert listed[0]["query"] == file_digest((photos / "dog.jpg").read_bytes())
    csv_out = ok(cli("judgments", "--index-dir", index.index_dir, "-f", "csv")).stdout
    assert csv_out.splitlines()[0] == "time,relevant,grade,rank,source,query,result,result_path"
    assert "dog-copy.jpg" in csv_out
    fails(cli("judgments", "--index-dir", index.index_dir, "-f", "paths"), "not paths")
    fails(cli("judgments", "--index-dir", index.index_dir / "typo"), "index")


def test_impressions_and_clicks_are_logged_with_rank(indexed):
    index, _ = indexed
    client = client_for(index)
    got = search(client, row=0, k=3).json()
    shown = [{"row": r["row"], "rank": r["rank"]} for r in got["results"]]
    # Impressions are logged as the search answers: the page posts clicks only.
    assert post(client, "/api/event", json={"kind": "impression", "query": got["query"], "results": shown}).status_code == 400
    post(client, "/api/event", json={"kind": "click", "query": got["query"], "results": shown[1:2]})
    (logged,) = read_click_log(index.index_dir)  # the search logged its impressions; the page's post adds none
    assert logged.query_id == got["query_id"] and len(logged.shown) == 3 and logged.clicked == {2}
    assert post(client, "/api/event", json={"kind": "hover", "query": "q", "results": shown}).status_code == 400


def test_the_page_shows_a_swapped_pair_on_its_share_of_searches(indexed):
    index, _ = indexed
    client = client_for(index, swap_fraction=1.0)
    plain = [h.row for h in index.query(queries=index.root / "dog.jpg", k=4)]
    got = search(client, row=plain[0], k=4).json()
    (logged,) = read_click_log(index.index_dir)
    k = logged.swapped
    assert k in (1, 2, 3)
    expected = plain[:k - 1] + [plain[k], plain[k - 1]] + plain[k + 1:]
    assert [r["row"] for r in got["results"]] == expected and [r["rank"] for r in got["results"]] == [1, 2, 3, 4]


# --- binding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_need_no_flag(host):
    assert web.check_host(host, allow_remote=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com"])
def test_other_hosts_need_allow_remote_and_warn(host):
    with pytest.raises(VsearchError, match="--allow-remote"):
        web.check_host(host, allow_remote=False)
    assert "warning" in web.check_host(host, allow_remote=True)


def test_serve_defaults_to_loopback_and_refuses_a_remote_host_without_the_flag(built, monkeypatch):
    served = []
    monkeypatch.setattr(web, "serve", lambda index, host, port, **kw: served.append((host, port, index.count)))
    ok(cli("serve"))
    assert served == [("127.0.0.1", 8000, 6)]
    fails(cli("serve", "--host", "0.0.0.0"), "--allow-remote")
    result = ok(cli("serve", "--host", "0.0.0.0", "--allow-remote", "--port", "9000"))
    assert "warning: serving on 0.0.0.0" in result.stderr and served[-1][:2] == ("0.0.0.0", 9000)


# --- no torch on the request path, checked in a fresh process ----------------------------------

_SERVE_AND_REPORT = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
{register}
import vsearch
from starlette.testclient import TestClient
from vsearch.serve import app as web
with vsearch.open_index({index!r}, device="cpu") as index:
    client = TestClient(web.create_app(index), base_url="http://127.0.0.1")
    token = client.get("/").cookies["vsearch_csrf"]
    before = "torch" in sys.modules
    resp = client.post("/api/search?k=3", content=Path({upload!r}).read_bytes(),
                       headers={{"X-CSRF-Token": token, "Origin": "http://127.0.0.1"}})
    assert resp.status_code == 200, resp.text
    headers = {{"X-CSRF-Token": token, "Origin": "http://127.0.0.1"}}
    assert client.post("/api/search", params={{"row": 0}}, headers=headers).status_code == 200
    assert client.get(resp.json()["results"][0]["thumb"]).status_code == 200
    # the near level verifies with OpenCV, not torch
    assert client.post("/api/duplicates", json={{}}, headers=headers).status_code == 200
    print(before, "torch" in sys.modules, "onnxruntime" in sys.modules, resp.json()["results"][0]["path"])
"""

_FAKE = ("from tests.conftest import FakeEmbedder\nfrom vsearch.models import loading as models\n"
         "models.register('fake', lambda n, d, t: FakeEmbedder('fake'))")


def _serve_in_subprocess(index_dir, upload, register: str = "") -> list[str]:
    import subprocess

    from tests.conftest import REPO

    code = _SERVE_AND_REPORT.format(repo=str(REPO), register=register, index=str(index_dir), upload=str(upload))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_requests_in_a_fresh_server_process_import_no_torch(indexed, tmp_path):
    index, _ = indexed
    before, after, _, best = _serve_in_subprocess(index.index_dir, tmp_path / "work" / "new.jpg", _FAKE)
    assert (before, after, best) == ("False", "False", "beach/b7.jpg")


@pytest.mark.slow
def test_an_upload_is_embedded_through_onnx_without_torch_with_the_real_model(tmp_path):
    from tests.conftest import SAMPLE_IMAGES

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))[:8]:
        (photos / p.name).write_bytes(p.read_bytes())
    vsearch.build_index(photos, index_dir=tmp_path / "idx").close()
    upload = tmp_path / "upload.jpg"
    Image.open(photos / "chelsea.jpg").resize((300, 200)).save(upload, quality=70)
    before, after, onnx, best = _serve_in_subprocess(tmp_path / "idx", upload)
    assert (before, after, onnx, best) == ("False", "False", "True", "chelsea.jpg")


class Served:
    """``vsearch serve ARGS`` in a subprocess; its stderr lines are read as they come (a thread)."""

    def __init__(self, index_dir, *args: str) -> None:
        import os
        import queue
        import subprocess
        import threading

        from tests.conftest import REPO

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "vsearch", "serve", "--index-dir", str(index_dir), *args],
                                     env=env, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.said: list[str] = []

        def read() -> None:
            for line in self.proc.stderr:  # type: ignore[union-attr]
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=read, daemon=True).start()

    def url(self, timeout: float = 60) -> str | None:
        """The address the command says it serves at, or None when it ended without saying one."""
        import re

        while (line := self.lines.get(timeout=timeout)) is not None:
            self.said.append(line)
            if found := re.search(r" at (http://\S+/);", line):
                return found[1]
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=20)


def _page_answers(url: str) -> None:
    """The page at ``url`` loads, and a search (a POST with its token, same origin) answers."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and "vsearch" in page.text
        token = page.cookies[web.CSRF_COOKIE]
        got = client.post("/api/search", params={"row": 0, "k": 3},
                          headers={"X-CSRF-Token": token, "Origin": url.rstrip("/")})
        assert got.status_code == 200, got.text
        assert len(got.json()["results"]) == 3


def test_vsearch_serve_starts_uvicorn_on_loopback_and_answers(built):
    """The real command in a subprocess: it listens on 127.0.0.1 on the free port --port 0 picked,
    prints that address (not port 0), serves the page and searches."""
    served = Served(built, "--port", "0")
    try:
        url = served.url()
        assert url is not None, served.said
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        _page_answers(url)
    finally:
        served.stop()


def test_a_port_in_use_is_one_error_line_exit_1_and_no_serving_line(built):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = Served(built, "--port", str(port))
        assert served.url() is None
        assert served.stop() == 1
    assert served.said == [f"error: port {port} is in use: --port 0 picks a free one\n"]


@pytest.mark.parametrize("host", ["[::1]", "::1"])
def test_an_ipv6_loopback_host_is_served_at_its_bracketed_address(built, host):
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    served = Served(built, "--host", host, "--port", "0")
    try:
        url = served.url()
        assert url is not None and url.startswith("http://[::1]:"), served.said
        _page_answers(url)
    finally:
        served.stop()


def test_a_click_by_query_id_and_a_judgment_are_logged_at_the_rank_shown_after_a_swap(indexed):
    index, _ = indexed
    client = client_for(index, swap_fraction=1.0)
    got = search(client, row=0, k=2).json()  # two results: ranks 1 and 2 swap
    (logged,) = read_click_log(index.index_dir)
    assert logged.swapped == 1 and logged.original_rank == (2, 1)
    second = got["results"][1]
    assert post(client, "/api/event", json={"kind": "click", "query": got["query"], "query_id": got["query_id"],
                                            "results": [{"row": second["row"], "rank": 2}]}).json() == {"logged": 1}
    assert read_click_log(index.index_dir)[0].clicked == {2}
    post(client, "/api/judgment", json={"query": got["query"], "row": second["row"], "label": "not-relevant"})
    (judged,) = read_judgments(index.index_dir)
    assert (judged.relevant, judged.grade, judged.rank, judged.source) == (False, 0, 2, "page")


def test_judgments_and_clicks_survive_a_rebuild(built, photos):
    from vsearch.learning.clicks import log_click, log_impressions
    from vsearch.learning.judgments import record_judgment

    record_judgment(built, "q", "r", True)
    shown = log_impressions(built, "q", ["r", "s"], swap_fraction=0)
    log_click(built, shown.query_id, "s")
    ok(cli("build-index", photos, "--model", "fake", "-q", "--rebuild"))
    assert [j.label for j in read_judgments(built)] == ["relevant"]
    assert [q.clicked for q in read_click_log(built)] == [{2}]


def test_an_upload_never_lands_in_the_photo_folder_even_when_tmpdir_is_there(indexed, tmp_path, monkeypatch):
    import tempfile

    index, photos = indexed
    monkeypatch.setenv("TMPDIR", str(photos))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    seen = []
    real_query = index.query
    monkeypatch.setattr(index, "query", lambda **kw: seen.append(kw["queries"]) or real_query(**kw))
    client = client_for(index)
    resp = post(client, "/api/search", content=(tmp_path / "work" / "new.jpg").read_bytes())
    assert resp.status_code == 200, resp.text
    assert seen and not seen[0].resolve().is_relative_to(photos.resolve())
    assert not list(photos.glob("vsearch-upload-*")) and not list(index.index_dir.glob("vsearch-upload-*"))


def test_thumbnails_of_one_digest_made_at_once_all_succeed(tmp_path):
    """Two indexed files with the same bytes share one thumbnail: the page asks for both at once."""
    import threading

    image = make_photo(tmp_path / "p.jpg", size=(1600, 1200))
    digest = file_digest(image.read_bytes())
    (tmp_path / "idx").mkdir()
    cache = ThumbCache(tmp_path / "idx")
    barrier, got, errors = threading.Barrier(8), [], []

    def fetch():
        barrier.wait()
        try:
            got.append(cache.get(image, digest))
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(got) == 8 and len(set(got)) == 1


def test_a_thumbnail_is_made_only_from_bytes_with_its_digest(tmp_path):
    """The cache keys a thumbnail by content: bytes that do not have the digest asked for (a file
    edited after the caller checked it) make none, so no picture is ever stored under another's name."""
    image = make_photo(tmp_path / "p.jpg")
    other = file_digest(make_photo(tmp_path / "q.jpg", seed=3).read_bytes())
    (tmp_path / "idx").mkdir()
    cache = ThumbCache(tmp_path / "idx")
    with pytest.raises(LookupError):
        cache.get(image, other)
    assert cache.size() == 0 and cache._making == {}
    assert cache.get(image, file_digest(image.read_bytes()))[:2] == b"\xff\xd8"
