"""The duplicates page of ``vsearch serve`` (TestClient): groups from the library, a keeper a person
picks, "not a duplicate", moving or trashing the copies through the undo-logged actions, undo,
and the guards on every POST that changes files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import vsearch  # noqa: E402
from tests.helpers import cli, ok  # noqa: E402
from tests.test_actions import index_rows, plant_copies, tree_bytes  # noqa: E402
from tests.test_serve import client_for, post  # noqa: E402
from vsearch.api import choose_keeper  # noqa: E402
from vsearch.errors import VsearchError  # noqa: E402

#: The groups of the fixture: a re-encoded copy of p1 and a half-size PNG of p2 (as tests/test_actions.py).
GROUPS = [["p1.jpg", "p1_copy.jpg"], ["p2.jpg", "sub/p2_small.png"]]
FIND = {"threshold": "0.98"}


@pytest.fixture
def lib(tmp_path, fake_model):
    """(index, photos): eight distinct photos and two planted copies, indexed with the fake model."""
    photos = plant_copies(tmp_path / "photos")
    index = vsearch.build_index(photos, index_dir=tmp_path / "idx", model="fake")
    yield index, photos
    index.close()


def groups_of(client, **params) -> list[dict]:
    """The groups as the page asks for them: a POST (finding them can take seconds)."""
    resp = post(client, "/api/duplicates", json={**FIND, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()["groups"]


def names(groups: list[dict]) -> list[list[str]]:
    return sorted(sorted(m["path"] for m in g["members"]) for g in groups)


def group_with(groups: list[dict], path: str) -> dict:
    return next(g for g in groups if any(m["path"] == path for m in g["members"]))


def act_body(group: dict, action: str, keeper: str | None = None, **extra) -> dict:
    """What the page posts to act on ``group`` (keeping the member at path ``keeper``, default the suggested)."""
    chosen = next(m for m in group["members"] if (m["path"] == keeper if keeper else m["keeper"]))
    return {"level": "near", "keep": "default", "threshold": 0.98, "action": action, "keeper": chosen["row"],
            "members": [{"row": m["row"], "digest": m["digest"]} for m in group["members"]], **extra}


# --- the groups ------------------------------------------------------------------------------


def test_the_page_lists_the_groups_with_keeper_size_pixels_level_and_thumbnail(lib):
    index, photos = lib
    client = client_for(index)
    page = client.get("/duplicates")
    assert page.status_code == 200 and client.token in page.text and 'href="/"' in page.text
    assert 'href="/duplicates"' in client.get("/").text  # the search page links to it
    groups = groups_of(client)
    assert names(groups) == GROUPS
    p2 = group_with(groups, "p2.jpg")
    keeper, copy = p2["members"]
    assert (keeper["keeper"], keeper["path"], copy["keeper"], copy["path"]) == (True, "p2.jpg", False, "sub/p2_small.png")
    assert (keeper["pixels"], copy["pixels"]) == (320 * 240, 160 * 120)
    assert copy["bytes"] == (photos / "sub" / "p2_small.png").stat().st_size and copy["format"] == "PNG"
    assert copy["level"] == "near" and 0.98 <= copy["score"] <= 1
    thumb = client.get(copy["thumb"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert client.get(copy["image"]).content == (photos / "sub" / "p2_small.png").read_bytes()


def test_level_and_keep_rule_selectors(lib):
    index, photos = lib
    client = client_for(index)
    assert groups_of(client, level="exact") == []  # no byte-identical files
    (photos / "p5_again.jpg").write_bytes((photos / "p5.jpg").read_bytes())
    with vsearch.build_index(photos, index_dir=index.index_dir, model="fake"):
        pass
    exact = groups_of(client, level="exact")
    assert names(exact) == [["p5.jpg", "p5_again.jpg"]] and exact[0]["level"] == "exact"
    newest = group_with(groups_of(client, keep="newest"), "p2.jpg")
    assert newest["members"][0]["path"] == "sub/p2_small.png" and newest["members"][0]["keeper"]
    for bad, word in (({"level": "close"}, "level"), ({"keep": "best"}, "keep"), ({"threshold": "x"}, "threshold")):
        resp = post(client, "/api/duplicates", json=bad)
        assert resp.status_code == 400 and word in resp.json()["error"]


# --- guards ----------------------------------------------------------------------------------

ENDPOINTS = ["/api/duplicates/act", "/api/duplicates/not-duplicate", "/api/undo"]


def _body(url: str, groups: list[dict], dest: Path) -> dict:
    group = group_with(groups, "p1.jpg")
    if url.endswith("act"):
        return act_body(group, "move", move_to=str(dest))
    if url.endswith("not-duplicate"):
        a, b = group["members"]
        return {"a": {"row": a["row"], "digest": a["digest"]}, "b": {"row": b["row"], "digest": b["digest"]}}
    return {}


def _refused_and_unchanged(lib, tmp_path, url: str, message: str, **request) -> None:
    """POST a valid body to ``url`` with a bad token or origin: 403 naming why, no file changed."""
    index, photos = lib
    client = client_for(index)
    dest = tmp_path / "dest"
    dest.mkdir()
    ok_body = _body(url, groups_of(client), dest)
    before = tree_bytes(photos, index.index_dir, dest)
    resp = post(client, url, json=ok_body, **request)
    assert resp.status_code == 403 and message in resp.json()["error"]
    assert tree_bytes(photos, index.index_dir, dest) == before


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("token", ["", "wrong"])
def test_a_change_without_the_right_csrf_token_is_403_and_changes_nothing(lib, tmp_path, url, token):
    _refused_and_unchanged(lib, tmp_path, url, "CSRF", token=token)


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:9999", None])
def test_a_cross_origin_change_is_403_and_changes_nothing(lib, tmp_path, url, origin):
    _refused_and_unchanged(lib, tmp_path, url, "cross-origin", origin=origin)


def test_changes_need_post(lib):
    index, _ = lib
    client = client_for(index)
    for url in ENDPOINTS:
        assert client.get(url).status_code == 405


# --- moving, the keeper, undo ------------------------------------------------------------------


def test_move_then_undo_restores_every_byte_and_the_index_rows(lib, tmp_path, fake_model):
    index, photos = lib
    client = client_for(index)
    dest = tmp_path / "dest"
    dest.mkdir()
    files, rows, calls = tree_bytes(photos), index_rows(index.index_dir), fake_model.calls
    group = group_with(groups_of(client), "p2.jpg")
    resp = post(client, "/api/duplicates/act", json=act_body(group, "move", move_to=str(dest)))
    assert resp.status_code == 200, resp.text
    assert resp.json()["moved"] == 1 and "1 file moved to" in resp.json()["message"]
    assert not (photos / "sub" / "p2_small.png").exists()
    assert (dest / "sub" / "p2_small.png").read_bytes() == files[str(photos / "sub" / "p2_small.png")]
    assert names(groups_of(client)) == [GROUPS[0]]  # the index followed the move
    assert "sub/p2_small.png" not in index_rows(index.index_dir)
    # The same undo log as the CLI's: `vsearch undo` would reverse it too.
    (log,) = (index.index_dir / "undo").iterdir()
    assert resp.json()["log"] == str(log) and json.loads(log.read_text().splitlines()[0])["format"] == "vsearch-undo"

    undone = post(client, "/api/undo", json={})
    assert undone.status_code == 200 and undone.json()["restored"] == 1
    assert tree_bytes(photos) == files and not [p for p in dest.rglob("*") if p.is_file()]
    assert index_rows(index.index_dir) == rows and fake_model.calls == calls  # nothing embedded
    assert names(groups_of(client)) == GROUPS
    again = post(client, "/api/undo", json={})
    assert again.status_code == 400 and "nothing to undo" in again.json()["error"]


def test_a_keeper_the_person_picks_stays_and_the_suggested_one_moves(lib, tmp_path):
    index, photos = lib
    client = client_for(index)
    dest = tmp_path / "dest"
    dest.mkdir()
    group = group_with(groups_of(client), "p1.jpg")
    assert group["members"][0]["path"] == "p1.jpg"  # suggested: the larger file
    resp = post(client, "/api/duplicates/act", json=act_body(group, "move", keeper="p1_copy.jpg", move_to=str(dest)))
    assert resp.status_code == 200, resp.text
    assert (photos / "p1_copy.jpg").exists() and not (photos / "p1.jpg").exists() and (dest / "p1.jpg").is_file()


def test_a_keeper_outside_the_group_is_refused(lib, tmp_path):
    index, photos = lib
    client = client_for(index)
    groups = groups_of(client)
    body = act_body(group_with(groups, "p1.jpg"), "trash")
    body["keeper"] = group_with(groups, "p2.jpg")["members"][0]["row"]
    before = tree_bytes(photos)
    resp = post(client, "/api/duplicates/act", json=body)
    assert resp.status_code == 400 and "keeper" in resp.json()["error"]
    assert tree_bytes(photos) == before


def test_a_group_that_changed_since_the_page_showed_it_is_409(lib, tmp_path):
    index, photos = lib
    client = client_for(index)
    dest = tmp_path / "dest"
    dest.mkdir()
    group = group_with(groups_of(client), "p1.jpg")
    forged = act_body(group, "move", move_to=str(dest))
    forged["members"].append({"row": 0, "digest": "0" * 32})  # a member the group does not have
    before = tree_bytes(photos)
    resp = post(client, "/api/duplicates/act", json=forged)
    assert resp.status_code == 409 and "changed" in resp.json()["error"]
    assert tree_bytes(photos) == before


def test_trash_then_undo(lib, trash, fake_model):
    index, photos = lib
    client = client_for(index)
    files, rows, calls = tree_bytes(photos), index_rows(index.index_dir), fake_model.calls
    group = group_with(groups_of(client), "p1.jpg")
    resp = post(client, "/api/duplicates/act", json=act_body(group, "trash"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["trashed"] == 1 and "sent to the trash" in resp.json()["message"]
    assert not (photos / "p1_copy.jpg").exists()
    assert [p.name for p in (trash / "files").iterdir()] == ["p1_copy.jpg"]
    assert post(client, "/api/undo", json={}).status_code == 200
    assert tree_bytes(photos) == files and index_rows(index.index_dir) == rows and fake_model.calls == calls
    assert not list((trash / "files").iterdir())


@pytest.mark.parametrize("where", ["index", "indexsub", "file", "missing", "relative", "empty", "root-parent",
                                   "long-name", "long-path"])
def test_bad_move_folders_are_refused_and_change_nothing(lib, tmp_path, where):
    index, photos = lib
    client = client_for(index)
    (index.index_dir / "sub").mkdir()
    folder = {"index": str(index.index_dir), "indexsub": str(index.index_dir / "sub"),
              "file": str(photos / "p3.jpg"), "missing": str(tmp_path / "nowhere"), "relative": "dest",
              "empty": "  ", "root-parent": str(tmp_path), "long-name": "/" + "a" * 300,
              "long-path": "/a" * 3000}[where]
    group = group_with(groups_of(client), "p1.jpg")
    before = tree_bytes(photos, index.index_dir)
    resp = post(client, "/api/duplicates/act", json=act_body(group, "move", move_to=folder))
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]
    expected = {"index": "index folder", "indexsub": "index folder", "file": "is a file", "missing": "does not exist",
                "relative": "full path", "empty": "type the folder", "root-parent": "holds the indexed folder",
                "long-name": "too long", "long-path": "too long"}[where]
    assert expected in message
    assert tree_bytes(photos, index.index_dir) == before


def test_bad_action_bodies_are_400(lib):
    index, _ = lib
    client = client_for(index)
    group = group_with(groups_of(client), "p1.jpg")
    for body, word in (({**act_body(group, "trash"), "action": "delete"}, "action"),
                       ({**act_body(group, "trash"), "members": "all"}, "members"),
                       ({**act_body(group, "trash"), "keeper": "x"}, "keeper")):
        resp = post(client, "/api/duplicates/act", json=body)
        assert resp.status_code == 400 and word in resp.json()["error"]


# --- not a duplicate -------------------------------------------------------------------------


def test_not_a_duplicate_is_recorded_and_the_groups_reload_without_the_pair(lib):
    index, photos = lib
    client = client_for(index)
    a, b = group_with(groups_of(client), "p1.jpg")["members"]
    resp = post(client, "/api/duplicates/not-duplicate",
                json={"a": {"row": a["row"], "digest": a["digest"]}, "b": {"row": b["row"], "digest": b["digest"]}})
    assert resp.status_code == 200 and resp.json() == {"recorded": True}
    assert names(groups_of(client)) == [GROUPS[1]]
    # The library's own record: the CLI keeps them apart as well.
    listed = json.loads(ok(cli("duplicates", "--index-dir", index.index_dir, "--threshold", "0.98", "-f", "json",
                               "-q")).stdout)
    assert {Path(m["path"]).name for m in listed} == {"p2.jpg", "p2_small.png"}
    stale = post(client, "/api/duplicates/not-duplicate",
                 json={"a": {"row": a["row"], "digest": "0" * 32}, "b": {"row": b["row"], "digest": b["digest"]}})
    assert stale.status_code == 409


# --- the library function the page needs --------------------------------------------------------


def test_choose_keeper_puts_the_chosen_member_first(lib):
    index, photos = lib
    (group,) = [g for g in index.duplicates(0.98) if g.keeper.path.name == "p2.jpg"]
    swapped = choose_keeper(group, photos / "sub" / "p2_small.png")
    assert [m.path.name for m in swapped] == ["p2_small.png", "p2.jpg"]
    assert [m.keeper for m in swapped] == [True, False]
    assert swapped.members[1].score == group.members[1].score and swapped.keeper.score == 1.0
    assert choose_keeper(group, photos / "p2.jpg") is group
    with pytest.raises(VsearchError, match="not in duplicate group"):
        choose_keeper(group, photos / "p1.jpg")
    (action,) = index.plan_actions([swapped], trash=True)
    assert action.source == photos / "p2.jpg" and action.keeper == photos / "sub" / "p2_small.png"



def test_groups_are_found_once_per_commit_and_marks(lib, monkeypatch, tmp_path):
    """Near duplicates take long to find: the page keeps them until the index commits or a mark is added."""
    index, photos = lib
    calls = []
    real = index.duplicates
    monkeypatch.setattr(index, "duplicates", lambda *a, **kw: calls.append(kw["level"]) or real(*a, **kw))
    client = client_for(index)
    first = groups_of(client)
    assert groups_of(client) == first and groups_of(client, level="exact") == [] and groups_of(client) == first
    assert calls == ["near", "exact"]  # back to near: remembered
    group = group_with(first, "p1.jpg")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert post(client, "/api/duplicates/act", json=act_body(group, "move", move_to=str(dest))).status_code == 200
    assert calls == ["near", "exact"]  # acted on the remembered groups
    assert names(groups_of(client)) == [GROUPS[1]] and calls[-1] == "near"  # the commit: found again
    a, b = group_with(groups_of(client), "p2.jpg")["members"]
    post(client, "/api/duplicates/not-duplicate",
         json={"a": {"row": a["row"], "digest": a["digest"]}, "b": {"row": b["row"], "digest": b["digest"]}})
    assert groups_of(client) == [] and len(calls) == 4  # the mark: found again
    groups_of(client, fresh=True)
    assert len(calls) == 5  # the "Find duplicates" button looks again anyway


# --- pictures are named by content: no renumbering shows one file's picture under another's name ----


class BrowserCache:
    """A browser's HTTP cache, as far as these answers go: a GET whose answer allows caching
    (``Cache-Control: max-age`` above 0, no ``no-store``) is answered from the cache next time."""

    def __init__(self, client) -> None:
        self.client = client
        self.kept: dict[str, bytes] = {}

    def get(self, url: str) -> bytes | None:
        import re

        if url in self.kept:
            return self.kept[url]
        resp = self.client.get(url)
        if resp.status_code != 200:
            return None
        rules = resp.headers.get("cache-control", "")
        if "no-store" not in rules and re.search(r"max-age=[1-9]", rules):
            self.kept[url] = resp.content
        return resp.content


def _pixels(data: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def _shown_everywhere(client, index) -> list[dict]:
    """Every picture the page shows: the members of each group, and a search over every image."""
    results = post(client, "/api/search", params={"row": 0, "k": len(index)}).json()["results"]
    return [m for g in groups_of(client) for m in g["members"]] + results


def test_after_a_move_every_thumbnail_shown_is_the_picture_of_the_file_it_names(lib, tmp_path):
    """A move renumbers the index's rows. The page's answers name pictures by content, so the
    pictures a browser kept from before (the URLs are cacheable) still show the right files."""
    from vsearch.imaging.thumbnails import jpeg_bytes, load_thumbnail

    index, photos = lib
    client = client_for(index)
    browser = BrowserCache(client)
    before = _shown_everywhere(client, index)
    for item in before:  # the page showed them: the browser has them
        assert browser.get(item["thumb"]) is not None and browser.get(item["image"]) is not None
    dest = tmp_path / "dest"
    dest.mkdir()
    group = group_with(groups_of(client), "p1.jpg")
    assert post(client, "/api/duplicates/act", json=act_body(group, "move", move_to=str(dest))).status_code == 200
    after = _shown_everywhere(client, index)
    assert {(m["row"], m["path"]) for m in after} != {(m["row"], m["path"]) for m in before}  # renumbered
    assert len({m["path"] for m in after}) == len(index)
    for item in after:
        path = photos / item["path"]
        shown, made = _pixels(browser.get(item["thumb"])), _pixels(jpeg_bytes(load_thumbnail(path)))
        assert shown.shape == made.shape and abs(shown - made).mean() < 1.0, item["path"]
        assert browser.get(item["image"]) == path.read_bytes(), item["path"]
    for item in before:  # a URL of the moved copy names nothing now
        if item["path"] == "p1_copy.jpg":
            assert client.get(item["thumb"]).status_code == 404 and client.get(item["image"]).status_code == 404


# --- the search in the background, pages of groups, acting on every selected group ---------------


def search_done(client, body: dict | None = None, **params) -> dict:
    """Start the page's search (a POST) and follow it (GETs) until it finished; the last answer."""
    import time

    resp = post(client, "/api/duplicates/search", json={**FIND, **(body or {})})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    deadline = time.monotonic() + 60
    while answer["running"]:
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
        resp = client.get("/api/duplicates/search", params={"id": answer["id"], **params})
        assert resp.status_code == 200, resp.text
        answer = resp.json()
    assert answer["error"] is None and answer["step"] == "done"
    return answer


def test_the_search_runs_in_the_background_and_reports_progress(lib):
    index, _ = lib
    client = client_for(index)
    first = post(client, "/api/duplicates/search", json=FIND).json()
    assert {"id", "step", "done", "total", "verified", "running", "groups", "pages"} <= first.keys()
    done = search_done(client)
    assert done["id"] == first["id"]  # the same query joined the search running
    assert names(done["groups"]) == GROUPS and done["groups_total"] == 2 and done["copies_total"] == 2
    assert done["total"] > 0 and done["done"] == done["total"] and done["verified"] >= 2
    assert sorted(done["all_numbers"]) == [1, 2] and not done["stale"]
    again = search_done(client)  # an unchanged index: the search done is the answer, nothing runs
    assert again["id"] == done["id"] and again["groups"] == done["groups"]
    other = search_done(client, {"level": "exact"})
    back = search_done(client)  # back to near: the groups kept for the unchanged index, nothing runs
    assert other["groups"] == [] and back["id"] != done["id"] and back["seconds"] == 0
    assert back["groups"] == done["groups"]
    fresh = search_done(client, {"fresh": True})  # looked again: every pair's verification remembered
    assert fresh["id"] != back["id"] and fresh["verified"] == 0 and fresh["groups"] == done["groups"]


def test_groups_come_a_page_at_a_time(lib):
    index, _ = lib
    client = client_for(index)
    one = search_done(client, per=1)
    assert (one["pages"], len(one["groups"]), one["groups"][0]["number"]) == (2, 1, 1)
    second = client.get("/api/duplicates/search", params={"id": one["id"], "page": 2, "per": 1}).json()
    assert second["groups"][0]["number"] == 2 and names(one["groups"] + second["groups"]) == GROUPS
    assert client.get("/api/duplicates/search", params={"page": 3, "per": 1}).json()["groups"] == []
    for bad in ({"page": 0}, {"per": 0}, {"per": 100_000}, {"page": "x"}, {"page": "1e999"}):
        resp = client.get("/api/duplicates/search", params=bad)
        assert resp.status_code == 400 and "error" in resp.json(), bad
    assert client.get("/api/duplicates/search", params={"id": "another"}).status_code == 409


def test_following_before_any_search_is_404(lib):
    index, _ = lib
    resp = client_for(index).get("/api/duplicates/search")
    assert resp.status_code == 404 and "find the duplicates" in resp.json()["error"]


def test_the_keep_rule_picks_the_keeper_of_every_group(lib):
    index, _ = lib
    client = client_for(index)
    newest = search_done(client, {"keep": "newest"})
    assert group_with(newest["groups"], "p2.jpg")["members"][0]["path"] == "sub/p2_small.png"
    assert newest["keep"] == "newest"


def test_apply_to_every_selected_group_writes_one_undo_log_and_undo_puts_all_back(lib, tmp_path, fake_model):
    index, photos = lib
    client = client_for(index)
    dest = tmp_path / "dest"
    dest.mkdir()
    before = tree_bytes(photos)
    done = search_done(client)
    p2 = group_with(done["groups"], "p2.jpg")
    small = next(m for m in p2["members"] if m["path"] == "sub/p2_small.png")
    from vsearch.duplicates.actions import undo_logs

    logs = set(undo_logs(index.index_dir))
    resp = post(client, "/api/duplicates/apply", json={"search": done["id"], "action": "move", "move_to": str(dest),
                                                      "groups": "all", "keepers": {str(p2["number"]): small["row"]}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["moved"] == 2 and "one undo log" in resp.json()["message"]
    (log,) = set(undo_logs(index.index_dir)) - logs  # one log for both groups
    assert resp.json()["log"] == str(log)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == ["p1_copy.jpg", "p2.jpg"]
    assert (photos / "sub" / "p2_small.png").is_file() and not (photos / "p2.jpg").exists()
    assert (dest / "p2.jpg").read_bytes() == before[str(photos / "p2.jpg")]
    assert (dest / "p1_copy.jpg").read_bytes() == before[str(photos / "p1_copy.jpg")]
    after = search_done(client)
    assert after["groups"] == [] and after["id"] != done["id"]  # the commit: found again
    # The old search names groups that are gone: refused, nothing changes.
    stale = post(client, "/api/duplicates/apply", json={"search": done["id"], "action": "trash", "groups": "all"})
    assert stale.status_code == 409
    undone = post(client, "/api/undo", json={})
    assert undone.status_code == 200 and undone.json()["restored"] == 2
    assert tree_bytes(photos) == before and not [p for p in dest.rglob("*") if p.is_file()]
    assert names(search_done(client)["groups"]) == GROUPS


def test_apply_to_some_groups_acts_on_those_only(lib, trash):
    index, photos = lib
    client = client_for(index)
    before = tree_bytes(photos)
    done = search_done(client)
    p1 = group_with(done["groups"], "p1.jpg")
    resp = post(client, "/api/duplicates/apply", json={"search": done["id"], "action": "trash", "groups": [p1["number"]]})
    assert resp.status_code == 200 and resp.json()["trashed"] == 1
    assert not (photos / "p1_copy.jpg").exists() and (photos / "sub" / "p2_small.png").is_file()
    assert post(client, "/api/undo", json={}).json()["restored"] == 1
    assert tree_bytes(photos) == before


@pytest.mark.parametrize("body, word", [
    ({"action": "burn", "groups": "all"}, "action"),
    ({"action": "trash", "groups": "some"}, "groups"),
    ({"action": "trash", "groups": []}, "groups"),
    ({"action": "trash", "groups": [99]}, "group number"),
    ({"action": "trash", "groups": [True]}, "group number"),
    ({"action": "trash", "groups": "all", "keepers": []}, "keepers"),
    ({"action": "trash", "groups": "all", "keepers": {"1": 10_000}}, "keeper"),
    ({"action": "trash", "groups": "all", "keepers": {"x": 1}}, "group number"),
    ({"action": "move", "groups": "all", "move_to": "relative/dir"}, "full path"),
    ({"action": "move", "groups": "all"}, "folder"),
])
def test_bad_apply_bodies_are_400_and_change_nothing(lib, body, word):
    index, photos = lib
    client = client_for(index)
    done = search_done(client)
    before = tree_bytes(photos, index.index_dir)
    resp = post(client, "/api/duplicates/apply", json={"search": done["id"], **body})
    assert resp.status_code == 400 and word in resp.json()["error"], resp.text
    assert tree_bytes(photos, index.index_dir) == before


def test_apply_names_the_search_it_acts_on(lib):
    index, photos = lib
    client = client_for(index)
    search_done(client)
    before = tree_bytes(photos)
    resp = post(client, "/api/duplicates/apply", json={"search": "not-this-one", "action": "trash", "groups": "all"})
    assert resp.status_code == 409 and tree_bytes(photos) == before


def test_explain_a_pair_as_the_cli_does(lib):
    index, photos = lib
    client = client_for(index)
    p2 = group_with(search_done(client)["groups"], "p2.jpg")
    a, b = ({"row": m["row"], "digest": m["digest"]} for m in p2["members"])
    resp = post(client, "/api/duplicates/explain", json={"a": a, "b": b, "level": "near", "threshold": 0.98})
    assert resp.status_code == 200, resp.text
    why = resp.json()
    cli_says = index.explain(photos / "p2.jpg", photos / "sub" / "p2_small.png", level="near", threshold=0.98)
    assert (why["a"], why["b"], why["level"], why["why"]) == ("p2.jpg", "sub/p2_small.png", cli_says.level, cli_says.why)
    assert [c["test"] for c in why["checks"]] == [c.test for c in cli_says.checks]
    assert why["taken"] == [None, None]
    for bad in ({"a": a, "b": a}, {"a": a}, {"a": a, "b": {"row": "x", "digest": "y"}}, {"a": a, "b": b, "level": "far"},
                {"a": a, "b": b, "threshold": 7}):
        resp = post(client, "/api/duplicates/explain", json=bad)
        assert resp.status_code == 400 and "error" in resp.json(), bad
    gone = post(client, "/api/duplicates/explain", json={"a": a, "b": {"row": b["row"], "digest": "0" * 16}})
    assert gone.status_code == 409


@pytest.mark.parametrize("body, word", [({"level": "close"}, "level"), ({"keep": "best"}, "keep"),
                                        ({"threshold": "x"}, "threshold"), ({"threshold": 2}, "threshold"),
                                        ({"fresh": "yes"}, "fresh")])
def test_bad_search_bodies_are_400(lib, body, word):
    index, _ = lib
    resp = post(client_for(index), "/api/duplicates/search", json=body)
    assert resp.status_code == 400 and word in resp.json()["error"]


@pytest.mark.parametrize("url", ["/api/duplicates/search", "/api/duplicates/apply", "/api/duplicates/explain"])
def test_the_new_posts_need_the_csrf_token_and_the_same_origin(lib, url):
    index, photos = lib
    client = client_for(index)
    before = tree_bytes(photos)
    assert post(client, url, json={}, token="wrong").status_code == 403
    assert post(client, url, json={}, origin="http://evil.example").status_code == 403
    assert tree_bytes(photos) == before


def test_a_new_search_stops_the_one_running(lib):
    """Moving the slider starts a search per position: each stops the one before (one at a time)."""
    index, _ = lib
    client = client_for(index)
    page = client.app.state.page
    first = post(client, "/api/duplicates/search", json={**FIND, "fresh": True}).json()
    second = search_done(client, {"threshold": 0.97})
    running = page.searches.current
    assert running.id == second["id"] and running.query.threshold == 0.97
    old = client.get("/api/duplicates/search", params={"id": first["id"]})
    assert old.status_code == 409 or first["id"] == second["id"]


# --- what the page asks of the library: steps, groups as they settle, remembered verifications ----


def test_duplicates_reports_steps_and_each_group_as_it_settles(lib):
    index, _ = lib
    steps: list[tuple[str, int, int]] = []
    early: list = []
    groups = index.duplicates(0.98, step=lambda *s: steps.append(s), found=early.append)
    assert sorted(sorted(m.path.relative_to(index.root).as_posix() for m in g) for g in groups) == GROUPS
    names_of = [s[0] for s in steps]
    assert names_of[0] == "compare" and names_of[-1] == "group" and names_of == sorted(names_of)  # compare, then group
    grouped = [s[1] for s in steps if s[0] == "group"]  # after each connected part of the candidates
    assert steps[-1][1] == steps[-1][2] and grouped == sorted(set(grouped)) and grouped[0] > 0
    # the same groups, settled before they were ordered by size and numbered
    assert sorted(tuple(m.row for m in g) for g in early) == sorted(tuple(m.row for m in g) for g in groups)


def test_remembered_verifications_give_the_same_groups_and_are_not_asked_again(lib, monkeypatch):
    from vsearch.imaging import verify

    index, _ = lib
    calls = []
    real = verify.Verifier.verify
    monkeypatch.setattr(verify.Verifier, "verify", lambda self, a, b: calls.append((a, b)) or real(self, a, b))
    verdicts: dict = {}
    first = index.duplicates(0.98, verdicts=verdicts)
    asked = len(calls)
    assert asked and len(verdicts) == asked
    assert index.duplicates(0.98, verdicts=verdicts) == first and len(calls) == asked  # nothing verified again
    assert index.duplicates(0.98, keep="newest", verdicts=verdicts) == index.duplicates(0.98, keep="newest")
    assert index.duplicates(0.98) == first  # without: the same groups


def test_a_step_that_raises_stops_the_search(lib):
    index, _ = lib

    class Enough(Exception):
        pass

    def stop(name: str, done: int, total: int) -> None:
        if name == "group":
            raise Enough

    with pytest.raises(Enough):
        index.duplicates(0.98, step=stop)
