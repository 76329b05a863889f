"""End to end in a real browser: headless Debian Chromium driven by Python playwright.

What a person would check by looking: every drawn box lies on its face (the API's box scaled to the displayed
picture, within 2 px) for wide, tall and many-face photos, at desktop and phone width and after a resize; the
empty page; a failed upload after a good one; downloads; ``/docs`` rendering its operations; a video upload
played back with its charts; the live camera (Chromium's fake device reading a y4m clip) and its pause when
the tab is hidden. Skipped when chromium or playwright is absent (CI installs both:
``apt-get install -y chromium`` and ``pip install playwright websockets``; never ``playwright install``).
Screenshots of each state are kept under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import pytest
from conftest import free_port
from media import background, face_patch, moving_frames, scene, tiny_checkpoint, write_video, write_y4m

from ferkit.labels import CLASSES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 1100}
PHONE = {"width": 390, "height": 844}

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
    from ferkit.app.deps import live_available

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
def browser(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    clip = _clip(tmp_path_factory.mktemp("clip") / "clip.y4m")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
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
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server)
    pg.wait_for_function("document.querySelector('#model-info').textContent.startsWith('Model:')")
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def _photo(tmp_path: Path, name: str, img) -> Path:
    path = tmp_path / name
    cv2.imwrite(str(path), img[..., ::-1])
    return path


def _upload(page, path: Path) -> dict:
    """Upload through the file chooser; the API's answer, once the page has drawn it."""
    with page.expect_response(lambda r: "/api/predict" in r.url) as info:
        page.set_input_files("#file-input", str(path))
    resp = info.value
    body = resp.json()
    if resp.ok:
        page.wait_for_function(
            "n => !document.querySelector('#upload-result').hidden && "
            "document.querySelectorAll('#upload-stage .face-box').length === n",
            arg=len(body["faces"]),
            timeout=30000,
        )
    return body


def _assert_boxes_on_faces(page, api: dict) -> None:
    """Each drawn box's on-screen rectangle is the API's box scaled to the displayed image, within 2 px."""
    img = page.locator("#upload-image").bounding_box()
    stage = page.locator("#upload-stage").bounding_box()
    assert img and stage
    for k in ("x", "y", "width", "height"):  # the layer the boxes are placed on is the image itself
        assert abs(img[k] - stage[k]) <= 1, (k, img, stage)
    assert abs(img["width"] / img["height"] - api["width"] / api["height"]) < 0.01
    sx, sy = img["width"] / api["width"], img["height"] / api["height"]
    boxes = page.locator("#upload-stage .face-box")
    assert boxes.count() == len(api["faces"]) > 0
    for i, f in enumerate(api["faces"]):
        b = boxes.nth(i).bounding_box()
        x, y, w, h = f["box"]
        want = {"x": img["x"] + x * sx, "y": img["y"] + y * sy, "width": w * sx, "height": h * sy}
        for k, v in want.items():
            assert abs(b[k] - v) <= 2, f"face {i + 1}: {k} drawn at {b[k]:.1f}, face at {v:.1f}"
    assert page.locator("#upload-faces .face-card").count() == len(api["faces"])


def test_empty_page_is_clean(page):
    assert page.locator("#upload-empty").is_visible() and page.locator("#video-empty").is_visible()
    assert page.locator("#live-empty").is_visible()
    for hidden in ("#upload-result", "#upload-image", "#video-result", "#live-result", "#live-video"):
        assert not page.locator(hidden).is_visible(), hidden
    info = page.inner_text("#model-info")
    assert "Model:" in info and "detector: MediaPipe BlazeFace" in info
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("favicon.svg")
    _shot(page, "empty")


@pytest.mark.parametrize(
    "name,size,n",
    [("wide", (1600, 600), 2), ("tall", (1200, 1406), 1), ("many", (1400, 420), 5)],
)
def test_boxes_lie_on_the_faces_at_any_size_and_width(page, tmp_path, name, size, n):
    img, _ = scene(n, width=size[0], height=size[1], seed=7)
    api = _upload(page, _photo(tmp_path, f"{name}.png", img))
    assert len(api["faces"]) == n
    _assert_boxes_on_faces(page, api)
    labels = page.locator("#upload-stage .face-label").all_inner_texts()
    assert [t.split()[0] for t in labels] == [str(i + 1) for i in range(n)]
    assert all(any(c in t for c in CLASSES) for t in labels) or name == "many"  # crowded: numbers only
    for i in range(n - 1):  # labels never overlap each other
        a, b = (page.locator("#upload-stage .face-label").nth(k).bounding_box() for k in (i, i + 1))
        assert (
            a["x"] + a["width"] <= b["x"] + 0.5
            or a["y"] + a["height"] <= b["y"]
            or b["y"] + b["height"] <= a["y"]
        )
    assert f"{n} face" in page.inner_text("#upload-status")
    _shot(page, f"photo-{name}")
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(100)
    _assert_boxes_on_faces(page, api)
    assert page.locator("#upload-image").bounding_box()["width"] <= PHONE["width"]
    _shot(page, f"photo-{name}-phone")
    page.set_viewport_size(DESKTOP)  # and back: the boxes follow a resize
    page.wait_for_timeout(100)
    _assert_boxes_on_faces(page, api)


def test_boxes_lie_on_the_faces_of_a_phone_portrait(page, tmp_path):
    """A phone's portrait photo is stored sideways with EXIF orientation 6: the page shows it upright,
    as the server reads it, and the box sits on the face."""
    from PIL import Image

    img, truth = scene(1, width=600, height=800, side=300, seed=3)
    path = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # display: turn the stored pixels 90 degrees clockwise
    Image.fromarray(img).transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)
    api = _upload(page, path)
    assert (api["width"], api["height"]) == (600, 800) and len(api["faces"]) == 1
    _assert_boxes_on_faces(page, api)
    x, y, w, h = api["faces"][0]["box"]
    tx, ty, tw, th = truth[0]
    assert abs(x + w / 2 - (tx + tw / 2)) < tw / 4 and abs(y + h / 2 - (ty + th / 2)) < th / 4
    _shot(page, "photo-exif-portrait")


def test_a_tiff_is_shown_with_its_boxes_and_cards(page, tmp_path):
    """Browsers cannot show TIFF: the page shows the server's preview, with the boxes on the faces."""
    img, _ = scene(2, width=1000, height=500, seed=5)
    api = _upload(page, _photo(tmp_path, "two.tif", img))
    assert len(api["faces"]) == 2 and api["preview"].startswith("data:image/jpeg;base64,")
    _assert_boxes_on_faces(page, api)
    assert "2 faces found in two.tif" in page.inner_text("#upload-status")
    with page.expect_download() as d:
        page.click("#upload-json")
    saved = json.loads(Path(d.value.path()).read_text())
    assert saved["faces"] == api["faces"] and "preview" not in saved  # results, not the picture
    _shot(page, "photo-tiff")


def test_hover_links_cards_and_faces(page, tmp_path):
    img, _ = scene(3, width=1200, height=500, seed=2)
    _upload(page, _photo(tmp_path, "three.png", img))
    page.hover("#upload-faces .face-card[data-key='2']")
    assert "hl" in page.get_attribute("#upload-stage .face-box[data-key='2']", "class")
    assert "hl" not in page.get_attribute("#upload-stage .face-box[data-key='1']", "class")
    _shot(page, "photo-hover")
    b = page.locator("#upload-stage .face-box[data-key='3']").bounding_box()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    assert "hl" in page.get_attribute("#upload-faces .face-card[data-key='3']", "class")


def test_downloads_of_a_photo_result(page, tmp_path):
    img, _ = scene(2, seed=7)
    api = _upload(page, _photo(tmp_path, "two.png", img))
    with page.expect_download() as d:
        page.click("#upload-json")
    saved = json.loads(Path(d.value.path()).read_text())
    assert d.value.suggested_filename == "two.json" and saved["faces"] == api["faces"]
    with page.expect_download() as d:
        page.click("#upload-csv")
    rows = Path(d.value.path()).read_text().splitlines()
    assert rows[0].startswith("source,frame,time,face,track,x,y,w,h,label,score,Angry") and len(rows) == 3
    with page.expect_download() as d:
        page.click("#upload-png")
    png = cv2.imread(d.value.path())
    assert d.value.suggested_filename == "two-annotated.png" and png.shape[:2] == img.shape[:2]
    assert (png != img[..., ::-1]).any()  # boxes drawn


def test_failed_upload_after_a_good_one_leaves_nothing_stale(page, tmp_path):
    img, _ = scene(2, seed=7)
    _upload(page, _photo(tmp_path, "two.png", img))
    bad = tmp_path / "notes.png"
    bad.write_text("not really a picture")
    api = _upload(page, bad)
    assert "not an image" in api["detail"]
    page.wait_for_function("document.querySelector('#upload-status').classList.contains('error')")
    assert "notes.png: not an image" in page.inner_text("#upload-status")
    assert not page.locator("#upload-result").is_visible() and not page.locator("#upload-image").is_visible()
    assert page.locator("#upload-stage .face-box").count() == 0
    assert page.locator("#upload-faces .face-card").count() == 0
    _shot(page, "photo-error")


def test_docs_render_every_operation_offline(page, server):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{server}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    for op in ("/api/predict", "/api/video", "/api/health", "/api/video/{video_id}.webm"):
        assert any(op in p.replace("\u200b", "") for p in paths), (op, paths)
    assert "Unable to render" not in page.inner_text("body")
    assert all(u.startswith(server) for u in requests), "the docs fetched something from elsewhere"
    page.click("#operations-api-video_api_video_post .opblock-summary")
    page.wait_for_selector("text=newline-delimited JSON")
    _shot(page, "docs")


def test_video_upload_end_to_end(page, tmp_path):
    clip = write_video(tmp_path / "walk.avi", moving_frames(24))
    page.set_input_files("#video-input", str(clip))
    page.wait_for_function(
        "() => { const v = document.querySelector('#video-player');"
        " return !document.querySelector('#video-result').hidden && v.readyState >= 2 && v.videoWidth > 0; }",
        timeout=60000,
    )
    assert page.evaluate("document.querySelector('#video-player').error") is None
    assert page.evaluate("document.querySelector('#video-player').videoWidth") == 320
    assert "1 face followed" in page.inner_text("#video-status")
    rows = page.locator("#video-tracks tbody tr")
    assert rows.count() == 1 and any(c in rows.first.inner_text() for c in CLASSES)
    chart = page.locator("#video-charts .chart svg")
    assert chart.count() == 1 and chart.locator("polyline").count() == len(CLASSES)
    assert len(chart.locator("polyline").first.get_attribute("points").split()) == 24
    page.evaluate("document.querySelector('#video-player').play()")
    page.wait_for_function("document.querySelector('#video-player').currentTime > 0.3", timeout=10000)
    _shot(page, "video")
    with page.expect_download() as d:
        page.click("#video-csv")
    lines = Path(d.value.path()).read_text().splitlines()
    assert len(lines) == 25 and lines[1].split(",")[4] == "1"  # one face per frame, track 1


def test_bad_video_shows_an_error(page, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 2000)
    page.set_input_files("#video-input", str(bad))
    page.wait_for_function("document.querySelector('#video-status').classList.contains('error')")
    assert "not a readable video" in page.inner_text("#video-status")
    assert not page.locator("#video-result").is_visible()


def test_live_camera_boxes_fps_and_pause_when_hidden(page):
    page.evaluate(  # count the frames the page sends
        "window.sent = 0; const send = WebSocket.prototype.send;"
        "WebSocket.prototype.send = function (d) { window.sent++; return send.call(this, d); }; 0"
    )
    page.click("#live-start")
    page.wait_for_selector("#live-stage .face-box .face-label", timeout=30000)
    assert any(c in page.inner_text("#live-stage .face-label") for c in CLASSES)
    assert page.locator("#live-faces .face-card .bar-row").count() == len(CLASSES)
    page.wait_for_function("/[0-9.]+ fps/.test(document.querySelector('#fps').textContent)", timeout=30000)
    assert float(page.inner_text("#fps").split(" fps")[0]) > 0
    assert "ms per frame on the server" in page.inner_text("#server-ms")
    video = page.locator("#live-video").bounding_box()
    stage = page.locator("#live-stage").bounding_box()
    assert abs(video["width"] - stage["width"]) <= 1 and abs(video["height"] - stage["height"]) <= 1
    box = page.locator("#live-stage .face-box").first.bounding_box()
    assert video["x"] <= box["x"] and box["x"] + box["width"] <= video["x"] + video["width"] + 2
    _shot(page, "live")
    page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    assert "Paused" in page.inner_text("#live-status")
    page.wait_for_timeout(300)  # a frame already in flight may still be answered
    n = page.evaluate("window.sent")
    page.wait_for_timeout(1000)
    assert page.evaluate("window.sent") == n > 0, "frames were sent while the tab was hidden"
    page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.wait_for_function(f"window.sent > {n}", timeout=10000)  # frames resume when shown again
    page.click("#live-stop")
    assert page.locator("#live-start").is_enabled() and not page.locator("#live-result").is_visible()
