"""ferkit against the `fer` package, side by side in one run, on FER2013 PrivateTest crops.

The peer (its bundled quantised mini-Xception, TFLite, batch 64, 2 threads) runs in its own venv through
../shared/tools/peer_fer_speed.py, before and after ferkit's rows, so both see the same machine load.
ferkit's rows (ONNX Runtime, batch 64 over all PrivateTest faces, like the peer, and batch 1 over 300):

- the bundled model as shipped, and its static int8 when it ships in fp32 (``ferkit.inference.quantize.
  to_int8``, calibrated on the 512 Training faces that ``ferkit export --int8 static`` uses); when it
  ships with the mirror crop (the model before issue 12), also its centre crop alone, fp32 and int8,
  rebuilt from the shipped graph's own weights (``ferkit.models.onnx_import``) and checked against it at
  the mirror setting first (``--skip-bundled`` leaves these rows out);
- optionally candidate graphs written by ``ferkit export`` (``--onnx NAME=PATH``, e.g. a new default
  model in outputs/default/default.onnx): each as it is (its built-in crops and precision), and its static
  int8 (same calibration faces; no int8 row when the file is not fp32);
- optionally registered architectures with random weights (speed only), e.g. ``--models sepres_fer``.

Accuracy (top-1 / balanced) is reported on PublicTest only, for the trained rows (nothing is tuned on
PrivateTest, whose faces here only time the engines). Run:

    PEER=$(bash ../shared/tools/setup_peer_venv.sh)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/peer_speed.py --data ../shared/data/fer2013 --peer "$PEER" \\
        --models sepres_fer
    # a candidate default model; several: --onnx a=A.onnx,b=B.onnx or --onnx repeated; --skip-bundled
    # leaves out the bundled model's rows (faster)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/peer_speed.py --data ../shared/data/fer2013 --peer "$PEER" \\
        --onnx w16=outputs/default/default.onnx --skip-bundled
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ferkit.data.dataset import FaceDataset
from ferkit.data.load import load_dataset
from ferkit.evaluation.metrics import compute_metrics
from ferkit.inference.export import export_onnx
from ferkit.inference.quantize import calibration_faces, to_int8
from ferkit.models import create_model
from ferkit.models.ensemble import Ensemble
from ferkit.models.onnx import OnnxModel
from ferkit.models.onnx_import import vgg_from_onnx
from ferkit.models.registry import ModelMeta

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "ferkit" / "weights" / "default.onnx"
PEER_TOOL = ROOT.parent / "shared" / "tools" / "peer_fer_speed.py"


def bundled_as_torch(path: Path = BUNDLED) -> Ensemble:
    """The shipped vgg_fer_w32 rebuilt in PyTorch from its ONNX graph (``ferkit.models.onnx_import``)."""
    model, meta = vgg_from_onnx(path)
    return Ensemble([model], [meta], names=["bundled"]).eval()


def faces_per_s(model: OnnxModel, faces: np.ndarray, batch: int, repeat: int) -> float:
    """Median faces/s over ``repeat`` passes through all ``faces`` in batches of ``batch``."""
    model(faces[:batch])
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(0, len(faces), batch):
            model(faces[i : i + batch])
        rates.append(len(faces) / (time.perf_counter() - t))
    return statistics.median(rates)


def accuracy(model: OnnxModel, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1, balanced accuracy) in percent."""
    m = compute_metrics(model.predict_proba(images), labels)
    return 100 * m["top1"], 100 * m["balanced_accuracy"]


def run_peer(peer: str, data: str, repeat: int) -> float:
    out = subprocess.run(
        [peer, str(PEER_TOOL), data, "--repeat", str(repeat)], capture_output=True, text=True, check=True
    ).stdout
    return float(re.findall(r"peer faces/s (\d+)", out)[-1])


CROPS = {"center": "centre crop", "mirror": "centre+mirror", "ten_crop": "ten crops"}


def bundled_variants(calib: np.ndarray, probes: np.ndarray) -> dict[str, bytes]:
    """The bundled model as shipped and, for a mirror-crop fp32 graph, at its centre crop alone, each also
    as static int8."""
    shipped = BUNDLED.read_bytes()
    if OnnxModel(shipped).tta != "mirror":
        return candidate_variants("bundled (shipped)", BUNDLED, calib)
    ens = bundled_as_torch()
    rebuilt = export_onnx(ens, tta="mirror", probes=probes[:4]).data
    diff = np.abs(OnnxModel(rebuilt).predict_proba(probes) - OnnxModel(shipped).predict_proba(probes)).max()
    print(f"# rebuilt bundled model vs default.onnx (mirror), max |dp| on {len(probes)} faces: {diff:.2e}")
    center = export_onnx(ens, tta="center", probes=probes[:4]).data
    return {
        "bundled, centre+mirror (shipped)": shipped,
        "bundled, centre crop": center,
        "bundled, centre+mirror, int8 static": to_int8(shipped, "static", calib),
        "bundled, centre crop, int8 static": to_int8(center, "static", calib),
    }


def candidate_variants(name: str, path: Path, calib: np.ndarray) -> dict[str, bytes]:
    """A graph written by ``ferkit export`` as it is (its built-in crops), and its static int8 when fp32."""
    data = path.read_bytes()
    model = OnnxModel(data)
    label = f"{name}, {CROPS.get(model.tta, model.tta)}"
    sha = hashlib.sha256(data).hexdigest()
    print(
        f"# {name}: {path} ({len(data) / 1e6:.1f} MB, {model.precision}, tta {model.tta}, sha256 {sha[:16]})"
    )
    if model.precision != "fp32":
        print(f"# {name} is already {model.precision}: no int8 row")
        return {f"{label}, {model.precision}": data}
    return {label: data, f"{label}, int8 static": to_int8(data, "static", calib)}


def variants(
    args: argparse.Namespace, calib: np.ndarray, probes: np.ndarray
) -> tuple[dict[str, bytes], set[str]]:
    """Name -> ONNX graph of every ferkit row, and the names of the trained rows (scored on PublicTest)."""
    out = {} if args.skip_bundled else bundled_variants(calib, probes)
    for name, path in args.onnx.items():
        out.update(candidate_variants(name, path, calib))
    trained = set(out)
    for name in args.models:
        torch.manual_seed(0)
        m = Ensemble([create_model(name).eval()], [ModelMeta(name)], names=[name]).eval()
        data = export_onnx(m, tta="center", probes=probes[:4]).data
        out[f"{name} (random weights), centre crop"] = data
        out[f"{name} (random weights), centre crop, int8 static"] = to_int8(data, "static", calib)
    return out, trained


def onnx_items(value: str) -> list[tuple[str, Path]]:
    """One ``--onnx NAME=PATH[,NAME=PATH...]`` value -> [(name, path)]; a usage error on a bad item."""
    out = []
    for item in (i for i in value.split(",") if i):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"want NAME=PATH, got {item!r}")
        if not Path(path).is_file():
            raise argparse.ArgumentTypeError(f"{name}: no file {path}")
        out.append((name, Path(path)))
    return out


def time_rows(
    graphs: dict[str, bytes],
    trained: set[str],
    private: FaceDataset,
    public: FaceDataset,
    args: argparse.Namespace,
) -> list[tuple[str, float, float, tuple[float, float] | None]]:
    """(name, b64 faces/s, b1 faces/s, PublicTest (top-1, balanced) or None) for every ferkit row."""
    rows = []
    for name, data in graphs.items():
        model = OnnxModel(data, threads=args.threads)
        fps = faces_per_s(model, private.images, 64, args.repeat)
        b1 = faces_per_s(model, private.images[:300], 1, 1)
        acc = accuracy(model, public.images, public.labels) if name in trained else None
        rows.append((name, fps, b1, acc))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="FER2013 class folders (../shared/data/fer2013)")
    ap.add_argument("--peer", help="the peer venv's python (setup_peer_venv.sh prints it); omit to skip")
    ap.add_argument("--models", default="", help="comma list of registered models to time (random weights)")
    ap.add_argument(
        "--onnx",
        action="append",
        default=[],
        type=onnx_items,
        metavar="NAME=PATH[,NAME=PATH...]",
        help="candidate graphs written by `ferkit export` (repeatable): as they are, and as static int8",
    )
    ap.add_argument("--skip-bundled", action="store_true", help="leave out the bundled model's four rows")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    names = [name for items in args.onnx for name, _ in items]
    if len(set(names)) < len(names):
        ap.error(f"--onnx: a name given twice in {names}")
    args.onnx = {name: path for items in args.onnx for name, path in items}
    if args.skip_bundled and not (args.onnx or args.models):
        ap.error("--skip-bundled leaves nothing to time: give --onnx or --models")
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    private, public = ds.split("PrivateTest"), ds.split("PublicTest")
    calib = calibration_faces(ds.split("Training").images)
    print(
        f"# ferkit vs fer, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"# load average at start {os.getloadavg()[0]:.2f}; ONNX Runtime {args.threads} threads, batch 64")
    graphs, trained = variants(args, calib, public.images[:256])
    peer_before = run_peer(args.peer, args.data, args.repeat) if args.peer else float("nan")
    rows = time_rows(graphs, trained, private, public, args)
    peer_after = run_peer(args.peer, args.data, args.repeat) if args.peer else float("nan")
    peer = (peer_before + peer_after) / 2
    print(
        f"# peer (fer 25.10.3, TFLite): {peer_before:.0f} faces/s before ferkit's rows, "
        f"{peer_after:.0f} after"
    )
    print("\n| model | b64 faces/s | b1 faces/s | vs peer (b64) | PublicTest top-1 / balanced |")
    print("|---|---|---|---|---|")
    print(f"| fer package (peer) | {peer:.0f} | - | 1 | - |")
    for name, fps, b1, acc in rows:
        a = f"{acc[0]:.2f} / {acc[1]:.2f}" if acc else "-"
        print(f"| {name} | {fps:.0f} | {b1:.0f} | {fps / peer:.2f} | {a} |")
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
