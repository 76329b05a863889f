"""Inference speed on this CPU: PyTorch eager vs ONNX Runtime, side by side in one run.

For each model (the study's VGGNet, the half-width compact one, and a 3-member ensemble of the
VGGNet, as the study averaged) and each crop mode (centre, ten-crop): faces/s at batch 1 and batch 64,
p50/p95 latency at batch 1, FLOPs per face and the achieved fraction of this CPU's practical peak (the
best GFLOP/s of a large float32 matmul in PyTorch or ONNX Runtime). Both engines start from the same uint8
N x 48 x 48 faces and end at probabilities: normalisation, crops, temperature and softmax are included,
face detection and resizing are not. Weights are random (speed does not depend on them); ONNX graphs
still pass the export's parity check. An optional int8 (static, QDQ) ONNX row shows what quantisation
buys on single crops.

    python benchmarks/inference.py                       # the full table (about 3-4 minutes on 2 cores)
    python benchmarks/inference.py --quick               # vgg_fer_w32 only, short timings (~30 s)
    python benchmarks/inference.py --models vgg_fer_w32 --tta center --seconds 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch

from ferkit import create_model
from ferkit.inference.export import export_onnx, probe_images
from ferkit.models.ensemble import Ensemble
from ferkit.models.onnx import OnnxModel
from ferkit.models.registry import ModelMeta

CROPS = {"center": 1, "mirror": 2, "ten_crop": 10}
ENSEMBLE = "ensemble3"  # 3 x --ensemble-member


def macs_per_crop(model: torch.nn.Module, size: int = 40) -> int:
    """Multiply-accumulates of one 1 x size x size crop through every Conv2d and Linear (hooks)."""
    total = 0

    def conv(m: torch.nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m: torch.nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(conv if isinstance(m, torch.nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 1, size, size))
    for h in hooks:
        h.remove()
    return total


def matmul_peak(seconds: float = 2.0, n: int = 2048, threads: int | None = None) -> float:
    """Practical float32 peak, GFLOP/s: the best n x n matmul (2 n^3 FLOPs) of PyTorch and of ONNX Runtime.

    Both, because their BLAS differ by CPU vendor (PyTorch's may skip AVX-512 on AMD); best-of, because
    other processes can only slow a run down.
    """
    import onnx
    from onnx import TensorProto, helper

    a, b = torch.randn(n, n), torch.randn(n, n)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = min(proto.ir_version, onnx.IR_VERSION)
    from ferkit.models.onnx import make_session

    sess = make_session(proto.SerializeToString(), threads)
    feeds = {"a": a.numpy(), "b": b.numpy()}
    best = 0.0
    for fn in (lambda: torch.mm(a, b), lambda: sess.run(None, feeds)):
        fn()
        t_end = time.perf_counter() + seconds / 2
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            fn()
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def build(name: str, member: str) -> Ensemble:
    """A single model (an ensemble of one: the same code path) or the 3-member ensemble, eval mode."""
    names = [member] * 3 if name == ENSEMBLE else [name]
    models, metas = [], []
    for i, n in enumerate(names):
        torch.manual_seed(i)
        models.append(create_model(n).eval())
        metas.append(ModelMeta(n))
    return Ensemble(models, metas, names=[f"{n}#{i}" for i, n in enumerate(names)]).eval()


@dataclass
class Timing:
    p50_ms: float
    p95_ms: float
    b1_fps: float
    bn_fps: float


def time_engine(run, faces: np.ndarray, batch: int, seconds: float) -> Timing:
    """Batch-1 latencies over ``seconds`` (at least 5 calls), then batch-``batch`` throughput."""
    one = faces[:1]
    run(one)  # warm-up: first-call allocations, lazy initialisation
    lat, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(lat) < 5:
        t = time.perf_counter()
        run(one)
        lat.append(time.perf_counter() - t)
    big = faces[:batch]
    t = time.perf_counter()
    run(big)  # warm-up for this shape, and a first measurement
    first = time.perf_counter() - t
    times, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or not times:
        if first > seconds:  # one batch already takes longer than the budget: one more is enough
            times.append(first)
            break
        t = time.perf_counter()
        run(big)
        times.append(time.perf_counter() - t)
    lat_ms = np.array(lat) * 1e3
    return Timing(
        float(np.percentile(lat_ms, 50)),
        float(np.percentile(lat_ms, 95)),
        1e3 / float(np.median(lat_ms)),
        batch / float(np.median(times)),
    )


def int8_static(data: bytes, faces: np.ndarray) -> bytes:
    from ferkit.inference.quantize import to_int8

    return to_int8(data, "static", calibration=faces)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models",
        default=f"vgg_fer,vgg_fer_w32,{ENSEMBLE}",
        help=f"comma list of registered models and/or {ENSEMBLE} (default: all three)",
    )
    ap.add_argument(
        "--ensemble-member", default="vgg_fer", help="the ensemble's member model (default vgg_fer)"
    )
    ap.add_argument("--tta", default="center,ten_crop", help="comma list of center, mirror, ten_crop")
    ap.add_argument(
        "--backends",
        default="torch,onnx,onnx-int8",
        help="comma list of torch, onnx, onnx-int8 (int8 rows only for single-crop models)",
    )
    ap.add_argument("--batch", type=int, default=64, help="the large batch (default 64)")
    ap.add_argument("--seconds", type=float, default=1.5, help="time budget per measurement (default 1.5)")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads for both engines (default: all)"
    )
    ap.add_argument("--quick", action="store_true", help="vgg_fer_w32 only, 0.5 s per measurement")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.seconds = "vgg_fer_w32", 0.5
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [t.strip() for t in args.tta.split(",") if t.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [t for t in modes if t not in CROPS] + [
        b for b in backends if b not in ("torch", "onnx", "onnx-int8")
    ]
    if bad:
        ap.error(f"unknown value(s): {', '.join(bad)}")

    torch.set_num_threads(args.threads)
    faces = probe_images(max(args.batch, 64), seed=0)
    started = time.perf_counter()
    peak = matmul_peak(4.0, threads=args.threads)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# ferkit inference benchmark, {when}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} threads; torch "
        f"{torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
        f"python {platform.python_version()}"
    )
    print(
        f"# OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} (PASSIVE keeps PyTorch's OpenMP "
        "threads from spinning against other processes on a shared machine)"
    )
    load = os.getloadavg()[0]
    print(
        f"# load average at start: {load:.2f}"
        + (
            " -- the machine is busy: numbers will be low and noisy (PyTorch's OpenMP threads suffer most)"
            if load > 0.5
            else ""
        )
    )
    head = (
        f"| model | params | crops | GFLOP/face | engine | b1 p50 ms | b1 p95 ms | b1 faces/s | "
        f"b{args.batch} faces/s | b{args.batch} GFLOP/s | % peak | vs torch b1 / b{args.batch} |"
    )
    rows: list[tuple[str, float]] = []  # (row text with {pct} left to fill, GFLOP/s)
    for name in models:
        ens = build(name, args.ensemble_member)
        params = sum(p.numel() for p in ens.parameters())
        macs = sum(macs_per_crop(m, meta.input_size) for m, meta in zip(ens.members, ens.metas))
        label = f"{ENSEMBLE} (3x{args.ensemble_member})" if name == ENSEMBLE else name
        for tta in modes:
            gflop = 2 * macs * CROPS[tta] / 1e9
            base: Timing | None = None
            for backend in backends:
                if backend == "onnx-int8" and CROPS[tta] != 1:
                    continue
                if backend == "torch":

                    def run(x: np.ndarray, ens: Ensemble = ens, tta: str = tta) -> np.ndarray:
                        with torch.inference_mode():
                            return ens.predict_proba(torch.from_numpy(x), tta).numpy()
                else:
                    data = export_onnx(ens, tta=tta, probes=faces[:4]).data
                    if backend == "onnx-int8":
                        data = int8_static(data, faces[:64])
                    run = OnnxModel(data, threads=args.threads)
                t = time_engine(run, faces, args.batch, args.seconds)
                if backend == "torch":
                    base = t
                rate = t.bn_fps * gflop
                vs = (
                    f"{t.b1_fps / base.b1_fps:.2f}x / {t.bn_fps / base.bn_fps:.2f}x"
                    if base and backend != "torch"
                    else "1 (reference)"
                    if backend == "torch"
                    else "-"
                )
                rows.append(
                    (
                        f"| {label} | {params / 1e6:.2f}M | {CROPS[tta]} | {gflop:.3f} | {backend} | "
                        f"{t.p50_ms:.2f} | {t.p95_ms:.2f} | {t.b1_fps:.0f} | {t.bn_fps:.0f} | {rate:.1f} | "
                        "{pct} | " + vs + " |",
                        rate,
                    )
                )
                print(f"  done: {label}, {CROPS[tta]} crop(s), {backend}", file=sys.stderr, flush=True)
                del run
        peak = max(peak, matmul_peak(2.0, threads=args.threads))  # best seen: contention only lowers it
    print(
        f"# practical peak (best 2048^2 float32 matmul, torch or ONNX Runtime, measured between models): "
        f"{peak:.1f} GFLOP/s; batch {args.batch}; {args.seconds:g} s per measurement; random weights"
    )
    print()
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for text, rate in rows:
        print(text.replace("{pct}", f"{100 * rate / peak:.0f}%"))
    print()
    print(
        f"# wall time {time.perf_counter() - started:.0f} s, load average at end {os.getloadavg()[0]:.2f}. "
        f"FLOPs = 2 x conv/linear multiply-accumulates "
        "(hooks), per face = per crop x crops x members. % peak = b-large GFLOP/s / matmul GFLOP/s "
        "(int8 rows count int8 operations, so they can pass the float32 peak)."
    )
    return 0


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
