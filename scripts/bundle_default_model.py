"""Copy outputs/default/default.onnx into the package with a small JSON card (metrics, checksum, runs).

python scripts/bundle_default_model.py outputs/default runs/w32 [runs/w32c2 ...]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import yaml

out, runs = Path(sys.argv[1]), [Path(r) for r in sys.argv[2:]]
dest = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "weights"
dest.mkdir(parents=True, exist_ok=True)
shutil.copyfile(out / "default.onnx", dest / "default.onnx")
sha = hashlib.sha256((dest / "default.onnx").read_bytes()).hexdigest()


def headline(path: Path) -> dict:
    m = json.loads(path.read_text())
    keep = ("n", "top1", "top2", "top3", "balanced_accuracy", "macro_f1", "ece")
    return {name: {k: s[k] for k in keep} for name, s in m["sets"].items()}


card = {
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
    "public": headline(out / "public" / "metrics.json"),
    "private": headline(out / "private" / "metrics.json"),
}
(dest / "default.json").write_text(json.dumps(card, indent=1) + "\n")
print(f"bundled {dest / 'default.onnx'} ({card['bytes'] / 1e6:.1f} MB, sha256 {sha})")
