"""Hostile load on ``ferkit serve``: concurrent bomb-like uploads and slow connections; peak server RSS.

Starts ``ferkit serve`` on 127.0.0.1 (a free port; loopback only), then:

1. sends ``--uploads`` concurrent uploads of a tiny JPEG that declares ``--side`` x ``--side`` pixels (629
   bytes for 7000x7000: under the 50-megapixel limit, so it is decoded), ``--rounds`` times;
2. sends ``--big`` concurrent uploads of ``--big-mb`` MB of junk to ``/api/video`` (just under its 50 MB
   limit: each is received whole before it is found not to be a video), with the server's RSS around them;
3. opens ``--slow`` connections that send half a request's headers, and as many that send a body shorter
   than their Content-Length, and counts how many the server closes within ``--request-timeout`` + 5 s,
   checking meanwhile that a normal request is still answered.

Prints the server's RSS before, at its peak and after, and the status counts. Bounded: it stops by itself
(``--limit`` seconds at most) and always stops the server.

    python benchmarks/hostile_load.py       # 16 x 7000x7000, 2 rounds; 30 x 49.9 MB; 70 + 70 slow
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from media import jpeg_declaring


def multipart(data: bytes, name: str = "x.jpg") -> tuple[bytes, str]:
    """A form with one file field; the content type follows nothing but the name's claim."""
    boundary = "ferkitbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def post(
    port: int, data: bytes, timeout: float = 120, path: str = "/api/predict", name: str = "x.jpg"
) -> int:
    body, ctype = multipart(data, name)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("POST", path, body, {"Content-Type": ctype})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError as e:
        return -1 if not isinstance(e, TimeoutError) else -2


def get(port: int, path: str = "/api/health", timeout: float = 10) -> int:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return -1


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """The server's RSS every 20 ms; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, False

    def run(self) -> None:
        while not self.stop:
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.02)


def big_uploads(port: int, pid: int, n: int, mb: float) -> dict:
    """``n`` concurrent junk uploads of ``mb`` MB to /api/video: statuses and the server's RSS."""
    junk = os.urandom(int(mb * 2**20) - 300)  # the form's own bytes stay under the limit
    before = rss_mb(pid)
    sampler = Sampler(pid)
    sampler.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as ex:
        statuses = Counter(ex.map(lambda _: post(port, junk, path="/api/video", name="x.mp4"), range(n)))
    seconds = time.monotonic() - t0
    time.sleep(4)
    sampler.stop = True
    return {
        "big_uploads": n,
        "big_mb": mb,
        "big_seconds": round(seconds, 1),
        "big_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "big_rss_before_mb": round(before, 1),
        "big_rss_peak_mb": round(sampler.peak, 1),
        "big_rss_after_4s_mb": round(rss_mb(pid), 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slow_clients(port: int, n: int, request_timeout: float) -> dict:
    """n half-header connections and n short-body connections; how many the server closed, and how fast."""
    socks = []
    for i in range(2 * n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2 == 0:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        else:
            s.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"x" * 100
            )
        socks.append(s)
    t0 = time.monotonic()
    health_during = get(port)
    closed, when = 0, []
    deadline = t0 + request_timeout + 5
    for s in socks:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while s.recv(65536):
                pass
            closed += 1
            when.append(time.monotonic() - t0)
        except OSError:
            pass
        s.close()
    return {
        "slow_connections": 2 * n,
        "closed_by_server": closed,
        "closed_after_s_max": round(max(when), 1) if when else None,
        "health_while_held": health_during,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=16)
    ap.add_argument("--side", type=int, default=7000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--big", type=int, default=30, help="concurrent large junk uploads to /api/video")
    ap.add_argument("--big-mb", type=float, default=49.9, help="their size in MB (the limit: 50)")
    ap.add_argument("--slow", type=int, default=70, help="half-header connections (and as many short bodies)")
    ap.add_argument("--request-timeout", type=float, default=10.0)
    ap.add_argument("--limit", type=float, default=300, help="stop after this many seconds in any case")
    ap.add_argument("serve_args", nargs="*", help="more options for ferkit serve (after --)")
    args = ap.parse_args()

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "ferkit.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--request-timeout",
        str(args.request_timeout),
        *args.serve_args,
    ]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(args.limit, server.kill)
    killer.start()
    out: dict = {
        "command": " ".join(cmd[1:]),
        "uploads": args.uploads,
        "side": args.side,
        "rounds": args.rounds,
    }
    try:
        t0 = time.monotonic()
        while get(port, timeout=2) != 200:
            if server.poll() is not None or time.monotonic() - t0 > 120:
                raise SystemExit(f"server did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.5)
        small = io.BytesIO()
        photo = os.path.join(os.path.dirname(__file__), "..", "examples", "astronaut.png")
        Image.open(photo).save(small, "JPEG")
        assert post(port, small.getvalue()) == 200  # warm: model and detector threads ready
        out["rss_baseline_mb"] = round(rss_mb(server.pid), 1)
        bomb = jpeg_declaring(args.side, args.side)
        out["upload_bytes"] = len(bomb)
        sampler = Sampler(server.pid)
        sampler.start()
        statuses: Counter = Counter()
        t1 = time.monotonic()
        for _ in range(args.rounds):
            with ThreadPoolExecutor(args.uploads) as ex:
                statuses.update(ex.map(lambda _: post(port, bomb), range(args.uploads)))
        out["bomb_seconds"] = round(time.monotonic() - t1, 1)
        out["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        time.sleep(2)
        sampler.stop = True
        out["rss_peak_mb"] = round(sampler.peak, 1)
        out["rss_after_mb"] = round(rss_mb(server.pid), 1)
        out["errors_5xx_other_than_503"] = sum(v for k, v in statuses.items() if k >= 500 and k != 503)
        out["connection_errors"] = statuses.get(-1, 0) + statuses.get(-2, 0)
        if args.big:
            out.update(big_uploads(port, server.pid, args.big, args.big_mb))
        if args.slow:
            out.update(slow_clients(port, args.slow, args.request_timeout))
        out["health_after"] = get(port)
        out["server_alive"] = server.poll() is None
    finally:
        killer.cancel()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
