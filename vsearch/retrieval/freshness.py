"""A cheap check that an index still matches its folder, so that ``query`` can warn when not.

Why folder mtimes: a folder's mtime changes whenever a file in it is added, removed or renamed,
so comparing the mtimes recorded at the last scan (``Store.dirs``: every folder on the way to an
image) finds those changes with one ``stat`` per folder, however many files each holds. An edit
in place changes the file's mtime but not its folder's, so a bounded random sample of indexed
files is stat'ed as well: a large edit is likely to be seen, a single edited file may not be.
The check is time-boxed: on a slow or sleeping disk it stops and reports what it saw rather than
delay the query.

Not seen: a first image copied into a folder that held no image at the last scan (that folder
was not recorded, and its parent's mtime does not change). ``vsearch embed`` finds everything.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from vsearch.storage.store import Store

#: Seconds the check may take before it stops looking.
DEFAULT_BUDGET_S = 0.3
#: Indexed files stat'ed at random for edits in place.
DEFAULT_SAMPLE = 64


@dataclass(frozen=True)
class Freshness:
    """What the check saw."""

    root: Path
    dirs_checked: int
    dirs_changed: int
    files_checked: int
    files_changed: int
    complete: bool  # False when the time box ran out first
    root_missing: bool = False

    @property
    def stale(self) -> bool:
        """True when the folder has changed since the index was last updated."""
        return self.root_missing or self.dirs_changed > 0 or self.files_changed > 0

    def warning(self) -> str | None:
        """One line for stderr, or None when nothing changed."""
        if self.root_missing:
            return f"warning: the indexed folder {self.root} is not there; results may point at missing files"
        if not self.stale:
            return None
        parts = []
        if self.dirs_changed:
            parts.append(f"{self.dirs_changed} folder{'s' if self.dirs_changed != 1 else ''}")
        if self.files_changed:
            parts.append(f"{self.files_changed} sampled file{'s' if self.files_changed != 1 else ''}")
        verb = "differs" if self.dirs_changed + self.files_changed == 1 else "differ"
        what = " and ".join(parts)
        return (f"warning: {self.root} changed since the index was built ({what} {verb}); "
                f"call `build_index({self.root}, trees=None)` to update")


def check(store: Store, *, budget_s: float = DEFAULT_BUDGET_S, sample: int = DEFAULT_SAMPLE,
          rng: random.Random | None = None) -> Freshness:
    """Compare the folder under ``store`` with what its last scan recorded, within ``budget_s``.

    Folders first (additions, deletions, renames), then ``sample`` random indexed files (edits).
    Reads the manifest only; works on a read-only store.
    """
    deadline = time.perf_counter() + budget_s
    root = Path(store.meta.root) if store.meta else store.root
    if root is None:
        return Freshness(Path("."), 0, 0, 0, 0, True)
    if not root.is_dir():
        return Freshness(root, 0, 0, 0, 0, True, root_missing=True)

    dirs_checked = dirs_changed = 0
    for rel, mtime_ns in store.dirs():
        if time.perf_counter() >= deadline:
            return Freshness(root, dirs_checked, dirs_changed, 0, 0, False)
        dirs_checked += 1
        if _mtime_ns(root / rel) != mtime_ns:
            dirs_changed += 1

    files_checked = files_changed = 0
    count = store.meta.count if store.meta else 0
    if count and sample > 0:
        rows = (rng or random.Random()).sample(range(count), min(sample, count))
        for row in rows:  # rows are dense (0..count-1) and indexed: two lookups each
            if time.perf_counter() >= deadline:
                return Freshness(root, dirs_checked, dirs_changed, files_checked, files_changed, False)
            entry = store.entry(store.path_of_row(row))
            if entry is None:
                continue
            files_checked += 1
            try:
                st = (root / entry.path).stat()
            except OSError:
                files_changed += 1
                continue
            if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
                files_changed += 1
    return Freshness(root, dirs_checked, dirs_changed, files_checked, files_changed, True)


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
