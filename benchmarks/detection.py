"""Face detection on synthetic in-the-wild-like scenes: recall, false faces, crop IoU and speed per detector,
and the expression accuracy of aligned vs unaligned crops of rotated faces.

Scenes are built from FER2013 (PublicTest; never PrivateTest) and AffectNet faces (``../shared/data``;
the script says so and stops when they are absent): each 48x48 face, mirror-padded by 0.3 of its side for
some surroundings and feathered into the scene, is pasted at 24-400 px into a 640x480 faceless background
(gradients, texture, clutter, stripes), rotated by up to +-35 degrees. Kinds of scene (seeded, equal
shares): ``clean`` (one face, 60-400 px), ``small`` (one face, 24-60 px), ``rotated`` (one face, 20-35
degrees), ``blur``, ``noise``, ``dark`` (low light), ``multi`` (2-5 faces), ``empty`` (no face). Every
face scene also gets a random roll of +-35 degrees; "wild" is all face scenes together.

A detection finds a face when its centre lies within 0.5 x the pasted square's side of the true centre
and its side is 0.35-2x that side (AffectNet's squares frame faces more loosely); each face and each
detection is matched at most once; unmatched detections are false faces. Crop IoU (FER2013 faces only,
whose framing the crops should match): the detector's calibrated crop square (turned by the eye angle when
it has keypoints) against the pasted face's square (polygon IoU). Expression accuracy: the bundled model
(or ``--model``) on the crops of the faces blazeface:auto found that are rolled by 15 degrees or more,
aligned and not (and on the original 48x48 images of the same faces); and per kind of scene, on the
aligned crops of all the faces it found against their original 48x48 images.

    python benchmarks/detection.py [--scenes 320] [--seed 0] [--json out.json] [--model M.onnx]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from media import background

from ferkit.inference.align import CropGeometry, polygon_iou
from ferkit.inference.faces import Box, create_detector, crop_faces, crop_geometry
from ferkit.labels import NAME_TO_INDEX

KINDS = ("clean", "small", "rotated", "blur", "noise", "dark", "multi", "empty")
DETECTORS = ("blazeface:auto", "blazeface:short", "blazeface:full", "blazeface:back", "haar")
W, H = 640, 480
CONTEXT = 0.3


def load_faces(fer: Path, affectnet: Path, n: int, seed: int) -> list[tuple[np.ndarray, int, str]]:
    """(48x48 RGB face, label, source) for n faces, half from each dataset."""
    import cv2

    fer_files = sorted(fer.glob("*/*/PublicTest_*.png"))
    aff_files = sorted(p for p in affectnet.glob("*/*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not fer_files or not aff_files:
        sys.exit(
            f"detection.py needs FER2013 (PublicTest_*.png under {fer}) and AffectNet (class folders under "
            f"{affectnet}): not found. Pass --fer2013 and --affectnet."
        )
    rng = np.random.default_rng(seed)
    out = []
    for files, src in ((fer_files, "fer2013"), (aff_files, "affectnet")):
        for i in rng.choice(len(files), size=min(n // 2 + 1, len(files)), replace=False):
            img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            img = (
                cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA) if img.shape[:2] != (48, 48) else img
            )
            out.append((img[..., ::-1].copy(), NAME_TO_INDEX[files[i].parent.name], src))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def make_background(rng: np.random.Generator) -> np.ndarray:
    import cv2

    kind = rng.integers(4)
    img = background(W, H, seed=int(rng.integers(1 << 30)))
    if kind == 1:  # texture
        tex = cv2.GaussianBlur(rng.normal(0, 35, (H, W, 3)).astype(np.float32), (0, 0), rng.uniform(1, 4))
        img = np.clip(img + tex, 0, 255).astype(np.uint8)
    elif kind == 2:  # clutter: boxes, circles, lines
        for _ in range(int(rng.integers(10, 30))):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
            r = int(rng.integers(5, 80))
            shape = rng.integers(3)
            if shape == 0:
                cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(5, 80))), c, -1)
            elif shape == 1:
                cv2.circle(img, (x, y), r, c, -1)
            else:
                cv2.line(img, (x, y), (int(rng.integers(0, W)), int(rng.integers(0, H))), c, 3)
        img = cv2.GaussianBlur(img, (3, 3), 0)
    elif kind == 3:  # stripes
        period = rng.uniform(8, 60)
        xx = np.arange(W)[None, :] * math.cos(rng.uniform(0, math.pi)) + np.arange(H)[:, None] * 0.5
        img = np.clip(img + 40 * np.sin(xx / period)[..., None], 0, 255).astype(np.uint8)
    return img


def paste(scene: np.ndarray, face: np.ndarray, side: int, cx: float, cy: float, angle: float) -> np.ndarray:
    """Paste the face (mirror-padded by CONTEXT, feathered) at centre (cx, cy), ``side`` px, rolled
    ``angle`` degrees (clockwise on screen); returns the true face square's corners."""
    import cv2

    pad = round(48 * CONTEXT)
    big = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    n = big.shape[0]
    k = side / 48.0
    # Source point (n/2, n/2) -> (cx, cy), scaled by k and rotated by angle (OpenCV: counter-clockwise +).
    m = cv2.getRotationMatrix2D((n / 2, n / 2), -angle, k)
    m[0, 2] += cx - n / 2
    m[1, 2] += cy - n / 2
    warped = cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    edge = np.minimum.reduce([xx, yy, n - 1 - xx, n - 1 - yy]) / max(pad, 1)
    alpha = cv2.warpAffine(np.clip(edge, 0, 1), m, (W, H), flags=cv2.INTER_LINEAR)[..., None]
    scene[:] = (scene * (1 - alpha) + warped * alpha).astype(np.uint8)
    return CropGeometry(cx, cy, float(side), angle).corners()


def build_scene(kind: str, faces, rng: np.random.Generator):
    """(RGB scene, [(corners, face index, side, angle)])."""
    import cv2

    scene = make_background(rng)
    n = 0 if kind == "empty" else int(rng.integers(2, 6)) if kind == "multi" else 1
    truth: list[tuple[np.ndarray, int, int, float]] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(n):
        lo, hi = (24, 60) if kind == "small" else (40, 160) if kind == "multi" else (60, 400)
        side = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        angle = (
            float(rng.choice([-1, 1]) * rng.uniform(20, 35))
            if kind == "rotated"
            else float(rng.uniform(-35, 35))
        )
        # The rolled square inside the frame (the largest faces may touch its edges).
        a = math.radians(angle)
        half = min(side / 2 * (abs(math.cos(a)) + abs(math.sin(a))), H / 2)
        for _try in range(30):
            cx, cy = rng.uniform(half, W - half), rng.uniform(half, H - half)
            if all(math.hypot(cx - x, cy - y) > (side + s) * 0.8 for x, y, s in placed):
                break
        else:
            continue
        i = int(rng.integers(len(faces)))
        truth.append((paste(scene, faces[i][0], side, cx, cy, angle), i, side, angle))
        placed.append((cx, cy, side))
    if kind == "blur":
        scene = cv2.GaussianBlur(scene, (0, 0), rng.uniform(1.5, 3.5))
    elif kind == "noise":
        scene = np.clip(scene + rng.normal(0, rng.uniform(12, 30), scene.shape), 0, 255).astype(np.uint8)
    elif kind == "dark":
        g = rng.uniform(0.15, 0.35)
        scene = np.clip(scene * g + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
    return scene, truth


def match(truth, boxes: list[Box]) -> dict[int, int]:
    """{truth index: detection index}, greedy by centre distance."""
    pairs = []
    for t, (corners, _, side, _) in enumerate(truth):
        cx, cy = corners.mean(0)
        for d, b in enumerate(boxes):
            dist = math.hypot(b.x + b.w / 2 - cx, b.y + b.h / 2 - cy)
            ratio = max(b.w, b.h) / side
            # AffectNet's crops frame the face more loosely than FER2013's: its face is ~0.6 of the square.
            if dist <= 0.5 * side and 0.35 <= ratio <= 2.0:
                pairs.append((dist / side, t, d))
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, t, d in sorted(pairs):
        if t not in out and d not in used:
            out[t] = d
            used.add(d)
    return out


def expression_by_kind(rec, found: dict[str, list]) -> dict[str, dict[str, float]]:
    """Top-1 of the model on the found faces' aligned crops and on their original 48x48 images, per kind of
    scene: what the scene's condition (size, blur, noise, light, roll) costs beyond the face itself."""
    y, kinds = np.array(found["labels"]), np.array(found["kinds"])
    hit = {k: rec.predict_proba(found[k]).argmax(1) == y for k in ("crops", "original")}
    out = {}
    for kind in [k for k in KINDS if k in set(kinds)] + ["wild"]:
        sel = np.ones(len(y), bool) if kind == "wild" else kinds == kind
        out[kind] = {"faces": int(sel.sum()), **{k: float(v[sel].mean()) for k, v in hit.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fer2013", default=str(ROOT.parent / "shared" / "data" / "fer2013"))
    ap.add_argument("--affectnet", default=str(ROOT.parent / "shared" / "data" / "affectnet"))
    ap.add_argument("--scenes", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None, help="expression model, .onnx or .pt (default: the bundled one)")
    args = ap.parse_args()
    for p in (args.fer2013, args.affectnet):
        if not Path(p).is_dir():
            sys.exit(
                f"detection.py needs the FER2013 and AffectNet faces; {p} does not exist "
                "(pass --fer2013 DIR and --affectnet DIR)"
            )
    faces = load_faces(Path(args.fer2013), Path(args.affectnet), 600, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    kinds = [KINDS[i % len(KINDS)] for i in range(args.scenes)]
    scenes = [(k, *build_scene(k, faces, rng)) for k in kinds]
    names = args.detectors.split(",")
    dets = {}
    for name in names:
        base, _, model = name.partition(":")
        dets[name] = create_detector(base, model or None)
    from ferkit import Recognizer

    rec = Recognizer.load(args.model)
    load0 = os.getloadavg()[0]
    rows = {}
    aligned: dict[str, list] = {"aligned": [], "unaligned": [], "labels": [], "original": []}
    by_kind: dict[str, list] = {"crops": [], "labels": [], "kinds": [], "original": []}
    for name, det in dets.items():
        per_kind: dict[str, dict[str, float]] = {
            k: {"faces": 0, "found": 0, "false": 0, "scenes": 0} for k in KINDS
        }
        ious, ms = [], []
        scale, shift = getattr(det, "crop_scale", 1.0), getattr(det, "crop_shift", 0.0)
        det.detect(scenes[0][1])  # warm-up
        for si, (kind, img, truth) in enumerate(scenes):
            t0 = time.perf_counter()
            boxes = det.detect(img)
            ms.append((time.perf_counter() - t0) * 1e3)
            m = match(truth, boxes)
            r = per_kind[kind]
            r["faces"] += len(truth)
            r["found"] += len(m)
            r["false"] += len(boxes) - len(m)
            r["scenes"] += 1
            for t, d in m.items():
                if faces[truth[t][1]][2] == "fer2013":
                    g = crop_geometry(boxes[d], 0.0, scale=scale, shift=shift, align=True)
                    ious.append(polygon_iou(g.corners(), truth[t][0]))
                if name == "blazeface:auto":
                    fi = truth[t][1]
                    by_kind["crops"].append(
                        crop_faces(img, [boxes[d]], scale=scale, shift=shift, align=True)[0].crop
                    )
                    by_kind["labels"].append(faces[fi][1])
                    by_kind["kinds"].append(kind)
                    by_kind["original"].append(faces[fi][0])
                if name == "blazeface:auto" and abs(truth[t][3]) >= 15:
                    b = boxes[d]
                    a, u = (
                        crop_faces(img, [b], scale=scale, shift=shift, align=x)[0].crop for x in (True, False)
                    )
                    fi = truth[t][1]
                    aligned["aligned"].append(a)
                    aligned["unaligned"].append(u)
                    aligned["labels"].append(faces[fi][1])
                    aligned["original"].append(faces[fi][0])
        face_kinds = [k for k in KINDS if k != "empty"]
        wild = {x: sum(per_kind[k][x] for k in face_kinds) for x in ("faces", "found", "false", "scenes")}
        rows[name] = {
            "recall_wild": wild["found"] / max(wild["faces"], 1),
            "false_per_scene_wild": wild["false"] / max(wild["scenes"], 1),
            "false_per_empty_scene": per_kind["empty"]["false"] / max(per_kind["empty"]["scenes"], 1),
            "crop_iou_mean": float(np.mean(ious)) if ious else None,
            "ms_per_frame": float(np.mean(ms)),
            "recall_by_kind": {
                k: round(per_kind[k]["found"] / per_kind[k]["faces"], 3)
                for k in face_kinds
                if per_kind[k]["faces"]
            },
        }
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "date": time.strftime("%Y-%m-%d"),
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "scenes": args.scenes,
        "faces": sum(len(t) for _, _, t in scenes),
        "seed": args.seed,
        "detectors": rows,
    }
    if aligned["labels"]:
        y = np.array(aligned["labels"])
        acc = {
            k: float((rec.predict_proba(aligned[k]).argmax(1) == y).mean())
            for k in ("aligned", "unaligned", "original")
        }
        result["expression_rotated_faces"] = {"faces": len(y), **acc}
    if by_kind["labels"]:
        result["expression_by_kind"] = expression_by_kind(rec, by_kind)
    print(
        f"{result['scenes']} scenes, {result['faces']} faces, seed {args.seed}, {result['machine']}, "
        f"load {result['load_average']}"
    )
    head = ("detector", "recall", "false/scene", "false/empty", "crop IoU", "ms")
    print("{:17s} {:>7s} {:>11s} {:>11s} {:>8s} {:>6s}  recall by kind".format(*head))
    for name, r in rows.items():
        kinds_s = " ".join(f"{k}={v:.2f}" for k, v in r["recall_by_kind"].items())
        iou = f"{r['crop_iou_mean']:.3f}" if r["crop_iou_mean"] is not None else "-"
        print(
            f"{name:17s} {r['recall_wild']:7.3f} {r['false_per_scene_wild']:11.3f} "
            f"{r['false_per_empty_scene']:11.3f} {iou:>8s} {r['ms_per_frame']:6.1f}  {kinds_s}"
        )
    if "expression_rotated_faces" in result:
        e = result["expression_rotated_faces"]
        print(
            f"expression, {e['faces']} faces rolled >= 15 deg found by blazeface:auto: "
            f"aligned {e['aligned']:.3f}, unaligned {e['unaligned']:.3f}, original 48x48 {e['original']:.3f}"
        )
    if "expression_by_kind" in result:
        parts = [
            f"{k}={v['crops']:.2f}/{v['original']:.2f}({v['faces']})"
            for k, v in result["expression_by_kind"].items()
        ]
        print(
            "expression by kind, found faces' aligned crops / their original 48x48 (faces):", " ".join(parts)
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
