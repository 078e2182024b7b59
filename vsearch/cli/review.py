"""A review page for duplicate groups (``vsearch duplicates --html out.html``).

Each group is a row of thumbnails side by side, the keeper first and framed, each with its
pixels, bytes, format, level and similarity, what acting would do to it, and the commands: the
one that acts on the groups, and for each copy the one that marks it "not a duplicate" of the
keeper. Thumbnails are embedded (data URIs) and link to the files, as in ``gallery``.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vsearch.api import Action, is_keeper
from vsearch.cli.gallery import PAGE_CSS, file_uri, write_page
from vsearch.imaging.thumbnails import THUMB_SIDE, data_uri, thumbnail

__all__ = ["write_review"]


def write_review(out: Path, groups: Iterable[Iterable[Any]], *, actions: Sequence[Action] = (),
                 act_command: str, not_duplicate_command: str) -> Path:
    """Write the review page of ``groups`` to ``out`` and return its path.

    ``actions``: what acting would do (from ``actions.plan``), shown under each copy.
    ``act_command``: the command that acts on every group. ``not_duplicate_command``: the
    command prefix that marks two images apart (``... --not-duplicate``); the keeper and the
    copy are appended to it.
    """
    planned = {a.source: a for a in actions}
    sections = []
    count = 0
    for group in groups:
        members = sorted(group, key=lambda m: not is_keeper(m))  # the keeper first
        if not members:
            continue
        count += 1
        keeper = next((m for m in members if is_keeper(m)), members[0])
        figures = [_figure(m, planned.get(Path(m.path))) for m in members]
        commands = [act_command] + [
            f"{not_duplicate_command} {shlex.quote(str(keeper.path))} {shlex.quote(str(m.path))}"
            for m in members if m is not keeper]
        level = ", ".join(sorted({m.level for m in members if m is not keeper}))
        sections.append(
            f'<section><h2>Group {members[0].group}: {len(members)} images, level {html.escape(level)}</h2>'
            f'<div class="grid">{"".join(figures)}</div>'
            f'<pre>{html.escape(chr(10).join(commands))}</pre></section>')
    title = f"vsearch: {count} duplicate groups"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{PAGE_CSS}figure img, .missing {{ width: {THUMB_SIDE}px; height: {THUMB_SIDE}px; object-fit: contain; background: #eee;
  display: flex; align-items: center; justify-content: center; }}
figure.keeper img {{ outline: 3px solid #2a7; }}
figcaption {{ font-size: 13px; margin-top: 4px; word-break: break-all; }}
.role {{ font-weight: bold; }} .act {{ color: #a40; }}
pre {{ background: #eee; padding: 6px; white-space: pre-wrap; word-break: break-all; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
{''.join(sections) or '<p>No duplicate groups.</p>'}
</body></html>
"""
    return write_page(out, doc)


def _figure(member: Any, action: Action | None) -> str:
    path = Path(member.path)
    pixels, fmt = _pixels_and_format(member)
    size = getattr(member, "bytes", None)
    if size is None:
        try:
            size = path.stat().st_size
        except OSError:
            size = None
    role = "keeper" if is_keeper(member) else "copy"
    facts = [f"{pixels[0]}x{pixels[1]} px" if pixels else "? px", _bytes(size), fmt or "?",
             member.level, f"{float(member.score):.4f}"]
    doing = ""
    if action is not None:
        doing = (f'<br><span class="act">move to {html.escape(str(action.target))}</span>' if action.kind == "move"
                 else '<br><span class="act">to the trash</span>')
    caption = (f'<span class="role">{role}</span> {html.escape(" · ".join(facts))}<br>'
               f'<span class="path">{html.escape(str(path))}</span>{doing}')
    thumb = thumbnail(path)
    img = (f'<img src="{data_uri(thumb)}" alt="{html.escape(path.name)}">' if thumb is not None
           else '<div class="missing">unreadable</div>')
    return (f'<figure class="{role}"><a href="{html.escape(file_uri(path))}">{img}</a>'
            f'<figcaption>{caption}</figcaption></figure>')


def _pixels_and_format(member: Any) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) and format: from the member when it has them, else the file's header."""
    fmt = getattr(member, "format", None)
    try:
        from vsearch import api  # numpy and the library: --help does not pay for them

        header = api.read_header(member.path)  # reads the header only
        return (header.width, header.height), fmt or header.format
    except Exception:  # noqa: BLE001 - an unreadable file is shown as such, not an error
        return None, fmt


def _bytes(n: int | None) -> str:
    if n is None:
        return "? bytes"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]  # a float from here on, shown with one decimal
    return str(n)  # pragma: no cover
