"""The page against generated requests (hypothesis): every route, GET and POST (and the other
methods), with the page's CSRF token and without, with generated JSON bodies (deep nesting,
huge and non-finite numbers, wrong types, lone surrogates, bytes that are not UTF-8), query
strings, paths and headers (Host, Origin, the token, the content type).

What must hold for every request: no 500 (a client's input is a 4xx with a JSON ``error``);
an image the page serves is the bytes of an indexed photo and a thumbnail is a JPEG; and no
file appears anywhere but where the page's own actions put one (the copies' folder, the trash),
each with the bytes of an indexed photo.

About a minute in ``make test`` (a fixed seed, so it is repeatable); ``VSEARCH_FUZZ_EXAMPLES=N``
runs N examples per test with fresh random draws.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import vsearch  # noqa: E402
from tests.conftest import FakeEmbedder  # noqa: E402
from tests.test_api import make_photos  # noqa: E402
from vsearch.models import loading as models  # noqa: E402
from vsearch.serve import app as web  # noqa: E402

BASE = "http://127.0.0.1:8000"
#: Examples per test: VSEARCH_FUZZ_EXAMPLES, else a count that keeps the file near a minute.
LARGE = int(os.environ.get("VSEARCH_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=LARGE or 150, deadline=None, database=None, derandomize=not LARGE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])

JSON_ROUTES = ["/api/judgment", "/api/event", "/api/duplicates", "/api/duplicates/act",
               "/api/duplicates/not-duplicate", "/api/undo", "/api/duplicates/search", "/api/duplicates/apply",
               "/api/duplicates/explain"]
#: The search page's own routes besides the search (searching.py).
SEARCH_PAGE_ROUTES = ["/api/library-check", "/api/photo", "/api/judged", "/favicon.ico", "/static/style.css",
                      "/static/search.js", "/upload/" + "0" * 32]
ROUTES = ["/", "/duplicates", "/api/info", "/api/search", *JSON_ROUTES, *SEARCH_PAGE_ROUTES]


@dataclass
class Site:
    root: Path
    photos: Path
    dest: Path
    trash: Path
    index: vsearch.Index
    client: TestClient
    token: str
    digests: list[str]  # by row, as indexed
    originals: set[bytes]  # every indexed photo's bytes
    groups: list[tuple[str, list[dict]]]  # each duplicate group's level and members, as the page got them
    top: set[str]  # what the tmp folder holds: nothing may appear beside it


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """12 photos (two pairs of copies) indexed with the fake model, served to a client that
    loaded the page; HOME and the trash in tmp, and a folder a move may use."""
    from send2trash import plat_other

    root = tmp_path_factory.mktemp("fuzz")
    home, data = root / "home", root / "xdg"
    home.mkdir()
    data.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_DATA_HOME", str(data))
        mp.setattr(plat_other, "XDG_DATA_HOME", os.fsencode(data))
        mp.setattr(plat_other, "HOMETRASH_B", os.fsencode(data / "Trash"))
        mp.setattr(plat_other, "HOMETRASH", str(data / "Trash"))
        models.register("fake", lambda name, device, threads: FakeEmbedder("fake"))
        photos = make_photos(root / "work")
        dest = root / "dest"
        dest.mkdir()
        index = vsearch.build_index(photos, index_dir=root / "idx", model="fake")
        try:
            client = TestClient(web.create_app(index), base_url=BASE, raise_server_exceptions=False)
            token = client.get("/").cookies[web.CSRF_COOKIE]
            headers = {"X-CSRF-Token": token, "Origin": BASE}
            groups = [(level, g["members"]) for level in ("exact", "similar") for g in
                      client.post("/api/duplicates", json={"level": level}, headers=headers).json()["groups"]]
            assert groups, "the photos have copies: the fuzzer acts on their groups"
            yield Site(root, photos, dest, data / "Trash", index, client, token,
                       [index.entry_of_row(r).digest for r in range(index.count)],
                       {p.read_bytes() for p in photos.rglob("*") if p.is_file()}, groups,
                       {p.name for p in root.iterdir()} | {"Trash"})
        finally:
            index.close()
            models.unregister("fake")


# --- what every answer and the disk must satisfy ------------------------------------------------


def check(site: Site, method: str, url: str, resp) -> None:
    where = f"{method} {url[:200]}: {resp.status_code} {resp.text[:300]!r}"
    assert resp.status_code < 500, where
    if resp.status_code >= 400 and method != "HEAD":
        body = resp.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), where
    if resp.status_code == 200 and method == "GET" and url.startswith("/image/"):
        assert resp.content in site.originals, where  # never a file outside the index
    if resp.status_code == 200 and method == "GET" and url.startswith("/thumb/"):
        assert resp.content[:2] == b"\xff\xd8", where
    for folder in (site.photos, site.dest, site.trash / "files"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert path.read_bytes() in site.originals, (where, path)
    assert {p.name for p in site.root.iterdir()} <= site.top, where


# --- strategies ---------------------------------------------------------------------------------

WORDS = ["relevant", "not-relevant", "click", "impression", "trash", "move", "near", "exact", "similar",
         "default", "largest", "newest", "", " ", "~nobody-here/x", "~", "/", "/" + "a" * 5000, "/etc", "..",
         "a\x00b", "text:cat", "\n", "0", "-1", "1e400", "nan", "inf"]
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
INTS = st.integers(-3, 15) | st.integers() | st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1,
                                                              10**30, 10**400])
#: Finite floats: a body with NaN or an infinity anywhere is refused whole, so they come rarely
#: (in NUMBERS' last branch, and in raw_bodies' literals), letting most bodies reach the handlers.
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.5, 1.0, -0.0, 1e308, 5e-324])
#: What a number field should never take in: past int64, fractions, the wrong type, non-finite.
NASTY = st.sampled_from([2**63, -(2**63) - 1, 10**30, 2**63 - 1, 1.5, True, "12", "1e400", [1], {}])
NUMBERS = INTS | NASTY | FLOATS | st.sampled_from([math.inf, -math.inf, math.nan])


def texts(site: Site) -> st.SearchStrategy:
    return (st.text(max_size=30) | SURROGATES | st.sampled_from(WORDS + [str(site.dest), str(site.photos)])
            | st.sampled_from(site.digests))


def json_values(site: Site) -> st.SearchStrategy:
    scalars = st.none() | st.booleans() | INTS | FLOATS | texts(site)
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts(site), kids, max_size=4),
                        max_leaves=12)


def members(site: Site) -> st.SearchStrategy:
    rows = st.integers(0, len(site.digests) - 1)
    real = rows.map(lambda r: {"row": r, "digest": site.digests[r]})
    made = st.fixed_dictionaries({"row": NUMBERS | json_values(site), "digest": texts(site) | json_values(site)})
    return real | made | json_values(site)


def bodies(site: Site, url: str | None = None) -> st.SearchStrategy:
    """Request bodies shaped like the page's for ``url`` (every key it sends, each value as the
    page sends it or not), shaped like any route's, or any JSON."""
    value = json_values(site)
    row = st.integers(0, len(site.digests) - 1) | NUMBERS | value
    member = members(site)
    group = st.sampled_from(site.groups).map(lambda g: [{"row": m["row"], "digest": m["digest"]} for m in g[1]])
    finding = {"level": st.sampled_from(["exact", "similar"]) | value, "keep": st.sampled_from(["default"]) | value,
               "threshold": st.none() | FLOATS | NUMBERS | texts(site) | value}
    shapes = {
        "/api/judgment": {"row": row, "query": st.sampled_from(site.digests) | texts(site) | value,
                          "label": st.sampled_from(["relevant", "not-relevant"]) | texts(site) | value},
        "/api/event": {"kind": st.sampled_from(["click", "dwell"]) | texts(site) | value, "query": texts(site) | value,
                       "query_id": st.integers(0, 50) | NUMBERS | value,
                       "results": st.lists(st.fixed_dictionaries({"row": row, "rank": NUMBERS}) | value, max_size=4) | value,
                       # a dwell's own fields (a click ignores them)
                       "row": row, "rank": st.integers(1, 5) | NUMBERS | value,
                       "ms": st.integers(0, 4_000_000) | NUMBERS | value},
        "/api/duplicates": {**finding, "fresh": st.booleans() | value},
        "/api/duplicates/act": {**finding, "action": st.sampled_from(["trash", "move"]) | value, "keeper": row,
                                "members": group | st.lists(member, max_size=4) | value,
                                "move_to": st.sampled_from([str(site.dest)]) | texts(site) | value},
        "act-on-a-group": acts_on_groups(site),
        "/api/duplicates/not-duplicate": {"a": member, "b": member},
        "/api/undo": {},
        "/api/duplicates/search": {**finding, "fresh": st.booleans() | value},
        # the search the page follows now (started by the fuzzer's own searches), or another value
        "/api/duplicates/apply": {"search": st.builds(lambda: getattr(site.client.app.state.page.searches.current,
                                                                     "id", "none")) | value,
                                  "action": st.sampled_from(["trash", "move"]) | value,
                                  "groups": st.just("all") | st.lists(st.integers(0, 3) | NUMBERS, max_size=3) | value,
                                  "keepers": st.dictionaries(st.sampled_from(["1", "2", "x"]) | texts(site), row,
                                                             max_size=2) | value,
                                  "move_to": st.sampled_from([str(site.dest)]) | texts(site) | value},
        "/api/duplicates/explain": {**finding, "a": member, "b": member},
    }
    def shape(u: str) -> st.SearchStrategy:
        return shapes[u] if isinstance(shapes[u], st.SearchStrategy) else st.fixed_dictionaries(shapes[u])

    for_url = shape(url) if url in shapes else st.nothing()
    if url == "/api/duplicates/act":
        for_url = for_url | shape("act-on-a-group") | shape("act-on-a-group")
    return for_url | for_url | st.sampled_from(sorted(shapes)).flatmap(shape) | value


def folders(site: Site) -> list[str]:
    """Folders to move copies to: the one that works, and every kind the library or the page refuses."""
    return ["/" + "a" * 300, "/a" * 3000, str(site.dest), str(site.dest) + "/", "~nobody-here/x", "~", "/dev/null",
            "/proc", str(site.photos), str(site.photos / "beach"), str(site.index.index_dir), str(site.root), "/",
            "relative", "/nonexistent/x", str(site.photos / "dog.jpg"), " ", "", "/tmp/../" + "x" * 200]


def acts_on_groups(site: Site) -> st.SearchStrategy:
    """An action on a group as the page showed it (its level, members, a keeper among them) with
    a folder: all as the page sends them but, at times, one value.

    The choices are made with a seeded ``random.Random`` (uniform), not with hypothesis' own
    draws, which favour the first of a list so much that a move, or a folder late in the list,
    would hardly ever come.
    """
    def body(rnd, value, folder: str) -> dict:
        level, shown = rnd.choice(site.groups)
        made = {"level": level, "keep": "default", "threshold": None, "action": rnd.choice(["trash", "move"]),
                "keeper": rnd.choice(shown)["row"], "members": [{"row": m["row"], "digest": m["digest"]} for m in shown],
                "move_to": rnd.choice(folders(site)) if rnd.random() < 0.8 else folder}
        spoil = rnd.choice(["level", "keep", "threshold", "keeper", "members", "action", None, None, None, None])
        if spoil is not None:
            made[spoil] = value
        return made

    return st.builds(body, st.randoms(use_true_random=False), NUMBERS | json_values(site),
                     st.text(max_size=30).map(lambda t: "/" + t))


def raw_bodies(site: Site, url: str | None = None) -> st.SearchStrategy:
    """Bodies as bytes: JSON (NaN and Infinity included, surrogates escaped), deep nesting, literal
    numbers JSON allows but no float holds, and bytes that are not UTF-8."""
    as_json = bodies(site, url).map(lambda b: json.dumps(b, allow_nan=True).encode())
    deep = st.integers(1, 200_000).map(lambda n: b"[" * n) | st.integers(1, 3000).map(
        lambda n: b'{"row": ' + b"[" * n + b"]" * n + b"}")
    literal = st.sampled_from([b'{"row": 1e400}', b'{"keeper": -1e400, "action": "trash", "members": []}',
                               b'{"query_id": 1' + b"0" * 30 + b', "kind": "click", "results": [{"row": 0, "rank": 1}]}',
                               b'{"query": "\\udc80", "row": 0, "label": "relevant"}', b'{"row": 0', b""])
    return as_json | as_json | deep | literal | st.binary(max_size=64)


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def post_headers(site: Site) -> st.SearchStrategy:
    """With the page's token and origin (half the time), or without (missing, wrong, another
    origin, an origin that is no URL)."""
    token = st.sampled_from([site.token]) | st.none() | HEADER_TEXT
    origin = st.sampled_from([BASE, BASE + "/", "http://evil.example", "null", "http://[bad", "http://127.0.0.1:9"]) \
        | st.none() | HEADER_TEXT | HEADER_TEXT.map(lambda t: "http://[" + t)
    kind = st.sampled_from(["application/json", "image/jpeg", "text/plain", "multipart/form-data"]) | HEADER_TEXT
    made = st.tuples(token, origin, kind).map(
        lambda t: {k: v for k, v in (("X-CSRF-Token", t[0]), ("Origin", t[1]), ("Content-Type", t[2])) if v is not None})
    return st.just({"X-CSRF-Token": site.token, "Origin": BASE}) | made


# --- the tests ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_json_posts_never_answer_500(site, data):
    url = data.draw(st.sampled_from(JSON_ROUTES), label="url")
    body = data.draw(raw_bodies(site, url), label="body")
    headers = data.draw(post_headers(site), label="headers")
    resp = site.client.post(url, content=body, headers=headers)
    check(site, "POST", url, resp)


@FUZZ
@given(data=st.data())
def test_searches_never_answer_500(site, data):
    keys = st.sampled_from(["row", "text", "upload", "k", "exclude_self", "path", "diverse"]) | HEADER_TEXT
    numbers = INTS.map(str) | FLOATS.map(str) | st.sampled_from(["1e400", "-0", "+5", " 7 ", "0x10", "٣"])
    params = data.draw(st.dictionaries(keys, numbers | st.text(max_size=30) | st.sampled_from(["beach/*", "[", "**"])
                                       | st.sampled_from(site.digests), max_size=4), label="params")
    body = data.draw(st.sampled_from([b"", (site.photos / "dog.jpg").read_bytes(),
                                      (site.photos / "dog.jpg").read_bytes()[:1500]]) | st.binary(max_size=64),
                     label="body")
    headers = data.draw(post_headers(site), label="headers")
    method = data.draw(st.sampled_from(["POST", "GET"]), label="method")
    resp = site.client.request(method, "/api/search", params=params, content=body or None, headers=headers)
    check(site, method, "/api/search", resp)


@FUZZ
@given(data=st.data())
def test_search_page_routes_never_answer_500(site, data):
    """The library check (a photo's bytes, cut, or none; any level), a photo's details, the
    judgments of a query, a kept upload, the page's files: never a 500, never a file left behind."""
    import tempfile

    photo = (site.photos / "dog.jpg").read_bytes()
    route = data.draw(st.sampled_from(SEARCH_PAGE_ROUTES[:3] + ["/upload", "/static"]), label="route")
    values = texts(site) | INTS.map(str) | st.sampled_from(site.digests) | st.sampled_from(["exact", "near", "similar"])
    params = data.draw(st.dictionaries(st.sampled_from(["row", "digest", "query", "level"]) | HEADER_TEXT, values,
                                       max_size=3), label="params")
    if route in ("/upload", "/static"):
        name = data.draw(texts(site) | st.sampled_from(["style.css", "search.html", "../app.py", "favicon.svg"]),
                         label="name")
        route = f"{route}/{quote(name.encode('utf-8', 'surrogatepass'), safe='%/.')}"
    method = "POST" if route == "/api/library-check" else data.draw(st.sampled_from(["GET", "GET", "POST"]),
                                                                    label="method")
    body = data.draw(st.sampled_from([b"", photo, photo[:1500]]) | st.binary(max_size=64), label="body")
    headers = data.draw(post_headers(site), label="headers")
    def raw(text: str) -> str:  # a lone surrogate as the bytes a client could send
        return quote(text.encode("utf-8", "surrogatepass"), safe="")
    query = "&".join(f"{raw(k)}={raw(v)}" for k, v in params.items())
    resp = site.client.request(method, f"{route}?{query}", content=body or None, headers=headers)
    check(site, method, route, resp)
    assert not list(Path(tempfile.gettempdir()).glob("vsearch-check-*")), "the library check left its folder"


@FUZZ
@given(data=st.data())
def test_file_urls_serve_indexed_photos_only(site, data):
    kind = data.draw(st.sampled_from(["thumb", "image"]), label="kind")
    row = data.draw(st.integers(-2, len(site.digests) + 2) | INTS, label="row")
    digest = data.draw(st.sampled_from(site.digests) | texts(site) | st.sampled_from(["../../etc/passwd", "%2e%2e"]),
                       label="digest")
    extra = data.draw(st.sampled_from(["", "/", "/x", "/../../../etc/passwd"]), label="extra")
    url = f"/{kind}/{quote(str(row))}/{quote(digest.encode('utf-8', 'surrogatepass'), safe='%/.')}{extra}"
    resp = site.client.get(url)
    check(site, "GET", url, resp)


@FUZZ
@given(data=st.data())
def test_any_route_any_method_any_host_never_answers_500(site, data):
    route = data.draw(st.sampled_from(ROUTES) | st.text(max_size=20).map(lambda t: "/" + quote(t, safe="/")),
                      label="route")
    method = data.draw(st.just("POST") | st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
                       label="method")
    headers = data.draw(post_headers(site), label="headers")
    host = data.draw(st.just("127.0.0.1:8000") | st.sampled_from(["localhost:8000", "[::1]:8000", "evil.example",
                                                                   "localhost:8731@evil.example", "[::1", "",
                                                                   "127.0.0.1:99999"]) | HEADER_TEXT, label="host")
    body = data.draw(raw_bodies(site), label="body")
    resp = site.client.request(method, route, content=body, headers={**headers, "Host": host})
    check(site, method, route, resp)


@FUZZ
@given(data=st.data())
def test_actions_on_real_groups_never_answer_500(site, data):
    """The duplicates page's actions, mostly on a group the library found (its level, members and
    a keeper among them: the bodies that reach the library's checks), and undo."""
    url = data.draw(st.sampled_from(["/api/duplicates/act"] * 4 + ["/api/duplicates/not-duplicate", "/api/undo"]),
                    label="url")
    shaped = acts_on_groups(site) if url.endswith("/act") else st.nothing()
    body = data.draw(shaped | shaped | shaped | bodies(site, url), label="body")
    valid = st.just({"X-CSRF-Token": site.token, "Origin": BASE})
    headers = data.draw(valid | valid | valid | post_headers(site), label="headers")
    resp = site.client.post(url, content=json.dumps(body, allow_nan=True).encode(), headers=headers)
    check(site, "POST", url, resp)
    if url.endswith("/act") and resp.status_code == 200:  # put the copy back: the next example finds the group
        undone = site.client.post("/api/undo", json={}, headers={"X-CSRF-Token": site.token, "Origin": BASE})
        check(site, "POST", "/api/undo", undone)
        assert undone.status_code == 200, undone.text
