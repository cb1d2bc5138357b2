"""The web page in a real headless Chromium: upload, boxes, slider, click, sampling points, screenshot.

Uses Debian's /usr/bin/chromium through playwright (browser downloads are impossible here); skipped,
with the reason, only where no such browser is installed. The screenshot is written to
$TEST_ARTIFACTS_DIR (default test-artifacts/) as serve_page.png.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import encode, scene

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}; install it with `apt-get install -y chromium` (CI's .ci/run does)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def test_upload_draw_filter_click_and_see_sampling_points(server_url, browser, tmp_path):
    image_path = tmp_path / "shapes.png"
    image_path.write_bytes(encode(scene(480, 360, seed=3), "PNG"))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server_url + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('classes')")

    page.set_input_files("#file-input", str(image_path))
    page.wait_for_selector("body[data-state=detected]", timeout=120_000)
    scores = sorted(page.evaluate("window.detrPage.detections.map(d => d.score)"), reverse=True)
    assert len(scores) == 100  # the page asks for everything and filters itself
    shown = page.evaluate("window.detrPage.boxesDrawn")
    assert shown == sum(score >= 0.5 for score in scores) == page.locator("#detections li").count()  # default 0.50

    # The slider filters on the client: no new request; each position shows exactly the scores above it.
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    for value in (f"{scores[40]:.2f}", f"{scores[8]:.2f}"):
        page.locator("#threshold").fill(value)
        expected = sum(score >= float(value) for score in scores)
        assert page.evaluate("window.detrPage.boxesDrawn") == expected == page.locator("#detections li").count()
    assert 0 < expected < 40 and not requests

    # Clicking a detection in the list asks /v1/explain and overlays its sampling points.
    page.locator("#detections li").first.click()
    page.wait_for_selector("body[data-state=explained]", timeout=120_000)
    points = page.evaluate("window.detrPage.pointsDrawn")
    assert points > 0 and any("/v1/explain" in url for url in requests)
    assert page.locator("#level-toggles input").count() == 4
    page.locator("#level-toggles input").nth(0).uncheck()
    assert 0 < page.evaluate("window.detrPage.pointsDrawn") < points

    page.locator("#level-toggles input").nth(0).check()
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "serve_page.png"), full_page=True)
    assert (artifacts / "serve_page.png").stat().st_size > 10_000
    page.close()


@pytest.mark.slow  # a browser and uploads of 25 and 150 MB: ~15 s
@pytest.mark.parametrize("megabytes", [25, 150])  # read and dropped by the server; beyond that, answered at once
def test_an_oversized_upload_through_the_page_shows_the_413s_message(server_url, browser, tmp_path, megabytes):
    big = tmp_path / "huge.png"
    big.write_bytes(encode(scene(64, 48), "PNG") + b"\0" * (megabytes * 1024 * 1024))  # server_url's limit: 1 MB
    page = browser.new_page()
    page.goto(server_url + "/")
    page.set_input_files("#file-input", str(big))
    page.wait_for_selector("body[data-state=error]", timeout=60_000)
    status = page.locator("#status").inner_text()
    assert status == (
        "huge.png: the request body exceeds the server's upload limit of 1048576 bytes (max_upload_mb); "
        "send a smaller image"
    )
    page.close()


@pytest.mark.slow  # a browser: ~5 s
def test_the_page_says_so_when_no_answer_comes(server_url, browser, tmp_path):
    image_path = tmp_path / "shapes.png"
    image_path.write_bytes(encode(scene(64, 48), "PNG"))
    page = browser.new_page()
    page.goto(server_url + "/")
    page.route("**/v1/detect", lambda route: route.abort("connectionreset"))  # the connection is cut
    page.set_input_files("#file-input", str(image_path))
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert page.locator("#status").inner_text() == "shapes.png: no answer from the server (Failed to fetch)"
    page.close()


@pytest.mark.slow  # a browser: ~5 s
def test_loading_the_page_makes_no_request_that_fails(server_url, browser):
    # The browser fetches the icon itself, unseen by playwright's page events: count on the server.
    def answered() -> collections.Counter[tuple[str, str]]:
        pattern = r'^deformable_detr_requests_total\{endpoint="([^"]*)",status="(\d+)"\} (\d+)$'
        found = re.findall(pattern, httpx.get(server_url + "/metrics").text, flags=re.MULTILINE)
        return collections.Counter({(e, s): int(n) for e, s, n in found if e != "/metrics"})

    before = answered()
    failed, seen = [], []
    page = browser.new_page()
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("response", lambda response: seen.append((response.status, response.url)))
    page.goto(server_url + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('classes')")
    deadline = time.monotonic() + 30
    while (answered() - before).total() < 6 and time.monotonic() < deadline:  # the icon comes last
        time.sleep(0.1)
    time.sleep(0.5)  # anything more would show up now
    expected = {("/", "200"): 1, ("/static", "200"): 3, ("/health", "200"): 1, ("/v1/model", "200"): 1}
    assert answered() - before == expected  # style.css, app.js and the icon: no 404 for /favicon.ico
    assert not failed and all(status < 400 for status, _ in seen), (failed, seen)
    page.close()
