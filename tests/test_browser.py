"""``vsearch serve`` in a real browser: headless Chromium driven by Playwright.

The real command runs in a subprocess over a copy of sample_images (plus an exact copy of one
photo, so the duplicates page has a copy to trash) indexed with the default model, on a free
port, with HOME and XDG_DATA_HOME in tmp so the trash is a tmp folder. The tests search by an
upload, click a result, record a judgment and read it back with ``vsearch judgments``, trash a
copy from the duplicates page and undo it, and screenshot both pages (into tmp;
``benchmarks/screenshots.py`` refreshes the ones in docs/).

They need Chromium from the system (``apt-get install -y chromium``) and Playwright for Python
(``pip install playwright``, in the test extra); without either they skip, saying which.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the page needs starlette and uvicorn: pip install -e '.[test]'")
pytest.importorskip("uvicorn", reason="the page needs starlette and uvicorn: pip install -e '.[test]'")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed: pip install playwright (in the test extra)")
#: The system's Chromium; VSEARCH_CHROMIUM names another build.
CHROMIUM = (os.environ.get("VSEARCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
            or "/usr/bin/chromium")
if not Path(CHROMIUM).is_file():
    pytest.skip("Chromium is not installed: apt-get install -y chromium (.ci/run does it first)",
                allow_module_level=True)

import httpx  # noqa: E402

from tests.conftest import REPO, SAMPLE_IMAGES  # noqa: E402
from vsearch.learning.clicks import read_click_log  # noqa: E402
from vsearch.storage.store import file_digest  # noqa: E402

pytestmark = pytest.mark.slow  # the default model builds the index
#: What the page's searches and clicks may take, in ms (a 2-core machine shared with others).
WAIT_MS = 30_000
#: The exact copy the duplicates test trashes, and the photo it copies.
COPY, ORIGINAL = "chelsea_copy.jpg", "chelsea.jpg"


# --- the site: photos, index, server (benchmarks/screenshots.py uses these too) ---------------


@dataclass(frozen=True)
class Site:
    url: str
    photos: Path
    index_dir: Path
    trash: Path
    env: dict[str, str]


def sample_photos(folder: Path) -> Path:
    """sample_images' photos copied into ``folder``, plus an exact copy of chelsea.jpg (newer, so
    the keep rule keeps the original)."""
    folder.mkdir(parents=True)
    for p in sorted(SAMPLE_IMAGES.iterdir()):
        if p.suffix.lower() in (".jpg", ".png"):
            shutil.copy2(p, folder / p.name)
    (folder / COPY).write_bytes((folder / ORIGINAL).read_bytes())
    return folder


def vsearch(*args: object, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m vsearch ARGS`` in a subprocess; asserts it succeeded."""
    done = subprocess.run([sys.executable, "-m", "vsearch", *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


def server_env(home: Path) -> dict[str, str]:
    """The environment of the commands: this checkout first; HOME and XDG_DATA_HOME (where
    send2trash puts the trash) under ``home``; the model cache as the test session's."""
    (home / "xdg").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), "XDG_DATA_HOME": str(home / "xdg")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(index_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """``vsearch serve`` on a free loopback port for the duration; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vsearch", "serve", "--index-dir", str(index_dir),
                             "--port", str(port)], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"vsearch serve did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch(playwright):
    """Headless Chromium from the system (no browser download); no sandbox when run as root."""
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args)


def new_page(browser):
    return browser.new_context(viewport={"width": 1280, "height": 860}).new_page()


def search_by_upload(page, url: str, upload: Path, *, exclude_self: bool = True) -> None:
    """Open the search page, upload ``upload`` and wait for its results and thumbnails."""
    page.goto(url + "/")
    if not exclude_self:
        page.uncheck("#self")
    page.set_input_files("#file", str(upload))
    page.locator(".hit").first.wait_for(timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")


def show_duplicates(page, url: str) -> None:
    """Open the duplicates page and wait for its groups and thumbnails."""
    page.goto(url + "/duplicates")
    page.locator(".group").first.wait_for(timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")


def assert_pictures_show_their_files(page, photos: Path, cards: str) -> int:
    """Every picture in ``cards`` (elements with ``data-path`` and an ``img``), as the browser
    has it (its HTTP cache first), is the thumbnail of the file the card names; returns how many."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from vsearch.imaging.thumbnails import jpeg_bytes, load_thumbnail

    shown = page.evaluate("""async (cards) => Promise.all(Array.from(document.querySelectorAll(cards)).map(async c => {
        const r = await fetch(c.querySelector("img").src, {cache: "force-cache"});
        const bytes = new Uint8Array(await r.arrayBuffer());
        let text = ""; for (const b of bytes) text += String.fromCharCode(b);
        return [c.dataset.path, r.status, btoa(text)];
    }))""", cards)
    for path, status, data in shown:
        assert status == 200, path
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.int16)
        made = np.asarray(Image.open(io.BytesIO(jpeg_bytes(load_thumbnail(photos / path)))).convert("RGB"),
                          dtype=np.int16)
        assert got.shape == made.shape and abs(got - made).mean() < 1.0, f"{path} shows another picture"
    return len(shown)


def show_every_photo(page, url: str, upload: Path, photos: Path) -> None:
    """Search by ``upload`` with k large enough that every indexed photo is a result."""
    page.goto(url + "/")
    page.fill("#k", "50")
    page.uncheck("#self")
    page.set_input_files("#file", str(upload))
    sync_api.expect(page.locator(".hit")).to_have_count(len(list(photos.iterdir())), timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")


def edited_upload(photos: Path, folder: Path) -> Path:
    """A smaller, re-encoded chelsea.jpg outside the photo folder: what a person would drop."""
    from PIL import Image

    upload = folder / "upload.jpg"
    with Image.open(photos / ORIGINAL) as im:
        im.convert("RGB").resize((im.width // 2, im.height // 2)).save(upload, quality=70)
    return upload


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    photos = sample_photos(root / "photos")
    env = server_env(root / "home")
    build_env = {**env, "HOME": os.environ.get("HOME", str(root / "home"))}  # the model's weights, if looked up
    vsearch("build-index", photos, "--index-dir", root / "idx", "-q", env=build_env)
    with served(root / "idx", env) as url:
        yield Site(url, photos, root / "idx", root / "home" / "xdg" / "Trash", env)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = new_page(browser)
    yield page
    page.context.close()


# --- the search page -------------------------------------------------------------------------


def test_search_by_upload_then_click_a_result_to_search_by_it(site, page, tmp_path):
    search_by_upload(page, site.url, edited_upload(site.photos, tmp_path), exclude_self=False)
    hits = page.locator(".hit")
    assert ORIGINAL in hits.first.inner_text() or COPY in hits.first.inner_text()
    # Every thumbnail in view loaded (chelsea.jpg and its copy share one, asked for at once).
    assert page.evaluate("Array.from(document.querySelectorAll('.hit img')).slice(0, 12)"
                         ".every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(tmp_path / "serve-search.png"))
    assert (tmp_path / "serve-search.png").stat().st_size > 10_000
    # Open a result that is not the upload's photo and find similar: the page searches by it, so it comes first.
    third = hits.nth(2)
    clicked = third.inner_text().split()[2]
    assert clicked not in (ORIGINAL, COPY)
    third.locator("img").click()
    page.get_by_test_id("similar").click()
    sync_api.expect(hits.first).to_contain_text(f"1. 1.000 {clicked}", timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")
    assert assert_pictures_show_their_files(page, site.photos, ".hit") >= 10
    # The click is logged at rank 3 of the list the server logged for the upload (by its id).
    digest = file_digest((site.photos / clicked).read_bytes())
    deadline = time.monotonic() + WAIT_MS / 1000
    while not any(3 in q.clicked and q.shown[2] == digest for q in read_click_log(site.index_dir)):
        assert time.monotonic() < deadline, read_click_log(site.index_dir)
        time.sleep(0.1)


def test_record_a_judgment_and_read_it_back_through_the_cli(site, page, tmp_path):
    search_by_upload(page, site.url, edited_upload(site.photos, tmp_path))
    hit = page.locator(".hit").nth(1)
    judged = hit.inner_text().split()[2]
    hit.get_by_role("button", name="relevant", exact=True).click()
    sync_api.expect(hit).to_have_class("hit judged", timeout=WAIT_MS)
    listed = vsearch("judgments", "--index-dir", site.index_dir, "-f", "json", env=site.env).stdout
    assert json.loads(listed) and Path(judged).name in listed


# --- the duplicates page -----------------------------------------------------------------------


def test_trash_a_copy_from_the_duplicates_page_then_undo(site, page, tmp_path):
    original = (site.photos / COPY).read_bytes()
    show_duplicates(page, site.url)
    page.screenshot(path=str(tmp_path / "serve-duplicates.png"))
    # The search page shows every photo first: the browser keeps their pictures in its cache.
    upload = edited_upload(site.photos, tmp_path)
    show_every_photo(page, site.url, upload, site.photos)
    assert assert_pictures_show_their_files(page, site.photos, ".hit") == len(list(site.photos.iterdir()))
    show_duplicates(page, site.url)
    assert assert_pictures_show_their_files(page, site.photos, ".member") >= 2
    group = page.locator(".group").filter(has=page.locator(f'.member[data-path="{COPY}"]'))
    assert group.locator(".member.keeper").get_attribute("data-path") == ORIGINAL  # the suggested keeper
    # Picking the other member as keeper moves the mark (and its "not a duplicate" button) over.
    group.locator(f'.member[data-path="{COPY}"] input[type=radio]').check()
    assert group.locator(".member.keeper").get_attribute("data-path") == COPY
    assert group.locator(f'.member[data-path="{ORIGINAL}"] button.notdup').is_visible()
    group.locator(f'.member[data-path="{ORIGINAL}"] input[type=radio]').check()
    assert group.locator(".member.keeper").get_attribute("data-path") == ORIGINAL
    group.get_by_role("button", name="Trash 1 copy").click()
    sync_api.expect(page.locator("#msg")).to_contain_text("1 file sent to the trash", timeout=WAIT_MS)
    assert not (site.photos / COPY).exists() and (site.photos / ORIGINAL).is_file()
    assert (site.trash / "files" / COPY).read_bytes() == original
    # The groups reload without it; the undo button puts it back, bytes and all.
    sync_api.expect(page.locator(f'.member[data-path="{COPY}"]')).to_have_count(0, timeout=WAIT_MS)
    # The trash renumbered the index's rows; every picture still shows its own file, cached or not.
    show_every_photo(page, site.url, upload, site.photos)
    assert assert_pictures_show_their_files(page, site.photos, ".hit") == len(list(site.photos.iterdir()))
    show_duplicates(page, site.url)
    page.get_by_role("button", name="Undo the last action").click()
    sync_api.expect(page.locator("#msg")).to_contain_text("1 file put back", timeout=WAIT_MS)
    assert (site.photos / COPY).read_bytes() == original
    assert not list((site.trash / "files").iterdir())
    sync_api.expect(page.locator(f'.member[data-path="{COPY}"]')).to_have_count(1, timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")
    assert assert_pictures_show_their_files(page, site.photos, ".member") >= 2
