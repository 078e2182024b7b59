"""What the page's handlers share, kept in the app's state: the one open index behind a lock,
the thumbnail cache, the sessions' CSRF tokens, the upload limits and the duplicate groups found."""

from __future__ import annotations

import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsearch import api as library
from vsearch.errors import VsearchError
from vsearch.imaging.reading import read_image_bytes
from vsearch.serve.groups import FoundGroups, SearchSlot
from vsearch.serve.thumbs import ThumbCache

#: Sessions (CSRF tokens) kept; the oldest is forgotten past this, so page loads cannot grow memory.
MAX_SESSIONS = 1000

__all__ = ["MAX_SESSIONS", "LockedIndex", "PageState"]


def _inside(root: Path, entry: Any) -> Path | None:
    """The resolved path of a manifest ``entry`` that has a digest, when it is a file inside
    ``root`` now; None when there is no entry, it was never read, it is gone since indexing, or
    it is a symlink out of the root."""
    if entry is None or entry.digest is None:
        return None
    path = (root / entry.path).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


class LockedIndex:
    """The one open index and what the app asks of it, serialised by a lock (an Index is not thread-safe)."""

    def __init__(self, index: Any, swap_fraction: float = 0.0) -> None:
        self.index = index
        self.lock = threading.Lock()
        self.swap_fraction = swap_fraction  # share of result lists shown with one pair swapped

    def row_file(self, row: int) -> tuple[Path, str]:
        """The file of ``row`` (resolved, inside the root) and its content digest; LookupError if none."""
        with self.lock:
            entry = self.index.entry_of_row(row) if 0 <= row < self.index.count else None
            root = Path(self.index.root).resolve()
        path = _inside(root, entry)
        if path is None or entry is None or entry.digest is None:
            raise LookupError(row)
        return path, entry.digest

    def digests_of_rows(self, rows: list[int]) -> list[str | None]:
        """The content digest of each row's file, None where :meth:`row_file` would refuse the row
        (no such row, no digest, gone, or out of the root); one manifest lookup for them all."""
        with self.lock:
            entries = self.index.entries_of_rows([r for r in rows if 0 <= r < self.index.count])
            root = Path(self.index.root).resolve()
        out: list[str | None] = []
        for row in rows:
            entry = entries.get(row)
            out.append(entry.digest if entry is not None and _inside(root, entry) is not None else None)
        return out

    def file_with(self, row: int, digest: str) -> Path:
        """The file of ``row`` when it holds the content ``digest`` now; LookupError otherwise.

        What the page's thumbnail and image URLs name (``/thumb/{row}/{digest}``): a row renumbered
        since (a move, a build) or a file edited since indexing is a 404, never another picture.
        A file whose size and mtime are those indexed is taken to hold the indexed content (the
        index's own rule); another one is read and hashed.
        """
        with self.lock:
            if not 0 <= row < self.index.count:
                raise LookupError(row)
            entry = self.index.entry_of_row(row)
            root = Path(self.index.root).resolve()
        if entry is None or entry.digest is None or entry.digest != digest:
            raise LookupError(row)
        path = (root / entry.path).resolve()
        if not path.is_relative_to(root):
            raise LookupError(row)  # a symlink out of the root
        try:
            st = path.stat()
        except OSError:
            raise LookupError(row) from None
        if not stat.S_ISREG(st.st_mode):
            raise LookupError(row)
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            try:  # changed since indexing: only its bytes can say whether it still holds ``digest``
                same = library.bytes_digest(read_image_bytes(path)) == digest
            except VsearchError:
                same = False
            if not same:
                raise LookupError(row)
        return path

    def query(self, **kwargs: Any) -> list[Any]:
        with self.lock:
            return self.index.query(**kwargs)

    def digest_of_path(self, path: Path) -> str | None:
        root = Path(self.index.root)
        with self.lock:
            entry = self.index.entry_of_path(path.relative_to(root).as_posix())
        return entry.digest if entry is not None else None


@dataclass
class PageState:
    """Everything a request may need besides itself (``request.app.state.page``)."""

    api: LockedIndex
    thumbs: ThumbCache
    max_upload_bytes: int
    max_upload_pixels: int
    tokens: dict[str, None] = field(default_factory=dict)  # insertion-ordered: the oldest session goes first
    found: FoundGroups = field(default_factory=FoundGroups)
    searches: SearchSlot = field(init=False)  # the duplicates page's search in the background

    def __post_init__(self) -> None:
        self.searches = SearchSlot(self.found)  # its finished groups are the ones actions find

    def session_token(self, token: str | None) -> str:
        """``token`` when it is a session's, else a new session's (the oldest forgotten past :data:`MAX_SESSIONS`)."""
        if token is not None and token in self.tokens:
            return token
        token = secrets.token_urlsafe(32)
        self.tokens[token] = None
        while len(self.tokens) > MAX_SESSIONS:
            del self.tokens[next(iter(self.tokens))]
        return token
