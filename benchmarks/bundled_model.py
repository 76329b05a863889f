"""Speed and size of the bundled default model through ``Recognizer`` (what the CLI and app use).

    python benchmarks/bundled_model.py [--model PATH] [--threads N] [--calls 300]

Prints the file size, one-face latency (p50/p95 over --calls calls, 48x48 face crops) and faces/s at
batch 64.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from ferkit import Recognizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    rec = Recognizer.load(args.model, threads=args.threads)
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    for _ in range(10):
        rec.predict(faces[0])
    lat = []
    for i in range(args.calls):
        t0 = time.perf_counter()
        rec.predict(faces[i % 64])
        lat.append((time.perf_counter() - t0) * 1000)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 3.0:
        rec.predict_proba(faces)
        n += len(faces)
    rate = n / (time.perf_counter() - t0)
    size = os.path.getsize(rec.source) if rec.source else float("nan")
    print(
        f"# {platform.machine()}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.2f}, threads {args.threads}"
    )
    print(f"model {rec.name} ({rec.backend}, tta {rec.tta}), file {size / 1e6:.1f} MB")
    print(
        f"one face: p50 {np.percentile(lat, 50):.2f} ms, p95 {np.percentile(lat, 95):.2f} ms; "
        f"batch 64: {rate:.0f} faces/s"
    )


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
