"""Embedding throughput: vsearch's indexer against a naive loop and the model-only ceiling.

Three ways to embed the same files with the same loaded model, batch size and threads, measured
in the same run, interleaved, each the median of ``--repeats``:

* **vsearch**: ``indexer.update`` into a fresh index (scan, read, digest, draft decode in
  worker threads, batched inference, chunk commits, consolidation: everything but the model
  load, which is done once beforehand and passed in).
* **naive**: one thread; for each batch, open each file, decode it at full size (no draft),
  resize it the same way, then one forward pass.
* **ceiling**: the forward pass alone (``embed_images``) on pre-made uint8 batches of the same
  size: what the model can do with no decoding at all.

The large-photo set is made here, so the benchmark runs anywhere: ``--images`` 4000x3000 JPEGs
(12 MP, quality 90, ~2.3 MB each, like a phone's) upscaled from ``sample_images/`` with a little
luminance grain so each file is distinct and compresses like a real photo.

``--tiny-imagenet PATH`` (default ``../shared/datasets/tiny-imagenet-val`` when it exists)
also measures the 64x64 JPEGs there (``--limit`` N of them), and the time of an unchanged
re-run over them through the real CLI in a fresh process (which must not import torch).

``--sweep`` measures the tuning choices one at a time around the defaults (decode workers,
torch threads, batch size, channels_last); ``--settings`` runs the vsearch path and the model
alone in child processes under process-wide settings (OpenMP wait policy, torch threads, glibc
malloc) and reports images/s, CPU per image and peak RSS.

``--runtime onnx`` (the default, as vsearch indexes after its first batch) runs all three with
the model exported to ONNX Runtime; ``--runtime torch`` with torch eager (channels_last).

Usage::

    python benchmarks/bench_embed.py [--runtime onnx|torch] [--images 48] [--repeats 3] [--batch-size 16]
        [--tiny-imagenet PATH] [--limit N] [--no-tiny] [--sweep] [--settings]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vsearch.imaging import images  # noqa: E402 (after the sys.path line: runs from a checkout)
from vsearch.indexing import pipeline as indexer  # noqa: E402
from vsearch.models import loading as models  # noqa: E402 (after the sys.path line: runs from a checkout)
from vsearch.models.loading import Embedder, load_model  # noqa: E402 (after the sys.path line: runs from a checkout)
from vsearch.storage.store import Store, file_digest  # noqa: E402 (after the sys.path line: runs from a checkout)

DEFAULT_TINY = ROOT.parent / "shared" / "datasets" / "tiny-imagenet-val"


# --------------------------------------------------------------------------- data


def make_large_jpegs(out: Path, count: int, size: tuple[int, int] = (4000, 3000), seed: int = 0) -> list[Path]:
    """``count`` distinct 12-MP JPEGs upscaled from sample_images (made once per folder)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    sources = sorted(p for p in (ROOT / "sample_images").glob("*.jpg"))
    rng = np.random.default_rng(seed)
    w, h = size
    bases: dict[Path, np.ndarray] = {}
    paths = []
    for i in range(count):
        src = sources[i % len(sources)]
        if src not in bases:
            if len(bases) > 2:
                bases.clear()  # bound memory: 36 MB each
            with Image.open(src) as im:
                bases[src] = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC))
        grain = rng.normal(0, 4, (h, w, 1)).astype(np.int16)  # luminance grain, as a sensor's
        pixels = np.clip(bases[src].astype(np.int16) + grain, 0, 255).astype(np.uint8)
        path = out / f"photo_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def large_set(workdir: Path, count: int) -> tuple[Path, list[Path]]:
    """The folder to index and its ``count`` 12-MP files (a view of symlinks when more exist)."""
    made = workdir / "large"
    files = make_large_jpegs(made, count)
    if len(list(made.glob("*.jpg"))) == count:
        return made, files
    return limited_view(files, workdir / f"large-{count}"), files


def limited_view(files: list[Path], out: Path) -> Path:
    """A folder of symlinks to ``files`` (the indexer follows file symlinks)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in files:
        link = out / f.name
        if not link.exists():
            link.symlink_to(f)
    return out


# --------------------------------------------------------------------------- the three paths


def run_vsearch(folder: Path, embedder: Embedder, batch_size: int, workers: int | None) -> tuple[float, int]:
    """Seconds for ``indexer.update`` of ``folder`` into a fresh index, and the count embedded."""
    with tempfile.TemporaryDirectory(prefix="vs-bench-idx-") as tmp, \
            Store.open(Path(tmp) / "index", write=True) as store:
        t = time.perf_counter()
        summary = indexer.update(store, folder, indexer.IndexOptions(batch_size=batch_size, workers=workers), embedder=embedder)
        elapsed = time.perf_counter() - t
    if summary.skipped:
        raise SystemExit(f"benchmark images were skipped: {summary.skipped[:3]}")
    return elapsed, summary.embedded


def run_naive(files: list[Path], embedder: Embedder, batch_size: int) -> float:
    """Seconds for the naive loop: full decode, same resize, one batch at a time, one thread."""
    from PIL import Image

    pre = embedder.id.preprocess
    t = time.perf_counter()
    for start in range(0, len(files), batch_size):
        batch = []
        for f in files[start:start + batch_size]:
            with Image.open(f) as im:
                batch.append(images.to_model_array(im.convert("RGB"), pre.size, pre.framing))
        embedder.embed_images(np.stack(batch))
    return time.perf_counter() - t


def run_decode_only(files: list[Path], embedder: Embedder) -> float:
    """Seconds for vsearch's per-file work alone (read, digest, draft decode, resize), one thread."""
    pre = embedder.id.preprocess
    t = time.perf_counter()
    for f in files:
        data = f.read_bytes()
        file_digest(data)
        images.decode_for_model(data, pre.size, pre.framing)
    return time.perf_counter() - t


def premade_batches(files: list[Path], embedder: Embedder, batch_size: int) -> list[np.ndarray]:
    pre = embedder.id.preprocess
    arrays = [images.decode_for_model(f, pre.size, pre.framing) for f in files]
    return [np.stack(arrays[i:i + batch_size]) for i in range(0, len(arrays), batch_size)]


def run_ceiling(batches: list[np.ndarray], embedder: Embedder) -> float:
    """Seconds for the forward passes alone over pre-made batches."""
    t = time.perf_counter()
    for batch in batches:
        embedder.embed_images(batch)
    return time.perf_counter() - t


# --------------------------------------------------------------------------- reporting


def median_rate(n: int, seconds: list[float]) -> float:
    return n / statistics.median(seconds)


def measure(label: str, n: int, repeats: int, fns: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run each of ``fns`` ``repeats`` times, interleaved; print and return median images/s.

    Also prints the process CPU time per image (all threads): on a shared, busy machine the
    wall-clock rates depend on what else runs, the CPU cost per image much less.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c = time.process_time()
            times[name].append(fn())
            cpu[name].append(time.process_time() - c)
    rates = {name: median_rate(n, ts) for name, ts in times.items()}
    for name, ts in times.items():
        spread = ", ".join(f"{n / t:.1f}" for t in ts)
        cpu_ms = statistics.median(cpu[name]) / n * 1000
        print(f"  {label:<14} {name:<14} {rates[name]:7.1f} img/s  {cpu_ms:7.1f} CPU-ms/img  "
              f"(runs: {spread}; load avg {os.getloadavg()[0]:.1f})", flush=True)
        rates[f"{name}_cpu_ms"] = cpu_ms
    return rates


def print_cpu_bound(label: str, rates: dict[str, float]) -> None:
    """The same comparison by CPU cost, which a busy shared machine distorts much less.

    Per image, vsearch spends its decode work plus the model's; the ceiling only the model's.
    On P idle cores with perfect overlap, vsearch can reach at most P / (its CPU-s per image):
    the ratio of CPU costs is then the most of the ceiling it can reach.
    """
    cores = os.cpu_count() or 1
    v, c = rates["vsearch_cpu_ms"], rates["ceiling_cpu_ms"]
    parts = [f"CPU-ms/img: vsearch {v:.1f}, model alone {c:.1f}, decode work alone {rates['decode1_cpu_ms']:.1f}"]
    parts.append(f"ceiling/vsearch CPU cost = {c / v:.2f} (the most of the ceiling {cores} busy cores allow)")
    if "naive_cpu_ms" in rates:
        parts.append(f"naive/vsearch CPU cost = {rates['naive_cpu_ms'] / v:.2f}")
    print(f"  {label}: " + "; ".join(parts), flush=True)


def print_ratios(label: str, rates: dict[str, float]) -> None:
    v = rates["vsearch"]
    parts = [f"vsearch/ceiling = {v / rates['ceiling']:.2f}"]
    if "naive" in rates:
        parts.append(f"vsearch/naive = {v / rates['naive']:.2f}")
    print(f"  {label}: " + ", ".join(parts), flush=True)


# --------------------------------------------------------------------------- parts


def bench_large(args: argparse.Namespace, embedder: Embedder, workdir: Path) -> None:
    print(f"\n== {args.images} JPEGs of 4000x3000 (12 MP), batch {args.batch_size}, "
          f"{args.repeats} repeats ==", flush=True)
    t = time.perf_counter()
    folder, files = large_set(workdir, args.images)
    mb = sum(f.stat().st_size for f in files) / len(files) / 1e6
    print(f"  made/found {len(files)} files, {mb:.1f} MB each, in {time.perf_counter() - t:.0f}s", flush=True)
    batches = premade_batches(files, embedder, args.batch_size)
    rates = measure("12MP", len(files), args.repeats, {
        "vsearch": lambda: _checked(run_vsearch(folder, embedder, args.batch_size, args.workers), len(files)),
        "naive": lambda: run_naive(files, embedder, args.batch_size),
        "ceiling": lambda: run_ceiling(batches, embedder),
        "decode1": lambda: run_decode_only(files, embedder),
    })
    print_ratios("12MP", rates)
    print_cpu_bound("12MP", rates)


def bench_tiny(args: argparse.Namespace, embedder: Embedder, workdir: Path, tiny: Path) -> None:
    all_files = sorted(p for p in tiny.rglob("*") if images.is_image_path(p))
    files = all_files[: args.limit] if args.limit else all_files
    folder = limited_view(files, workdir / "tiny") if len(files) < len(all_files) else tiny
    n = len(files)
    print(f"\n== tiny-imagenet: {n} JPEGs of 64x64 from {tiny}, batch {args.batch_size} ==", flush=True)
    sub = files[: min(n, args.tiny_naive)]
    batches = premade_batches(sub, embedder, args.batch_size)
    small = measure(f"tiny[{len(sub)}]", len(sub), args.repeats, {
        "naive": lambda: run_naive(sub, embedder, args.batch_size),
        "ceiling": lambda: run_ceiling(batches, embedder),
        "decode1": lambda: run_decode_only(sub, embedder),
    })
    # The whole set once, into an index kept for the re-run below.
    index_dir = workdir / "tiny-index"
    shutil.rmtree(index_dir, ignore_errors=True)
    with Store.open(index_dir, write=True) as store:
        t, c = time.perf_counter(), time.process_time()
        summary = indexer.update(store, folder, indexer.IndexOptions(batch_size=args.batch_size, workers=args.workers),
                                 embedder=embedder)
        elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    rate = summary.embedded / elapsed
    cpu_ms = cpu / max(1, summary.embedded) * 1000
    print(f"  tiny[{n}]{'':<{max(0, 6 - len(str(n)))}}vsearch        {rate:7.1f} img/s  {cpu_ms:7.1f} CPU-ms/img  "
          f"({summary.embedded} embedded, {len(summary.skipped)} skipped, {elapsed:.1f}s; "
          f"load avg {os.getloadavg()[0]:.1f})", flush=True)
    both = {"vsearch": rate, "vsearch_cpu_ms": cpu_ms, **small}
    print_ratios("tiny", both)
    print_cpu_bound("tiny", both)

    # Unchanged re-run: the real CLI in a fresh process; it must not import torch.
    code = (
        "import sys, time; t = time.perf_counter(); from vsearch.cli.main import app\n"
        "try:\n    app(sys.argv[1:], prog_name='vsearch')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "print('TORCH', 'torch' in sys.modules, 'INPROC', round(time.perf_counter() - t, 3), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    runs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code, "embed", str(folder), "--index-dir", str(index_dir)],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )
        runs.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise SystemExit(f"re-run failed: {out.stderr}")
    summary_line = next((ln for ln in out.stderr.splitlines() if ln.startswith("embedded")), out.stderr)
    torch_line = next(ln for ln in out.stderr.splitlines() if ln.startswith("TORCH"))
    print(f"  unchanged re-run of {n} files (`vsearch embed`, fresh process): median "
          f"{statistics.median(runs):.2f}s wall (runs: {', '.join(f'{r:.2f}' for r in runs)})", flush=True)
    print(f"    {summary_line}\n    {torch_line}", flush=True)


def bench_sweep(args: argparse.Namespace, embedder: Embedder, workdir: Path) -> None:
    """One factor at a time around the defaults, on the 12-MP set, ratios within this run."""
    import torch

    folder, files = large_set(workdir, args.sweep_images)
    n = len(files)
    base_threads = torch.get_num_threads()
    print(f"\n== sweep on {n} 12-MP JPEGs (defaults: workers {indexer.default_workers()}, "
          f"torch threads {base_threads}, batch {args.batch_size}) ==", flush=True)

    fns: dict[str, Callable[[], float]] = {}
    for w in (1, 2, 3, 4):
        fns[f"workers={w}"] = lambda w=w: _checked(run_vsearch(folder, embedder, args.batch_size, w), n)
    for th in (1, 2, 3):
        def with_threads(th: int = th) -> float:
            torch.set_num_threads(th)
            try:
                return _checked(run_vsearch(folder, embedder, args.batch_size, None), n)
            finally:
                torch.set_num_threads(base_threads)
        fns[f"threads={th}"] = with_threads
    for bs in (8, 16, 32):
        fns[f"batch={bs}"] = lambda bs=bs: _checked(run_vsearch(folder, embedder, bs, None), n)
    measure("sweep", n, args.repeats, fns)

    # channels_last, model only (it is a property of the module and its input).
    batches = premade_batches(files, embedder, args.batch_size)
    module = embedder._module  # type: ignore[attr-defined]
    to_input = embedder._to_input  # type: ignore[attr-defined]

    def contiguous() -> float:
        embedder._module = module.to(memory_format=torch.contiguous_format)  # type: ignore[attr-defined]
        embedder._to_input = lambda b: to_input(b).contiguous()  # type: ignore[attr-defined]
        try:
            return run_ceiling(batches, embedder)
        finally:
            embedder._module = module.to(memory_format=torch.channels_last)  # type: ignore[attr-defined]
            embedder._to_input = to_input  # type: ignore[attr-defined]

    measure("model only", n, args.repeats, {
        "channels_last": lambda: run_ceiling(batches, embedder),
        "NCHW": contiguous,
    })


#: Process-wide settings that must be in place before torch (libgomp) or glibc start: each runs
#: in its own child process. (label, environment, torch threads or None, decode workers or None)
CHILD_SETTINGS: list[tuple[str, dict[str, str], int | None, int | None]] = [
    ("defaults (OMP_WAIT_POLICY=PASSIVE)", {}, None, None),
    ("OMP_WAIT_POLICY=ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"}, None, None),
    ("libgomp's own default (spin)", {"OMP_WAIT_POLICY": ""}, None, None),
    ("torch threads 1", {}, 1, None),
    ("torch threads 1, workers 1", {}, 1, 1),
    ("MALLOC_ARENA_MAX=2", {"MALLOC_ARENA_MAX": "2"}, None, None),
    ("MALLOC_TRIM/MMAP_THRESHOLD_=64MB",
     {"MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}, None, None),
]


def bench_children(args: argparse.Namespace, workdir: Path) -> None:
    """The vsearch path and the model alone in child processes, one per setting, interleaved."""
    print(f"\n== process settings: vsearch path and model alone in a child process each, "
          f"{args.repeats} repeats ==", flush=True)
    folder, _ = large_set(workdir, args.sweep_images)
    results: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in CHILD_SETTINGS}
    for _ in range(args.repeats):
        for label, env, threads, workers in CHILD_SETTINGS:
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_"))}
            cmd = [sys.executable, __file__, "--child-vsearch", str(folder), "--batch-size", str(args.batch_size)]
            cmd += ["--workers", str(workers)] if workers else []
            cmd += ["--threads", str(threads)] if threads else []
            out = subprocess.run(cmd, env={**clean, **env}, capture_output=True, text=True, check=True)
            results[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"  {label:<34} vsearch {med['rate']:6.1f} img/s {med['cpu_ms']:6.1f} CPU-ms/img | model alone "
              f"{med['ceiling']:6.1f} img/s {med['ceiling_cpu_ms']:6.1f} CPU-ms/img | vsearch/ceiling "
              f"{med['rate'] / med['ceiling']:.2f} | peak RSS {med['maxrss_mb']:5.0f} MB "
              f"(load avg {os.getloadavg()[0]:.1f})", flush=True)


def child_vsearch(folder: Path, batch_size: int, workers: int | None, threads: int | None) -> None:
    if os.environ.get("OMP_WAIT_POLICY") == "":
        del os.environ["OMP_WAIT_POLICY"]  # libgomp's default, not vsearch's:
        import torch  # noqa: F401  (loaded first, so load_model leaves OpenMP as it is)
    embedder = load_model(None, device="cpu", threads=threads)
    files = sorted(p for p in folder.iterdir() if images.is_image_path(p))
    c = time.process_time()
    seconds, n = run_vsearch(folder, embedder, batch_size, workers)
    cpu = time.process_time() - c
    assert n == len(files)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batches = premade_batches(files, embedder, batch_size)
    c = time.process_time()
    ceiling = run_ceiling(batches, embedder)
    ceiling_cpu = time.process_time() - c
    print(json.dumps({"rate": n / seconds, "cpu_ms": cpu / n * 1000, "maxrss_mb": rss,
                      "ceiling": n / ceiling, "ceiling_cpu_ms": ceiling_cpu / n * 1000}))


def _checked(result: tuple[float, int], expected: int) -> float:
    seconds, n = result
    if n != expected:
        raise SystemExit(f"embedded {n}, expected {expected}")
    return seconds


def onnx_embedder(torch_embedder: Embedder, where: Path) -> Embedder:
    """The same model exported to ONNX (checked against torch on sample photos), as vsearch does."""
    from vsearch.models import onnxmodel

    pre = torch_embedder.id.preprocess
    probe = np.stack([images.decode_for_model(ROOT / "sample_images" / f"{n}.jpg", pre.size, pre.framing)
                      for n in ("chelsea", "coffee", "rocket", "astronaut")])
    where.mkdir(parents=True, exist_ok=True)
    path = onnxmodel.export(torch_embedder, where, probe)
    if path is None:
        raise SystemExit("ONNX export failed; use --runtime torch")
    return onnxmodel.OnnxEmbedder(torch_embedder.id, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="12-MP JPEGs to make (default 48)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=indexer.DEFAULT_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: vsearch's)")
    parser.add_argument("--model", default=None, help="default: vsearch's default model")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the made JPEGs here between runs (default: a temporary folder)")
    parser.add_argument("--tiny-imagenet", type=Path, default=DEFAULT_TINY if DEFAULT_TINY.exists() else None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many tiny-imagenet files")
    parser.add_argument("--tiny-naive", type=int, default=480,
                        help="tiny-imagenet files for the naive loop and the ceiling (default 480)")
    parser.add_argument("--sweep-images", type=int, default=16,
                        help="12-MP JPEGs for --sweep and --settings (default 16)")
    parser.add_argument("--no-tiny", action="store_true")
    parser.add_argument("--no-large", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="also measure workers/threads/batch/channels_last")
    parser.add_argument("--settings", action="store_true",
                        help="also measure process settings (OMP wait policy, threads, glibc malloc) in child processes")
    parser.add_argument("--runtime", choices=["onnx", "torch"], default="onnx",
                        help="model runtime for all three paths (default onnx, as vsearch uses)")
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-vsearch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_vsearch:
        child_vsearch(args.child_vsearch, args.batch_size, args.workers, args.threads)
        return

    models.passive_openmp()  # as load_model does, before torch is imported below
    import torch

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vs-bench-embed-"))
    try:
        t = time.perf_counter()
        embedder = load_model(args.model, device="cpu")
        print(f"model {embedder.id.name} loaded in {time.perf_counter() - t:.1f}s; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; decode workers "
              f"{args.workers or indexer.default_workers()}; runtime {args.runtime}", flush=True)
        torch_embedder = embedder
        if args.runtime == "onnx":
            embedder = onnx_embedder(embedder, workdir / "onnx")
        if not args.no_large:
            bench_large(args, embedder, workdir)
        if args.sweep:
            bench_sweep(args, torch_embedder, workdir)
        if args.settings:
            bench_children(args, workdir)
        if args.tiny_imagenet and not args.no_tiny:
            bench_tiny(args, embedder, workdir, args.tiny_imagenet)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
