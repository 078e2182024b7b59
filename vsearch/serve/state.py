"""What the page's handlers share, kept in the app's state: the one open index behind a lock,
the thumbnail cache, the sessions' CSRF tokens, the upload limits and the duplicate groups found."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsearch.serve.groups import FoundGroups
from vsearch.serve.thumbs import ThumbCache

#: Sessions (CSRF tokens) kept; the oldest is forgotten past this, so page loads cannot grow memory.
MAX_SESSIONS = 1000

__all__ = ["MAX_SESSIONS", "LockedIndex", "PageState"]


class LockedIndex:
    """The one open index and what the app asks of it, serialised by a lock (an Index is not thread-safe)."""

    def __init__(self, index: Any, swap_fraction: float = 0.0) -> None:
        self.index = index
        self.lock = threading.Lock()
        self.swap_fraction = swap_fraction  # share of result lists shown with one pair swapped

    def row_file(self, row: int) -> tuple[Path, str]:
        """The file of ``row`` (resolved, inside the root) and its content digest; LookupError if none."""
        with self.lock:
            if not 0 <= row < self.index.count:
                raise LookupError(row)
            entry = self.index.entry_of_row(row)
            if entry is None or entry.digest is None:
                raise LookupError(row)
            root = Path(self.index.root).resolve()
        path = (root / entry.path).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise LookupError(row)  # gone since indexing, or a symlink out of the root
        return path, entry.digest

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

    def session_token(self, token: str | None) -> str:
        """``token`` when it is a session's, else a new session's (the oldest forgotten past :data:`MAX_SESSIONS`)."""
        if token is not None and token in self.tokens:
            return token
        token = secrets.token_urlsafe(32)
        self.tokens[token] = None
        while len(self.tokens) > MAX_SESSIONS:
            del self.tokens[next(iter(self.tokens))]
        return token
