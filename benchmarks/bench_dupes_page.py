"""How soon the duplicates page of ``vsearch serve`` shows something, in a real browser, on
flowers17 (1,360 photos) with planted copies: its progress, its first groups, every group.

    python benchmarks/bench_dupes_page.py [--data ../shared/datasets/flowers17] [--copies 120]
        [--work /tmp/vsearch-bench-dupes-page] [--runs 3]

The photos are copied into ``--work`` (outside the project; kept, with their index, for the
next run), with ``--copies`` of them also saved at half size, JPEG quality 60 (newer files,
``copy_NAME``). Then, ``--runs`` times each, median printed:

* cold: a fresh ``python -m vsearch serve`` (nothing remembered), the page opened at the near
  level: milliseconds until the progress line shows, until the first group shows, until the
  search is done (every group);
* keep rule: the keep select changed to ``largest`` on the page (the groups are found again with
  the verifications remembered): until done;
* near threshold: the slider moved to 0.85 at the near level: until done;
* similar: the level set to ``similar``, then the slider moved to 0.95: until done, each.

Times are wall clock in headless Chromium (Playwright) against the local server, on this
machine, which other work may share. Needs Chromium (apt-get install -y chromium) and
Playwright (pip install playwright).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GROUP = "[data-testid=dup-group]"


def make_photos(data: Path, work: Path, copies: int, seed: int = 0) -> Path:
    """flowers17's photos under ``work/photos`` plus ``copies`` half-size re-encoded copies."""
    from PIL import Image

    photos = work / "photos"
    if photos.is_dir():
        return photos
    partial = work / "photos.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    files = sorted((data / "images").glob("*.jpg"))
    for f in files:
        shutil.copy2(f, partial / f.name)
    later = time.time() + 60
    for f in random.Random(seed).sample(files, copies):
        with Image.open(f) as im:
            im.convert("RGB").resize((im.width // 2, im.height // 2)).save(partial / f"copy_{f.name}", quality=60)
        os.utime(partial / f"copy_{f.name}", (later, later))
    partial.rename(photos)
    return photos


def done_line(page, timeout_ms: int) -> None:
    """Wait until the page says its search is done."""
    from tests.test_browser import sync_api

    sync_api.expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=timeout_ms)


def changed(page, action, wait_ms: int) -> float:
    """Milliseconds from ``action`` (which makes the page start another search) until that search is done."""
    before = page.evaluate("search.id")
    start = time.perf_counter()
    action()
    page.wait_for_function("id => search && search.id !== id && !search.running", arg=before, timeout=wait_ms,
                           polling=20)
    return (time.perf_counter() - start) * 1000


def after_the_first(page, note, wait_ms: int) -> None:
    """Each search a person starts once the first is done: another keep rule, the slider, the similar level."""
    note("keep rule largest: every group",
         changed(page, lambda: page.select_option("#keep", "largest"), wait_ms))
    changed(page, lambda: page.select_option("#keep", "default"), wait_ms)

    def slide(value: str) -> None:  # as a person's last move of the slider (it waits 350 ms for more)
        page.evaluate("v => { const s = document.getElementById('threshold'); s.value = v;"
                      " s.dispatchEvent(new Event('input')); }", value)

    note("near threshold 0.85: every group (incl. 350 ms slider pause)",
         changed(page, lambda: slide("0.85"), wait_ms))
    note("similar (0.92): every group", changed(page, lambda: page.select_option("#level", "similar"),
                                                wait_ms))
    note("similar threshold 0.95: every group (incl. 350 ms slider pause)",
         changed(page, lambda: slide("0.95"), wait_ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "flowers17")
    parser.add_argument("--copies", type=int, default=120)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vsearch-bench-dupes-page"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from tests import test_browser as tb  # its helpers; importing it checks Playwright and Chromium

    photos = make_photos(args.data, args.work, args.copies)
    index_dir = args.work / "idx"
    env = tb.server_env(args.work / "home")
    env["HOME"] = str(Path.home())  # the model's weights
    if not (index_dir / "meta.json").exists():
        print(f"indexing {photos} ...", file=sys.stderr)
        tb.vsearch("build-index", photos, "--index-dir", index_dir, "-q", env=env, timeout=3600)
    wait_ms = 600_000
    times: dict[str, list[float]] = {}

    def note(name: str, ms: float) -> None:
        times.setdefault(name, []).append(ms)
        print(f"  {name}: {ms:,.0f} ms", file=sys.stderr)

    with tb.sync_api.sync_playwright() as playwright:
        browser = tb.launch(playwright)
        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs}", file=sys.stderr)
            with tb.served(index_dir, env) as url:
                page = tb.new_page(browser)
                start = time.perf_counter()
                page.goto(url + "/duplicates")
                page.locator("#progress-text").filter(has_text=" ").wait_for(timeout=wait_ms)
                note("cold: progress shown", (time.perf_counter() - start) * 1000)
                page.locator(GROUP).first.wait_for(timeout=wait_ms)
                note("cold: first group shown", (time.perf_counter() - start) * 1000)
                done_line(page, wait_ms)
                note("cold: every group (near)", (time.perf_counter() - start) * 1000)
                groups = page.evaluate("search.groups_total")
                note("groups (count)", groups)
                after_the_first(page, note, wait_ms)
                page.context.close()
        browser.close()
    print(f"\n{len(list(photos.iterdir())):,} photos ({args.copies} planted copies), {args.runs} runs, medians:\n")
    print("| what | median |\n|---|---|")
    for name, values in times.items():
        unit = "" if "count" in name else " ms"
        print(f"| {name} | {statistics.median(values):,.0f}{unit} |")


if __name__ == "__main__":
    main()
