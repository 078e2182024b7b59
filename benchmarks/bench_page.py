"""How fast the search page answers on a 10,000-photo library, in a real browser.

    python benchmarks/bench_page.py [--index DIR] [--runs 7]

The library is tiny-imagenet-val (10,000 photos) indexed with the default model: the index
cached at /tmp/vsearch-bench-cache/tiny-imagenet-val-index when there is one (made by the other
benchmarks), else one built here over ../shared/datasets/tiny-imagenet-val (minutes). The index
is copied into a temporary folder first, since the page writes into its index folder (the
thumbnail cache, the click log); the photos are only read where they are.

It serves the copy with ``python -m vsearch serve`` and measures, medians of ``--runs``:

* an upload: a 3-megapixel JPEG (a phone photo's size) chosen in the page's file input, until
  its 20 results are on the page, and until every thumbnail in view has loaded; and the HTTP
  round trip alone (POST /api/search with the bytes);
* a page of 50 results, warm (the same search a second time: thumbnails cached): from the URL
  (/?row=N&k=50, a page load) to 50 results with their thumbnails shown; the HTTP round trip
  alone; and in the page, from "find similar" (or Back) to its 50 results with thumbnails shown.

Targets (issue 21): upload < 1 s on 2 cores; 50 results < 300 ms warm. Prints the figures;
docs/serve.md quotes them. Needs Chromium and Playwright, as tests/test_browser.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CACHED = Path("/tmp/vsearch-bench-cache/tiny-imagenet-val-index")
DATASET = REPO.parent / "shared" / "datasets" / "tiny-imagenet-val"
WAIT_MS = 60_000
ALL_THUMBS = "Array.from(document.querySelectorAll('[data-testid=result] img'))"
LOADED = ".every(i => i.complete && i.naturalWidth > 0)"
THUMBS_IN_VIEW = ALL_THUMBS + ".filter(i => i.getBoundingClientRect().top < innerHeight)" + LOADED


#: The results on the page are new ones (no card marked by mark_old), 50 of them, thumbnails in view loaded.
NEW_FIFTY = f"!document.querySelector('[data-old]') && {ALL_THUMBS}.length === 50 && {THUMBS_IN_VIEW}"


def mark_old(page) -> None:
    """Mark the result cards on the page, so that NEW_FIFTY waits for the next search's."""
    page.evaluate("document.querySelectorAll('[data-testid=result]').forEach(c => c.dataset.old = '1')")


def phone_photo(folder: Path, source: Path, n: int) -> Path:
    """A 2000 x 1500 JPEG made from a small photo (a different one each run: no cache helps)."""
    from PIL import Image

    out = folder / f"upload-{n}.jpg"
    with Image.open(source) as im:
        im.convert("RGB").resize((2000, 1500), Image.Resampling.BICUBIC).save(out, quality=90)
    return out


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=None, help="an index of tiny-imagenet-val (default: the cached one)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    import httpx

    from tests import test_browser as tb  # its helpers: serving, Chromium; importing it checks both

    with tempfile.TemporaryDirectory(prefix="vsearch-bench-page-") as tmp:
        root = Path(tmp)
        env = tb.server_env(root / "home")
        env["HOME"] = str(Path.home())  # the model's weights and ONNX export, where the user keeps them
        source = args.index or (CACHED if (CACHED / "meta.json").is_file() else None)
        if source is None:
            print(f"building an index over {DATASET} (minutes)", file=sys.stderr)
            tb.vsearch("build-index", DATASET, "--index-dir", root / "idx", "-q", env=env, timeout=7200)
        else:
            shutil.copytree(source, root / "idx", ignore=shutil.ignore_patterns("lock", "thumbs"))
        photos = sorted((DATASET).rglob("*.JPEG"))[:args.runs * 3]
        uploads = [phone_photo(root, p, i) for i, p in enumerate(photos[::3][:args.runs])]
        upload_kb = uploads[0].stat().st_size // 1024
        with tb.served(root / "idx", env) as url, tb.sync_api.sync_playwright() as playwright:
            count = httpx.get(url + "/api/info").json()["count"]
            browser = tb.launch(playwright)
            page = tb.new_page(browser)
            page.goto(url + "/")
            page.wait_for_load_state("networkidle")
            # A first search pays for loading the model: not what a person waits for afterwards.
            page.set_input_files("#file", str(phone_photo(root, photos[1], 99)))
            page.locator("[data-testid=result]").first.wait_for(timeout=WAIT_MS)
            page.wait_for_load_state("networkidle")

            shown, loaded, http = [], [], []
            for upload in uploads:
                page.goto(url + "/")
                page.wait_for_load_state("networkidle")
                start = time.perf_counter()
                page.set_input_files("#file", str(upload))
                page.wait_for_function("document.querySelectorAll('[data-testid=result]').length === 20",
                                       timeout=WAIT_MS, polling="raf")
                shown.append(time.perf_counter() - start)
                page.wait_for_function(THUMBS_IN_VIEW, timeout=WAIT_MS, polling="raf")
                loaded.append(time.perf_counter() - start)
            client = httpx.Client(base_url=url, cookies={c["name"]: c["value"] for c in page.context.cookies()})
            headers = {"X-CSRF-Token": page.locator("body").get_attribute("data-csrf") or "", "Origin": url,
                       "Content-Type": "image/jpeg"}
            for upload in uploads:
                data = upload.read_bytes()
                start = time.perf_counter()
                assert client.post("/api/search?k=20", content=data, headers=headers).status_code == 200
                http.append(time.perf_counter() - start)

            row = count // 2
            warm_page, warm_http = [], []
            page.goto(f"{url}/?row={row}&k=50")  # cold: the thumbnails are made and cached
            page.wait_for_function(f"{ALL_THUMBS}.length === 50", timeout=WAIT_MS)
            # Every thumbnail fetched once (those out of view load lazily): the server has made them all.
            page.evaluate(f"Promise.all({ALL_THUMBS}.map(i => fetch(i.src)))")
            for _ in range(args.runs):
                page.goto("about:blank")
                start = time.perf_counter()
                page.goto(f"{url}/?row={row}&k=50", wait_until="commit")
                page.wait_for_function("document.querySelectorAll('[data-testid=result]').length === 50 && " +
                                       THUMBS_IN_VIEW, timeout=WAIT_MS, polling="raf")
                warm_page.append(time.perf_counter() - start)
            for _ in range(args.runs):
                start = time.perf_counter()
                assert client.post(f"/api/search?k=50&row={row}", headers=headers).status_code == 200
                warm_http.append(time.perf_counter() - start)
            # In the page, as a person goes: "find similar" on the second result, then Back (the
            # first round makes the thumbnails: not counted).
            similar, back = [], []
            for run in range(args.runs + 1):
                page.wait_for_function(f"{ALL_THUMBS}.length === 50 && {THUMBS_IN_VIEW}", timeout=WAIT_MS)
                page.locator("[data-testid=result] .open").nth(1).click()
                page.get_by_test_id("similar").wait_for()
                mark_old(page)
                start = time.perf_counter()
                page.get_by_test_id("similar").click()
                page.wait_for_function(NEW_FIFTY, timeout=WAIT_MS, polling="raf")
                took = time.perf_counter() - start
                mark_old(page)
                start = time.perf_counter()
                page.go_back()
                page.wait_for_function(NEW_FIFTY, timeout=WAIT_MS, polling="raf")
                if run:
                    similar.append(took)
                    back.append(time.perf_counter() - start)
            browser.close()

    print(f"library: {count:,} photos (tiny-imagenet-val), {os.cpu_count()} CPU cores; medians of {args.runs} runs")
    print(f"upload (2000x1500 JPEG, {upload_kb} KB), browser, to 20 results shown: {median_ms(shown)}")
    print(f"upload, browser, to the thumbnails in view loaded:                {median_ms(loaded)}")
    print(f"upload, HTTP round trip only (POST /api/search, k=20):           {median_ms(http)}")
    print(f"50 results warm, browser, URL to 50 results with thumbnails:      {median_ms(warm_page)}")
    print(f"50 results warm, HTTP round trip only (POST /api/search, k=50):  {median_ms(warm_http)}")
    print(f"50 results warm, in the page: Find similar to results shown:     {median_ms(similar)}")
    print(f"50 results warm, in the page: Back to results shown:             {median_ms(back)}")


if __name__ == "__main__":
    main()
