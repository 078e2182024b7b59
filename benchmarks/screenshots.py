"""Refresh the screenshots of ``vsearch serve`` in docs/ (serve-search.png, serve-search-dark.png,
serve-lightbox-dark.png, serve-duplicates.png, serve-duplicates-dark.png).

    python benchmarks/screenshots.py [--out docs]

Does what tests/test_browser.py does, with its helpers: copies sample_images (plus an exact copy
of chelsea.jpg) into a temporary folder, indexes it with the default model, starts
``python -m vsearch serve`` on a free port and shows each page in headless Chromium (Playwright):
the search page after uploading a half-size re-encoded chelsea.jpg (light, then dark with a
result open large), and the duplicates page at the near level (light, then dark). Everything but the PNGs is made
in a temporary folder and removed.
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
            upload = tb.edited_upload(photos, root)
            tb.search_by_upload(page, url, upload)
            page.screenshot(path=str(args.out / "serve-search.png"))
            # The same search in dark mode (prefers-color-scheme), with a result open large.
            dark = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="dark").new_page()
            tb.search_by_upload(dark, url, upload)
            dark.screenshot(path=str(args.out / "serve-search-dark.png"))
            dark.locator("[data-testid=result] .open").nth(1).click()
            dark.locator("[data-testid=lightbox] .facts").get_by_text("Taken").wait_for()
            # The size and pixels come from a second request: shoot once they are filled in.
            dark.wait_for_function("() => !document.querySelector('[data-testid=lightbox] .facts')"
                                   ".textContent.includes('\u2026')")
            dark.wait_for_load_state("networkidle")
            dark.screenshot(path=str(args.out / "serve-lightbox-dark.png"))
            dark.context.close()
            tb.show_duplicates(page, url)
            page.screenshot(path=str(args.out / "serve-duplicates.png"))
            dark = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="dark").new_page()
            tb.show_duplicates(dark, url)
            dark.screenshot(path=str(args.out / "serve-duplicates-dark.png"))
            dark.context.close()
            browser.close()
    print(f"wrote serve-search.png, serve-search-dark.png, serve-lightbox-dark.png, serve-duplicates.png and "
          f"serve-duplicates-dark.png in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
