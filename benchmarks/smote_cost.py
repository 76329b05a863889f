"""Time and peak memory of each resampling method on the real FER2013 Training split (28,709 x 2304).

Each method runs in a fresh process (so peak RSS is its own), single-threaded unless --threads:

    OMP_NUM_THREADS=1 python benchmarks/smote_cost.py --data ../shared/data/fer2013
    python benchmarks/smote_cost.py --data ../shared/data/fer2013 --methods smote_tomek --space pca

Prints one JSON line per method: wall seconds and CPU seconds (on a shared machine CPU seconds are the
figure to trust), peak RSS of the process, RSS added by resampling
(peak minus the RSS after loading the data), and the resulting class counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from datetime import UTC, datetime


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    """User + system CPU time of this process: robust when other jobs share the cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(data: str, method: str, space: str, components: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from ferkit.data.balance import make_sampler
    from ferkit.data.load import load_dataset

    train = load_dataset(data).split("Training")
    base = rss_mib()
    kw = (
        {"cleaning_space": space, "pca_components": components}
        if method in ("smote_tomek", "smote_enn")
        else {}
    )
    cpu0 = cpu_seconds()
    out = make_sampler(method, seed=0, **kw).fit_resample(train.images, train.labels)
    images = out.images  # materialise, as training does
    cpu = cpu_seconds() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        **({"cleaning_space": space} if kw else {}),
        "n_in": len(train),
        "n_out": len(images),
        "seconds": round(out.seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_mib": round(peak),
        "added_rss_mib": round(peak - base),
        "summary": out.summary(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/fer2013")
    p.add_argument("--methods", nargs="+", default=["ros", "smote", "smote_tomek", "smote_enn"])
    p.add_argument("--space", default="pixels", choices=["pixels", "pca"], help="cleaning neighbour space")
    p.add_argument("--components", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.data, a.methods[0], a.space, a.components, a.threads)))
        return
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(a.threads),
        "OPENBLAS_NUM_THREADS": str(a.threads),
        "MKL_NUM_THREADS": str(a.threads),
    }
    print(
        json.dumps(
            {
                "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cores",
                "threads": a.threads,
                "date": datetime.now(UTC).isoformat(timespec="minutes"),
            }
        )
    )
    for m in a.methods:
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--data",
                a.data,
                "--methods",
                m,
                "--space",
                a.space,
                "--components",
                str(a.components),
                "--threads",
                str(a.threads),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        print(
            r.stdout.strip() if r.returncode == 0 else json.dumps({"method": m, "error": r.stderr[-500:]}),
            flush=True,
        )


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
