"""What the re-ranking rules cost: ``--max-per-folder`` and ``--max-per-day`` on flowers17 in albums.

flowers17 is one flat folder, so a measurement set is made from it in a scratch folder (nothing
is written into the project or the dataset), the way a photo library is laid out: albums that
mix classes, some heavy in one class.

* For each of the 17 classes, ``--heavy`` of its 80 photos (picked by ``--seed``) go to an album
  of its own (``heavy-<class>``), with ``--fillers`` photos of other classes mixed in.
* Every other photo is dealt at random into ``mixed-NN`` albums of ``--mixed-size`` photos.
* Each album was "shot" over ``--days`` consecutive days from a random start: each photo gets one
  of them as its EXIF DateTimeOriginal, written as an APP1 segment into a byte copy of the file
  (the pixels, and so the embeddings, are those of the original).

The copies are indexed with the default model (efficientnet-lite0; about 20 s of embedding),
then every photo is a query against the other photos of its class (``evaluate --groups``, its
own entry left out, exact search), once without rules and once per cap. Each row gives the
metrics, the concentration (``folder_share@K``, ``day_share@K``: the mean share of the top K from
the most common album / day), and the change in precision@K against no rule with a paired
bootstrap 95% CI over the queries. Query latency (``Index.query`` with ``exclude_self``, exact;
the median over ``--latency-queries`` queries of each query's fastest of three interleaved
rounds) is measured without a rule and with the smallest cap of each; the cost of reading one
capture date from a file's header (the day rule's first look at a candidate) is timed apart.

Usage::

    python benchmarks/bench_rules.py [--data ../shared/datasets/flowers17] [--work DIR] [--seed 0]
        [--caps 2,3,5] [--k 10] [--keep]

The markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import random
import statistics
import struct
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vsearch import api  # noqa: E402
from vsearch.imaging import images  # noqa: E402
from vsearch.evaluation import metrics  # noqa: E402

_EXIF_IFD, _DATETIME_ORIGINAL = 0x8769, 0x9003


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_labels(data: Path) -> list[tuple[Path, str]]:
    with (data / "labels.csv").open(newline="") as f:
        return [(data / row["path"], row.get("class_name") or row["group"]) for row in csv.DictReader(f)]


def make_albums(labelled: list[tuple[Path, str]], *, heavy: int, fillers: int, mixed_size: int,
                seed: int) -> dict[Path, str]:
    """Photo -> album name (see the module docstring)."""
    rng = random.Random(seed)
    by_class: dict[str, list[Path]] = defaultdict(list)
    for path, cls in labelled:
        by_class[cls].append(path)
    album: dict[Path, str] = {}
    rest: list[Path] = []
    for cls in sorted(by_class):
        photos = sorted(by_class[cls])
        rng.shuffle(photos)
        album.update((p, f"heavy-{cls.replace(' ', '_')}") for p in photos[:heavy])
        rest += photos[heavy:]
    rng.shuffle(rest)
    for cls in sorted(by_class):
        for p in [p for p in rest if p not in album and p not in by_class[cls]][:fillers]:
            album[p] = f"heavy-{cls.replace(' ', '_')}"
    rest = [p for p in rest if p not in album]
    for i, p in enumerate(rest):
        album[p] = f"mixed-{i // mixed_size:02d}"
    return album


def capture_days(album: dict[Path, str], *, days: int, seed: int) -> dict[Path, datetime.date]:
    """Photo -> a day among its album's ``days`` consecutive days."""
    rng = random.Random(seed + 1)
    start = {name: datetime.date(2015, 1, 1) + datetime.timedelta(days=rng.randrange(3650))
             for name in sorted(set(album.values()))}
    return {p: start[a] + datetime.timedelta(days=rng.randrange(days)) for p, a in sorted(album.items())}


def with_exif_date(jpeg: bytes, day: datetime.date, seconds: int) -> bytes:
    """The JPEG's bytes with an EXIF segment holding DateTimeOriginal (pixels untouched)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0110] = "bench_rules"  # camera model: an IFD0 entry beside the Exif IFD pointer
    when = datetime.datetime.combine(day, datetime.time()) + datetime.timedelta(seconds=seconds)
    exif.get_ifd(_EXIF_IFD)[_DATETIME_ORIGINAL] = when.strftime("%Y:%m:%d %H:%M:%S")
    payload = exif.tobytes()  # starts with b"Exif\0\0"
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    at = 2
    if jpeg[2:4] == b"\xff\xe0":  # keep JFIF's APP0 first
        at = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:at] + segment + jpeg[at:]


def write_tree(labelled: list[tuple[Path, str]], album: dict[Path, str], day: dict[Path, datetime.date],
               root: Path, seed: int) -> Path:
    """Copies under ``root/<album>/``; returns a groups CSV (path, class) of the copies."""
    rng = random.Random(seed + 2)
    root.mkdir(parents=True)
    groups = root.parent / "groups.csv"
    with groups.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "group"])
        for path, cls in labelled:
            dest = root / album[path] / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(with_exif_date(path.read_bytes(), day[path], rng.randrange(86400)))
            writer.writerow([dest, cls])
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "flowers17")
    ap.add_argument("--work", type=Path, default=None,
                    help="scratch folder, kept (default: a temporary one); a tree made there before is reused")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--caps", default="2,3,5")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--heavy", type=int, default=30, help="photos of a class in its own album")
    ap.add_argument("--fillers", type=int, default=10, help="photos of other classes in each heavy album")
    ap.add_argument("--mixed-size", type=int, default=20)
    ap.add_argument("--days", type=int, default=3, help="days each album spans")
    ap.add_argument("--latency-queries", type=int, default=200)
    args = ap.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    k = args.k

    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        work = args.work or Path(tmp)
        root = work / "photos"
        labelled = read_labels(args.data)
        album = make_albums(labelled, heavy=args.heavy, fillers=args.fillers, mixed_size=args.mixed_size,
                            seed=args.seed)
        day = capture_days(album, days=args.days, seed=args.seed)
        if not root.exists():
            groups = write_tree(labelled, album, day, root, args.seed)
        else:
            groups = root.parent / "groups.csv"
        n_albums = len(set(album.values()))
        log(f"{len(labelled)} photos in {n_albums} albums under {root}")
        started = time.perf_counter()
        index = api.build_index(root, work / "index", trees=None)
        log(f"indexed in {time.perf_counter() - started:.1f}s")

        settings: list[tuple[str, dict[str, int]]] = [("none", {})]
        settings += [(f"--max-per-folder {c}", {"max_per_folder": c}) for c in caps]
        settings += [(f"--max-per-day {c}", {"max_per_day": c}) for c in caps]
        rows = []
        base_scores = None
        for name, kw in settings:
            started = time.perf_counter()
            report = index.evaluate(groups=groups, ks=(1, k), mode="exact", **kw)
            took = time.perf_counter() - started
            scores = [r.scores[f"precision@{k}"] for r in report.records]
            if base_scores is None:
                base_scores, ci = scores, None
            else:
                ci = metrics.paired_bootstrap_ci(base_scores, scores, seed=args.seed)
            rows.append((name, report.metrics, ci, took))
            log(f"{name}: evaluated in {took:.1f}s")

        index.close()
        rng = random.Random(args.seed)
        queries = rng.sample([Path(p) for p, _ in _read_groups(groups)], args.latency_queries)
        latency = [("none", {}), *[(f"--max-per-folder {c}", {"max_per_folder": c}) for c in caps[:1]],
                   *[(f"--max-per-day {c}", {"max_per_day": c}) for c in caps[:1]]]
        best: dict[str, list[float]] = {name: [math.inf] * len(queries) for name, _ in latency}
        with api.open_index(work / "index") as fresh:
            # Rounds interleave the rules, and each query keeps its fastest time: this machine's
            # other work shows as noise that a minimum filters out.
            for _ in range(3):
                for name, kw in latency:
                    for i, q in enumerate(queries):
                        started = time.perf_counter()
                        fresh.query(q, k, exclude_self=True, mode="exact", **kw)
                        best[name][i] = min(best[name][i], (time.perf_counter() - started) * 1000)
        lat = {name: statistics.median(times) for name, times in best.items()}
        images._exif_date_cached.cache_clear()
        photos = sorted(root.rglob("*.jpg"))
        started = time.perf_counter()
        dated = sum(images.exif_date(p) is not None for p in photos)
        per_date_ms = (time.perf_counter() - started) * 1000 / len(photos)

    print(f"flowers17, {len(labelled)} photos in {n_albums} albums (17 heavy: {args.heavy} of one class + "
          f"{args.fillers} others; the rest in albums of {args.mixed_size}), each album over {args.days} days; "
          f"efficientnet-lite0, exact search, {int(rows[0][1]['num_queries'])} queries (seed {args.seed})\n")
    print(f"| rule | recall@{k} | precision@{k} | map@{k} | mrr | folder_share@{k} | day_share@{k} | "
          f"precision@{k} change [95% CI] |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m, ci, _ in rows:
        change = "" if ci is None else f"{ci.mean_diff:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"
        print(f"| {name} | {m[f'recall@{k}']:.4f} | {m[f'precision@{k}']:.4f} | {m[f'map@{k}']:.4f} | "
              f"{m['mrr']:.4f} | {m[f'folder_share@{k}']:.3f} | {m.get(f'day_share@{k}', 0.0):.3f} | {change} |")
    print(f"\nQuery latency, ms: median over {args.latency_queries} queries of each one's fastest of 3 rounds "
          f"(Index.query, k={k}, exact, in-process):\n")
    print("| rule | ms |")
    print("|---|---|")
    for name, ms in lat.items():
        print(f"| {name} | {ms:.2f} |")
    print(f"\nReading a capture date from a file's header: {per_date_ms:.3f} ms per file "
          f"({dated} of {len(photos)} dated; read once per file per process, only for the candidates looked at).")

def _read_groups(groups: Path) -> list[tuple[str, str]]:
    with groups.open(newline="") as f:
        return [(row["path"], row["group"]) for row in csv.DictReader(f)]


if __name__ == "__main__":
    main()
