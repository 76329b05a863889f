"""Real-time speed: video frames/s end to end, per-stage times, and the web API under concurrent load.

Part 0 is ``ferkit predict clip.mp4``'s path with the default detector, in-process: a 640x480 MP4 of one
face moving, growing and tilting over a background is read frame by frame, faces are detected (a full
BlazeFace pass every ``--detect-every`` frames, the face followed in a region around it in between),
cropped, classified, smoothed, and a JSON row is written per face; frames/s over the whole clip (model
loading excluded). The same clip with detection on every frame is the reference for following: found-rate
(a face with IoU >= 0.5 with the true box) and the IoU of each frame's box with the every-frame box.
Part 1 runs the camera path in-process on 640x480 JPEG frames with one and with four faces (the example
photo's face pasted into a synthetic scene): decode -> detect -> crop -> classify -> draw, each stage timed.
Part 2 starts ``ferkit serve``'s app with uvicorn in a subprocess on a free loopback port and sends a
bounded number of ``POST /api/predict`` requests from 8 concurrent clients: latency p50/p95/p99,
throughput and errors.

    python benchmarks/realtime.py [--model PATH] [--frames 200] [--video-frames 300] [--skip-api]

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

from media import background, encode, face_patch, scene, tiny_checkpoint

from ferkit.data.images import decode_image
from ferkit.errors import ModelError
from ferkit.inference.annotate import draw_faces
from ferkit.inference.faces import Box, FaceAnalyzer, create_detector, crop_faces

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
    det = create_detector(live=True, max_side=detect_size)  # the default detector, camera settings
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
        faces = crop_faces(
            img, boxes, scale=getattr(det, "crop_scale", 1.0), shift=getattr(det, "crop_shift", 0.0)
        )
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


def make_clip(path: Path, frames: int, fps: float = 25.0, seed: int = 0) -> list[Box]:
    """A 640x480 MP4 (mp4v) of one face drifting, growing/shrinking (120-260 px) and tilting (+-20 deg) at
    up to ~6 px per frame; returns the true face box per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    bg = background(640, 480, seed=seed + 11)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (640, 480))
    truth = []
    ph = rng.uniform(0, 2 * np.pi, 4)
    for i in range(frames):
        t = i / fps
        side = int(190 + 70 * np.sin(0.5 * t + ph[0]))
        patch, (fx, fy, fw, fh) = face_patch(side)
        cx = 320 + 170 * np.sin(0.35 * t + ph[1])
        cy = 240 + 80 * np.sin(0.5 * t + ph[2])
        angle = 20 * np.sin(0.6 * t + ph[3])
        fcx, fcy = fx + fw / 2, fy + fh / 2
        m = cv2.getRotationMatrix2D((fcx, fcy), angle, 1.0)
        patch = cv2.warpAffine(patch, m, (side, side), borderMode=cv2.BORDER_REFLECT)
        frame = bg.copy()
        x0, y0 = round(cx - fcx), round(cy - fcy)
        xa, ya = max(0, x0), max(0, y0)
        xb, yb = min(640, x0 + side), min(480, y0 + side)
        frame[ya:yb, xa:xb] = patch[ya - y0 : yb - y0, xa - x0 : xb - x0]
        w.write(np.ascontiguousarray(frame[..., ::-1]))
        truth.append(Box(round(cx - fw / 2), round(cy - fh / 2), fw, fh))
    w.release()
    return truth


def bench_video(rec, clip: Path, truth: list[Box], detect_every: int, reference: list | None) -> dict:
    """``ferkit predict clip.mp4``'s loop in-process: read, detect/follow, crop, classify, smooth, JSON."""
    import io

    from ferkit.cli.predict import RowWriter
    from ferkit.inference.tracking import VideoFaceTracker
    from ferkit.inference.video import VideoReader

    analyzer = FaceAnalyzer(rec, create_detector())  # what `ferkit predict` builds by default
    tracker = VideoFaceTracker(analyzer, detect_every=detect_every)
    writer = RowWriter(io.StringIO(), "jsonl", analyzer.classes)
    boxes: list[Box | None] = []
    t0 = time.perf_counter()
    with VideoReader(clip) as reader:
        for i, t, frame, _ in reader.frames():
            faces = tracker.process(frame, t)
            writer.write(str(clip), faces, frame=i, time=t)
            boxes.append(max((f.box for f in faces), key=truth[i].iou) if faces else None)
    elapsed = time.perf_counter() - t0
    n = len(boxes)
    found = [b is not None and truth[i].iou(b) >= 0.5 for i, b in enumerate(boxes)]
    out = {
        "detect_every": detect_every,
        "frames": n,
        "full_detections": tracker.full_detections,
        "fps": round(n / elapsed, 1),
        "ms_per_frame": round(elapsed / n * 1e3, 2),
        "found_rate": round(float(np.mean(found)), 4),
        "iou_with_truth_mean": round(float(np.mean([truth[i].iou(b) for i, b in enumerate(boxes) if b])), 4),
        "false_faces": writer.count - sum(b is not None for b in boxes),
    }
    if reference is not None:
        pairs = [(a, b) for a, b in zip(boxes, reference) if a is not None and b is not None]
        ious = [a.iou(b) for a, b in pairs]
        out["iou_with_every_frame_mean"] = round(float(np.mean(ious)), 4) if ious else None
        out["iou_with_every_frame_p5"] = round(float(np.percentile(ious, 5)), 4) if ious else None
    out["_boxes"] = boxes
    return out


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
    ap.add_argument("--video-frames", type=int, default=300, help="length of the generated 640x480 clip")
    ap.add_argument("--detect-every", type=int, default=5, help="as 'ferkit predict --detect-every'")
    ap.add_argument("--skip-camera", action="store_true", help="video only (parts 0 and 2)")
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
            "detector": "blazeface auto (default); camera part: live settings, "
            f"detect size {args.detect_size}",
        }
        clip = Path(tmp) / "clip.mp4"
        truth = make_clip(clip, args.video_frames)
        every = bench_video(rec, clip, truth, 1, None)
        followed = bench_video(rec, clip, truth, args.detect_every, every["_boxes"])
        result["video"] = {
            "clip": f"640x480 mp4v, {args.video_frames} frames, one face 120-260 px moving and tilting",
            "detect_every_frame": every,
            "followed": followed,
        }
        for r in (every, followed):
            del r["_boxes"]
        if not args.skip_camera:
            result["frame"] = "640x480 JPEG q80"
            result["pipeline"] = [bench_pipeline(rec, n, args.frames, args.detect_size) for n in (1, 4)]
        if not args.skip_api:
            result["api"] = bench_api(model, args.requests, args.clients, args.threads)
        result["load_average_after"] = os.getloadavg()[0]  # other work on the machine skews every figure
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
