"""What the CLI shows: ``vsearch info`` on an index, and the HTML gallery's links and title.

Through the real CLI (in-process) with the fast ``fake`` model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import make_photo
from tests.helpers import cli, fails, ok


PHOTOS = 5
TREES = 3


@pytest.fixture
def photos(photos) -> Path:
    """The shared five photos and one file that is not a picture."""
    (photos / "broken.jpg").write_bytes(b"not a picture")
    return photos


def info_json(*args: object) -> dict:
    return json.loads(ok(cli("info", "-f", "json", *args)).stdout)


def test_info_describes_the_index(built, photos):
    meta = json.loads((built / "meta.json").read_text())
    info = info_json()
    assert info["index"] == str(built.resolve())
    assert (info["model"], info["dim"], info["pooling"]) == ("fake", 48, "avg")
    assert info["framing"] == "squash 32px"
    assert info["folder"] == str(photos)
    assert (info["images"], info["skipped"]) == (5, 1)
    assert (info["generation"], info["updated"]) == (meta["generation"], meta["updated"])
    assert info["annoy_trees"] == 3
    assert info["freshness"] == "up to date"
    assert info["vectors_bytes"] == (built / meta["vectors"]).stat().st_size
    assert info["ann_bytes"] == (built / meta["ann"]["file"]).stat().st_size
    assert info["manifest_bytes"] >= (built / "manifest.sqlite").stat().st_size > 0
    on_disk = sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
    assert info["total_bytes"] == on_disk
    assert on_disk >= info["vectors_bytes"] + info["ann_bytes"] + info["manifest_bytes"]


def test_info_table_and_another_index_dir(built, photos, tmp_path, fake_model):
    other = tmp_path / "other"
    ok(cli("embed", photos, "--model", "fake", "-q", "--index-dir", other))
    info = info_json("--index-dir", other)
    assert info["index"] == str(other.resolve()) and info["annoy_trees"] is None and info["ann_bytes"] == 0
    table = ok(cli("info")).stdout
    assert re.search(r"│ images\s+│ 5\s+│", table)
    assert re.search(r"│ vectors_bytes\s+│ \d+(\.\d)? (bytes|KB)\s+│", table)
    assert str(photos) in table


def test_info_says_when_the_folder_changed(built, photos):
    make_photo(photos / "new.jpg", seed=50)
    assert "changed since the index was built" in info_json()["freshness"]


def test_info_errors_are_one_line(built, tmp_path):
    fails(cli("info", "--index-dir", tmp_path / "none"), "no index at")
    fails(cli("info", "-f", "paths"), "info prints one record: use --format table or json")


# --- HTML gallery -------------------------------------------------------------------------


def test_gallery_thumbnails_link_to_their_files_and_the_title_names_the_query(built, photos, tmp_path):
    page = tmp_path / "gallery.html"
    ok(cli("query", photos / "p0.jpg", "--not", photos / "p4.jpg", "-k", "3", "--html", page, "-q"))
    text = page.read_text()
    assert re.search(r"<title>vsearch: p0\.jpg, not p4\.jpg</title>", text)
    links = re.findall(r'<a href="([^"]+)"><img ', text)
    hits = [Path(p) for p in ok(cli("query", photos / "p0.jpg", "--not", photos / "p4.jpg", "-k", "3",
                                    "-f", "paths")).stdout.splitlines()]
    # query, negative, then each result, in order, each to its absolute file.
    assert links == [(photos / "p0.jpg").as_uri(), (photos / "p4.jpg").as_uri(), *(h.as_uri() for h in hits)]


def test_gallery_links_are_absolute_and_escaped_for_a_relative_query(built, photos, tmp_path, monkeypatch):
    odd = photos / "a #1 & b.jpg"
    odd.write_bytes((photos / "p1.jpg").read_bytes())
    monkeypatch.chdir(photos)
    ok(cli("query", odd.name, "-k", "1", "--html", tmp_path / "g.html", "-q"))
    text = (tmp_path / "g.html").read_text()
    assert f'<a href="{odd.as_uri().replace("&", "&amp;")}">' in text
    assert "file:///" in text and "%23" in text and "<title>vsearch: a #1 &amp; b.jpg</title>" in text
