"""Refresh the screenshots of ``vsearch serve`` in docs/ (serve-search.png, serve-duplicates.png).

    python benchmarks/screenshots.py [--out docs]

Does what tests/test_browser.py does, with its helpers: copies sample_images (plus an exact copy
of chelsea.jpg) into a temporary folder, indexes it with the default model, starts
``python -m vsearch serve`` on a free port and shows each page in headless Chromium (Playwright):
the search page after uploading a half-size re-encoded chelsea.jpg, and the duplicates page at
the near level. Everything but the two PNGs is made in a temporary folder and removed.
Needs Chromium (apt-get install -y chromium) and Playwright (pip install playwright).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs (default docs/)")
    args = parser.parse_args()
    from tests import test_browser as tb  # its helpers; importing it checks Playwright and Chromium

    with tempfile.TemporaryDirectory(prefix="vsearch-shots-") as tmp:
        root = Path(tmp)
        photos = tb.sample_photos(root / "photos")
        env = tb.server_env(root / "home")
        env["XDG_CACHE_HOME"] = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")  # the user's model cache
        env["HOME"] = str(Path.home())  # the model's weights when there is no exported ONNX yet
        tb.vsearch("build-index", photos, "--index-dir", root / "idx", "-q", env=env)
        with tb.served(root / "idx", env) as url, tb.sync_api.sync_playwright() as playwright:
            browser = tb.launch(playwright)
            page = tb.new_page(browser)
            tb.search_by_upload(page, url, tb.edited_upload(photos, root))
            page.screenshot(path=str(args.out / "serve-search.png"))
            tb.show_duplicates(page, url)
            page.screenshot(path=str(args.out / "serve-duplicates.png"))
            browser.close()
    print(f"wrote {args.out / 'serve-search.png'} and {args.out / 'serve-duplicates.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
