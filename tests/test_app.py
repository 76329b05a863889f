"""The web API with FastAPI's TestClient: faces, empty results, every 4xx, the size limit, the live socket."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from media import background, encode, png_bomb, scene, tiny_checkpoint

from ferkit.app.deps import get_recognizer
from ferkit.app.server import Settings, create_app
from ferkit.labels import CLASSES


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")
    app = create_app(Settings(model=str(ckpt), max_upload_mb=1))
    with TestClient(app) as c:  # runs the lifespan: the model is loaded once here
        yield c


def _post(client, data, name="x.jpg", ctype="image/jpeg"):
    return client.post("/api/predict", files={"file": (name, data, ctype)})


def test_health_and_page(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["classes"] == list(CLASSES) and h["detector"] == "blazeface"
    assert h["max_upload_mb"] == 1
    page = client.get("/")
    assert page.status_code == 200 and "live-start" in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no CDN in the head
    for f in ("app.js", "style.css"):
        assert client.get(f"/static/{f}").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # works offline
    assert client.get("/static-docs/swagger-ui-bundle.js").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]
    fav = client.get("/favicon.ico")
    assert fav.status_code == 200 and fav.headers["content-type"].startswith("image/svg+xml")
    assert h["model_title"] == "tiny.pt" and h["model_accuracy"] is None
    assert h["detector_title"] == "MediaPipe BlazeFace" and h["max_video_mb"] > 0


def test_docs_get_an_openapi_30_document_the_bundled_ui_reads(client):
    """Swagger UI 4.15.5 cannot render 3.1 ('does not specify a valid version field'): /docs reads 3.0."""
    import json

    assert "/openapi-3.0.json" in client.get("/docs").text
    doc = client.get("/openapi-3.0.json").json()
    assert doc["openapi"] == "3.0.3" and client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {"/api/predict", "/api/health", "/api/video", "/api/video/{video_id}.webm"}
    text = json.dumps(doc)
    assert '"null"' not in text and "contentMediaType" not in text  # 3.1-only constructs are rewritten
    track = doc["components"]["schemas"]["FaceOut"]["properties"]["track"]
    assert track["type"] == "integer" and track["nullable"] is True


def test_bundled_model_is_described_with_its_accuracy():
    from types import SimpleNamespace

    from ferkit.app.routes.api import describe_model

    title, accuracy = describe_model(SimpleNamespace(model=None), SimpleNamespace(name="member-w32c3"))
    assert "member-w32c3" not in title and "vgg_fer_w32" in title
    assert accuracy is not None and "top-1" in accuracy and "FER2013 PrivateTest" in accuracy


def test_faces_found_left_to_right(client):
    img, truth = scene(3)
    r = _post(client, encode(img))
    assert r.status_code == 200
    body = r.json()
    assert (body["width"], body["height"]) == (640, 480) and body["model"]
    faces = body["faces"]
    assert len(faces) == 3
    for f, (x, y, w, h) in zip(faces, truth):
        assert abs(f["box"][0] - x) < 15 and abs(f["box"][2] - w) < 15
        assert list(f["probs"]) == list(CLASSES) and f["label"] in CLASSES
        assert sum(f["probs"].values()) == pytest.approx(1, abs=1e-4)


def test_preview_gives_the_image_as_read_for_formats_browsers_cannot_show(client):
    import base64

    import cv2

    img, _ = scene(1, width=2000, height=1000)
    r = client.post("/api/predict", files={"file": ("x.tif", encode(img, ".tiff"), "image/tiff")})
    assert r.status_code == 200 and r.json()["preview"] is None  # only when asked
    r = client.post(
        "/api/predict?preview=true", files={"file": ("x.tif", encode(img, ".tiff"), "image/tiff")}
    )
    body = r.json()
    head, data = body["preview"].split(",", 1)
    assert head == "data:image/jpeg;base64" and (body["width"], body["height"]) == (2000, 1000)
    shown = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert shown.shape == (640, 1280, 3)  # at most 1280 px a side, the image's shape
    small = cv2.resize(img, (1280, 640), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(shown.astype(int) - small).mean() < 4  # the same picture, as a JPEG
    gray = small[::2, ::2].mean(axis=2).astype(np.uint8)  # a gray PGM: the same picture, not mirrored
    pgm = cv2.imencode(".pgm", gray)[1].tobytes()
    r = client.post("/api/predict?preview=true", files={"file": ("x.pgm", pgm, "")})
    data = r.json()["preview"].split(",", 1)[1]
    shown = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
    assert shown.shape == gray.shape and np.abs(shown.astype(int) - gray).mean() < 4


def test_faceless_image_gives_empty_list(client):
    r = _post(client, encode(background(), ".png"), "bg.png", "image/png")
    assert r.status_code == 200 and r.json()["faces"] == []


@pytest.mark.parametrize(
    "data,ctype,status,words",
    [
        (b"hello, I am text", "text/plain", 415, "not an image"),
        (b"%PDF-1.4 ...", "application/pdf", 415, "not an image"),
        (b"", "image/png", 400, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "image/png", 400, "not a readable image"),
    ],
)
def test_bad_uploads(client, data, ctype, status, words):
    r = _post(client, data, "f", ctype)
    assert r.status_code == status and words in r.json()["detail"]


def test_truncated_jpeg_is_400(client):
    r = _post(client, encode(scene(1)[0])[:600])
    assert r.status_code == 400 and "Traceback" not in r.text


def test_decompression_bomb_refused(client):
    for w, h in [(30000, 30000), (8000, 7000)]:  # over Pillow's own limit, and over ferkit's 50 MP
        r = _post(client, png_bomb(w, h), "bomb.png", "image/png")
        assert r.status_code == 400, r.text
        assert "too large" in r.json()["detail"] or "decompression bomb" in r.json()["detail"]


def test_missing_field_and_wrong_body_are_400(client):
    assert client.post("/api/predict", files={"image": ("x.jpg", b"1", "image/jpeg")}).status_code == 400
    assert (
        client.post("/api/predict", content=b"{}", headers={"content-type": "application/json"}).status_code
        == 400
    )
    r = client.post("/api/predict", data={"file": "x.jpg"})  # curl -F "file=<x.jpg": text, not a file
    assert r.status_code == 400
    assert (
        r.json()["detail"]
        == "bad request: file: expected a file (a multipart form part with a filename), got a text field"
    )


def test_size_limit_413_with_and_without_content_length(client):
    big = b"\xff\xd8\xff" + b"\x00" * (1024 * 1024 + 10)
    r = _post(client, big)
    assert r.status_code == 413 and "limit is 1 MB" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"\x00" * (512 * 1024)

    r = client.post(
        "/api/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 413
    # and the server still answers
    assert _post(client, encode(scene(1)[0])).status_code == 200


def test_unexpected_errors_never_leak_a_traceback(client):
    class Broken:
        classes, name = list(CLASSES), "broken"

        def predict_proba(self, faces):
            raise RuntimeError("secret internal detail")

    client.app.dependency_overrides[get_recognizer] = lambda: Broken()
    try:
        quiet = TestClient(client.app, raise_server_exceptions=False)  # answer as a real server would
        r = _post(quiet, encode(scene(1)[0]))
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        with client.websocket_connect("/api/live") as ws:
            ws.send_bytes(encode(scene(1)[0]))
            assert ws.receive_json() == {"error": "internal error"}
            ws.send_text("reset")  # still connected
            assert ws.receive_json() == {"reset": True}
    finally:
        client.app.dependency_overrides.clear()
    assert client.get("/api/health").status_code == 200


def test_recognizer_dependency_can_be_overridden(client):
    class Fixed:
        classes, name = list(CLASSES), "fixed"

        def predict_proba(self, faces):
            return np.tile(np.eye(7, dtype=np.float32)[5], (len(faces), 1))

    client.app.dependency_overrides[get_recognizer] = lambda: Fixed()
    try:
        faces = _post(client, encode(scene(2)[0])).json()["faces"]
    finally:
        client.app.dependency_overrides.clear()
    assert [f["label"] for f in faces] == ["Surprise", "Surprise"]


def test_live_socket_tracks_and_survives_bad_frames(client):
    img, _ = scene(2)
    with client.websocket_connect("/api/live") as ws:
        tracks = []
        for _ in range(3):
            ws.send_bytes(encode(img))
            msg = ws.receive_json()
            assert len(msg["faces"]) == 2
            tracks.append([f["track"] for f in msg["faces"]])
        assert tracks == [[1, 2]] * 3
        ws.send_bytes(b"garbage")
        assert "error" in ws.receive_json()
        ws.send_bytes(b"\xff\xd8\xff broken jpeg")
        assert "not a readable image" in ws.receive_json()["error"]
        ws.send_text("reset")
        assert ws.receive_json() == {"reset": True}
        ws.send_bytes(encode(background()))
        assert ws.receive_json()["faces"] == []


def test_serve_command_fails_early_with_one_line(tmp_path, capsys):
    from ferkit.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing.pt")]) == 4
    assert main(["serve", "--max-upload-mb", "0"]) == 5
    err = capsys.readouterr().err
    assert "model file not found" in err and "--max-upload-mb" in err and "Traceback" not in err
