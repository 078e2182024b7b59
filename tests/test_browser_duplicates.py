"""The duplicates page in a real browser, reviewing many groups at once: the search running in
the background with its progress, groups a page at a time, a keeper rule for every group,
one button acting on every selected group (one undo log, one Undo), two copies side by side
with the explanation of the pair, the similarity slider, and axe-core's audit in light and dark.

Its own served site (``tests/test_browser.py``'s helpers): sample_images with an exact copy of
chelsea.jpg, plus a smaller re-encoded copy of four more photos, indexed with the default
model. Each test leaves the photos as it found them (an action is undone before it ends).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_browser as fixtures
from tests.conftest import REPO
from tests.test_browser import COPY, ORIGINAL, WAIT_MS, Site, new_page, sample_photos, served, server_env, sync_api

pytestmark = pytest.mark.slow  # the default model builds the index
expect = sync_api.expect
browser = fixtures.browser  # Chromium for the module (test_browser's fixture)
GROUP = "[data-testid=dup-group]"
#: The photos given a smaller, re-encoded (newer) copy under copies/.
SHRUNK = ["astronaut.jpg", "coffee.jpg", "rocket.jpg", "horse.png"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    from PIL import Image

    root = tmp_path_factory.mktemp("dupes")
    photos = sample_photos(root / "photos")
    (photos / "copies").mkdir()
    for name in SHRUNK:
        with Image.open(photos / name) as im:
            im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(
                photos / "copies" / (Path(name).stem + "_small.jpg"), quality=80)
    later = time.time() + 60  # the copies are newer than every original (the newest rule keeps them)
    for p in (photos / "copies").iterdir():
        os.utime(p, (later, later))
    env = server_env(root / "home")
    build_env = {**env, "HOME": os.environ.get("HOME", str(root / "home"))}
    fixtures.vsearch("build-index", photos, "--index-dir", root / "idx", "-q", env=build_env)
    with served(root / "idx", env) as url:
        yield Site(url, photos, root / "idx", root / "home" / "xdg" / "Trash", env)


@pytest.fixture
def page(browser):
    page = new_page(browser)
    yield page
    page.context.close()


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def open_duplicates(page, url: str, query: str = "") -> None:
    """Open the duplicates page and wait until its search is done and its groups are shown."""
    page.goto(url + "/duplicates" + query)
    wait_done(page)


def wait_done(page) -> None:
    expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=WAIT_MS)
    page.locator(GROUP).first.wait_for(timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")


def groups_shown(page) -> list[list[str]]:
    """The members' paths of each group on screen, keeper first."""
    return page.evaluate(f"""Array.from(document.querySelectorAll('{GROUP}')).map(g =>
        [g.querySelector('.member.keeper').dataset.path,
         ...Array.from(g.querySelectorAll('.member:not(.keeper)')).map(m => m.dataset.path)])""")


def test_the_search_runs_in_the_background_with_progress_and_groups_come_in_pages(site, page):
    answers: list[dict] = []
    page.on("response", lambda r: answers.append(r.json()) if "/api/duplicates/search" in r.url else None)
    page.goto(site.url + "/duplicates?per=2")
    expect(page.locator("#progress")).to_be_visible()
    wait_done(page)
    started = answers[0]
    assert started["running"] and started["step"] in ("starting", "compare", "group")  # answered before it finished
    assert answers[-1]["step"] == "done" and answers[-1]["groups_total"] == 5
    assert page.locator(GROUP).count() == 2
    expect(page.locator(".pager").first).to_contain_text("Page 1 of 3")
    first = groups_shown(page)
    page.get_by_role("button", name="Next page").first.click()
    expect(page.locator(".pager").first).to_contain_text("Page 2 of 3", timeout=WAIT_MS)
    second = groups_shown(page)
    page.get_by_role("button", name="Next page").first.click()
    expect(page.locator(".pager").first).to_contain_text("Page 3 of 3", timeout=WAIT_MS)
    third = groups_shown(page)
    assert len(first + second + third) == 5 and len({tuple(g) for g in first + second + third}) == 5
    members = {m for g in first + second + third for m in g}
    assert {COPY, ORIGINAL} <= members and {f"copies/{Path(n).stem}_small.jpg" for n in SHRUNK} <= members
    # Square thumbnails, the groups across most of the page's width.
    box = page.locator(GROUP).first.bounding_box()
    assert box["width"] > 0.85 * 1280
    thumb = page.locator(f"{GROUP} img.thumb").first.bounding_box()
    assert abs(thumb["width"] - thumb["height"]) < 2


def test_a_keeper_rule_applies_to_every_group(site, page):
    open_duplicates(page, site.url)
    page.select_option("#keep", "newest")
    expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=WAIT_MS)
    expect(page.locator(f'{GROUP} .member.keeper[data-path="copies/astronaut_small.jpg"]')).to_have_count(1, timeout=WAIT_MS)
    for group in groups_shown(page):
        times = [(site.photos / p).stat().st_mtime for p in group]
        assert times[0] == max(times), group  # the newest of each group is its keeper
    page.select_option("#keep", "oldest")
    expect(page.locator(f'{GROUP} .member.keeper[data-path="astronaut.jpg"]')).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=WAIT_MS)
    for group in groups_shown(page):
        times = [(site.photos / p).stat().st_mtime for p in group]
        assert times[0] == min(times), group


def test_one_button_moves_the_copies_of_every_selected_group_then_undo_puts_every_file_back(site, page, tmp_path):
    before = tree(site.photos)
    dest = tmp_path / "copies-moved"
    dest.mkdir()
    open_duplicates(page, site.url)
    every = groups_shown(page)  # every group, on one page
    copies = {p for g in every for p in g[1:]}
    open_duplicates(page, site.url, "?per=2")
    groups = groups_shown(page)
    # Pick the other member as keeper in the first group: the action keeps it and moves the suggested one.
    first = page.locator(GROUP).first
    picked = groups[0][1]
    first.locator(f'.member[data-path="{picked}"] input[type=radio]').check()
    page.get_by_role("button", name="Select all groups (all pages)").click()
    expect(page.locator("#count")).to_contain_text("5 groups of 5 selected")
    page.select_option("#action", "move")
    page.fill("#moveto", str(dest))
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.get_by_test_id("apply-all").click()
    expect(page.locator("#msg")).to_contain_text("moved to", timeout=WAIT_MS)
    expect(page.locator("#msg")).to_contain_text("one undo log")
    assert len(dialogs) == 1 and "5 groups" in dialogs[0]  # one confirmation for all of them
    moved = tree(dest)
    # Every copy moved, bytes unchanged, under its path relative to the photo folder; every keeper stayed.
    assert set(moved) == copies - {picked} | {groups[0][0]}  # the keeper picked stayed, the suggested one moved
    assert all(before[path] == data for path, data in moved.items())
    after = tree(site.photos)
    assert set(after) == set(before) - set(moved) and all(after[p] == before[p] for p in after)
    expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=WAIT_MS)
    expect(page.locator(GROUP)).to_have_count(0, timeout=WAIT_MS)  # found again: no duplicates left
    page.get_by_role("button", name="Undo the last action").click()
    expect(page.locator("#msg")).to_contain_text(f"{len(moved)} files put back", timeout=WAIT_MS)
    assert tree(site.photos) == before and tree(dest) == {}  # every path and every byte as before
    expect(page.locator(GROUP)).to_have_count(2, timeout=WAIT_MS)  # page 1 of the groups again
    page.wait_for_load_state("networkidle")


def test_side_by_side_with_synchronised_zoom_and_the_explanation_of_the_pair(site, page):
    open_duplicates(page, site.url)
    group = page.locator(GROUP).filter(has=page.locator('.member[data-path="copies/coffee_small.jpg"]'))
    for name in ("coffee.jpg", "copies/coffee_small.jpg"):  # the two to compare
        group.locator(f'.member[data-path="{name}"] input.compare').check()
    group.get_by_role("button", name="Side by side", exact=True).click()
    dialog = page.locator("#sbs")
    expect(dialog).to_be_visible()
    why = page.get_by_test_id("sbs-why")
    expect(why).to_contain_text("Why: near", timeout=WAIT_MS)
    # The same as `vsearch duplicates --explain A B`, the keeper in A's place.
    cli = subprocess.run([sys.executable, "-m", "vsearch", "duplicates", "--index-dir", str(site.index_dir),
                          "--explain", str(site.photos / "coffee.jpg"), str(site.photos / "copies" / "coffee_small.jpg"),
                          "-f", "json"], env=site.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    import json

    (said,) = json.loads(cli.stdout)
    assert said["level"] == "near"
    shown = page.evaluate("""Array.from(document.querySelectorAll('#sbs-why table tr')).slice(1)
        .map(tr => Array.from(tr.children).map(td => td.textContent))""")
    assert shown == [[c["test"], c["value"], c["needs"], {None: "", True: "pass", False: "miss"}[c["passed"]]]
                     for c in said["checks"]]
    diff = page.get_by_test_id("sbs-diff")
    for what in ("file size", "pixels", "format", "taken (EXIF)", "coffee.jpg", "copies/coffee_small.jpg"):
        expect(diff).to_contain_text(what)
    for name in ("sbs-a", "sbs-b"):  # both loaded at full size
        page.wait_for_function(f"document.getElementById('{name}').naturalWidth > 0")
    transforms = "['sbs-a', 'sbs-b'].map(id => document.getElementById(id).style.transform)"
    page.locator("#sbs-panes").focus()
    page.keyboard.press("+")
    page.keyboard.press("ArrowLeft")
    a, b = page.evaluate(transforms)
    assert a == b and "scale(1.25)" in a and "translate(40px, 0px)" in a
    page.locator("#sbs-panes").hover()
    page.mouse.wheel(0, -100)
    a2, b2 = page.evaluate(transforms)
    assert a2 == b2 and a2 != a
    box = page.locator("#sbs-panes").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 160, box["y"] + 130)
    page.mouse.up()
    a3, b3 = page.evaluate(transforms)
    assert a3 == b3 and a3 != a2
    page.keyboard.press("0")
    assert page.evaluate(transforms) == ["translate(0px, 0px) scale(1)"] * 2
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_the_similarity_slider_changes_the_groups(site, page):
    open_duplicates(page, site.url)
    page.select_option("#level", "similar")
    expect(page.locator("#threshold-out")).to_contain_text("0.92 (default)")
    expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")
    at_default = page.locator("#progress-text").inner_text()
    slider = page.locator("#threshold")
    slider.focus()
    page.keyboard.press("Home")  # 0.50: looser, more photos look alike
    expect(page.locator("#threshold-out")).to_have_text("0.50")
    expect(page.locator("#progress-text")).not_to_have_text(at_default, timeout=WAIT_MS)
    expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=WAIT_MS)
    loose = sum(len(g) for g in groups_shown(page))
    page.keyboard.press("End")  # 1.00: only pictures identical to the model
    expect(page.locator("#threshold-out")).to_have_text("1.00")
    page.wait_for_function(f"document.querySelectorAll('{GROUP} .member').length < {loose}", timeout=WAIT_MS)
    expect(page.locator("#progress-text")).to_contain_text("Done in", timeout=WAIT_MS)
    strict = sum(len(g) for g in groups_shown(page))
    assert strict < loose


def test_no_serious_accessibility_violations_light_and_dark_and_readable_on_a_phone(site, browser):
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright",
                                     reason="axe-core for Playwright is not installed: pip install axe-playwright-python")
    for scheme, width in (("light", 1280), ("dark", 1280), ("light", 390), ("dark", 390)):
        context = browser.new_context(viewport={"width": width, "height": 860}, color_scheme=scheme)
        try:
            page = context.new_page()
            open_duplicates(page, site.url)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (scheme, width)
            for state in ("groups", "side by side"):
                if state == "side by side":
                    page.locator(GROUP).first.get_by_role("button", name="Side by side", exact=True).click()
                    expect(page.get_by_test_id("sbs-why")).to_contain_text("Why:", timeout=WAIT_MS)
                found = axe_module.Axe().run(page).response
                assert found["passes"], "axe-core ran no checks"
                serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                           for v in found["violations"] if v["impact"] in ("serious", "critical")]
                assert not serious, (scheme, width, state, serious)
        finally:
            context.close()
