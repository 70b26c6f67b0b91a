"""The listening page in a real headless browser (Debian's Chromium, driven by Playwright):
type text, press Play, and the player reports that it played the streamed audio.

Set VOXPIPE_PAGE_SCREENSHOT=docs/http-page.png to also save the screenshot there."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from tests.daemon_proc import ROOT  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install -y chromium)"),
              pytest.mark.e2e, pytest.mark.slow]  # a browser start and a played sentence: seconds each

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
TEXT = "Hello from the browser. This sentence is streamed and played while it is still being made."


@pytest.fixture(scope="module")
def url(shared_daemon):
    return shared_daemon.url + "/"


@pytest.fixture
def page(url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 860, "height": 560})
            page.goto(url)
            page.wait_for_function("document.querySelector('#voice').options.length > 0", timeout=30_000)
            yield page
        finally:
            browser.close()


def test_page_plays_streamed_speech(page, tmp_path):
    page.fill("#text", TEXT)
    page.click("#play")
    page.wait_for_function("['played', 'error'].includes(window.voxpipe.state)", timeout=90_000)
    player = page.evaluate("window.voxpipe")
    assert player["state"] == "played", page.text_content("#status")
    assert 0 < player["firstAudioMs"] <= player["totalMs"]
    assert player["audioSeconds"] > 2.0
    assert player["playedSeconds"] == pytest.approx(player["audioSeconds"])
    assert "Played" in page.text_content("#status")
    shot = tmp_path / "http-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("VOXPIPE_PAGE_SCREENSHOT")
    if target:
        shutil.copy(shot, Path(ROOT) / target)


def test_page_shows_the_servers_error(page):
    page.evaluate("document.querySelector('#voice').add(new Option('nobody', 'nobody', true, true))")
    page.click("#play")
    page.wait_for_function("['played', 'error'].includes(window.voxpipe.state)", timeout=30_000)
    assert page.evaluate("window.voxpipe.state") == "error"
    assert "unknown voice 'nobody'" in page.text_content("#status")
