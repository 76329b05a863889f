"""How much margin should the square face crop add around the detector's box?

FER2013 faces are tight, centred 48x48 crops; a model trained on them should see detected faces framed
the same way. This script pastes FER2013 faces (a split that is *not* used for reporting test accuracy:
PublicTest by default) at random sizes and positions into larger faceless scenes, runs the face detector
on each scene, and for each margin compares the square crop with the pasted face box:

* detection rate (a detection with IoU >= 0.3 with the pasted box) and false detections per scene;
* IoU of the square crop (margin m) with the pasted box, mean and median; the size ratio pasted/detected;
* with ``--model``: accuracy of the model on the crops at each margin, next to its accuracy on the original
  48x48 images of the same (detected) faces — the best any crop can do.

    python benchmarks/face_margin.py --n 600 [--model runs/x/best.pt] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from media import background

from ferkit.inference.faces import Box, HaarDetector, create_detector, crop_faces, crop_geometry
from ferkit.labels import NAME_TO_INDEX

MARGINS = (-0.05, 0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3)


def load_faces(root: Path, split: str, n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    import cv2

    files = sorted((root / "test").glob(f"*/{split}_*.png")) + sorted(
        (root / "train").glob(f"*/{split}_*.png")
    )
    if not files:
        sys.exit(f"no {split}_*.png under {root}")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
    return [
        (cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE), NAME_TO_INDEX[files[i].parent.name]) for i in pick
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fer2013"))
    ap.add_argument(
        "--split", default="PublicTest", help="FER2013 split to sample (never PrivateTest for tuning)"
    )
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-side", type=int, default=72)
    ap.add_argument("--max-side", type=int, default=240)
    ap.add_argument("--detector", default="haar")
    ap.add_argument("--blazeface-model", default="auto", help="auto (= back), short, full or back")
    ap.add_argument("--yunet-model", default=None)
    ap.add_argument("--model", default=None, help="checkpoint/ONNX to measure accuracy per margin")
    ap.add_argument(
        "--context",
        type=float,
        default=0.0,
        help="mirror-pad each face by this fraction of its side before pasting (gives the detector "
        "some surroundings; the true box stays the face itself)",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import cv2

    faces = load_faces(Path(args.data), args.split, args.n, args.seed)
    det = (
        HaarDetector()
        if args.detector == "haar"
        else create_detector(
            args.detector, args.blazeface_model if args.detector == "blazeface" else args.yunet_model
        )
    )
    scale, shift = getattr(det, "crop_scale", 1.0), getattr(det, "crop_shift", 0.0)
    rec = None
    if args.model:
        from ferkit import Recognizer

        rec = Recognizer.load(args.model)
    rng = np.random.default_rng(args.seed + 1)
    t0 = time.perf_counter()
    found, false_pos, det_ious, ratios, dxs, dys = 0, 0, [], [], [], []
    crop_ious = {m: [] for m in MARGINS}
    calibrated_ious: list[float] = []
    crops = {m: [] for m in MARGINS}
    originals, labels = [], []
    for k, (face, label) in enumerate(faces):
        scene = background(640, 480, seed=int(rng.integers(1 << 30)))
        s = int(rng.integers(args.min_side, args.max_side + 1))
        x0, y0 = int(rng.integers(0, 640 - s)), int(rng.integers(0, 480 - s))
        big = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)
        c = round(args.context * s)
        if c:
            big = cv2.copyMakeBorder(big, c, c, c, c, cv2.BORDER_REFLECT)
            big = big[max(0, c - y0) :, max(0, c - x0) :]  # keep the padded patch inside the scene
            py, px = max(0, y0 - c), max(0, x0 - c)
            big = big[: 480 - py, : 640 - px]
            scene[py : py + big.shape[0], px : px + big.shape[1]] = big[..., None]
        else:
            scene[y0 : y0 + s, x0 : x0 + s] = big[..., None]
        truth = Box(x0, y0, s, s)
        boxes = det.detect(scene)
        if not boxes:
            continue
        best = max(boxes, key=truth.iou)
        if truth.iou(best) < 0.3:
            false_pos += len(boxes)
            continue
        found += 1
        false_pos += len(boxes) - 1
        det_ious.append(truth.iou(best))
        side = max(best.w, best.h)
        ratios.append(s / side)
        dxs.append((best.x + best.w / 2 - (x0 + s / 2)) / s)
        dys.append((best.y + best.h / 2 - (y0 + s / 2)) / s)
        g = crop_geometry(best, 0.0, scale=scale, shift=shift, align=False)
        calibrated_ious.append(
            truth.iou(Box(round(g.cx - g.side / 2), round(g.cy - g.side / 2), *[round(g.side)] * 2))
        )
        for m in MARGINS:
            crop_ious[m].append(truth.iou(best.square(m)))
            if rec is not None:
                crops[m].append(crop_faces(scene, [best], m)[0].crop)
        if rec is not None:
            originals.append(face)
            labels.append(label)
    elapsed = time.perf_counter() - t0
    n = len(faces)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {platform.node()}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "detector": args.detector,
        "split": args.split,
        "faces": n,
        "sides": [args.min_side, args.max_side],
        "context": args.context,
        "detection_rate": found / n,
        "false_detections_per_scene": false_pos / n,
        "detector_box_iou_mean": float(np.mean(det_ious)) if det_ious else None,
        "size_ratio_pasted_over_detected": {
            "median": float(np.median(ratios)),
            "mean": float(np.mean(ratios)),
        }
        if ratios
        else None,
        "best_margin_from_ratio": float((np.median(ratios) - 1) / 2) if ratios else None,
        "centre_offset_over_side": {
            "dx_mean": float(np.mean(dxs)),
            "dy_mean": float(np.mean(dys)),
            "dy_median": float(np.median(dys)),
        }
        if dxs
        else None,
        # crop_scale = median pasted/detected side; crop_shift = -median dy (detected centre is dy x side
        # below the pasted one): the calibration that makes the crop match the pasted face.
        "suggested_crop_scale_shift": [float(np.median(ratios)), -float(np.median(dys))] if ratios else None,
        "calibration_in_use": [scale, shift],
        "calibrated_crop_iou": {
            "mean": float(np.mean(calibrated_ious)),
            "median": float(np.median(calibrated_ious)),
        }
        if calibrated_ious
        else None,
        "margins": {},
        "seconds": round(elapsed, 1),
    }
    if rec is not None and labels:
        y = np.array(labels)
        result["accuracy_on_original_48x48"] = float((rec.predict_proba(originals).argmax(1) == y).mean())
    for m in MARGINS:
        row = {
            "crop_iou_mean": float(np.mean(crop_ious[m])) if crop_ious[m] else None,
            "crop_iou_median": float(np.median(crop_ious[m])) if crop_ious[m] else None,
        }
        if rec is not None and labels:
            row["accuracy"] = float((rec.predict_proba(crops[m]).argmax(1) == np.array(labels)).mean())
        result["margins"][str(m)] = row
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
