"""How an expression model holds up under what real photos bring: light, blur, noise, compression, low
resolution, roll, mis-crops and occlusion, on FER2013 PublicTest and the AffectNet held-out part.

Each condition is a seeded, deterministic function from the 48x48 grayscale model input (N, 48, 48)
uint8 to the same: ``clean``; ``dark`` (low light), ``overexposed``, ``low_contrast``, ``side_light``
(a left-to-right brightness ramp); ``blur``, ``noise``, ``jpeg20``; ``lowres16``/``lowres24`` (down to
16/24 px and back up); ``roll20``/``roll35`` (turned about the centre, no realignment); ``zoom_out``,
``zoom_in``, ``shifted`` (mis-crops); ``eye_band`` (sunglasses-like), ``lower_face`` (mask-like),
``grey_block`` (a random 16x16 block). The parameters are the constants below.

Per set and condition: top-1 and balanced accuracy (mean per-class recall), their drop from clean in
points, and the most predicted class with its share of all predictions (a model that calls everything
one class shows there); ``--json`` adds per-class recall. FER2013 PrivateTest is never the default
(``--split PrivateTest`` asks for it explicitly). Run:

    python benchmarks/robustness.py [--model PATH] [--n 1000] [--seed 0] [--no-affectnet] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.errors import FerkitError
from ferkit.inference.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48
CENTRE = (SIZE - 1) / 2

DARK_SCALE = 0.3  # low light: brightness x0.3 ...
DARK_GAMMA = 1.3  # ... after a gamma of 1.3 on [0, 1] (deeper shadows) ...
DARK_NOISE = 3.0  # ... plus Gaussian sensor noise of this sigma (grey levels)
OVER_GAIN, OVER_OFFSET = 1.5, 20.0  # overexposed: x * 1.5 + 20, clipped (mid-grey 128 -> 212)
LOW_CONTRAST = 0.4  # low contrast: deviations from each image's mean x0.4
SIDE_LIGHT = (0.35, 1.15)  # side light: brightness factor ramps from 0.35 (left column) to 1.15 (right)
BLUR_SIGMA = 1.5  # Gaussian blur sigma, pixels
NOISE_SIGMA = 20.0  # additive Gaussian noise sigma, grey levels
JPEG_QUALITY = 20  # cv2.imencode JPEG quality
LOW_RES = (16, 24)  # down to this side (INTER_AREA), back up to 48 (INTER_LINEAR)
ROLLS = (20.0, 35.0)  # roll in degrees, counter-clockwise on screen, about the centre, reflected border
ZOOM_OUT = 1.25  # the crop sees 1.25x the face's square: the face shrinks to 48/1.25 px, border reflected
ZOOM_IN = 0.8  # the crop sees the central 0.8 of the square, scaled up to 48 px
SHIFT = 0.10  # the crop moved by 10% of its side in a seeded random direction, border reflected
EYE_BAND = (14, 24, 5, 43, 20)  # sunglasses: rows 14-23, columns 5-42 set to grey level 20
LOWER_FACE = (30, 6, 42, 200)  # mask: rows 30-47, columns 6-41 set to light grey 200
BLOCK, BLOCK_GREY = 16, 128  # a 16x16 block of grey 128 at a seeded random place


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _each(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([fn(img) for img in x]) if len(x) else x.copy()


def _affine(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    return _each(x, lambda img: cv2.warpAffine(img, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT))


def clean(x: np.ndarray, seed: int = 0) -> np.ndarray:
    return x.copy()


def dark(x: np.ndarray, seed: int = 0) -> np.ndarray:
    grain = np.random.default_rng(seed).normal(0, DARK_NOISE, x.shape)
    return _u8(255 * DARK_SCALE * (x / 255.0) ** DARK_GAMMA + grain)


def overexposed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    return _u8(x * OVER_GAIN + OVER_OFFSET)


def low_contrast(x: np.ndarray, seed: int = 0) -> np.ndarray:
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _u8(mean + (x - mean) * LOW_CONTRAST)


def side_light(x: np.ndarray, seed: int = 0) -> np.ndarray:
    return _u8(x * np.linspace(*SIDE_LIGHT, SIZE)[None, None, :])


def blur(x: np.ndarray, seed: int = 0) -> np.ndarray:
    return _each(x, lambda img: cv2.GaussianBlur(img, (0, 0), BLUR_SIGMA))


def noise(x: np.ndarray, seed: int = 0) -> np.ndarray:
    return _u8(x + np.random.default_rng(seed).normal(0, NOISE_SIGMA, x.shape))


def jpeg(x: np.ndarray, seed: int = 0) -> np.ndarray:
    def one(img: np.ndarray) -> np.ndarray:
        _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return np.asarray(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))

    return _each(x, one)


def low_res(x: np.ndarray, seed: int = 0, side: int = LOW_RES[0]) -> np.ndarray:
    def one(img: np.ndarray) -> np.ndarray:
        small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)

    return _each(x, one)


def roll(x: np.ndarray, seed: int = 0, degrees: float = ROLLS[0]) -> np.ndarray:
    return _affine(x, cv2.getRotationMatrix2D((CENTRE, CENTRE), degrees, 1.0))


def zoom(x: np.ndarray, seed: int = 0, view: float = ZOOM_OUT) -> np.ndarray:
    """The crop sees ``view`` x the square's side (> 1: zoomed out, < 1: zoomed in)."""
    return _affine(x, cv2.getRotationMatrix2D((CENTRE, CENTRE), 0.0, 1.0 / view))


def shifted(x: np.ndarray, seed: int = 0) -> np.ndarray:
    angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(x))
    out = np.empty_like(x)
    for i, a in enumerate(angles):
        m = np.array([[1, 0, SHIFT * SIZE * np.cos(a)], [0, 1, SHIFT * SIZE * np.sin(a)]], np.float32)
        out[i] = cv2.warpAffine(x[i], m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
    return out


def eye_band(x: np.ndarray, seed: int = 0) -> np.ndarray:
    r0, r1, c0, c1, grey = EYE_BAND
    out = x.copy()
    out[:, r0:r1, c0:c1] = grey
    return out


def lower_face(x: np.ndarray, seed: int = 0) -> np.ndarray:
    r0, c0, c1, grey = LOWER_FACE
    out = x.copy()
    out[:, r0:, c0:c1] = grey
    return out


def grey_block(x: np.ndarray, seed: int = 0) -> np.ndarray:
    corners = np.random.default_rng(seed).integers(0, SIZE - BLOCK + 1, (len(x), 2))
    out = x.copy()
    for img, (r, c) in zip(out, corners):
        img[r : r + BLOCK, c : c + BLOCK] = BLOCK_GREY
    return out


Condition = Callable[[np.ndarray, int], np.ndarray]
CONDITIONS: dict[str, Condition] = {
    "clean": clean,
    "dark": dark,
    "overexposed": overexposed,
    "low_contrast": low_contrast,
    "side_light": side_light,
    "blur": blur,
    "noise": noise,
    f"jpeg{JPEG_QUALITY}": jpeg,
    **{f"lowres{s}": partial(low_res, side=s) for s in LOW_RES},
    **{f"roll{d:.0f}": partial(roll, degrees=d) for d in ROLLS},
    "zoom_out": partial(zoom, view=ZOOM_OUT),
    "zoom_in": partial(zoom, view=ZOOM_IN),
    "shifted": shifted,
    "eye_band": eye_band,
    "lower_face": lower_face,
    "grey_block": grey_block,
}


def load_sets(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{set name: (images, labels)}; exits with one line when a dataset folder is absent."""
    from ferkit.data.heldout import HELDOUT, split_heldout
    from ferkit.data.load import load_dataset

    wanted = [("fer2013", args.fer2013, args.split)]
    if not args.no_affectnet:
        wanted.append(("affectnet", args.affectnet, HELDOUT))
    sets = {}
    for name, path, split in wanted:
        if not Path(path).exists():
            sys.exit(f"robustness.py: {name} data not found at {path} (pass --{name} PATH)")
        ds = load_dataset(path, val_fraction=0) if name == "affectnet" else load_dataset(path)
        ds = split_heldout(ds) if name == "affectnet" else ds
        rows = np.flatnonzero(ds.splits == split)
        if len(rows) == 0:
            sys.exit(f"robustness.py: no {split!r} rows in {path}")
        rows = subsample(ds.labels[rows], args.n, args.seed, rows)
        sets[f"{name} {split}"] = (ds.images[rows], ds.labels[rows])
    return sets


def subsample(labels: np.ndarray, n: int | None, seed: int, rows: np.ndarray) -> np.ndarray:
    """``n`` of ``rows``, stratified: evenly spaced picks through a seeded shuffle sorted by class."""
    if n is None or n >= len(rows):
        return rows
    perm = np.random.default_rng(seed).permutation(len(rows))
    by_class = perm[np.argsort(labels[perm], kind="stable")]
    return np.sort(rows[by_class[np.linspace(0, len(rows), n, endpoint=False).astype(int)]])


def score(pred: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Top-1, balanced accuracy (mean recall over the classes present), most predicted class, recalls."""
    recall = {classes[c]: float((pred[labels == c] == c).mean()) for c in np.unique(labels)}
    counts = np.bincount(pred, minlength=len(classes))
    return {
        "top1": float((pred == labels).mean()),
        "balanced": float(np.mean(list(recall.values()))),
        "top_class": classes[int(counts.argmax())],
        "top_share": float(counts.max() / len(pred)),
        "recall": recall,
    }


def evaluate(rec: Recognizer, x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, dict[str, Any]]:
    """{condition: score}, with the drops from clean in points."""
    out: dict[str, dict[str, Any]] = {}
    for name, fn in CONDITIONS.items():
        r = score(rec.predict_proba(fn(x, seed)).argmax(1), y, rec.classes)
        if name != "clean":
            r["top1_drop_pts"] = 100 * (out["clean"]["top1"] - r["top1"])
            r["balanced_drop_pts"] = 100 * (out["clean"]["balanced"] - r["balanced"])
        out[name] = r
    return out


def print_table(name: str, y: np.ndarray, classes: tuple[str, ...], rows: dict[str, dict[str, Any]]) -> None:
    """One set's table: accuracies in %, drops in points from clean, most predicted class and its share."""
    n = len(y)
    counts = np.bincount(y, minlength=len(classes))
    big = int(counts.argmax())
    print(f"\n{name}: {n} faces (largest true class {classes[big]} {counts[big] / n:.1%}); drop = clean - it")
    print(f"{'condition':13s} {'top-1':>6s} {'drop':>6s} {'bal.':>6s} {'drop':>6s}  most predicted")
    for cond, r in rows.items():
        d1, d2 = (f"{r[k]:6.1f}" if k in r else f"{'-':>6s}" for k in ("top1_drop_pts", "balanced_drop_pts"))
        top = f"{r['top_class']} {r['top_share']:.0%}"
        print(f"{cond:13s} {100 * r['top1']:6.1f} {d1} {100 * r['balanced']:6.1f} {d2}  {top}")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a .onnx or .pt file (default: the bundled model)")
    ap.add_argument("--fer2013", default=str(ROOT.parent / "shared" / "data" / "fer2013"))
    ap.add_argument("--affectnet", default=str(ROOT.parent / "shared" / "data" / "affectnet"))
    ap.add_argument("--no-affectnet", action="store_true", help="FER2013 only")
    ap.add_argument("--split", default="PublicTest", help="FER2013 split (PrivateTest only on purpose)")
    ap.add_argument("--n", type=_positive, default=None, help="at most N faces per set (seeded, stratified)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="inference threads (0: all cores)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.model and not Path(args.model).exists():
        sys.exit(f"robustness.py: model file {args.model} not found")
    sets = load_sets(args)
    try:
        rec = Recognizer.load(args.model, threads=args.threads)
    except FerkitError as e:
        sys.exit(f"robustness.py: {e}")
    t0 = time.perf_counter()
    sets_n = {k: len(v[1]) for k, v in sets.items()}
    result: dict[str, object] = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "model": rec.source,
        "faces": sets_n,
        "seed": args.seed,
        "command": " ".join(sys.argv),
        "parameters": {k: v for k, v in globals().items() if k.isupper() and type(v) in (int, float, tuple)},
    }
    print(
        f"# {result['machine']}, {result['date']}, model {result['model']}, faces per set "
        f"{', '.join(f'{k} {v}' for k, v in sets_n.items())}, seed {args.seed}\n# {result['command']}"
    )
    results = {}
    for name, (x, y) in sets.items():
        results[name] = evaluate(rec, x, y, args.seed)
        print_table(name, y, rec.classes, results[name])
    result["sets"] = results
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n# {result['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
