"""Does a trained projection head help? Honest splits, paired bootstrap CIs (issue 12, item 5).

    nice python benchmarks/bench_train.py                       # flowers17 (copy of the cached index)
    nice python benchmarks/bench_train.py --index /work/cache/tiny-index \
        --labels /work/shared/datasets/tiny-imagenet-val/labels.csv

Splits (all seeded):

* by class: the classes are split in two halves, A (judged) and B (never judged);
* by image: within every class, half the images are *train* images, half *held out*.

Training data, on train images only: self-supervised views (``--views`` edited copies of each
train image, embedded with the index's model, as ``vsearch train`` does); simulated judgments
(a ``--judged`` fraction of class-A train images are queries; a person judges each one's top 10
raw results among class-A train images: same class relevant, else irrelevant, so the
irrelevant ones are the hard negatives). Class-B images are never judged.

Evaluation, on held-out images only (no image whose views or judgments were trained on is
ever a query or a result): the database is the held-out images; every held-out image queries
it for its class (mrr, precision@10, recall@10), reported for class-A and class-B queries
apart; ``--copies`` held-out images get edited copies (augment.py's eight kinds) that must find
their original (recall@1, mrr). Each system is compared with the raw vectors by a paired
bootstrap over queries (metrics.paired_bootstrap_ci, as compare.py does).

Systems: raw; the fits' common start (the top-``dim`` principal directions, untrained);
self-supervised; judgments only; both; and a blend of raw and head scores (``alpha`` raw +
(1 - alpha) head) for each head.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vsearch.vectors import head as adapter  # noqa: E402
from vsearch.imaging import augment
from vsearch.evaluation import metrics
from vsearch.learning import train as tr  # noqa: E402
from vsearch.retrieval.query import QueryEncoder  # noqa: E402
from vsearch.storage.store import Store  # noqa: E402

KS = (1, 10)
DEPTH = 100


def read_labels(path: Path, root: Path) -> dict[str, str]:
    """Relative path -> class, from a ``path,group[,...]`` CSV (paths relative to ``root`` or absolute)."""
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            p = Path(row["path"])
            rel = p.relative_to(root).as_posix() if p.is_absolute() else p.as_posix()
            out[rel] = row["group"]
    return out


def split(classes: np.ndarray, seed: int) -> tuple[set[str], np.ndarray]:
    """(class-A names, train mask by row): half the classes judged, half of each class's images train."""
    rng = np.random.default_rng(seed)
    names = sorted(set(classes) - {""})  # unlabelled images take no part
    judged = set(rng.permutation(names)[: len(names) // 2].tolist())
    train = np.zeros(len(classes), dtype=bool)
    for c in names:
        rows = np.flatnonzero(classes == c)
        train[rng.permutation(rows)[: len(rows) // 2]] = True
    return judged, train


def simulate_judgments(x: np.ndarray, classes: np.ndarray, pool: np.ndarray, fraction: float,
                       seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """A person judges the top 10 raw results (within ``pool`` rows) of a fraction of ``pool``."""
    rng = np.random.default_rng(seed + 1)
    queries = np.sort(rng.permutation(pool)[: max(1, int(round(fraction * len(pool))))])
    sims = np.asarray(x[queries]) @ np.asarray(x[pool]).T
    relevant, irrelevant = [], []
    for qi, q in enumerate(queries):
        order = [int(pool[j]) for j in np.argsort(-sims[qi], kind="stable") if pool[j] != q][:10]
        for r in order:
            (relevant if classes[r] == classes[q] else irrelevant).append((int(q), r))
    return relevant, irrelevant


def rank(queries: np.ndarray, db: np.ndarray, own: list[int | None]) -> np.ndarray:
    """Top-DEPTH database positions per query, the query's own position left out."""
    sims = queries @ db.T
    for i, o in enumerate(own):
        if o is not None:
            sims[i, o] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :DEPTH]


def scores_of(ranked: np.ndarray, relevant: list[set[int]]) -> list[dict[str, float]]:
    return [metrics.score_query(metrics.QueryResult(query=str(i), ranked=tuple(int(r) for r in row),
                                                    gains=dict.fromkeys(rel, 1.0)), KS)
            for i, (row, rel) in enumerate(zip(ranked, relevant))]


def blend_rank(qr: np.ndarray, dbr: np.ndarray, qh: np.ndarray, dbh: np.ndarray, own: list[int | None],
               alpha: float) -> np.ndarray:
    sims = alpha * (qr @ dbr.T) + (1 - alpha) * (qh @ dbh.T)
    for i, o in enumerate(own):
        if o is not None:
            sims[i, o] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :DEPTH]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path("/work/cache/flowers17-index"))
    ap.add_argument("--labels", type=Path, default=Path("/work/shared/datasets/flowers17/labels.csv"))
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--lr", type=float, default=tr.TrainOptions.lr)
    ap.add_argument("--anchor", type=float, default=tr.TrainOptions.anchor)
    ap.add_argument("--temperature", type=float, default=tr.TrainOptions.temperature)
    ap.add_argument("--judged", type=float, default=0.5, help="fraction of class-A train images judged")
    ap.add_argument("--copies", type=int, default=100, help="held-out images whose edited copies are queries")
    ap.add_argument("--alpha", type=float, default=0.5, help="blend weight of the raw scores")
    ap.add_argument("--max-train", type=int, default=0, help="at most this many train images get views (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep embedded views and copies between runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        index_dir = Path(tmp) / "index"
        shutil.copytree(args.index, index_dir)  # a copy: the cached index stays untouched
        with Store.open(index_dir) as store:
            run(store, args)


def embed_cached(cache: Path | None, name: str, make) -> tuple[np.ndarray, ...]:
    if cache is not None and (cache / f"{name}.npz").exists():
        with np.load(cache / f"{name}.npz") as data:
            return tuple(data[k] for k in sorted(data.files))
    started = time.perf_counter()
    arrays = make()
    print(f"# {name}: embedded in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / f"{name}.npz", **{f"a{i}": a for i, a in enumerate(arrays)})
    return arrays


def run(store: Store, args: argparse.Namespace) -> None:
    meta = store.meta
    assert meta is not None
    root = Path(meta.root)
    x = np.asarray(store.vectors(), dtype=np.float32)
    paths = store.paths_by_row()
    labels = read_labels(args.labels, root)
    classes = np.asarray([labels.get(p, "") for p in paths])
    judged_classes, train = split(classes, args.seed)
    in_a = np.asarray([c in judged_classes for c in classes])
    train_rows = np.flatnonzero(train)
    held = np.flatnonzero(~train & (classes != ""))
    encoder = QueryEncoder(store, device="cpu", adapter=False)
    timing: dict[str, float] = {}

    # Self-supervised views of the train images only.
    view_rows = train_rows
    if args.max_train:
        view_rows = np.sort(np.random.default_rng(args.seed).permutation(train_rows)[: args.max_train])
    started, cpu = time.perf_counter(), time.process_time()
    owner, views = embed_cached(args.cache, f"{args.index.name}-views-v2-{args.views}-s{args.seed}-n{len(view_rows)}",
                                lambda: tr.embed_views(encoder, [root / paths[r] for r in view_rows], args.views,
                                                       args.seed, keys=view_rows))
    timing["views_embed_s"] = time.perf_counter() - started
    timing["views_embed_cpu_s"] = time.process_time() - cpu  # what 2 idle cores would take about half of
    timing["views"] = len(owner)

    # Edited copies of held-out images: queries that must find their original.
    picked = np.sort(np.random.default_rng(args.seed + 2).permutation(held)[: args.copies])

    def make_copies() -> tuple[np.ndarray, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="bench-copies-") as folder:
            made = augment.make_copies([root / paths[r] for r in picked], Path(folder), seed=args.seed + 3)
            where = {root / paths[r]: int(r) for r in picked}
            vecs = np.concatenate([encoder.embed_images([c.copy for c in made[i:i + 16]])
                                   for i in range(0, len(made), 16)])
            return np.asarray([where[c.original] for c in made]), vecs

    copy_orig, copy_vecs = embed_cached(args.cache, f"{args.index.name}-copies-s{args.seed}-n{len(picked)}", make_copies)

    # Simulated judgments: class-A train images only.
    pool = np.flatnonzero(train & in_a)
    relevant, irrelevant = simulate_judgments(x, classes, pool, args.judged, args.seed)

    options = tr.TrainOptions(epochs=args.epochs, dim=args.dim, seed=args.seed, views=args.views,
                              lr=args.lr, anchor=args.anchor, temperature=args.temperature)
    w0 = tr.initial_head(x[train_rows], args.dim)
    no_views = (np.zeros(0, dtype=np.int64), np.zeros((0, x.shape[1]), dtype=np.float32))
    heads = {}
    for name, (vo, vv), rel, irr in (
        ("self-supervised", (owner, views), [], []),
        ("judgments only", no_views, relevant, irrelevant),
        ("both", (owner, views), relevant, irrelevant),
    ):
        started, cpu = time.perf_counter(), time.process_time()
        pairs = tr.make_pairs(x, vo, vv, view_rows, rel, irr)
        head, losses = tr.fit_head(pairs, w0, options)
        timing[f"fit_{name}_s"] = time.perf_counter() - started
        timing[f"fit_{name}_cpu_s"] = time.process_time() - cpu
        timing[f"pairs_{name}"] = len(pairs.anchors)
        heads[name] = head
        print(f"# {name}: {len(pairs.anchors)} pairs, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
              f"fit {timing[f'fit_{name}_s']:.1f}s", file=sys.stderr)

    # Evaluation over the held-out images only.
    db_raw = x[held]
    pos = {int(r): i for i, r in enumerate(held)}
    group_rel = [{pos[int(s)] for s in held if classes[s] == classes[q] and s != q} for q in held]
    copy_rel = [{pos[int(o)]} for o in copy_orig]
    sets = {
        "class A (judged)": np.flatnonzero(in_a[held]),
        "class B (unseen)": np.flatnonzero(~in_a[held]),
    }

    def evaluate(q_class: np.ndarray, db: np.ndarray, q_copy: np.ndarray,
                 ranker=None) -> dict[str, list[dict[str, float]]]:
        own = list(range(len(held)))
        if ranker is None:
            rk_class, rk_copy = rank(q_class, db, own), rank(q_copy, db, [None] * len(q_copy))
        else:
            rk_class, rk_copy = ranker(own)
        per = scores_of(rk_class, group_rel)
        out = {name: [per[i] for i in idx] for name, idx in sets.items()}
        out["edited copies"] = scores_of(rk_copy, copy_rel)
        return out

    systems = {"raw": evaluate(db_raw, db_raw, copy_vecs)}
    # The start of every fit, untrained: what the projection to dim alone does.
    start = adapter.Head(w0)
    systems[f"start (top-{args.dim} directions, untrained)"] = evaluate(
        start.apply(db_raw), start.apply(db_raw), start.apply(copy_vecs))
    for name, head in heads.items():
        db_h = head.apply(db_raw)
        cp_h = head.apply(copy_vecs)
        systems[name] = evaluate(db_h, db_h, cp_h)

        def ranker(own, db_h=db_h, cp_h=cp_h):
            return (blend_rank(db_raw, db_raw, db_h, db_h, own, args.alpha),
                    blend_rank(copy_vecs, db_raw, cp_h, db_h, [None] * len(copy_vecs), args.alpha))
        systems[f"{name} + blend {args.alpha:g}"] = evaluate(db_raw, db_raw, copy_vecs, ranker)

    report = tables(systems, args)
    print(report)
    timing["train_images"] = len(view_rows)
    timing["views_per_s"] = timing["views"] / max(timing["views_embed_s"], 1e-9)
    print(f"\ntiming: {json.dumps({k: round(v, 3) for k, v in timing.items()})}")
    print(f"judgments: {len(relevant)} relevant, {len(irrelevant)} irrelevant from {len(pool)} class-A train "
          f"images ({args.judged:g} judged); classes A = {sorted(judged_classes)}")
    if args.json:
        args.json.write_text(json.dumps({"timing": timing, "systems": {
            s: {g: {m: float(np.mean([q[m] for q in qs])) for m in qs[0]} for g, qs in v.items()}
            for s, v in systems.items()}}, indent=2))


def tables(systems: dict[str, dict[str, list[dict[str, float]]]], args: argparse.Namespace) -> str:
    """One markdown table per query set: each system's mean metrics, and its difference from raw with a CI."""
    lines = [f"index {args.index.name}, views {args.views}, epochs {args.epochs}, dim {args.dim}, "
             f"lr {args.lr:g}, anchor {args.anchor:g}, tau {args.temperature:g}, seed {args.seed}"]
    raw = systems["raw"]
    for group in raw:
        keys = ("recall@1", "mrr") if group == "edited copies" else ("mrr", "precision@10", "recall@10")
        lines += ["", f"### {group} ({len(raw[group])} queries, held out)", "",
                  "| system | " + " | ".join(keys) + " | " + " | ".join(f"Δ{k} [95% CI]" for k in keys) + " |",
                  "|---" * (1 + 2 * len(keys)) + "|"]
        for name, per in systems.items():
            means = [np.mean([q[k] for q in per[group]]) for k in keys]
            diffs = []
            for k in keys:
                if name == "raw":
                    diffs.append("")
                    continue
                ci = metrics.paired_bootstrap_ci([q[k] for q in raw[group]], [q[k] for q in per[group]],
                                                 n_resamples=2000, seed=args.seed)
                diffs.append(f"{ci.mean_diff:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]")
            lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
