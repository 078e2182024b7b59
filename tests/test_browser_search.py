"""The search page in a real browser: every search a URL, the query panel, the large view by
keyboard, judgments that stay, the "already in my library?" check, and axe-core's audit.

The same real ``vsearch serve`` as ``tests/test_browser.py`` (its fixtures: sample_images plus an
exact copy of chelsea.jpg, indexed with the default model, on a free port), driven by the
system's Chromium. axe-core comes with ``axe-playwright-python`` (the test extra); without it
the audit skips, saying so.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests import test_browser as fixtures
from tests.test_browser import COPY, ORIGINAL, WAIT_MS, edited_upload, new_page, sync_api
from vsearch.storage.store import file_digest

pytestmark = pytest.mark.slow  # the default model builds the index
expect = sync_api.expect
# test_browser's fixtures (the served site, Chromium, a page), found by pytest by these names.
site, browser, page = fixtures.site, fixtures.browser, fixtures.page
RESULT, QUERY, LIGHTBOX = "[data-testid=result]", "[data-testid=query-photo]", "[data-testid=lightbox]"


def row_of(site, name: str) -> int:
    """The index row of ``name`` in the site's photos (the page's own details route)."""
    digest = file_digest((site.photos / name).read_bytes())
    return httpx.get(f"{site.url}/api/photo", params={"digest": digest}).json()["row"]


def wait_results(page) -> None:
    page.locator(RESULT).first.wait_for(timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")


def first_name(page) -> str:
    return page.locator(f"{RESULT} .name").first.inner_text()


def errors_of(page) -> list[str]:
    """Answers of 400 and over the page gets, but the dwell events (the server may not take them yet)."""
    bad: list[str] = []
    page.on("response", lambda r: bad.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/api/event") else None)
    return bad


def test_search_by_upload_is_a_url_that_back_and_reload_restore(site, page, tmp_path):
    bad = errors_of(page)
    page.goto(site.url + "/")
    page.set_input_files("#file", str(edited_upload(site.photos, tmp_path)))
    wait_results(page)
    assert re.search(r"/\?upload=[0-9a-f]{16,}$", page.url)
    upload_url = page.url
    assert first_name(page) in (ORIGINAL, COPY)
    # The query panel shows the upload itself (kept for the session), not in the library.
    assert page.locator(QUERY).evaluate("i => i.complete && i.naturalWidth > 0")
    expect(page.locator("#qcap")).to_contain_text("not in the library", timeout=WAIT_MS)
    # Score and file name on one line, the full path on hover.
    name = page.locator(f"{RESULT} .name").first
    assert name.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"
    assert name.get_attribute("title") in (ORIGINAL, COPY)
    expect(page.locator(f"{RESULT} .score").first).to_have_text(re.compile(r"1\. [01]\.\d{3}"))
    # A search by a row in the URL; Back comes back to the upload, Reload keeps it.
    row = row_of(site, "coffee.jpg")
    page.goto(f"{site.url}/?row={row}")
    wait_results(page)
    expect(page.locator("#qcap")).to_have_text("coffee.jpg", timeout=WAIT_MS)
    page.go_back()
    expect(page).to_have_url(upload_url)
    wait_results(page)
    expect(page.locator(f"{RESULT} .name").first).to_have_text(re.compile(f"^({ORIGINAL}|{COPY})$"), timeout=WAIT_MS)
    page.reload()
    wait_results(page)
    assert page.url == upload_url and first_name(page) in (ORIGINAL, COPY)
    assert page.locator(QUERY).evaluate("i => i.complete && i.naturalWidth > 0")
    # Another tab of the same browser opens the same search.
    other = page.context.new_page()
    other.goto(upload_url)
    wait_results(other)
    assert first_name(other) in (ORIGINAL, COPY)
    assert not bad, bad


def test_drop_a_photo_anywhere_on_the_page(site, page):
    page.goto(site.url + "/")
    row = row_of(site, "coffee.jpg")
    digest = file_digest((site.photos / "coffee.jpg").read_bytes())
    # A drop of coffee.jpg's bytes on the heading (not on a drop box): the page searches by it.
    page.evaluate("""async ([row, digest]) => {
        const blob = await (await fetch(`/image/${row}/${digest}`)).blob();
        const dt = new DataTransfer();
        dt.items.add(new File([blob], "coffee.jpg", {type: "image/jpeg"}));
        document.querySelector("h1").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [row, digest])
    expect(page).to_have_url(re.compile(r"\?upload="), timeout=WAIT_MS)
    wait_results(page)
    expect(page.locator("#qcap")).to_contain_text("already in the library as coffee.jpg", timeout=WAIT_MS)


def test_lightbox_by_keyboard_alone_then_find_similar(site, page):
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data or "{}")) if r.url.endswith("/api/event") else None)
    page.goto(f"{site.url}/?row={row_of(site, 'coffee.jpg')}&self=0")  # a photo with no exact copy
    wait_results(page)
    results = page.locator(RESULT)
    page.locator(f"{RESULT} .open").first.focus()
    page.keyboard.press("Enter")
    box = page.locator(LIGHTBOX)
    expect(box).to_be_visible()
    expect(box.locator("#lb-count")).to_have_text(re.compile(r"^1 of \d+$"))
    expect(box.locator("#lb-img")).to_have_attribute("src", re.compile(r"^/image/\d+/[0-9a-f]+$"))
    expect(box.locator(".facts")).to_contain_text("Pixels")
    expect(box.locator(".facts")).to_contain_text(re.compile(r"\d+ × \d+"), timeout=WAIT_MS)
    # (waited for, as below: on a loaded machine the focus lands a moment after the dialog shows)
    page.wait_for_function("document.activeElement.closest('[data-testid=lightbox]') !== null", timeout=WAIT_MS)
    # Arrow keys move between the results; the focus never leaves the dialog.
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(box.locator("#lb-count")).to_have_text(re.compile(r"^3 of "))
    page.keyboard.press("ArrowLeft")
    expect(box.locator("#lb-count")).to_have_text(re.compile(r"^2 of "))
    second = results.nth(1).locator(".name").inner_text()
    expect(box.locator("#lb-title")).to_have_text(second)
    for key in ["Tab"] * 7 + ["Shift+Tab"] * 7:
        page.keyboard.press(key)
        page.wait_for_function("document.activeElement.closest('[data-testid=lightbox]') !== null", timeout=WAIT_MS)
    # Esc closes it and gives the focus back to the result last shown.
    page.keyboard.press("Escape")
    expect(box).to_be_hidden()
    # (waited for, not read at once: on a loaded machine the focus lands a moment after the close)
    page.wait_for_function("name => document.activeElement.closest('[data-testid=result]')"
                           "?.querySelector('.name').textContent === name", arg=second, timeout=WAIT_MS)
    # The open was logged as a click; the close sent how long each result was looked at.
    page.wait_for_load_state("networkidle")
    kinds = [e.get("kind") for e in sent]
    assert kinds[0] == "click" and sent[0]["results"][0]["rank"] == 1
    dwells = [e for e in sent if e.get("kind") == "dwell"]
    assert [d["rank"] for d in dwells] == [1, 2, 3, 2]
    assert all(isinstance(d["ms"], int) and d["ms"] >= 0 and d["query_id"] is not None for d in dwells)
    # Find similar, by keyboard: a new URL searching by that result, Back returns.
    before = page.url
    page.keyboard.press("ArrowRight")  # the focus is on a result button: the arrows do nothing there
    page.keyboard.press("Enter")
    expect(box).to_be_visible()
    box.get_by_test_id("similar").focus()
    page.keyboard.press("Enter")
    expect(box).to_be_hidden()
    expect(page).to_have_url(re.compile(rf"\?row={row_of(site, second)}(&|$)"), timeout=WAIT_MS)
    wait_results(page)
    expect(page.locator("#qcap")).to_have_text(second, timeout=WAIT_MS)
    expect(page.locator(f"{RESULT} .name").first).to_have_text(second, timeout=WAIT_MS)  # self=0: itself first
    page.go_back()
    expect(page).to_have_url(before)
    expect(page.locator("#qcap")).to_have_text("coffee.jpg", timeout=WAIT_MS)


def test_a_judgment_shows_and_stays_after_reload(site, page):
    page.goto(f"{site.url}/?row={row_of(site, 'rocket.jpg')}")
    wait_results(page)
    hit = page.locator(RESULT).nth(1)
    judged = hit.locator(".name").inner_text()
    hit.get_by_role("button", name="not relevant", exact=True).click()
    expect(hit.get_by_role("button", name="not relevant", exact=True)).to_have_attribute("aria-pressed", "true",
                                                                                        timeout=WAIT_MS)
    expect(hit).to_contain_text("✗ not relevant")
    expect(page.locator("#msg")).to_contain_text(f"Marked {judged} not relevant")
    page.reload()
    wait_results(page)
    again = page.locator(RESULT).filter(has=page.locator(".name", has_text=judged))
    expect(again.get_by_role("button", name="not relevant", exact=True)).to_have_attribute("aria-pressed", "true",
                                                                                          timeout=WAIT_MS)
    expect(again.get_by_role("button", name="relevant", exact=True)).to_have_attribute("aria-pressed", "false")
    # Changing one's mind: the newest verdict is the one shown.
    again.get_by_role("button", name="relevant", exact=True).click()
    expect(again).to_contain_text("✓ relevant", timeout=WAIT_MS)
    page.reload()
    wait_results(page)
    again = page.locator(RESULT).filter(has=page.locator(".name", has_text=judged))
    expect(again.get_by_role("button", name="relevant", exact=True)).to_have_attribute("aria-pressed", "true",
                                                                                      timeout=WAIT_MS)


def test_library_check_one_known_one_new(site, page, tmp_path):
    import numpy as np
    from PIL import Image

    new = tmp_path / "new-photo.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(new)
    count = httpx.get(site.url + "/api/info").json()["count"]
    page.goto(site.url + "/")
    check = page.get_by_test_id("library-check")
    check.locator("input[type=file]").set_input_files([str(site.photos / "coffee.jpg"), str(new)])
    known = page.locator(".libitem").filter(has_text="coffee.jpg")
    fresh = page.locator(".libitem").filter(has_text="new-photo.png")
    expect(known).to_have_attribute("data-status", "present", timeout=WAIT_MS)
    expect(known).to_contain_text("already there (exact")
    expect(known.locator("img")).to_have_attribute("alt", "the library's photo: coffee.jpg")
    assert known.locator("img").evaluate("i => new Promise(ok => i.complete ? ok(i.naturalWidth) : i.onload = () => ok(i.naturalWidth))") > 0
    expect(fresh).to_have_attribute("data-status", "new", timeout=WAIT_MS)
    expect(fresh).to_contain_text("new: not in the library")
    # Nothing was added to the index or the photo folder.
    assert httpx.get(site.url + "/api/info").json()["count"] == count
    assert not (site.photos / "new-photo.png").exists()


def test_no_serious_accessibility_violations_light_and_dark(site, browser):
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright",
                                     reason="axe-core for Playwright is not installed: pip install axe-playwright-python")
    row = row_of(site, ORIGINAL)
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme=scheme)
        try:
            page = context.new_page()
            page.goto(f"{site.url}/?row={row}")
            wait_results(page)
            page.locator(f"{RESULT} button.yes").first.click()  # a judged result too
            expect(page.locator(RESULT).first).to_have_attribute("data-label", "relevant", timeout=WAIT_MS)
            for state in ("results", "lightbox"):
                if state == "lightbox":
                    page.locator(f"{RESULT} .open").first.click()
                    expect(page.locator(LIGHTBOX)).to_be_visible()
                    expect(page.locator(".facts")).to_contain_text("Taken", timeout=WAIT_MS)
                found = axe_module.Axe().run(page).response
                assert found["passes"], "axe-core ran no checks"
                serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                           for v in found["violations"] if v["impact"] in ("serious", "critical")]
                assert not serious, (scheme, state, serious)
        finally:
            context.close()


def test_page_serves_its_own_style_and_icon_at_phone_size(site, browser):
    page = new_page(browser)
    try:
        bad = errors_of(page)
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{site.url}/?row={row_of(site, ORIGINAL)}")
        wait_results(page)
        assert page.evaluate("getComputedStyle(document.body).getPropertyValue('--thumb').trim()") == "130px"
        # Nothing wider than the window: no sideways scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert httpx.get(site.url + "/favicon.ico").status_code == 200
        assert not bad, bad
    finally:
        page.context.close()
