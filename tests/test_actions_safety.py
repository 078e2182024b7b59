"""Acting on duplicates never loses a file (issue 19, items 2-4): links are never kept over
their targets nor removed as copies of them, the keeper is checked before any action, --move-to
makes a missing folder and refuses what is no folder, undo is all or nothing, a kill at any
step leaves an index every command opens and an undo that puts everything back, and the index
is up to date after its own actions.

Same library as tests/test_actions.py (``plant_copies``: two groups at 0.98 with the fake
model); a few runs are real processes, killed with SIGKILL at each step of an action.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import vsearch
from tests.conftest import REPO
from tests.helpers import cli, fails, ok
from tests.test_actions import THRESHOLD, copies, index_rows, plant_copies, tree_bytes
from vsearch.duplicates import actions


@pytest.fixture
def lib(tmp_path, fake_model) -> tuple[Path, Path]:
    """(photos, index): tests/test_actions.py's library, indexed with the fake model."""
    photos = plant_copies(tmp_path / "photos")
    index = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q"))
    return photos, index


def dupes(index: Path, *args: object):
    return cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, *args)


def members(index: Path) -> list[dict]:
    return json.loads(ok(dupes(index, "-f", "json", "-q")).stdout)


def undo_logs(index: Path) -> list[Path]:
    return sorted((index / "undo").glob("*.jsonl"))


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.exists() else []


# --- item 2: never lose a file ------------------------------------------------------------------


def test_a_symlink_is_never_kept_over_its_target_nor_removed_as_its_copy(tmp_path, fake_model, trash):
    """The issue: `ln -s a/image_0043.jpg photos/0_album_cover.jpg; duplicates --trash --yes` kept
    the link, trashed its target, and the keeper dangled."""
    photos = plant_copies(tmp_path / "photos")
    (photos / "0_album_cover.jpg").symlink_to(photos / "p3.jpg")  # sorts first, and is the same bytes
    index = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q"))
    group = [m for m in members(index) if Path(m["path"]).name in ("p3.jpg", "0_album_cover.jpg")]
    assert {(Path(m["path"]).name, m["keeper"], m["level"]) for m in group} == {
        ("p3.jpg", True, "same-file"), ("0_album_cover.jpg", False, "same-file")}
    listed = ok(dupes(index, "-f", "paths", "-q")).stdout.split()
    assert not {"p3.jpg", "0_album_cover.jpg"} & {Path(p).name for p in listed}  # not on the delete list
    ok(dupes(index, "--trash", "--yes", "-q"))
    assert (photos / "p3.jpg").is_file() and (photos / "0_album_cover.jpg").resolve() == photos / "p3.jpg"
    assert sorted(p.name for p in (trash / "files").iterdir()) == ["p1_copy.jpg", "p2_small.png"]


def test_hard_links_are_one_file_not_duplicates_to_act_on(lib, tmp_path):
    photos, index = lib
    os.link(photos / "p4.jpg", photos / "sub" / "p4_link.jpg")
    ok(cli("build-index", photos, "--index-dir", index, "-q"))
    group = {Path(m["path"]).name: m for m in members(index) if Path(m["path"]).name.startswith("p4")}
    assert {m["level"] for m in group.values()} == {"same-file"} and [m["keeper"] for m in group.values()].count(True) == 1
    dest = tmp_path / "dest"
    dest.mkdir()
    dry = ok(dupes(index, "--move-to", dest))
    assert "dry run: 2 files would be" in dry.stderr and "p4" not in dry.stderr
    with vsearch.open_index(index) as idx:
        groups = idx.duplicates(float(THRESHOLD))
        assert not [a for a in idx.plan_actions(groups, trash=True) if a.source.name.startswith("p4")]
        p4 = next(g for g in groups if g.keeper.path.name.startswith("p4"))
        forced = [actions.Action("move", p4.copies[0].path, dest / "x.jpg", p4.number, p4.keeper.path)]
        with pytest.raises(vsearch.VsearchError, match="keeper's own file"):  # the API refuses it too
            idx.apply_actions(forced)
    assert not undo_logs(index)


@pytest.mark.parametrize("change", ["symlink", "gone", "edited"])
def test_the_keeper_is_checked_before_any_action(lib, tmp_path, change):
    """Before acting, the keeper must still be a regular file with the indexed bytes (a symbolic
    link to the same bytes used to pass, and the copy went while the keeper was a link)."""
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    with vsearch.open_index(index) as idx:
        planned = idx.plan_actions(idx.duplicates(float(THRESHOLD)), move_to=dest)
        keeper = planned[0].keeper
        if change == "symlink":
            (tmp_path / "elsewhere.jpg").write_bytes(keeper.read_bytes())
            keeper.unlink()
            keeper.symlink_to(tmp_path / "elsewhere.jpg")
        elif change == "gone":
            keeper.unlink()
        else:
            keeper.write_bytes(keeper.read_bytes() + b"edited")
        before = tree_bytes(photos, index)
        with pytest.raises(vsearch.VsearchError, match=r"nothing was done"):
            idx.apply_actions(planned)
    assert tree_bytes(photos, index) == before and files_under(dest) == [] and not undo_logs(index)


def test_move_to_a_missing_folder_makes_it_and_the_dry_run_says_so(lib, tmp_path):
    photos, index = lib
    dest = tmp_path / "new" / "dupes"
    before = tree_bytes(photos, index)
    dry = ok(dupes(index, "--move-to", dest))
    assert f"would create {dest}" in dry.stderr and "dry run: 2 files would be moved" in dry.stderr
    assert not (tmp_path / "new").exists() and tree_bytes(photos, index) == before
    done = ok(dupes(index, "--move-to", dest, "--yes"))
    assert "2 files moved to" in done.stderr
    assert sorted(p.relative_to(dest).as_posix() for p in files_under(dest)) == ["p1_copy.jpg", "sub/p2_small.png"]


def test_the_readme_review_command_works_as_written(lib, tmp_path, monkeypatch):
    """README: `vsearch duplicates --html review.html --move-to ~/dupes` is a dry run that writes
    the review page, even though ~/dupes does not exist yet."""
    photos, index = lib
    monkeypatch.chdir(tmp_path)
    before = tree_bytes(photos, index)
    result = ok(dupes(index, "--html", "review.html", "--move-to", tmp_path / "home" / "dupes"))
    assert "review page: review.html" in result.stderr and "dry run: 2 files" in result.stderr
    page = (tmp_path / "review.html").read_text()
    assert page.count("<section>") == 2 and f"--move-to {tmp_path / 'home' / 'dupes'} --yes" in page
    assert not (tmp_path / "home").exists() and tree_bytes(photos, index) == before


@pytest.mark.parametrize("where", ["empty", "proc", "sys", "dev-null", "under-a-file"])
def test_move_to_what_is_no_folder_is_one_error_line_and_no_undo_log(lib, tmp_path, monkeypatch, where):
    """`--move-to ""` moved the copies into the current folder; `--move-to /proc --yes` was a
    traceback and left an empty undo log."""
    photos, index = lib
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (tmp_path / "afile").write_text("x")
    folder = {"empty": "", "proc": "/proc", "sys": "/sys/kernel", "dev-null": "/dev/null",
              "under-a-file": str(tmp_path / "afile" / "dupes")}[where]
    if where in ("proc", "sys") and not Path(folder).is_dir():
        pytest.skip(f"no {folder} here")
    before = tree_bytes(photos, index)
    for args in (("--move-to", folder), ("--move-to", folder, "--yes")):
        message = fails(dupes(index, *args), r"--move-to")
        assert {"empty": "is empty", "proc": "file system, which holds no files", "sys": "holds no files",
                "dev-null": "is not a folder", "under-a-file": "afile is a file"}[where] in message
    assert tree_bytes(photos, index) == before and os.listdir(cwd) == [] and not undo_logs(index)


def test_a_folder_no_file_can_be_made_in_is_refused_before_the_log(lib, tmp_path, monkeypatch):
    """What the static checks cannot see (a read-only mount): the first file made there fails,
    before the undo log is written."""
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    real_open = os.open

    def read_only_mount(path, flags, *args, **kwargs):
        if dest in (Path(path), Path(path).parent) and flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0)) \
                and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(30, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_mount)
    before = tree_bytes(photos, index)
    fails(dupes(index, "--move-to", dest, "--yes"), rf"cannot move files into {dest}: Read-only file system; "
                                                    "nothing was done")
    assert tree_bytes(photos, index) == before and not undo_logs(index)


def test_a_read_only_source_folder_names_the_source_and_leaves_no_hard_link(lib, tmp_path, monkeypatch):
    """The issue: a read-only source folder gave "permission denied writing <target>" (the wrong
    path) and left a hard link in the destination. Injected: unlink() of the copy is refused,
    as a read-only folder refuses it (root may write anywhere, so chmod cannot show it here)."""
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    moving = copies(index)
    real_unlink = os.unlink

    def read_only(path, *args, **kwargs):
        if Path(path) in moving:
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", read_only)
    before = tree_bytes(photos, index)
    message = fails(dupes(index, "--move-to", dest, "--yes"), r"cannot move .*: its folder .* does not let it go")
    assert str(moving[0]) in message and str(dest) not in message
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert tree_bytes(photos, index) == before and files_under(dest) == []
    assert not undo_logs(index)  # the log of a run that moved nothing is gone


def test_a_read_only_source_folder_is_refused_by_the_dry_run(lib, tmp_path, monkeypatch):
    photos, index = lib
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == photos / "sub"
                        else real_access(p, mode, **kw))
    fails(dupes(index, "--trash"), rf"cannot move {photos / 'sub' / 'p2_small.png'}: its folder {photos / 'sub'} "
                                  r"is read-only")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_really_read_only_source_folder(lib, tmp_path):
    photos, index = lib
    (photos / "sub").chmod(0o555)
    try:
        fails(dupes(index, "--move-to", tmp_path / "dest", "--yes"), r"its folder .*sub is read-only")
    finally:
        (photos / "sub").chmod(0o755)


# --- item 3: undo, all or nothing ------------------------------------------------------------


def moved(lib, tmp_path) -> tuple[Path, Path]:
    """Move the two copies to dest; (dest, the undo log)."""
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    ok(dupes(index, "--move-to", dest, "--yes", "-q"))
    (log,) = (index / "undo").iterdir()
    return dest, log


@pytest.mark.parametrize("damage", ["bad-vector", "short-vector", "long-vector", "no-digest", "null-source",
                                    "relative-target", "unknown-action", "not-json", "not-an-object"])
def test_undo_checks_every_entry_before_moving_anything(lib, tmp_path, damage):
    """The issue: one damaged entry (a bad vector) let undo move 19 of 20 files back before a
    traceback; a missing digest or a null source was a KeyError / TypeError."""
    photos, index = lib
    dest, log = moved(lib, tmp_path)
    lines = log.read_text().splitlines()
    record = json.loads(lines[1])  # the first action: it is undone last, after the second
    if damage == "bad-vector":
        record["vector"] = "not base64!"
    elif damage == "short-vector":
        record["vector"] = base64.b64encode(b"\0" * 4 * 5).decode()
    elif damage == "long-vector":
        record["vector"] = base64.b64encode(b"\0" * 4 * 49).decode()
    elif damage == "no-digest":
        del record["digest"]
    elif damage == "null-source":
        record["source"] = None
    elif damage == "relative-target":
        record["target"] = "dupes/p1_copy.jpg"
    elif damage == "unknown-action":
        record["action"] = "copy"
    lines[1] = {"not-json": '{"action": "move", "source"', "not-an-object": "[1, 2]"}.get(damage, json.dumps(record))
    log.write_text("\n".join(lines) + "\n")
    state = tree_bytes(photos, dest, index)
    fails(cli("undo", "--index-dir", index), rf"{log} line 2 is damaged \(.+\); nothing was undone")
    assert tree_bytes(photos, dest, index) == state  # not one file moved back, the index untouched


def test_a_torn_last_line_is_recognised_as_torn_every_time(lib, tmp_path):
    """The issue: a torn last line was tolerated once; undo then ended the line and appended its
    own, and every later undo refused the log as damaged."""
    photos, index = lib
    files = tree_bytes(photos)
    dest, log = moved(lib, tmp_path)
    with open(log, "ab") as fh:
        fh.write(b'{"action": "move", "source": "/x/y.jp')  # what a kill in the middle of an append leaves
    ok(cli("undo", "--index-dir", index, "-q"))
    assert tree_bytes(photos) == files
    assert all(json.loads(line) for line in log.read_text().splitlines())  # the torn tail was cut, not kept
    for _ in range(2):  # and it stays readable
        fails(cli("undo", "--index-dir", index), "nothing to undo")
        fails(cli("undo", log, "--index-dir", index), "was undone already")


def test_a_log_an_older_vsearch_ended_after_a_torn_line_still_reads(lib, tmp_path):
    """A log that the undo before this fix wrote: the torn line ended by a newline, then the
    ``undone`` line. It reads as undone, and the newer logs behind it can still be undone."""
    photos, index = lib
    dest, log = moved(lib, tmp_path)
    ok(cli("undo", "--index-dir", index, "-q"))
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1] + ['{"action": "trash", "sou', lines[-1]]) + "\n")
    fails(cli("undo", log, "--index-dir", index), "was undone already")
    fails(cli("undo", "--index-dir", index), "nothing to undo")


def test_undo_removes_what_a_killed_move_left_in_the_destination(lib, tmp_path):
    """A move killed after its hard link and before the unlink leaves the file in both places;
    one across file systems leaves its temporary copy. Undo leaves neither."""
    photos, index = lib
    files = tree_bytes(photos)
    dest, log = moved(lib, tmp_path)
    ok(cli("undo", "--index-dir", index, "-q"))
    log.unlink()
    # What the killed run left: the log line, the link, a temporary copy; the source in place.
    moving = copies(index)
    record = {"action": "move", "source": str(moving[0]), "target": str(dest / moving[0].name), "group": 1,
              "keeper": str(photos / "p1.jpg"), "digest": index_rows(index)[moving[0].name][0],
              "size": moving[0].stat().st_size, "mtime_ns": moving[0].stat().st_mtime_ns, "vector": None}
    header = {"format": "vsearch-undo", "version": 1, "index": str(index), "root": str(photos)}
    log.write_text(json.dumps(header) + "\n" + json.dumps(record) + "\n")
    os.link(moving[0], dest / moving[0].name)
    (dest / f".{moving[0].name}.4242.tmp").write_bytes(moving[0].read_bytes()[:100])
    result = ok(cli("undo", "--index-dir", index))
    assert "0 files put back (1 already in place)" in result.stderr
    assert tree_bytes(photos) == files and files_under(dest) == []


# --- item 3: a kill at any step ----------------------------------------------------------------


CHILD = r'''
import contextlib, os, signal, sys
sys.path.insert(0, {root!r})
from vsearch import atomic
from vsearch.duplicates import actions
from vsearch.storage import manifest

crash_at, steps = int(os.environ["CRASH_AT"]), [0]


def step(what):
    steps[0] += 1
    print(f"step {{steps[0]}}: {{what}}", file=sys.stderr, flush=True)
    if steps[0] == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)


def after(fn, what):
    def call(*args, **kwargs):
        result = fn(*args, **kwargs)
        step(what)
        return result
    return call


actions._append = after(actions._append, "undo log line")  # each logged step
for name in ("link", "unlink", "rename", "replace"):
    setattr(os, name, after(getattr(os, name), name))
real_transaction = manifest.ManifestReader.transaction


@contextlib.contextmanager
def transaction(self):
    with real_transaction(self) as db:
        yield db
        if steps[0] + 1 == crash_at:
            # Killed while SQLite writes the commit: what it wrote spills to the file first (the
            # journal synced, pages overwritten), and the kill leaves a hot journal behind.
            db.execute("PRAGMA cache_size=8")
            db.execute("CREATE TABLE spill(x BLOB)")
            db.execute("INSERT INTO spill WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                       "WHERE i < 2000) SELECT randomblob(4096) FROM n")
        step("in the commit of a manifest transaction")
    step("manifest transaction committed")


manifest.ManifestReader.transaction = transaction
from vsearch.cli.main import app
app(sys.argv[1:], prog_name="vsearch")
'''


def run_killed(tmp_path: Path, crash_at: int, *args: object) -> subprocess.CompletedProcess[str]:
    child = tmp_path / "child.py"
    child.write_text(CHILD.format(root=str(REPO)))
    return subprocess.run([sys.executable, str(child), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "CRASH_AT": str(crash_at)}, timeout=120)


def test_the_child_counts_the_steps_of_an_action(lib, tmp_path):
    photos, index = lib
    (tmp_path / "dest").mkdir()
    done = run_killed(tmp_path, 0, "duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to",
                      tmp_path / "dest", "--yes", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("undo log line") == 3 and "link" in done.stderr and "unlink" in done.stderr


def test_a_kill_in_the_commit_after_the_first_logged_action_leaves_an_index_every_command_opens(tmp_path, fake_model):
    """The issue: after `kill -9` of `duplicates --yes` right after the first logged action (2 of
    10 kills), every command said `error: permission denied writing .../manifest.sqlite` until a
    `build-index` that nothing suggested: the kill had left a hot journal, which a read-only
    connection cannot roll back."""
    counted = plant_copies(tmp_path / "count" / "photos")
    ok(cli("build-index", counted, "--index-dir", tmp_path / "count" / "idx", "--model", "fake", "-q"))
    (tmp_path / "count" / "dest").mkdir()
    args = ["duplicates", "--threshold", THRESHOLD, "--yes", "-q"]
    steps = run_killed(tmp_path / "count", 0, *args, "--index-dir", tmp_path / "count" / "idx", "--move-to",
                       tmp_path / "count" / "dest").stderr.splitlines()
    first_action = next(i for i, line in enumerate(steps) if "undo log line" in line) + 1  # after the header
    crash_at = next(int(line.split()[1].rstrip(":")) for line in steps[first_action + 1:] if "in the commit" in line)
    photos = plant_copies(tmp_path / "photos")
    index = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q"))
    (tmp_path / "dest").mkdir()
    run = run_killed(tmp_path, crash_at, *args, "--index-dir", index, "--move-to", tmp_path / "dest")
    assert run.returncode == -signal.SIGKILL and (index / "manifest.sqlite-journal").exists()  # a hot journal
    for command in (("info",), ("query", photos / "p0.jpg", "-q"), ("duplicates", "-q")):
        result = cli(*command, "--index-dir", index)
        assert result.exit_code == 0, (command, result.stderr)
    ok(cli("undo", "--index-dir", index, "-q"))


@pytest.mark.parametrize("steps", [(1, 12), (13, 99)], ids=["steps 1-12", "steps 13-end"])
@pytest.mark.parametrize("how", ["move", "trash"])
def test_a_kill_at_any_step_leaves_an_index_every_command_opens_and_undo_puts_everything_back(
        tmp_path, fake_model, trash, how, steps):
    """SIGKILL at every step of `duplicates --move-to/--trash --yes` (each undo-log line, link,
    unlink, rename, each manifest transaction in the middle of its commit and after it, each
    file replaced), in a real process: every command then opens the index, and `vsearch undo`
    puts every file and index row back, leaving no link or temporary file at the targets.
    (The issue: a kill right after the first logged action left every command saying
    "permission denied writing .../manifest.sqlite".) In two halves, so that test workers share them."""
    step, last = steps[0], None
    while step <= steps[1]:
        base = tmp_path / f"{how}{step}"
        photos = plant_copies(base / "photos")
        index, dest = base / "idx", base / "dest"
        dest.mkdir()
        ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q"))
        files, rows = tree_bytes(photos), index_rows(index)
        run = run_killed(base, step, "duplicates", "--index-dir", index, "--threshold", THRESHOLD,
                         *(["--move-to", dest] if how == "move" else ["--trash"]), "--yes", "-q", "-f", "paths")
        killed = run.returncode == -signal.SIGKILL
        assert killed or run.returncode == 0, run.stderr
        where = f"killed after step {step}: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ''}"
        for command in (("info",), ("query", photos / "p0.jpg", "-q"), ("duplicates", "-q")):
            result = cli(*command, "--index-dir", index)
            assert result.exit_code == 0, (where, command, result.stderr)
        undone = cli("undo", "--index-dir", index)
        assert undone.exit_code == 0 or "nothing to undo" in undone.stderr, (where, undone.stderr)
        assert tree_bytes(photos) == files, where
        assert files_under(dest) == [] and not list((trash / "files").glob("*")), where
        assert index_rows(index) == rows, where
        assert "up to date" in ok(cli("info", "--index-dir", index)).stdout, where
        if not killed:
            last = step
            break
        step += 1
    if steps[1] == 99:
        assert last is not None and last > 13  # every step was tried, up to a run that finished


# --- item 4: the index follows its own actions ---------------------------------------------------


def fresh(index: Path, photos: Path) -> None:
    info = ok(cli("info", "--index-dir", index)).stdout
    assert "up to date" in info, info
    query = ok(cli("query", photos / "p0.jpg", "--index-dir", index, "--k", "2"))
    assert "changed since" not in query.stderr, query.stderr


@pytest.mark.parametrize("how", ["outside", "inside", "trash"])
def test_the_index_is_up_to_date_after_its_own_actions_and_after_undo(lib, tmp_path, trash, how):
    """The issue: after a move and after undo, `info` and every `query` warned "changed since
    the index was built (3 folders differ)"."""
    photos, index = lib
    (tmp_path / "dest").mkdir()
    (photos / "_dupes").mkdir()
    ok(cli("build-index", photos, "--index-dir", index, "-q"))  # the folder made above is recorded
    fresh(index, photos)
    act = {"outside": ["--move-to", tmp_path / "dest"], "inside": ["--move-to", photos / "_dupes"],
           "trash": ["--trash"]}[how]
    ok(dupes(index, *act, "--yes", "-q"))
    fresh(index, photos)
    ok(cli("undo", "--index-dir", index, "-q"))
    fresh(index, photos)

