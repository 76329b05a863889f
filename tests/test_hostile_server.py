"""Issue 14: the server under hostile clients: bomb-like uploads in parallel, corrupt EXIF, slow clients,
foreign pages on the live socket, a busy port. A fake recognizer keeps these tests free of torch."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from media import jpeg_declaring, jpeg_with_corrupt_exif
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from ferkit.app.protocol import with_header_timeout
from ferkit.app.server import Settings, create_app
from ferkit.cli import build_parser, main
from ferkit.cli.serve import bind_socket
from ferkit.labels import CLASSES


class FakeRecognizer:
    name, classes = "fake", list(CLASSES)

    def predict_proba(self, crops):
        return np.full((len(crops), len(CLASSES)), 1 / len(CLASSES), np.float32)


class SlowDetector:
    name = "slow"

    def detect(self, image):
        time.sleep(0.5)
        return []


def _client(**settings) -> TestClient:
    return TestClient(create_app(Settings(**settings), recognizer=FakeRecognizer()))


def _post(client, data, name="x.jpg"):
    return client.post("/api/predict", files={"file": (name, data, "image/jpeg")})


def test_excess_parallel_uploads_get_503_with_retry_after():
    with _client(max_parallel=1, max_queue=1) as c:
        c.app.state.detector = SlowDetector()
        with ThreadPoolExecutor(5) as ex:
            rs = list(ex.map(lambda _: _post(c, jpeg_declaring(3000, 3000)), range(5)))
        codes = sorted(r.status_code for r in rs)
        assert codes == [200, 200, 503, 503, 503], codes
        busy = next(r for r in rs if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "server busy" in busy.json()["detail"]
        assert c.app.state.gate.active == 0
        assert _post(c, jpeg_declaring(3000, 3000)).status_code == 200  # free again


def test_bomb_like_upload_is_analysed_reduced_and_reported_full_size():
    with _client() as c:
        r = _post(c, jpeg_declaring(7000, 7000))
        assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (7000, 7000)


def test_face_boxes_are_in_the_uploaded_image_pixels():
    from media import scene

    img, truth = scene(1)
    big = Image.fromarray(img).resize((640 * 5, 480 * 5))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    with _client() as c:
        body = _post(c, buf.getvalue()).json()
    assert (body["width"], body["height"]) == (3200, 2400)
    [face] = body["faces"]
    x, _, w, _ = truth[0]
    tol = 0.15 * 5 * w  # any detector's box, in the uploaded image's pixels (not the 640 px working copy)
    assert abs(face["box"][0] - 5 * x) < tol and abs(face["box"][2] - 5 * w) < tol


def test_corrupt_exif_gives_200_and_a_warning():
    with _client() as c:
        r = _post(c, jpeg_with_corrupt_exif())
        assert r.status_code == 200, r.text
        assert "EXIF data unreadable" in r.json()["warnings"][0]
        with c.websocket_connect("/api/live") as ws:
            ws.send_bytes(jpeg_with_corrupt_exif())
            assert "error" not in ws.receive_json()


def test_live_sockets_are_capped_and_idle_ones_closed():
    """Open cameras cannot use up the server's connections: the one over ``max_live`` is told to try
    later, a silent socket is closed, and its place is free again; a paused page's pings keep it."""
    with _client(max_live=2, live_idle_timeout=0.6) as c:
        with c.websocket_connect("/api/live") as a, c.websocket_connect("/api/live") as b:
            for ws in (a, b):
                ws.send_text("ping")
                assert ws.receive_json() == {"pong": True}
            with pytest.raises(WebSocketDisconnect) as e, c.websocket_connect("/api/live") as third:
                third.receive_json()
            assert e.value.code == 1013 and "2 live cameras open" in e.value.reason
            for _ in range(3):  # pings every 0.3 s keep a for longer than the timeout
                time.sleep(0.3)
                a.send_text("ping")
                assert a.receive_json() == {"pong": True}
            with pytest.raises(WebSocketDisconnect) as e:
                b.receive_json()  # b said nothing for 1 s
            assert e.value.code == 1001 and "no frames" in e.value.reason
            with c.websocket_connect("/api/live") as again:  # b's place is free
                again.send_text("reset")
                assert again.receive_json() == {"reset": True}
        assert c.app.state.live_sockets == 0


def test_live_socket_is_same_origin_by_default():
    with _client() as c:
        with (
            pytest.raises(WebSocketDisconnect) as e,
            c.websocket_connect("/api/live", headers={"origin": "http://evil.example"}) as ws,
        ):
            ws.receive_json()
        assert e.value.code == 1008
        with c.websocket_connect("/api/live", headers={"origin": "http://testserver"}) as ws:
            ws.send_text("reset")
            assert ws.receive_json() == {"reset": True}
    with (
        _client(allow_origins=("http://evil.example",)) as c,
        c.websocket_connect("/api/live", headers={"origin": "http://evil.example"}) as ws,
    ):
        ws.send_text("reset")
        assert ws.receive_json() == {"reset": True}


@pytest.fixture
def live_server():
    """The app under a real uvicorn with ferkit serve's protocol and limits (1 s timeouts), on loopback."""
    sock = bind_socket("127.0.0.1", 0)
    app = create_app(Settings(request_timeout=1.0), recognizer=FakeRecognizer())
    config = uvicorn.Config(app, log_level="critical", http=with_header_timeout(1.0), limit_concurrency=50)
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield sock.getsockname()[1]
    server.should_exit = True
    t.join(10)
    sock.close()


def _wait_closed(s: socket.socket, limit: float = 5.0) -> tuple[bytes, float]:
    s.settimeout(limit)
    t0, data = time.monotonic(), b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk


def test_slow_headers_and_short_bodies_are_cut_off(live_server):
    half = socket.create_connection(("127.0.0.1", live_server))
    half.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Ty")
    short = socket.create_connection(("127.0.0.1", live_server))
    short.sendall(
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 1000\r\n\r\n" + b"x" * 10
    )
    silent = socket.create_connection(("127.0.0.1", live_server))
    for s, expect in ((half, b""), (short, b"408"), (silent, b"")):
        data, took = _wait_closed(s)  # socket.timeout (a test failure) if the server holds it
        assert expect in data and took < 3
        s.close()


def test_busy_port_fails_before_saying_serving(capsys):
    taken = bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        assert main(["serve", "--port", str(port)]) == 74
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and "serving" not in err


def test_serve_help_shows_defaults():
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    assert "port to listen on (default 8000)" in " ".join(text.split())
    assert "--allow-origin" in text and "--max-parallel" in text and "--request-timeout" in text


def test_serve_refuses_a_live_cap_at_the_connection_limit(capsys):
    assert main(["serve", "--port", "0", "--max-live", "64", "--max-connections", "64"]) == 5
    assert "--max-live (64) must be below --max-connections (64)" in capsys.readouterr().err


def test_bodies_being_received_have_a_budget():
    """Uploads being received at once are capped: one that would take the bytes held over the budget is
    read, dropped and answered 503 + Retry-After (declared by Content-Length or not); bytes count as they
    arrive (a declaration alone holds nothing) and stop counting once the app has the body."""
    import asyncio

    from ferkit.app.server import BodyLimit

    async def app(scope, receive, send):
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})

    async def request(limiter, n, declared, pause=None):
        parts = [{"type": "http.request", "body": b"x" * 100, "more_body": True} for _ in range(n // 100)]
        parts[-1]["more_body"] = False
        sent = []

        async def receive():
            await asyncio.sleep(0)
            if pause is not None and len(parts) == 1:  # the last 100 bytes wait
                await pause.wait()
            return parts.pop(0) if parts else {"type": "http.disconnect"}

        async def send(msg):
            sent.append(msg)

        headers = [(b"content-length", str(n).encode())] if declared else []
        scope = {"type": "http", "path": "/api/predict", "method": "POST", "headers": headers}
        await limiter(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), parts

    async def main():
        limiter = BodyLimit(app, limit=1000, budget=1500)
        slow = asyncio.Event()
        first = asyncio.create_task(request(limiter, 1000, True, pause=slow))
        await asyncio.sleep(0.05)
        assert limiter.held == 900  # received so far, not the 1000 declared
        for declared in (True, False):
            status, headers, left = await request(limiter, 700, declared)
            assert status == 503 and headers[b"retry-after"] == b"1" and left == []  # read to the end
        assert limiter.held == 900
        assert (await request(limiter, 500, True))[0] == 200  # fits beside it
        slow.set()
        assert (await first)[0] == 200 and limiter.held == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--port", "70000"], "--port must be between 0 (any free port) and 65535, got 70000"),
        (["--port", "-1"], "--port must be between 0"),
        (["--detect-size", "-1"], "--detect-size must be 0 (full size) or more, got -1"),
        (["--live-detect-size", "-5"], "--live-detect-size must be 0 (full size) or more"),
    ],
)
def test_serve_refuses_out_of_range_numbers(capsys, argv, words):
    assert main(["serve", *argv]) == 5
    err = capsys.readouterr().err
    assert words in err and "serving" not in err


def test_a_low_connection_limit_lowers_the_live_cap_by_itself(capsys):
    """--max-connections 10 alone worked before --max-live existed and still does (the cap follows it):
    the command gets as far as the port, taken here."""
    taken = bind_socket("127.0.0.1", 0)
    try:
        assert main(["serve", "--port", str(taken.getsockname()[1]), "--max-connections", "10"]) == 74
    finally:
        taken.close()
    assert "cannot listen" in capsys.readouterr().err
    assert main(["serve", "--port", "0", "--max-live", "-1"]) == 5
    assert "--max-live must be 0 or more" in capsys.readouterr().err
