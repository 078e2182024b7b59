"""Results people can look at: a self-contained HTML gallery and a contact-sheet PNG.

Both take the query (image paths and/or text) and a ranked list of hit-like records: anything
with ``rank``, ``path`` and ``score`` attributes. Thumbnails are decoded with the same safe
decoder as indexing (EXIF orientation, pixel cap) and embedded in the HTML as base64 JPEG, so
the file can be mailed or opened anywhere without the images beside it; on the machine that
made it, each thumbnail also links to its file (a ``file://`` URI of the absolute path).
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from vsearch import atomic
from vsearch.imaging.thumbnails import THUMB_SIDE, data_uri, thumbnail

#: The look every vsearch page shares (the gallery, the duplicates review).
PAGE_CSS = (
    "body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }\n"
    ".grid { display: flex; flex-wrap: wrap; gap: 12px; }\n"
    f"figure {{ margin: 0; width: {THUMB_SIDE}px; text-align: center; }}\n"
)


class HitLike(Protocol):
    """What a gallery needs of a result (read-only, as :class:`vsearch.api.Hit` is)."""

    @property
    def rank(self) -> int: ...

    @property
    def path(self) -> Path: ...

    @property
    def score(self) -> float: ...


def _atomic_write(path: Path, data: bytes) -> None:
    # A file is replaced atomically; a FIFO or /dev/null is written in place, never replaced.
    atomic.write_output(path, data)


def write_page(out: Path, doc: str) -> Path:
    """Write an HTML page atomically (the folder must exist); returns the path written."""
    out = Path(out).expanduser()
    _atomic_write(out, doc.encode("utf-8", "backslashreplace"))
    return out


def file_uri(path: Path | str) -> str:
    """The ``file://`` URI of ``path`` made absolute (names that are not UTF-8 are percent-encoded bytes)."""
    return Path(path).expanduser().absolute().as_uri()


def _figure(src: str | None, caption: str, title: str, css: str, link: str | None = None) -> str:
    img = (f'<img src="{src}" alt="{html.escape(title)}" title="{html.escape(title)}">' if src
           else '<div class="missing">unreadable</div>')
    if link:
        img = f'<a href="{html.escape(link)}">{img}</a>'
    return f'<figure class="{css}">{img}<figcaption>{caption}</figcaption></figure>'


def page_title(queries: Sequence[Path | str], negatives: Sequence[Path] = ()) -> str:
    """``vsearch: cat.jpg, dog.jpg, not car.jpg`` or ``vsearch: "a dog on the beach"``."""
    names = [Path(q).name if isinstance(q, Path) else f"\u201c{q}\u201d" for q in queries]
    names += [f"not {Path(n).name}" for n in negatives]
    return "vsearch: " + (", ".join(names) if names else "results")


def write_html(out: Path, hits: Sequence[HitLike], *, queries: Sequence[Path | str] = (),
               negatives: Sequence[Path] = (), title: str | None = None) -> Path:
    """Write a self-contained HTML gallery: the query, then each result with its score beneath.

    Each image links to its file; ``title`` defaults to :func:`page_title` (the query's names).
    """
    title = title or page_title(queries, negatives)
    parts = []
    for q in queries:
        if isinstance(q, Path):
            thumb = thumbnail(q)
            parts.append(_figure(data_uri(thumb) if thumb else None,
                                 f"query<br><span class=\"path\">{html.escape(q.name)}</span>", str(q), "query",
                                 link=file_uri(q)))
        else:
            parts.append(f'<figure class="query text"><div class="text">&ldquo;{html.escape(q)}&rdquo;</div>'
                         '<figcaption>text query</figcaption></figure>')
    for q in negatives:
        thumb = thumbnail(q)
        parts.append(_figure(data_uri(thumb) if thumb else None,
                             f"not<br><span class=\"path\">{html.escape(q.name)}</span>", str(q), "query negative",
                             link=file_uri(q)))
    results = []
    for h in hits:
        thumb = thumbnail(h.path)
        caption = (f'<span class="rank">#{h.rank}</span> <span class="score">{h.score:.4f}</span><br>'
                   f'<span class="path">{html.escape(Path(h.path).name)}</span>')
        results.append(_figure(data_uri(thumb) if thumb else None, caption, str(h.path), "hit",
                               link=file_uri(h.path)))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{PAGE_CSS}figure img, .missing, .text {{ width: {THUMB_SIDE}px; height: {THUMB_SIDE}px; object-fit: contain;
  background: #eee; display: flex; align-items: center; justify-content: center; }}
figure.query img, figure.query .text {{ outline: 3px solid #2a7; }}
figure.negative img {{ outline: 3px solid #c33; }}
figcaption {{ font-size: 13px; margin-top: 4px; word-break: break-all; }}
.score {{ font-weight: bold; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Query</h2><div class="grid queries">{''.join(parts)}</div>
<h2>{len(results)} results</h2><div class="grid results">{''.join(results)}</div>
</body></html>
"""
    return write_page(out, doc)


def write_sheet(out: Path, hits: Sequence[HitLike], *, queries: Sequence[Path | str] = (),
                columns: int = 5, side: int = 200) -> Path:
    """Write a contact-sheet PNG: query tiles first (green frame), then results with rank and score."""
    from PIL import Image, ImageDraw

    label_h = 34
    tiles: list[tuple[Any, str, str, bool]] = []
    for q in queries:
        if isinstance(q, Path):
            tiles.append((thumbnail(q, side), "query", q.name, True))
        else:
            tiles.append((None, "text query", q, True))
    for h in hits:
        tiles.append((thumbnail(h.path, side), f"#{h.rank}  {h.score:.4f}", Path(h.path).name, False))
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    pad = 8
    sheet = Image.new("RGB", (columns * (side + pad) + pad, rows * (side + label_h + pad) + pad), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    for i, (img, line1, line2, is_query) in enumerate(tiles):
        x = pad + (i % columns) * (side + pad)
        y = pad + (i // columns) * (side + label_h + pad)
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=(230, 230, 230))
        if img is not None:
            sheet.paste(img, (x + (side - img.width) // 2, y + (side - img.height) // 2))
        elif not is_query or line1 != "query":
            draw.text((x + 6, y + side // 2 - 6), line2[:30] if is_query else "unreadable", fill=(90, 90, 90))
        if is_query:
            draw.rectangle([x, y, x + side - 1, y + side - 1], outline=(34, 170, 119), width=3)
        draw.text((x + 2, y + side + 3), line1, fill=(20, 20, 20))
        draw.text((x + 2, y + side + 17), line2[:34], fill=(90, 90, 90))
    out = Path(out).expanduser()
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    _atomic_write(out, buf.getvalue())
    return out
