"""Real-time speed: end-to-end frames/s with per-stage times, and the web API under concurrent load.

Part 1 runs the camera path in-process on 640x480 JPEG frames with one and with four faces (the example
photo's face pasted into a synthetic scene): decode -> detect -> crop -> classify -> draw, each stage timed.
Part 2 starts ``ferkit serve``'s app with uvicorn in a subprocess on a free loopback port and sends a
bounded number of ``POST /api/predict`` requests from 8 concurrent clients: latency p50/p95/p99,
throughput and errors.

    python benchmarks/realtime.py [--model PATH] [--arch vgg_fer] [--frames 200] [--requests 400]

Without ``--model`` it uses the bundled model, or else an untrained ``--arch`` checkpoint (the speed of a
network does not depend on its weights; the printout says which).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from media import encode, scene, tiny_checkpoint

from ferkit.data.images import decode_image
from ferkit.errors import ModelError
from ferkit.inference.annotate import draw_faces
from ferkit.inference.faces import DEFAULT_MARGIN, create_detector, crop_faces

STAGES = ("decode", "detect", "crop", "classify", "draw")


def resolve_model(args: argparse.Namespace, tmp: Path) -> tuple[str | None, str]:
    from ferkit import Recognizer

    if args.model:
        return args.model, args.model
    try:
        Recognizer.load()
        return None, "bundled default model"
    except ModelError:
        import torch

        from ferkit.models import ModelMeta, create_model
        from ferkit.training.checkpoint import save_checkpoint

        path = tmp / f"{args.arch}.pt"
        if args.arch == "vgg_fer_w16":
            tiny_checkpoint(path)
        else:
            torch.manual_seed(0)
            save_checkpoint(create_model(args.arch), ModelMeta(name=args.arch, args={}), path)
        return str(path), f"untrained {args.arch} (no bundled model yet; speed does not depend on weights)"


def bench_pipeline(rec, n_faces: int, frames: int, detect_size: int) -> dict:
    det = create_detector("haar", live=True, max_side=detect_size)  # as the live camera in ferkit serve
    jpegs = [encode(scene(n_faces, seed=s)[0], quality=80) for s in range(8)]
    times = {s: [] for s in STAGES}
    found = []
    for i in range(frames + 10):
        data = jpegs[i % len(jpegs)]
        t = [time.perf_counter()]
        img = decode_image(data)
        t.append(time.perf_counter())
        boxes = det.detect(img)
        t.append(time.perf_counter())
        faces = crop_faces(img, boxes, DEFAULT_MARGIN)
        t.append(time.perf_counter())
        if faces:
            probs = rec.predict_proba([f.crop for f in faces])
            for f, p in zip(faces, probs):
                f.probs = p
        t.append(time.perf_counter())
        draw_faces(img, faces, rec.classes)
        t.append(time.perf_counter())
        if i >= 10:  # warm-up excluded
            for k, s in enumerate(STAGES):
                times[s].append((t[k + 1] - t[k]) * 1e3)
            found.append(len(faces))
    ms = {s: round(float(np.mean(v)), 2) for s, v in times.items()}
    total = sum(np.array(times[s]) for s in STAGES)
    return {
        "faces_per_frame": n_faces,
        "faces_found_mean": round(float(np.mean(found)), 2),
        "stage_ms": ms,
        "total_ms_mean": round(float(total.mean()), 2),
        "total_ms_p95": round(float(np.percentile(total, 95)), 2),
        "fps": round(1e3 / float(total.mean()), 1),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER = """
import sys, uvicorn
from ferkit.app.server import Settings, create_app
model = sys.argv[2] if sys.argv[2] != "-" else None
threads = int(sys.argv[3]) if sys.argv[3] != "-" else None
uvicorn.run(create_app(Settings(model=model, threads=threads)), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning")
"""


def bench_api(model: str | None, requests: int, clients: int, threads: int | None) -> dict:
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), model or "-", str(threads) if threads else "-"]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        body = encode(scene(1, seed=3)[0], quality=85)
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        counter = iter(range(requests))

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                while True:
                    with lock:
                        if next(counter, None) is None:
                            return
                    t0 = time.perf_counter()
                    try:
                        r = c.post("/api/predict", files={"file": ("f.jpg", body, "image/jpeg")})
                        ok = r.status_code == 200 and len(r.json()["faces"]) == 1
                        err = None if ok else f"HTTP {r.status_code}"
                    except httpx.HTTPError as e:
                        err = type(e).__name__
                    dt = (time.perf_counter() - t0) * 1e3
                    with lock:
                        lat.append(dt)
                        if err:
                            errors.append(err)

        for _ in range(8):  # warm-up
            httpx.post(url + "/api/predict", files={"file": ("f.jpg", body, "image/jpeg")}, timeout=30)
        t0 = time.perf_counter()
        workers = [threading.Thread(target=client) for _ in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    a = np.array(lat)
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
        "throughput_rps": round(len(lat) / elapsed, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--arch", default="vgg_fer", help="architecture of the stand-in model when there is none")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--detect-size", type=int, default=480, help="as 'ferkit serve --live-detect-size'")
    ap.add_argument(
        "--threads", type=int, default=1, help="engine threads (0: all cores; 1 as in ferkit serve)"
    )
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--skip-api", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from ferkit import Recognizer

    with tempfile.TemporaryDirectory() as tmp:
        model, described = resolve_model(args, Path(tmp))
        rec = Recognizer.load(model, threads=args.threads)  # 0 = all cores
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "date": time.strftime("%Y-%m-%d"),
            "model": described,
            "backend": rec.backend,
            "engine_threads": args.threads or "all cores",
            "load_average_before": os.getloadavg()[0],
            "detector": f"haar (live settings), detect size {args.detect_size}",
            "frame": "640x480 JPEG q80",
            "pipeline": [bench_pipeline(rec, n, args.frames, args.detect_size) for n in (1, 4)],
        }
        if not args.skip_api:
            result["api"] = bench_api(model, args.requests, args.clients, args.threads)
        result["load_average_after"] = os.getloadavg()[0]  # other work on the machine skews every figure
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
