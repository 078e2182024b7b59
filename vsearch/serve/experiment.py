"""The page's experiments: two search configurations compared on the people who use it.

``vsearch serve --interleave A B``: every search shows one team-draft interleaved list of A's
and B's rankings (``vsearch.api.team_draft``), logged with the team of each result
(``vsearch.api.log_interleaved``); a click counts for the team whose result it was. ``vsearch
serve --split A B``: each browser session is assigned to A or B at random and sees only that
ranker; its lists go into the click log with the arm's name. ``vsearch evaluate
--interleaving`` (or ``--clicks``) reads either back.

A configuration is one word of comma-separated settings, kept as its name in the logs:

    qe=N            query expansion depth (0 = off; the library's default when not given)
    adapter=on|off  through the index's trained head (on: the index must have one) or the raw vectors
    copy-first=on|off  keep the query's nearest photo first when expansion reorders
    dba=N           the index searched was built with database-side augmentation of N
                    neighbours (0: without): a check, since DBA is made at build time
    index=DIR       search another index folder of the same photos (a bare DIR means the same)

Both arms answer in the served index's rows and digests (what the page's thumbnails, clicks and
judgments name): a result of another index is found in the served one by its path, and one the
served index does not hold is left out. The experiment opens what it needs (another index, or
the served one again without its head) and closes it with :meth:`Experiment.close`.

Why the split assignment is a keyed hash of the session token rather than a table: it is the
same for every search of a session without storing anything, cannot be steered by a client
(the key is a secret made at start), and a server restart (new tokens) starts a new draw.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vsearch import api as library
from vsearch.errors import VsearchError
from vsearch.serve.common import CSRF_COOKIE, quoted
from vsearch.serve.common import error as _error
from vsearch.serve.common import whole_number as _int
from vsearch.serve.state import LockedIndex, PageState

__all__ = ["KINDS", "Configuration", "Experiment", "ExperimentIndex", "Interleaving", "Ranked", "event",
           "experiment_of", "info", "open_experiment", "parse_configuration", "rank", "searcher", "session_token"]

#: The two kinds of experiment: one interleaved list per search, or one ranker per session.
KINDS = ("interleave", "split")
_SWITCH = {"on": True, "off": False}
_KEYS = ("qe", "adapter", "copy-first", "dba", "index")


@dataclass(frozen=True)
class Configuration:
    """One side of an experiment, parsed from its name (see the module docstring). None: as served."""

    name: str
    index_dir: Path | None = None
    qe: int | None = None
    adapter: bool | None = None
    copy_first: bool | None = None
    dba: int | None = None

    def query_options(self) -> dict[str, Any]:
        """What this configuration adds to the page's own query options."""
        return {**({"qe": self.qe} if self.qe is not None else {}),
                **({"copy_first": self.copy_first} if self.copy_first is not None else {})}


def _whole(key: str, value: str, name: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise VsearchError(f"configuration {name!r}: {key} takes a whole number, 0 or more (got {value!r})")
    return int(value)


def parse_configuration(text: str) -> Configuration:
    """Parse one configuration (``qe=2``, ``adapter=off``, ``index=~/idx/dba5,dba=5`` ...);
    :class:`VsearchError` naming it for anything else."""
    if not isinstance(text, str) or not text.strip() or len(text) > 200 or "\n" in text:
        raise VsearchError(f"a configuration is one line of 1 to 200 characters, e.g. 'qe=2' (got {quoted(text)})")
    name = text.strip()
    found: dict[str, Any] = {}
    for item in (part.strip() for part in name.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().replace("_", "-")
        value = value.strip()
        if not sep:  # a bare word: another index folder
            key, value = "index", item
        if key not in _KEYS:
            raise VsearchError(f"configuration {name!r}: unknown setting {key!r}; the settings are "
                               f"{', '.join(_KEYS)} (each as 'setting=value'), or an index folder")
        if key in found:
            raise VsearchError(f"configuration {name!r} sets {key} twice")
        if not value:
            raise VsearchError(f"configuration {name!r}: {key} needs a value")
        if key in ("qe", "dba"):
            found[key] = _whole(key, value, name)
        elif key in ("adapter", "copy-first"):
            if value.lower() not in _SWITCH:
                raise VsearchError(f"configuration {name!r}: {key} takes on or off (got {value!r})")
            found[key] = _SWITCH[value.lower()]
        else:
            found[key] = Path(value).expanduser()
    return Configuration(name, index_dir=found.get("index"), qe=found.get("qe"), adapter=found.get("adapter"),
                         copy_first=found.get("copy-first"), dba=found.get("dba"))


@dataclass
class Arm:
    """A configuration and the open index it searches (behind its own lock)."""

    config: Configuration
    api: LockedIndex  # for the served index itself, searched through the page's own (its lock)
    same_rows: bool  # the served index object itself: its rows are the page's


@dataclass(frozen=True)
class Interleaving:
    """What the answer logs of an interleaved list: each result's team and the two names."""

    teams: tuple[str, ...]
    a: str
    b: str


class Ranked(list):  # a list of Hit, as Index.query gives
    """A search's results in the served index's rows, best first, and what the answer logs of
    them: ``interleaved`` for an interleaved list, ``arm`` (the configuration's name) for a split
    arm's. A list, so the page's answer treats it as any search's hits."""

    def __init__(self, hits: list[Any], *, arm: str | None = None, interleaved: Interleaving | None = None) -> None:
        super().__init__(hits)
        self.arm = arm
        self.interleaved = interleaved


@dataclass
class Experiment:
    """A running experiment: its kind (:data:`KINDS`), its two arms, what it opened."""

    kind: str
    arms: tuple[Arm, Arm]
    opened: list[Any] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def names(self) -> tuple[str, str]:
        return self.arms[0].config.name, self.arms[1].config.name

    def arm_of(self, token: str | None) -> Arm:
        """The arm of a session (split): a keyed hash of its token, so the same on every search."""
        digest = hashlib.blake2b((token or "").encode("utf-8"), key=self.key, digest_size=8).digest()
        return self.arms[digest[0] & 1]

    def close(self) -> None:
        """Close what the experiment opened (never the served index)."""
        while self.opened:
            self.opened.pop().close()

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has_head(index: Any) -> bool:
    return index.meta.adapter is not None


def open_experiment(served: Any, kind: str, a: str, b: str, *, device: str = "cpu",
                    rng: random.Random | None = None) -> Experiment:
    """An experiment of configurations ``a`` against ``b`` over the open index ``served``.

    Opens another index folder, or the served one again without its head, where a configuration
    asks for it. Raises :class:`VsearchError` (one line, naming the configuration) for a
    configuration that cannot run: unparseable, both the same, ``adapter=on`` on an index
    without a head, ``dba=`` that is not how the index was built, another index of other photos.
    """
    if kind not in KINDS:
        raise VsearchError(f"an experiment is one of {', '.join(KINDS)} (got {kind!r})")
    configs = (parse_configuration(a), parse_configuration(b))
    if configs[0].name == configs[1].name:
        raise VsearchError(f"an experiment compares two configurations; both are {configs[0].name!r}")
    opened: list[Any] = []
    shared: dict[tuple[Path, bool], Arm] = {}
    try:
        a_arm, b_arm = (_arm(served, c, opened, shared, device) for c in configs)
    except BaseException:
        for index in reversed(opened):
            index.close()
        raise
    return Experiment(kind, (a_arm, b_arm), opened, rng or random.Random())


def _arm(served: Any, config: Configuration, opened: list[Any], shared: dict[tuple[Path, bool], Arm],
         device: str) -> Arm:
    """The arm of ``config``: the served index, or one opened for it (shared by both arms when
    they need the same one), after checking the configuration can run on it."""
    where = Path(served.index_dir).resolve() if config.index_dir is None else config.index_dir.resolve()
    other = where != Path(served.index_dir).resolve()
    adapter = True if config.adapter is None else config.adapter
    if (where, adapter) in shared:
        arm = Arm(config, shared[(where, adapter)].api, shared[(where, adapter)].same_rows)
    elif not other and adapter:  # the served index as it is (searched through the page's own lock)
        arm = Arm(config, LockedIndex(served), True)
    else:
        index = library.open_index(where, device=device, adapter=adapter)
        opened.append(index)
        if other and Path(index.root).resolve() != Path(served.root).resolve():
            raise VsearchError(f"configuration {config.name!r}: the index at {where} covers {index.root}, not the "
                               f"served index's photos ({served.root}); an experiment compares rankings of the "
                               "same photos")
        arm = Arm(config, LockedIndex(index), False)
    shared[(where, adapter)] = arm
    index = arm.api.index
    if config.adapter and not _has_head(index):
        raise VsearchError(f"configuration {config.name!r}: the index at {where} has no trained head; train one "
                           "with `vsearch train` (--use-judgments adds the page's verdicts), or use 'adapter=off'")
    if config.dba is not None:
        built = index.meta.dba.neighbours if index.meta.dba is not None else 0
        if built != config.dba:
            raise VsearchError(f"configuration {config.name!r}: the index at {where} was built with dba {built}, "
                               f"not {config.dba}; build a copy with `vsearch build-index FOLDER --index-dir OTHER "
                               f"--dba {config.dba}` and name it: index=OTHER,dba={config.dba}")
        if config.dba and index.adapted:
            raise VsearchError(f"configuration {config.name!r}: searches through the trained head do not use the "
                               "DBA copy; add 'adapter=off'")
    return arm


# --- searching ----------------------------------------------------------------------------------


def experiment_of(request: Request) -> Experiment | None:
    """The experiment the server runs (``create_app(experiment=...)``), or None."""
    return getattr(request.app.state, "experiment", None)


def _served_hits(served: LockedIndex, arm: Arm, hits: list[Any]) -> list[Any]:
    """An arm's hits in the served index's rows (best first, renumbered); a photo the served
    index does not hold is left out (another index may hold photos added since)."""
    if arm.same_rows:
        return hits
    root = Path(served.index.root)
    out: list[Any] = []
    for hit in hits:
        path = Path(hit.path)
        if not path.is_relative_to(root):
            continue
        with served.lock:
            entry = served.index.entry_of_path(path.relative_to(root).as_posix())
        if entry is None or entry.row is None:
            continue
        out.append(library.Hit(len(out) + 1, root / entry.path, hit.score, entry.row))
    return out


def _digest(served: LockedIndex, hit: Any) -> str | None:
    try:
        return served.row_file(hit.row)[1]
    except LookupError:
        return None


def rank(served: LockedIndex, experiment: Experiment, token: str | None, query: dict[str, Any]) -> Ranked:
    """The results of one search (``query``: :meth:`vsearch.api.Index.query`'s arguments, as the
    page gives them): the session's arm's in a split; one team-draft list of both arms' in an
    interleaving, each result with the score its own ranker gave it and its team kept for the log."""
    def search(arm: Arm) -> list[Any]:  # the served index's own arm goes through the page's lock
        return _served_hits(served, arm, (served if arm.same_rows else arm.api).query(
            **query, **arm.config.query_options()))

    if experiment.kind == "split":
        arm = experiment.arm_of(token)
        return Ranked(search(arm), arm=arm.config.name)
    rankings: list[list[tuple[str, Any]]] = []
    for arm in experiment.arms:
        hits = search(arm)
        rankings.append([(d, h) for h in hits if (d := _digest(served, h)) is not None])
    merged = library.team_draft([d for d, _ in rankings[0]], [d for d, _ in rankings[1]], query.get("k"),
                                rng=experiment.rng)
    # Each result keeps the score the ranker that placed it gave it: the list reads as one ranking.
    team_hits = {team: {d: h for d, h in reversed(ranking)} for team, ranking in zip(("A", "B"), rankings)}
    hits = [team_hits[t][d] for d, t in zip(merged.results, merged.teams)]
    return Ranked([library.Hit(i, h.path, h.score, h.row) for i, h in enumerate(hits, start=1)],
                  interleaved=Interleaving(merged.teams, *experiment.names))


class ExperimentIndex(LockedIndex):
    """The served index as one search of an experiment sees it: the same index, lock and
    settings, but :meth:`query` answers through the experiment (:func:`rank`)."""

    def __init__(self, served: LockedIndex, experiment: Experiment, token: str | None) -> None:
        super().__init__(served.index, served.swap_fraction)
        self.lock = served.lock  # one index, one lock
        self.served, self.experiment, self.token = served, experiment, token

    def query(self, **kwargs: Any) -> list[Any]:
        return rank(self.served, self.experiment, self.token, kwargs)


def searcher(request: Request, page: PageState) -> LockedIndex:
    """What a search asks: the served index, or, while the server runs an experiment, the
    served index answering through it for this request's session."""
    experiment = experiment_of(request)
    return page.api if experiment is None else ExperimentIndex(page.api, experiment, session_token(request))


def info(page: PageState, experiment: Experiment | None) -> dict[str, Any]:
    """What ``/api/info`` says of the head and the experiment: whether the served index has a
    trained head and searches through it, and each arm's configuration and whether its
    searches go through a head."""
    index = page.api.index
    out: dict[str, Any] = {"head": {"trained": _has_head(index), "on": bool(index.adapted)}, "experiment": None}
    if experiment is not None:
        out["experiment"] = {"kind": experiment.kind,
                             "arms": [{"name": arm.config.name, "head": bool(arm.api.index.adapted)}
                                      for arm in experiment.arms]}
    return out


# --- events: clicks on an interleaved list, and time spent on a result ---------------------------


async def event(request: Request, page: PageState, body: dict[str, Any]) -> Response | None:
    """Handle a ``dwell`` event, or a ``click`` on an interleaved list; None for an ordinary
    click (the caller logs it in the click log).

    ``dwell``: ``{"kind": "dwell", "query": KEY, "query_id": ID, "row": ROW, "rank": RANK,
    "ms": MS}``, ``ms`` the time the result was visible, a whole number of milliseconds from 0
    to one hour. Every value is checked; a 4xx with a JSON error for anything wrong.
    """
    experiment = experiment_of(request)
    interleaving = experiment is not None and experiment.kind == "interleave"
    kind = body.get("kind")
    if kind == "click" and not interleaving:
        return None
    if kind not in ("click", "dwell"):
        return None  # the caller refuses it in its own words
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise VsearchError(f"query must be the query key the search answered with (got {quoted(query)})")
    if body.get("query_id") is None:
        raise VsearchError("query_id must be the id the search answered with (the search was not logged "
                           "when it is null)")
    list_id = _int(body.get("query_id"), "query_id")
    index_dir = page.api.index.index_dir
    if kind == "dwell":
        ms = body.get("ms")
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= library.MAX_DWELL_MS:
            return _error(400, f"ms must be a whole number of milliseconds, 0 to {library.MAX_DWELL_MS} "
                               f"(got {quoted(ms)})")
        row, rank_ = _int(body.get("row"), "row"), _int(body.get("rank"), "rank")
        if rank_ < 1:
            return _error(400, f"rank must be 1 or more (got {rank_})")
        try:
            _, digest = await run_in_threadpool(page.api.row_file, row)
        except LookupError:
            return _error(404, f"no image at row {row}")
        log = library.log_interleaved_dwell if interleaving else library.log_dwell
        await run_in_threadpool(log, index_dir, list_id, query, digest, rank_, ms)
        return JSONResponse({"logged": 1})
    shown = body.get("results")
    if not isinstance(shown, list) or not shown or len(shown) > 200:
        return _error(400, "results must be a list of 1 to 200 {row, rank} objects")
    logged = 0
    for item in shown:
        row = _int(item.get("row") if isinstance(item, dict) else None, "row")
        try:
            _, digest = await run_in_threadpool(page.api.row_file, row)
        except LookupError:
            continue
        await run_in_threadpool(library.log_interleaved_click, index_dir, list_id, digest)
        logged += 1
    return JSONResponse({"logged": logged})


def session_token(request: Request) -> str | None:
    """The session's token (its CSRF cookie): what a split assigns an arm by."""
    return request.cookies.get(CSRF_COOKIE)
