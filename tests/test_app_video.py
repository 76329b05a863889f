"""``POST /api/video``: progress lines then the result, the annotated WebM, the limits, and the job cancelled
when the client goes away (a real uvicorn server: the TestClient cannot disconnect mid-response)."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
from conftest import free_port
from fastapi.testclient import TestClient
from media import moving_frames, write_video

from ferkit.app.server import Settings, create_app
from ferkit.labels import CLASSES


class FakeRecognizer:
    """Always 'Happy'; ``delay`` seconds per call (a slow model, so a job is still running when cancelled)."""

    classes, name = list(CLASSES), "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.calls = delay, 0

    def predict_proba(self, crops):
        self.calls += 1
        time.sleep(self.delay)
        return np.tile(np.eye(7, dtype=np.float32)[3], (len(crops), 1))


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "walk.avi", moving_frames(24)).read_bytes()


def test_video_gives_progress_then_tracks_timeline_and_a_webm(clip):
    app = create_app(Settings(max_upload_mb=1), recognizer=FakeRecognizer())
    with TestClient(app) as c:
        r = c.post("/api/video", files={"file": ("walk.avi", clip, "video/x-msvideo")})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        events = _lines(r.text)
        assert [e["stage"] for e in events][-1] == "done"
        assert all(e["stage"] == "progress" for e in events[:-1])
        res = events[-1]["result"]
        assert (res["width"], res["height"], res["frames"], res["every"]) == (320, 240, 24, 1)
        assert len(res["timeline"]) == 24 and all(len(f["faces"]) == 1 for f in res["timeline"])
        assert [t["track"] for t in res["tracks"]] == [1] and res["tracks"][0]["label"] == "Happy"
        assert res["tracks"][0]["frames"] == 24 and res["tracks"][0]["last"] > 1.5
        xs = [f["faces"][0]["box"][0] for f in res["timeline"]]
        assert xs[-1] - xs[0] > 100  # boxes in the video's own pixels, following the face
        v = c.get(res["video_url"])
        assert v.status_code == 200 and v.headers["content-type"] == "video/webm"
        assert v.content[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
        assert c.get("/api/video/0123456789abcdef01234567.webm").status_code == 404
        assert c.get("/api/video/..%2Fsecret.webm").status_code == 404


def test_video_limits_and_bad_files_are_4xx(clip, tmp_path):
    app = create_app(
        Settings(max_upload_mb=1, max_video_mb=0.05, max_video_seconds=1.0), recognizer=FakeRecognizer()
    )
    with TestClient(app) as c:
        r = c.post("/api/video", files={"file": ("walk.avi", clip, "video/x-msvideo")})
        assert r.status_code == 413 and "limit is 0.05 MB" in r.json()["detail"]
    app = create_app(Settings(max_video_seconds=1.0), recognizer=FakeRecognizer())
    with TestClient(app) as c:
        r = c.post("/api/video", files={"file": ("walk.avi", clip, "video/x-msvideo")})
        assert r.status_code == 400 and "the limit is 1 s" in r.json()["detail"]
        r = c.post("/api/video", files={"file": ("x.mp4", b"\x00\x00\x00\x18ftypmp42" * 50, "video/mp4")})
        assert r.status_code == 400 and "x.mp4: not a readable video" in r.json()["detail"]
        assert "/tmp" not in r.text  # no server paths
        assert c.post("/api/video", files={"file": ("x.mp4", b"", "video/mp4")}).status_code == 400
        # a 1 kB clip declaring 16000x16000 frames (each would take 768 MB decoded)
        huge = b"YUV4MPEG2 W16000 H16000 F15:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 1000
        r = c.post("/api/video", files={"file": ("huge.y4m", huge, "video/x-yuv4mpeg")})
        assert r.status_code == 400 and "16000x16000 pixels; the limit is 7680x4320" in r.json()["detail"]
        assert list(app.state.videos.dir.iterdir()) == []  # nothing left behind


def test_video_job_stops_when_the_client_goes_away(tmp_path):
    import uvicorn

    clip = write_video(tmp_path / "long.avi", moving_frames(120)).read_bytes()
    rec = FakeRecognizer(delay=0.05)  # ~6 s for the whole clip
    app = create_app(Settings(), recognizer=rec)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        while not srv.started:
            time.sleep(0.05)
        boundary = "xyz"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="long.avi"\r\n'
                f"Content-Type: video/x-msvideo\r\n\r\n"
            ).encode()
            + clip
            + f"\r\n--{boundary}--\r\n".encode()
        )
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            f"POST /api/video HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        got = b""
        while b'"frame": 1' not in got and b'"frame": 2' not in got:  # the job is under way
            got += s.recv(65536)
        s.close()
        calls = rec.calls
        deadline = time.monotonic() + 5
        while app.state.video_jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not app.state.video_jobs, "the job kept running after the client left"
        assert rec.calls < 60 and rec.calls - calls < 10
        assert app.state.gate.active == 0 and list(app.state.videos.dir.iterdir()) == []
    finally:
        srv.should_exit = True
        th.join(timeout=10)
