"""The search page's own routes (``vsearch/serve/searching.py``), without a browser: an upload
kept for its session (``/?upload=DIGEST``), a photo's details for the large view, the verdicts
recorded for a query, the "already in my library?" check, and the page's static files."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import vsearch  # noqa: E402
from tests import test_serve  # noqa: E402
from tests.test_api import make_photos  # noqa: E402
from tests.test_serve import client_for, post, row_of, search  # noqa: E402
from vsearch.serve.searching import UploadStore  # noqa: E402
from vsearch.storage.store import file_digest  # noqa: E402

indexed = test_serve.indexed  # the fixture: photos/ indexed with the fake model


def noise_png(seed: int = 3) -> bytes:
    """A photo no library holds."""
    import numpy as np

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_an_upload_is_kept_for_its_session_and_searched_by_again(indexed):
    index, photos = indexed
    client = client_for(index)
    data = (photos / "cat.jpg").read_bytes()
    first = post(client, "/api/search", params={"k": 3}, content=data).json()
    digest = first["query"]
    assert digest == file_digest(data)
    again = search(client, upload=digest, k=3).json()
    assert again["query"] == digest
    assert [r["path"] for r in again["results"]] == [r["path"] for r in first["results"]]
    shown = client.get(f"/upload/{digest}")
    assert shown.status_code == 200 and shown.content == data and shown.headers["content-type"] == "image/jpeg"
    # Another browser (another session) cannot search by it or see it.
    other = client_for(index)
    assert search(other, upload=digest).status_code == 404
    assert other.get(f"/upload/{digest}").status_code == 404
    assert search(client, upload="0" * 32).status_code == 404
    assert client.get("/upload/not-a-digest").status_code == 404


def test_the_upload_store_is_bounded_per_session_and_in_bytes():
    store = UploadStore(cap_bytes=25, per_session=2)
    for i in range(3):
        store.keep("a", f"d{i}", b"x" * 10)
    assert store.get("a", "d0") is None and store.get("a", "d1") and store.get("a", "d2")
    store.keep("b", "e0", b"y" * 10)  # 30 bytes in all: the least recently used goes
    assert store.get("a", "d1") is None and store.get("a", "d2") and store.get("b", "e0")
    assert store.get("b", "d2") is None  # kept for session a only


@pytest.fixture
def dated(tmp_path, fake_model):
    """The photos plus one with EXIF DateTimeOriginal, indexed with the fake model."""
    photos = make_photos(tmp_path / "work")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2021:07:14 09:30:05"
    Image.open(photos / "dog.jpg").save(photos / "dated.jpg", exif=exif.tobytes())
    index = vsearch.build_index(photos, index_dir=tmp_path / "idx", model="fake")
    yield index, photos
    index.close()


def test_photo_details_by_row_and_by_content(dated):
    index, photos = dated
    client = client_for(index)
    row = row_of(index, "dated.jpg")
    digest = index.entry_of_row(row).digest
    got = client.get("/api/photo", params={"row": row, "digest": digest}).json()
    assert got["path"] == "dated.jpg" and got["bytes"] == (photos / "dated.jpg").stat().st_size
    assert (got["width"], got["height"], got["format"]) == (*Image.open(photos / "dated.jpg").size, "JPEG")
    assert got["taken"] == "2021-07-14T09:30:05"
    assert got["image"] == f"/image/{row}/{digest}" and got["thumb"] == f"/thumb/{row}/{digest}"
    cat = client.get("/api/photo", params={"digest": index.entry_of_row(row_of(index, "cat.jpg")).digest}).json()
    assert cat["path"] == "cat.jpg" and cat["taken"] is None  # no EXIF date: None
    by_content = client.get("/api/photo", params={"digest": digest}).json()
    assert by_content["row"] == row and by_content["path"] == "dated.jpg"
    # Not held: an answer, not an error; a row that holds other content: 404; no digest: 400.
    assert client.get("/api/photo", params={"digest": "0" * 32}).json() == {"row": None, "digest": "0" * 32, "path": None}
    wrong = client.get("/api/photo", params={"row": row_of(index, "cat.jpg"), "digest": digest})
    assert wrong.status_code == 404 and "error" in wrong.json()
    assert client.get("/api/photo", params={"digest": "../x"}).status_code == 400
    assert client.get("/api/photo", params={"row": "x", "digest": digest}).status_code == 400


def test_judged_answers_the_newest_verdict_per_result_of_that_query(indexed):
    index, _ = indexed
    client = client_for(index)
    answer = search(client, row=row_of(index, "cat.jpg"), k=4).json()
    key, results = answer["query"], answer["results"]
    for r, label in [(results[0], "relevant"), (results[1], "relevant"), (results[1], "not-relevant")]:
        assert post(client, "/api/judgment", json={"query": key, "row": r["row"], "label": label}).status_code == 200
    judged = client.get("/api/judged", params={"query": key}).json()["judged"]
    assert judged == {results[0]["digest"]: "relevant", results[1]["digest"]: "not-relevant"}
    assert client.get("/api/judged", params={"query": "text:nothing judged"}).json() == {"judged": {}}
    assert client.get("/api/judged").status_code == 400


def test_library_check_known_new_unreadable_and_nothing_left_behind(indexed, tmp_path):
    index, photos = indexed
    client = client_for(index)
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    count = index.count
    known = post(client, "/api/library-check", content=(photos / "dog.jpg").read_bytes()).json()
    assert known["status"] == "present" and known["level"] == "exact" and known["score"] == 1.0
    assert known["match"]["path"] == "dog.jpg" and known["match"]["thumb"].startswith(f"/thumb/{known['match']['row']}/")
    assert client.get(known["match"]["thumb"]).status_code == 200
    for level in ("exact", "near", "similar"):
        new = post(client, "/api/library-check", params={"level": level}, content=noise_png()).json()
        assert new == {"status": "new", "level": None, "reason": None, "score": None, "match": None}, level
    # Refused: not an image, empty, an unknown level, no token; too large with a small cap.
    assert post(client, "/api/library-check", content=b"not an image").status_code == 400
    assert post(client, "/api/library-check", content=b"").status_code == 400
    assert post(client, "/api/library-check", params={"level": "fuzzy"}, content=noise_png()).status_code == 400
    assert client.post("/api/library-check", content=noise_png()).status_code == 403
    small = client_for(index, max_upload_bytes=1000)
    assert post(small, "/api/library-check", content=noise_png()).status_code == 413
    # Nothing was added to the index or the photos, and no temporary folder is left.
    assert index.count == count and sorted(p.relative_to(photos) for p in photos.rglob("*")) == before
    assert not list(Path(tempfile.gettempdir()).glob("vsearch-check-*"))


def test_the_page_serves_its_own_files_and_nothing_else(indexed):
    index, _ = indexed
    client = client_for(index)
    page = client.get("/").text
    for link in ("/static/style.css", "/static/search.css", "/static/search.js", "/static/favicon.svg"):
        assert link in page
        assert client.get(link).status_code == 200, link
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert "prefers-color-scheme: dark" in client.get("/static/style.css").text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    for bad in ("/static/search.html", "/static/../app.py", "/static/%2e%2e/app.py", "/static/.hidden.css",
                "/static/nope.css", "/static/page.py"):
        resp = client.get(bad)
        assert resp.status_code == 404 and "error" in resp.json(), bad
