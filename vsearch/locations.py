"""Where vsearch keeps things on a user's machine when not told: the default index folder.

A module of its own (standard library only) so that the CLI's option declarations, the Python
API and the library agree on one answer without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_index_dir() -> Path:
    """Where an index lives when none is named: ``$VSEARCH_INDEX_DIR``, else
    ``$XDG_DATA_HOME/vsearch/index`` (``~/.local/share/vsearch/index`` when XDG_DATA_HOME is unset)."""
    env = os.environ.get("VSEARCH_INDEX_DIR")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "vsearch" / "index"
