"""Where evaluation labels come from: label files (read and written) and edited copies.

Two label files, both CSV; paths are absolute or relative to the folder that holds the CSV:

* pairs:  ``query,positive[,relevance]``: each row adds one relevant image (gain = relevance,
  default 1) to that query. A query may be outside the index (embedded on the fly), or
  ``text:WORDS``, a text query (CLIP indexes).
  An optional ``augmentation`` column names the edit that made the query (``make-pairs`` writes
  it), and the metrics are then also broken down by it.
* groups: ``path,group`` (extra columns ignored): every image is a query whose relevant images
  are the other members of its group. Single-member groups are not queries (nothing to find).

A row repeated in a file (same paths after resolving, same relevance or group) counts once;
:attr:`Labels.duplicates` says how many repeats were dropped. A row with more fields than the
header, an empty path or an empty group cell is an error that names the file and line.

Judgments (``vsearch judge``, the page; vsearch.learning.judgments): :func:`judged_labels` turns the
latest verdict of each judged pair into labels (gain = grade; an irrelevant verdict is gain 0),
images found through the index by content digest, and :func:`pairs_csv` writes them as a pairs
file that :func:`read_pairs` reads back to the same labels.

Augmented copies (no file): :func:`augment_labels` edits N indexed images (see augment.py);
each copy is a query whose one relevant image is its original, or an indexed pixel duplicate of
it (collections hold duplicates: flowers17 has 66 pairs, and without this, half of the misses
of recall@1 there were the original's own twin ranked first). :func:`make_pairs` writes such
copies and their pairs CSV, for reuse.
"""

from __future__ import annotations

import csv
import io
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vsearch.imaging import augment
from vsearch.imaging import images
from vsearch.imaging import reading
from vsearch.vectors import nearest
from vsearch.atomic import write_bytes as atomic_write_bytes
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.retrieval.search import Searcher
from vsearch.learning import judgments as jd
from vsearch.storage.store import Store, file_digest

ProgressFn = Callable[[int, int], None]
#: How a text query is written where an image path would be (judgments, pairs files).
TEXT_PREFIX = "text:"

#: Duplicates of an augmented original are looked for among its nearest indexed neighbours with
#: at least this cosine (a shortlist: the test itself is on pixels, so every model is scored
#: against the same labels). On flowers17 with Lite0 the 66 duplicate pairs have cosine >= 0.89.
DUPLICATE_SHORTLIST = 10
DUPLICATE_MIN_COSINE = 0.85


@dataclass(frozen=True)
class LabelledQuery:
    """One query image and the gain of each relevant image (absolute paths).

    ``kind``: the edit that made the query from its original, for augmented copies.
    ``same_as``: indexed images that stand for a relevant one (pixel duplicates of it): in a
    ranking they count as that image, once, at the first place either appears.
    ``text``: a text query (CLIP indexes) instead of an image; ``query`` is then ``text:`` + it,
    a name for reports, not a file.
    """

    query: Path
    gains: dict[Path, float]
    kind: str | None = None
    same_as: dict[Path, Path] = field(default_factory=dict)
    text: str | None = None


@dataclass(frozen=True)
class Labels:
    """Labelled queries and what was left out making them.

    ``duplicates``: rows of a label file that repeated an earlier row (counted once).
    ``skipped``: indexed images picked for augmented copies whose file is no longer on disk.
    ``notes``: what else was left out, one sentence each (judged queries that cannot be run).
    """

    queries: list[LabelledQuery]
    duplicates: int = 0
    skipped: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()


# --- label files ----------------------------------------------------------------------------


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` for each data row, cells stripped; the line is where the row starts."""
    path = Path(path).expanduser()
    rows = []
    try:
        # The bounded reader images go through: a FIFO or device is refused, never waited on.
        text = reading.read_regular(path).decode("utf-8-sig")
        with io.StringIO(text, newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise VsearchError(
                    f"{path}: expected a CSV header with {','.join(required)}; found "
                    f"{','.join(header) or 'no header'}"
                )
            line = reader.line_num + 1
            for cells in reader:
                if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
                    raise VsearchError(f"{path}:{line}: {len(cells)} fields, but the header has {len(header)}")
                if any(c.strip() for c in cells):  # a blank line is no row
                    rows.append((line, {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header)}))
                line = reader.line_num + 1
    except OSError as exc:
        raise VsearchError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ImageDecodeError as exc:  # not a regular file, or too large
        raise VsearchError(f"cannot read {path}: {exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise VsearchError(f"{path} is not a readable CSV file ({exc})") from None
    if not rows:
        raise VsearchError(f"{path} has a header but no rows")
    return rows


def _resolve(base: Path, value: str, csv_path: Path, line: int) -> Path:
    if not value:
        raise VsearchError(f"{csv_path}:{line}: empty path")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def read_pairs(path: Path) -> Labels:
    """Queries from a pairs CSV (``query,positive[,relevance]``), in first-seen order.

    A pair listed twice with the same relevance counts once; with two relevances it is an error.
    """
    path = Path(path).expanduser()
    rows = _read_csv(path, ["query", "positive"])
    base = path.resolve().parent
    queries: OrderedDict[Path, dict[Path, float]] = OrderedDict()
    first_line: dict[tuple[Path, Path], int] = {}
    kinds: dict[Path, str] = {}
    duplicates = 0
    texts: dict[Path, str] = {}
    for line, row in rows:
        if row["query"].startswith(TEXT_PREFIX):
            q = Path(row["query"])
            texts[q] = row["query"][len(TEXT_PREFIX):]
        else:
            q = _resolve(base, row["query"], path, line)
        pos = _resolve(base, row["positive"], path, line)
        rel = row.get("relevance") or "1"
        try:
            gain = float(rel)
        except ValueError:
            raise VsearchError(f"{path}:{line}: relevance {rel!r} is not a number") from None
        if gain < 0 or not np.isfinite(gain):
            raise VsearchError(f"{path}:{line}: relevance must be a non-negative number, not {rel!r}")
        gains = queries.setdefault(q, {})
        if pos in gains:
            if gains[pos] != gain:
                raise VsearchError(f"{path}:{line}: this pair is also on line {first_line[q, pos]} with "
                                   f"relevance {gains[pos]:g}, here {gain:g}; keep one")
            duplicates += 1
            continue
        gains[pos] = gain
        first_line[q, pos] = line
        if row.get("augmentation"):
            kinds[q] = row["augmentation"]
    return Labels([LabelledQuery(q, g, kinds.get(q), text=texts.get(q)) for q, g in queries.items()], duplicates)


def read_groups(path: Path) -> Labels:
    """Queries from a groups CSV (``path,group``): each member against the rest of its group.

    A path listed twice in the same group counts once; an empty group cell is an error.
    """
    path = Path(path).expanduser()
    rows = _read_csv(path, ["path", "group"])
    base = path.resolve().parent
    groups: OrderedDict[str, dict[Path, None]] = OrderedDict()  # dict: ordered, and a set
    duplicates = 0
    for line, row in rows:
        member = _resolve(base, row["path"], path, line)
        if not row["group"]:
            raise VsearchError(f"{path}:{line}: empty group for {row['path']}")
        members = groups.setdefault(row["group"], {})
        if member in members:
            duplicates += 1
        members[member] = None
    queries = []
    for members in groups.values():
        for m in members:
            others = {o: 1.0 for o in members if o != m}
            if others:
                queries.append(LabelledQuery(m, others))
    if not queries:
        raise VsearchError(f"{path}: no group has two or more members, so there is nothing to retrieve")
    return Labels(queries, duplicates)


# --- good labels: people's judgments ----------------------------------------------------------


def judged_labels(store: Store) -> Labels:
    """Labels from the judgments recorded in ``store``'s index folder (the latest verdict of each
    pair counts; gain = its grade, 0 for irrelevant).

    A query is run from its indexed image (found by content digest, wherever it is now), else
    from the file it was judged from if that still holds the same bytes. Left out, with a note
    each: text queries (evaluation embeds images), queries whose image is gone, results no longer
    in the index, and queries left with no relevant result (nothing to find). A text query
    (``text:WORDS``) is run through the model's text tower; an image-only index leaves it out.
    """
    verdicts = jd.latest_verdicts(jd.read_judgments(store.dir))
    if not verdicts:
        raise VsearchError(f"no judgments recorded in {store.dir}: record some with "
                           "`Index.judge(QUERY, RESULTS, relevant=True)` or on the page")
    by_query: OrderedDict[str, list] = OrderedDict()
    for v in verdicts:
        by_query.setdefault(v.query, []).append(v)
    copies = _indexed_copies(store, {v.result for v in verdicts} | set(by_query))

    def indexed(digest: str) -> Path | None:
        return copies[digest][0] if copies.get(digest) else None

    queries: list[LabelledQuery] = []
    text = gone = lost = empty = 0
    has_text = store.meta is not None and store.meta.model.supports_text
    for key, judged in by_query.items():
        if key.startswith(TEXT_PREFIX) and not has_text:
            text += 1
            continue
        query = Path(key) if key.startswith(TEXT_PREFIX) else indexed(key) or _same_file(judged[-1].query_path, key)
        if query is None:
            gone += 1
            continue
        gains: dict[Path, float] = {}
        for v in judged:
            if not copies.get(v.result):
                lost += 1
            for result in copies.get(v.result, ()):  # a verdict on a photo holds for each copy of its bytes
                gains[result] = float(v.grade)
        if not any(g > 0 for g in gains.values()):
            empty += 1
            continue
        queries.append(LabelledQuery(query, gains, text=key[len(TEXT_PREFIX):] if key.startswith(TEXT_PREFIX) else None))
    notes = []
    if text:
        notes.append(f"{text} text quer{'y' if text == 1 else 'ies'} left out: this index's model has no text "
                     "tower (CLIP indexes have)")
    if gone:
        notes.append(f"{gone} quer{'y' if gone == 1 else 'ies'} left out: the image is neither in the index nor "
                     "on disk as judged")
    if lost:
        notes.append(f"{lost} judged result(s) left out: no longer in the index")
    if empty:
        notes.append(f"{empty} quer{'y' if empty == 1 else 'ies'} left out: no relevant result judged")
    if not queries:
        raise VsearchError(f"none of the {len(by_query)} judged queries in {store.dir} can be scored ("
                           f"{'; '.join(notes)}); judge some results relevant")
    return Labels(queries, notes=tuple(notes))


def _indexed_copies(store: Store, digests: set[str]) -> dict[str, list[Path]]:
    """Every indexed file (absolute path) holding each of ``digests``, in path order: a verdict
    keys the bytes, and a collection may hold them twice."""
    found: dict[str, list[Path]] = {}
    for entry in store.entries():  # one pass: the manifest looks a digest up one file at a time
        if entry.digest in digests and entry.row is not None and entry.skip_reason is None:
            committed = store.entry(entry.path)  # the reader's generation, as evaluation ranks it
            if committed is not None and committed.row is not None:
                found.setdefault(entry.digest, []).append(store.abs_path(entry.path).resolve())
    return found


def _same_file(path: str | None, digest: str) -> Path | None:
    """``path`` when it still holds the bytes of ``digest``, else None."""
    if not path:
        return None
    p = Path(path)
    try:
        return p.resolve() if p.is_file() and file_digest(images.read_image_bytes(p)) == digest else None
    except (OSError, VsearchError):
        return None


def pairs_csv(labels: Labels) -> str:
    """A pairs file (``query,positive,relevance``, absolute paths) holding ``labels``, every gain
    included (0 for an irrelevant verdict): :func:`read_pairs` reads back the same labels."""
    lines = ["query,positive,relevance"]
    for q in labels.queries:
        for p, gain in q.gains.items():
            lines.append(_csv_line([TEXT_PREFIX + q.text if q.text is not None else str(q.query), str(p), f"{gain:g}"]))
    return "\n".join(lines) + "\n"


# --- cheap labels: augmented copies ------------------------------------------------------------


def augment_labels(searcher: Searcher, n: int, seed: int, folder: Path,
                   progress: ProgressFn | None = None) -> Labels:
    """Edited copies of ``n`` indexed images, written into ``folder``: each copy finds its original.

    ``folder`` should be a temporary folder outside the index's root, so the copies never enter
    the index. The images picked depend on ``seed`` and the indexed paths only. An indexed
    pixel duplicate of an original (:func:`indexed_duplicates`) counts as the original: a
    collection that holds one photo twice must not score a miss when the twin comes first.
    A picked image whose file has gone since indexing is skipped (:attr:`Labels.skipped`).
    """
    root = Path(searcher.meta.root)
    picked = augment.pick([root / p for p in searcher.store.paths_by_row()], n, seed)
    skipped = tuple(p for p in picked if not p.exists())
    originals = [p for p in picked if p not in skipped]
    if not originals:
        raise VsearchError(f"none of the {n} images picked is still on disk (the first: {skipped[0]}); "
                           "call `build_index` to refresh the index")
    copies = augment.make_copies(originals, folder, seed=seed, progress=progress)
    twins = indexed_duplicates(searcher, originals)
    return Labels([LabelledQuery(c.copy, {c.original: 1.0}, c.kind, {t: c.original for t in twins[c.original]})
                   for c in copies], skipped=skipped)


def indexed_duplicates(searcher: Searcher, originals: Sequence[Path]) -> dict[Path, tuple[Path, ...]]:
    """For each indexed original, the other indexed images that are the same picture (augment.same_picture)."""
    rows = searcher.rows_of(list(originals))
    out: dict[Path, tuple[Path, ...]] = {p: () for p in originals}
    known = [p for p in originals if p in rows]
    if not known:
        return out
    vecs = np.asarray(searcher.vectors[[rows[p] for p in known]])
    found, scores = nearest.exact_search(searcher.vectors, vecs, DUPLICATE_SHORTLIST + 1)
    for p, cand, score in zip(known, found, scores):
        twins = [searcher.path(int(r)) for r, s in zip(cand, score)
                 if int(r) != rows[p] and s >= DUPLICATE_MIN_COSINE]
        out[p] = tuple(t for t in twins if augment.same_picture(p, t))
    return out


def make_pairs(folder: Path, n: int, seed: int, out_dir: Path,
               progress: ProgressFn | None = None) -> tuple[Path, int]:
    """Write edited copies of ``n`` images under ``folder`` into ``out_dir``, and ``out_dir/pairs.csv``.

    The CSV (``query,positive,relevance,augmentation``) names each copy relative to ``out_dir``
    and its original by absolute path, so ``evaluate --pairs out_dir/pairs.csv`` reads it back.
    Unlike ``evaluate --augment``, no index is at hand here to find duplicates of an original,
    so a twin of it ranked first counts as a miss.
    ``out_dir`` must be new or empty and not inside ``folder`` (the copies would be indexed
    with it). Returns the CSV's path and the number of copies.
    """
    folder = Path(folder).expanduser()
    out_dir = Path(out_dir).expanduser()
    walk = images.scan_folder(folder, exclude=[out_dir])  # checks the folder now; the walk is lazy
    if out_dir.resolve().is_relative_to(folder.resolve()):
        raise VsearchError(f"out={out_dir} is inside {folder}: the copies would be indexed with the originals; "
                           "choose a folder outside it")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise VsearchError(f"out={out_dir} exists and is not an empty folder; choose a new one")
    found = [f.path.resolve() for f in walk]
    if not found:
        raise VsearchError(f"no images under {folder}")
    originals = augment.pick(found, n, seed)
    copies = augment.make_copies(originals, out_dir, seed=seed, progress=progress)
    lines = ["query,positive,relevance,augmentation"]
    for c in copies:
        lines.append(_csv_line([c.copy.name, str(c.original), "1", c.kind]))
    pairs = out_dir / "pairs.csv"
    atomic_write_bytes(pairs, ("\n".join(lines) + "\n").encode("utf-8"))
    return pairs, len(copies)


def _csv_line(values: Iterable[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(list(values))
    return buf.getvalue()
