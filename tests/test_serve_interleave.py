"""The page's experiments (``vsearch serve --interleave A B`` / ``--split A B``) and time spent
on a result (``/api/event`` kind ``dwell``), through the page's HTTP API (Starlette TestClient),
read back by ``vsearch evaluate --interleaving`` / ``--clicks``; the click log's schema migration;
and, with the real default model, the head in the loop end to end: judge on the page, train,
interleave the head against no head, click, evaluate."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import vsearch  # noqa: E402
from tests.conftest import SAMPLE_IMAGES  # noqa: E402
from tests.helpers import cli, fails, ok  # noqa: E402
from tests.test_api import make_photos  # noqa: E402
from vsearch.learning import judgments  # noqa: E402
from vsearch.learning.clicks import MAX_DWELL_MS, read_click_log  # noqa: E402
from vsearch.learning.interleaving import read_log  # noqa: E402
from vsearch.serve import app as web  # noqa: E402
from vsearch.serve import experiment as experiments  # noqa: E402

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def indexed(tmp_path, fake_model):
    """photos/ indexed twice with the fake model: idx (served) and idx-dba (Annoy + DBA of 2,
    another index of the same photos); yields (index, photos, other index dir)."""
    photos = make_photos(tmp_path / "work")
    other = tmp_path / "idx-dba"
    vsearch.build_index(photos, index_dir=other, model="fake", trees=5, dba=2).close()
    index = vsearch.build_index(photos, index_dir=tmp_path / "idx", model="fake")
    yield index, photos, other
    index.close()


def client_for(index, experiment=None) -> TestClient:
    """A client that loaded the page: it holds its session's CSRF cookie (.token)."""
    client = TestClient(web.create_app(index, experiment=experiment), base_url=BASE)
    page = client.get("/")
    assert page.status_code == 200
    client.token = page.cookies[web.CSRF_COOKIE]  # type: ignore[attr-defined]
    return client


def post(client, url, **kwargs):
    return client.post(url, headers={"X-CSRF-Token": client.token, "Origin": BASE}, **kwargs)


def search(client, **params) -> dict:
    answer = post(client, "/api/search", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def click(client, answer: dict, rank: int):
    hit = answer["results"][rank - 1]
    return post(client, "/api/event", json={"kind": "click", "query": answer["query"], "query_id": answer["query_id"],
                                            "results": [{"row": hit["row"], "rank": rank}]})


def dwell(client, answer: dict, rank: int, ms, override: dict | None = None):
    hit = answer["results"][rank - 1]
    body = {"kind": "dwell", "query": answer["query"], "query_id": answer["query_id"], "row": hit["row"],
            "rank": rank, "ms": ms, **(override or {})}
    return post(client, "/api/event", json=body)


# --- interleaving on the page ----------------------------------------------------------------


def test_interleaved_list_is_fair_and_logs_each_results_team(indexed):
    index, _, other = indexed
    with experiments.open_experiment(index, "interleave", "qe=0", f"index={other},dba=2",
                                     rng=random.Random(3)) as experiment:
        client = client_for(index, experiment)
        firsts = []
        for row in range(index.count):
            answer = search(client, row=row, k=6)
            assert answer["logging"] is None and len(answer["results"]) == 6
            assert [r["rank"] for r in answer["results"]] == list(range(1, 7))
            logged = read_log(index.index_dir)[-1]
            assert logged.list_id == answer["query_id"]
            assert (logged.a, logged.b) == ("qe=0", f"index={other},dba=2")
            # What was shown is what was logged, in order, each result with its team.
            assert list(logged.results) == [r["digest"] for r in answer["results"]]
            for depth in range(1, 7):  # team draft: the teams' counts differ by at most one at every depth
                teams = logged.teams[:depth]
                assert abs(teams.count("A") - teams.count("B")) <= 1, logged.teams
            firsts.append(logged.teams[0])
            # Every result is a photo of the served index, named by its own row and content.
            for r in answer["results"]:
                assert index.entry_of_row(r["row"]).digest == r["digest"]
                assert client.get(r["thumb"]).status_code == 200
        assert {"A", "B"} == set(firsts)  # the coin flip: either team may pick first
        # Interleaved lists stay out of the click log (they are no ranker's order).
        assert read_click_log(index.index_dir) == []


def test_a_click_counts_for_the_team_whose_result_it_was(indexed):
    index, _, other = indexed
    with experiments.open_experiment(index, "interleave", "qe=0", f"index={other},dba=2") as experiment:
        client = client_for(index, experiment)
        clicked_teams = []
        for row in range(4):
            answer = search(client, row=row, k=5)
            assert click(client, answer, 2).json() == {"logged": 1}
            clicked_teams.append(read_log(index.index_dir)[-1].teams[1])
        # A click on a list that did not show the result is refused, not credited.
        answer = search(client, row=5, k=5)
        shown = {r["row"] for r in answer["results"]}
        outside = next(row for row in range(index.count) if row not in shown)
        refused = post(client, "/api/event", json={"kind": "click", "query": answer["query"],
                                                   "query_id": answer["query_id"],
                                                   "results": [{"row": outside, "rank": 1}]})
        assert refused.status_code == 400 and "did not show" in refused.json()["error"]
        # A click needs the list's id: an interleaved list is found by nothing else.
        missing = post(client, "/api/event", json={"kind": "click", "query": answer["query"],
                                                   "results": [{"row": answer["results"][0]["row"], "rank": 1}]})
        assert missing.status_code == 400 and "query_id" in missing.json()["error"]
    report = json.loads(ok(cli("evaluate", "--interleaving", "--index-dir", index.index_dir, "-f", "json")).stdout)
    assert len(report) == 1
    row = report[0]
    assert (row["a"], row["b"], row["lists"]) == ("qe=0", f"index={other},dba=2", 5)
    assert row["clicks_a"] == clicked_teams.count("A") and row["clicks_b"] == clicked_teams.count("B")
    assert (row["a_wins"], row["b_wins"], row["unclicked"]) == (clicked_teams.count("A"), clicked_teams.count("B"), 1)


def test_dwell_is_logged_and_reported_per_team(indexed):
    index, _, _ = indexed
    with experiments.open_experiment(index, "interleave", "qe=0", "qe=3") as experiment:
        client = client_for(index, experiment)
        answer = search(client, row=0, k=4)
        teams = read_log(index.index_dir)[-1].teams
        for rank, ms in ((1, 1000), (2, 3000), (3, 5000), (1, 0)):
            assert dwell(client, answer, rank, ms).json() == {"logged": 1}
    expected = {"A": [], "B": []}
    for rank, ms in ((1, 1000), (2, 3000), (3, 5000), (1, 0)):
        expected[teams[rank - 1]].append(ms)
    report = json.loads(ok(cli("evaluate", "--interleaving", "--index-dir", index.index_dir, "-f", "json")).stdout)[0]
    for team, prefix in (("A", "dwell_a"), ("B", "dwell_b")):
        times = sorted(expected[team])
        assert report[f"{prefix}_n"] == len(times)
        if times:
            assert report[f"{prefix}_mean_ms"] == round(sum(times) / len(times), 1)
    table = ok(cli("evaluate", "--interleaving", "--index-dir", index.index_dir)).stdout
    assert "dwell ms" in table


def test_dwell_without_an_experiment_goes_into_the_click_log(indexed):
    index, _, _ = indexed
    client = client_for(index)
    answer = search(client, row=0, k=5)
    assert click(client, answer, 1).json() == {"logged": 1}
    assert dwell(client, answer, 1, 2500).json() == {"logged": 1}
    assert dwell(client, answer, 3, 500).json() == {"logged": 1}
    logged = read_click_log(index.index_dir)
    assert [q.dwell for q in logged] == [(2500, 500)] and logged[0].arm is None
    report = json.loads(ok(cli("evaluate", "--clicks", "--index-dir", index.index_dir, "-f", "json")).stdout)
    assert report["arms"] == [{"arm": "all lists", "lists": 1, "clicked_lists": 1, "clicks": 1, "ctr": 1.0,
                               "ctr_low": report["arms"][0]["ctr_low"], "ctr_high": 1.0, "dwell_n": 2,
                               "dwell_median_ms": 1500.0, "dwell_mean_ms": 1500.0}]
    assert report["split_p_value"] is None


BAD_DWELL = [
    ({"ms": -1}, 400, "ms must be"),
    ({"ms": MAX_DWELL_MS + 1}, 400, "ms must be"),
    ({"ms": 10**30}, 400, "ms must be"),
    ({"ms": 1.5}, 400, "ms must be"),
    ({"ms": 1000.0}, 400, "ms must be"),
    ({"ms": "1000"}, 400, "ms must be"),
    ({"ms": True}, 400, "ms must be"),
    ({"ms": None}, 400, "ms must be"),
    ({"ms": [1]}, 400, "ms must be"),
    ({"rank": 0}, 400, "rank"),
    ({"rank": 4}, 400, "did not show"),
    ({"rank": "x"}, 400, "rank"),
    ({"row": 10**6}, 404, "no image at row"),
    ({"row": None}, 400, "row"),
    ({"query_id": None}, 400, "query_id"),
    ({"query_id": 10**6}, 400, "did not show"),
    ({"query_id": 2**70}, 400, "query_id"),
    ({"query": "text:another query"}, 400, "another query"),
    ({"query": 5}, 400, "query must be"),
    ({"query": ""}, 400, "query must be"),
    ({"kind": "dwell", "query": "x", "query_id": 1, "row": 0, "rank": 1, "ms": 1, "extra": {"a": [1]}}, 400,
     "another query"),
]


@pytest.mark.parametrize("interleave", [False, True])
def test_a_bad_dwell_body_is_a_4xx_and_logs_nothing(indexed, interleave):
    index, _, _ = indexed
    with experiments.open_experiment(index, "interleave", "qe=0", "qe=3") if interleave else \
            _nothing() as experiment:
        client = client_for(index, experiment)
        answer = search(client, row=0, k=3)
        for override, status, words in BAD_DWELL:
            refused = dwell(client, answer, 1, 1000, override)
            assert refused.status_code == status, (override, refused.text)
            assert words in refused.json()["error"], (override, refused.json())
        # A body that is not JSON, or not an object, is a 400 too.
        for body in (b"{", b"[1]", b'{"kind": "dwell", "ms": NaN}'):
            bad = post(client, "/api/event", content=body)
            assert bad.status_code == 400 and "error" in bad.json()
    assert all(not q.dwell for q in read_click_log(index.index_dir))
    assert all(not item.dwell for item in read_log(index.index_dir))


class _nothing:
    """A ``with`` block that gives None (no experiment)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_an_unknown_event_kind_is_refused(indexed):
    index, _, _ = indexed
    client = client_for(index)
    refused = post(client, "/api/event", json={"kind": "hover", "query": "x"})
    assert refused.status_code == 400 and "click or dwell" in refused.json()["error"]


@pytest.mark.parametrize("kind", ["interleave", "split"])
def test_generated_events_and_searches_never_answer_500_in_an_experiment(indexed, kind):
    """What tests/test_fuzz_page.py asks of the plain page, asked of one running an experiment:
    any event body or search is an answer or a 4xx with a JSON error, never a 500."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    index, _, other = indexed
    with experiments.open_experiment(index, kind, "qe=0", f"index={other},dba=2") as experiment:
        client = client_for(index, experiment)
        answer = search(client, row=0, k=4)
        value = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | \
            st.lists(st.integers(), max_size=2)
        bodies = st.fixed_dictionaries({
            "kind": st.sampled_from(["click", "dwell", "other"]) | value,
            "query": st.sampled_from([answer["query"], "text:x", ""]) | value,
            "query_id": st.sampled_from([answer["query_id"], 0, 2**63, -1]) | value,
            "row": st.integers(-1, index.count + 1) | value, "rank": st.integers(-1, 6) | value,
            "ms": st.integers(-5, MAX_DWELL_MS + 5) | value,
            "results": st.lists(st.fixed_dictionaries({"row": st.integers(-1, index.count) | value,
                                                       "rank": st.integers(0, 5) | value}) | value,
                                max_size=3) | value})
        searches = st.fixed_dictionaries({"row": st.integers(-1, index.count) | st.text(max_size=4),
                                          "k": st.integers(-1, 300) | st.text(max_size=4)})

        @hypothesis.settings(max_examples=60, deadline=None, database=None, derandomize=True)
        @hypothesis.given(body=bodies, params=searches)
        def run(body, params):
            for resp in (post(client, "/api/event", content=json.dumps(body, allow_nan=True)),
                         post(client, "/api/search", params=params)):
                assert resp.status_code < 500, (body, params, resp.text)
                if resp.status_code >= 400:
                    assert "error" in resp.json()

        run()


# --- the classic split ------------------------------------------------------------------------


def test_split_keeps_each_session_on_one_arm_and_reports_each_arms_click_through(indexed):
    index, _, other = indexed
    b = f"index={other}"
    with experiments.open_experiment(index, "split", "qe=0", b) as experiment:
        seen: dict[str, int] = {}
        for session in range(16):
            client = client_for(index, experiment)  # a new page load: a new session
            before = len(read_click_log(index.index_dir))
            for row in range(3):
                answer = search(client, row=row + session % 5, k=4)
                if session % 2 == 0:
                    click(client, answer, 1)
                    dwell(client, answer, 1, 100 * (session + 1))
            arms = {q.arm for q in read_click_log(index.index_dir)[before:]}
            assert len(arms) == 1, arms  # every search of a session: the same arm
            arm = arms.pop()
            assert arm == experiment.arm_of(client.token).config.name
            seen[arm] = seen.get(arm, 0) + 1
        assert set(seen) == {"qe=0", b}  # sessions are spread over both (2 in 65,536 to fail)
    report = json.loads(ok(cli("evaluate", "--clicks", "--index-dir", index.index_dir, "-f", "json")).stdout)
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"qe=0", b}
    assert sum(a["lists"] for a in arms.values()) == 48
    assert all(a["lists"] == 3 * seen[name] for name, a in arms.items())
    assert 0.0 <= report["split_p_value"] <= 1.0
    done = ok(cli("evaluate", "--clicks", "--index-dir", index.index_dir))
    assert "time on results" in done.stdout and "ctr [95% CI]" in done.stdout
    assert f"split A/B {b} vs qe=0:" in done.stderr or f"split A/B qe=0 vs {b}:" in done.stderr
    note = ok(cli("evaluate", "--interleaving", "--index-dir", index.index_dir)).stderr
    assert "split A/B test" in note


def test_the_split_arm_cannot_be_chosen_by_the_client(indexed):
    """The arm is a keyed hash of the session's token: the same token gets the same arm from one
    server, and another server (another key) draws again."""
    index, _, _ = indexed
    with experiments.open_experiment(index, "split", "qe=0", "qe=3") as one, \
            experiments.open_experiment(index, "split", "qe=0", "qe=3") as two:
        tokens = [f"token-{i}" for i in range(64)]
        assert [one.arm_of(t).config.name for t in tokens] == [one.arm_of(t).config.name for t in tokens]
        assert [one.arm_of(t).config.name for t in tokens] != [two.arm_of(t).config.name for t in tokens]


# --- what the page says of the head and the experiment ---------------------------------------------


def test_info_says_whether_a_head_is_on_and_which_experiment_runs(indexed):
    index, _, _ = indexed
    info = client_for(index).get("/api/info").json()
    assert info["head"] == {"trained": False, "on": False} and info["experiment"] is None
    with experiments.open_experiment(index, "interleave", "qe=2", "qe=0,copy-first=off") as experiment:
        info = client_for(index, experiment).get("/api/info").json()
    assert info["experiment"] == {"kind": "interleave", "arms": [{"name": "qe=2", "head": False},
                                                                 {"name": "qe=0,copy-first=off", "head": False}]}


# --- configurations ----------------------------------------------------------------------------


def test_configurations_parse_into_query_options():
    parsed = experiments.parse_configuration(" qe=3, adapter=off ,copy_first=on,dba=5,index=~/idx ")
    assert parsed.name == "qe=3, adapter=off ,copy_first=on,dba=5,index=~/idx"
    assert (parsed.qe, parsed.adapter, parsed.copy_first, parsed.dba) == (3, False, True, 5)
    assert parsed.index_dir == Path("~/idx").expanduser()
    assert parsed.query_options() == {"qe": 3, "copy_first": True}
    assert experiments.parse_configuration("/some/index").index_dir == Path("/some/index")
    assert experiments.parse_configuration("adapter=on").query_options() == {}


@pytest.mark.parametrize("pair, words", [
    (("qe=x", "qe=0"), "'qe=x': qe takes a whole number"),
    (("qe=-1", "qe=0"), "qe takes a whole number"),
    (("qe=2", "qe=2"), "both are 'qe=2'"),
    (("colour=red", "qe=0"), "unknown setting 'colour'"),
    (("qe=1,qe=2", "qe=0"), "sets qe twice"),
    (("adapter=maybe", "qe=0"), "adapter takes on or off"),
    (("qe=", "qe=0"), "qe needs a value"),
    (("adapter=on", "adapter=off"), "has no trained head.*'adapter=off'"),
    (("dba=5", "qe=0"), "built with dba 0, not 5"),
    (("index={other},dba=3", "qe=0"), "built with dba 2, not 3"),
    (("index={missing}", "qe=0"), "no index"),
    (("index={elsewhere}", "qe=0"), "not the served index's photos"),
])
def test_a_bad_configuration_is_one_error_line_at_start(indexed, tmp_path, pair, words):
    index, _, other = indexed
    elsewhere = tmp_path / "elsewhere"
    if "{elsewhere}" in pair[0]:
        photos = tmp_path / "other-photos"
        shutil.copytree(index.root, photos)
        vsearch.build_index(photos, index_dir=elsewhere, model="fake").close()
    a, b = (p.format(other=other, missing=tmp_path / "nothing", elsewhere=elsewhere) for p in pair)
    for flag in ("--interleave", "--split"):
        fails(cli("serve", "--index-dir", index.index_dir, "--port", "0", flag, a, b), words)


def test_interleave_and_split_together_is_an_error(indexed):
    index, _, _ = indexed
    fails(cli("serve", "--index-dir", index.index_dir, "--interleave", "qe=0", "qe=2", "--split", "qe=0", "qe=2"),
          "not both")


# --- the click log's schema ----------------------------------------------------------------------


def test_a_version_1_click_log_is_migrated_in_place(indexed):
    """A judgments.sqlite written before arms and dwell (schema 1) keeps its verdicts, lists and
    clicks, and takes the new ones after one open."""
    index, _, _ = indexed
    path = judgments.db_path(index.index_dir)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO kv VALUES ('schema_version', '1');
        CREATE TABLE judgments (id INTEGER PRIMARY KEY, time TEXT NOT NULL, query TEXT NOT NULL,
            result TEXT NOT NULL, relevant INTEGER NOT NULL, grade INTEGER NOT NULL, rank INTEGER,
            source TEXT NOT NULL, result_path TEXT, query_path TEXT);
        CREATE INDEX judgments_pair ON judgments(query, result);
        CREATE TABLE queries (id INTEGER PRIMARY KEY, time TEXT NOT NULL, query TEXT NOT NULL,
            shown INTEGER NOT NULL, swapped INTEGER);
        CREATE TABLE impressions (query_id INTEGER NOT NULL REFERENCES queries(id), rank INTEGER NOT NULL,
            original_rank INTEGER NOT NULL, result TEXT NOT NULL, PRIMARY KEY (query_id, rank));
        CREATE INDEX impressions_result ON impressions(query_id, result);
        CREATE TABLE clicks (id INTEGER PRIMARY KEY, time TEXT NOT NULL,
            query_id INTEGER NOT NULL REFERENCES queries(id), result TEXT NOT NULL, rank INTEGER NOT NULL);
        INSERT INTO judgments VALUES (1, 't', 'q', 'r', 1, 1, 1, 'page', NULL, NULL);
        INSERT INTO queries VALUES (1, 't', 'q', 2, NULL);
        INSERT INTO impressions VALUES (1, 1, 1, 'r'), (1, 2, 2, 's');
        INSERT INTO clicks VALUES (1, 't', 1, 'r', 1);
    """)
    db.close()
    assert judgments.problem(index.index_dir) is None  # an old file is not damage
    logged = read_click_log(index.index_dir)
    assert [(q.shown, q.clicked, q.arm, q.dwell) for q in logged] == [(("r", "s"), frozenset({1}), None, ())]
    assert [j.result for j in judgments.read_judgments(index.index_dir)] == ["r"]
    client = client_for(index)
    answer = search(client, row=0, k=3)
    assert dwell(client, answer, 1, 700).json() == {"logged": 1}
    assert read_click_log(index.index_dir)[-1].dwell == (700,)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM kv WHERE key = 'schema_version'").fetchone() == (
            str(judgments.SCHEMA_VERSION),)
    assert judgments.problem(index.index_dir) is None


def test_a_newer_click_log_is_refused_not_rewritten(indexed):
    index, _, _ = indexed
    client = client_for(index)
    search(client, row=0, k=3)
    path = judgments.db_path(index.index_dir)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE kv SET value = ? WHERE key = 'schema_version'", (str(judgments.SCHEMA_VERSION + 1),))
    db.close()
    before = path.read_bytes()
    with pytest.raises(vsearch.VsearchError, match="schema version"):
        read_click_log(index.index_dir)
    assert path.read_bytes() == before


# --- the head in the loop, end to end, with the real default model --------------------------------


@pytest.mark.slow
def test_judge_train_interleave_head_against_none_and_evaluate(tmp_path):
    """README's loop: judge results on the page, `vsearch train --use-judgments`, serve with
    --interleave adapter=on adapter=off, search and click, `vsearch evaluate --interleaving`."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in SAMPLE_IMAGES.iterdir():
        if p.suffix.lower() in (".jpg", ".png"):
            shutil.copy2(p, photos / p.name)
    index_dir = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index_dir, "-q"))

    # 1. Judge on the page: for a few queries, the first results relevant or not by the
    #    sample set's own groups.
    groups = dict(line.split(",")[:2] for line in (SAMPLE_IMAGES / "groups.csv").read_text().splitlines()[1:])
    with vsearch.open_index(index_dir, device="cpu") as index:
        assert index.model == "efficientnet-lite0"
        client = client_for(index)
        assert client.get("/api/info").json()["head"] == {"trained": False, "on": False}
        judged = 0
        for row in range(0, index.count, 3):
            answer = search(client, row=row, k=6, exclude_self="1")
            query_group = groups.get(Path(index.entry_of_row(row).path).name)
            for hit in answer["results"]:
                label = "relevant" if query_group and groups.get(Path(hit["path"]).name) == query_group \
                    else "not-relevant"
                done = post(client, "/api/judgment", json={"query": answer["query"], "row": hit["row"],
                                                           "label": label})
                assert done.status_code == 200, done.text
                judged += 1
    assert judged >= 40

    # 2. Train on them with the real command.
    trained = ok(cli("train", "--index-dir", index_dir, "--use-judgments", "--epochs", "3", "--views", "1"))
    assert "judged" in trained.stderr and "saved as" in trained.stderr

    # 3. Serve with the head against no head: bad first, a typo is one line.
    fails(cli("serve", "--index-dir", index_dir, "--interleave", "adapter=on", "adapter=of"), "on or off")
    with vsearch.open_index(index_dir, device="cpu") as index, \
            experiments.open_experiment(index, "interleave", "adapter=on", "adapter=off",
                                        rng=random.Random(0)) as experiment:
        client = client_for(index, experiment)
        info = client.get("/api/info").json()
        assert info["head"] == {"trained": True, "on": True}
        assert info["experiment"]["arms"] == [{"name": "adapter=on", "head": True},
                                              {"name": "adapter=off", "head": False}]
        # 4. Search and click: the person clicks the first result of the query's own group.
        clicked = 0
        for row in range(index.count):
            answer = search(client, row=row, k=8, exclude_self="1")
            query_group = groups.get(Path(index.entry_of_row(row).path).name)
            for hit in answer["results"]:
                if query_group and groups.get(Path(hit["path"]).name) == query_group:
                    assert click(client, answer, hit["rank"]).json() == {"logged": 1}
                    assert dwell(client, answer, hit["rank"], 1500).json() == {"logged": 1}
                    clicked += 1
                    break
        assert clicked >= 5

    # 5. The experiment, as evaluate reports it.
    report = json.loads(ok(cli("evaluate", "--interleaving", "--index-dir", index_dir, "-f", "json")).stdout)
    assert [(r["a"], r["b"]) for r in report] == [("adapter=on", "adapter=off")]
    row = report[0]
    assert row["lists"] == len(read_log(index_dir)) and row["clicks_a"] + row["clicks_b"] == clicked
    assert row["a_wins"] + row["b_wins"] + row["ties"] + row["unclicked"] == row["lists"]
    assert row["dwell_a_n"] + row["dwell_b_n"] == clicked
    assert 0.0 <= row["p_value"] <= 1.0 and row["better"] in ("adapter=on", "adapter=off", "neither yet")
    table = ok(cli("evaluate", "--interleaving", "--index-dir", index_dir))
    assert "adapter=on vs adapter=off:" in table.stderr
