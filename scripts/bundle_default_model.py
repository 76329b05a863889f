"""Copy outputs/default/default.onnx into the package with a small JSON card (metrics, checksum, runs).

python scripts/bundle_default_model.py outputs/default runs/w32 [runs/w32c2 ...]

The card always has PublicTest and PrivateTest; the sets that scripts/make_default_model.sh measures only
on request join it when their metrics.json exists: the auxiliary data's held-out part (AUX=..., as is and
cropped) and the numbers of a copy in the other precision (INT8=1: int8 beside fp32, fp32 beside int8).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

out, runs = Path(sys.argv[1]), [Path(r) for r in sys.argv[2:]]
dest = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "weights"
dest.mkdir(parents=True, exist_ok=True)
shutil.copyfile(out / "default.onnx", dest / "default.onnx")
sha = hashlib.sha256((dest / "default.onnx").read_bytes()).hexdigest()


def metrics(folder: str) -> dict:
    return json.loads((out / folder / "metrics.json").read_text())


def headline(m: dict) -> dict:
    keep = ("n", "top1", "top2", "top3", "balanced_accuracy", "macro_f1", "ece")
    return {name: {k: s[k] for k in keep} for name, s in m["sets"].items()}


card: dict[str, Any] = {
    "name": "default",
    "file": "default.onnx",
    "sha256": sha,
    "bytes": (dest / "default.onnx").stat().st_size,
    # One run, or the members of a mean-of-softmax ensemble.
    "trained_from": [str(r) for r in runs],
    "configs": [
        yaml.safe_load((r / "config.yaml").read_text()) if (r / "config.yaml").exists() else None
        for r in runs
    ],
}
public = metrics("public")
card["public"], card["private"] = headline(public), headline(metrics("private"))
card["precision"] = public["model"].get("precision")
# Optional sets (card key -> folder under out), present only when make_default_model.sh measured them.
# The copy in the other precision (INT8=1): int8 beside an fp32 graph, fp32 beside an int8 one.
SETS = {"public": "public", "private": "private", "aux_heldout": "aux", "aux_heldout_crop": "aux-crop"}
OPTIONAL = {"aux_heldout": "aux", "aux_heldout_crop": "aux-crop"} | {
    f"{prec}_{key}": f"{prec}-{folder}" for prec in ("int8", "fp32") for key, folder in SETS.items()
}
for key, folder in OPTIONAL.items():
    if (out / folder / "metrics.json").exists():
        m = metrics(folder)
        card[key] = headline(m)
        if key.startswith("aux_heldout"):  # which data, and the central fraction scored
            card["aux_data"] = m["data_path"]
            card.update({"aux_crop": m["crop"]} if "crop" in m else {})
for prec in ("int8", "fp32"):
    if (out / f"default-{prec}.onnx").exists():
        card[f"{prec}_bytes"] = (out / f"default-{prec}.onnx").stat().st_size
(dest / "default.json").write_text(json.dumps(card, indent=1) + "\n")
print(f"bundled {dest / 'default.onnx'} ({card['bytes'] / 1e6:.1f} MB, sha256 {sha})")
