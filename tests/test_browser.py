"""End to end in a real browser: headless Debian Chromium driven by Python playwright.

The page's live camera reads a y4m clip made from the example face (Chromium's fake capture device);
an upload goes through the file chooser. Skipped when chromium or playwright is absent (CI installs both:
``apt-get install -y chromium`` and ``pip install playwright websockets``; never ``playwright install``).
A screenshot is kept under ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import cv2
import pytest
from conftest import free_port
from media import background, face_patch, scene, tiny_checkpoint, write_y4m

from ferkit.labels import CLASSES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _chromium_runs() -> bool:
    """True if the binary starts (Ubuntu's apt 'chromium' is a snap stub that does not)."""
    import subprocess

    try:
        return (
            subprocess.run([CHROMIUM, "--version"], capture_output=True, timeout=30, check=False).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _clip(path: Path, n: int = 30) -> Path:
    """640x480 frames, one face drifting a little (Chromium loops the file)."""
    bg = background(640, 480, seed=4)
    patch, _ = face_patch(260)
    frames = []
    for i in range(n):
        f = bg.copy()
        x0 = 180 + int(40 * i / n)
        f[110:370, x0 : x0 + 260] = patch
        frames.append(f)
    return write_y4m(path, frames, fps=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists() or not _chromium_runs():
        pytest.skip("chromium is not installed or does not start (apt-get install -y chromium)")
    from ferkit.app.routes.live import live_available

    if not live_available():
        pytest.skip("uvicorn has no WebSocket library (pip install websockets)")
    import uvicorn

    from ferkit.app.server import Settings, create_app

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(Settings(model=str(ckpt))), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(timeout=15)


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    clip = _clip(tmp_path_factory.mktemp("clip") / "clip.y4m")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--headless",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}",
            ],
        )
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 1100})
            pg = ctx.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(server)
            yield pg
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


def _label_ok(text: str) -> bool:
    return any(c in text for c in CLASSES)


def test_upload_shows_boxes_labels_and_bars(page, tmp_path):
    img, _ = scene(2, seed=7)
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), img[..., ::-1])
    page.set_input_files("#file-input", str(path))
    page.wait_for_function("document.querySelectorAll('#upload-stage .face-box').length === 2", timeout=30000)
    labels = page.locator("#upload-stage .face-label").all_inner_texts()
    assert len(labels) == 2 and all(_label_ok(t) for t in labels)
    assert page.locator("#upload-faces .face-card").count() == 2
    assert page.locator("#upload-faces .face-card").first.locator(".bar-row").count() == len(CLASSES)
    assert "2 faces found" in page.inner_text("#upload-status")
    box = page.locator("#upload-stage .face-box").first.bounding_box()
    assert box and box["width"] > 20 and box["height"] > 20
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-upload.png"), full_page=True)


def test_upload_of_a_non_image_shows_the_error(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not really a picture")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_function(
        "document.querySelector('#upload-status').classList.contains('error')", timeout=15000
    )
    assert "not an image" in page.inner_text("#upload-status")


def test_live_camera_shows_box_label_and_fps(page):
    page.click("#live-start")
    page.wait_for_selector("#live-stage .face-box .face-label", timeout=30000)
    assert _label_ok(page.inner_text("#live-stage .face-label"))
    assert page.locator("#live-faces .face-card .bar-row").count() == len(CLASSES)
    page.wait_for_function("/[0-9.]+ fps/.test(document.querySelector('#fps').textContent)", timeout=30000)
    fps = float(page.inner_text("#fps").split(" fps")[0])
    assert fps > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-live.png"), full_page=True)
    page.click("#live-stop")
    assert page.locator("#live-start").is_enabled()
