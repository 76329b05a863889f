"""Copy outputs/default/default.onnx into the package with a small JSON card (metrics, checksum, runs).

python scripts/bundle_default_model.py outputs/default runs/w32 [runs/w32c2 ...]

The card always has PublicTest and PrivateTest; the sets that scripts/make_default_model.sh measures only
on request join it when their metrics.json exists: the auxiliary data's held-out part (AUX=..., as is and
cropped) and the numbers of a copy in the other precision (INT8=1: int8 beside fp32, fp32 beside int8).
The whole card is read before anything is written, and the graph and its card are each written atomically,
so a missing or damaged metrics.json leaves the bundled model and its card as they were.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DEST = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "weights"
# Optional sets (card key -> folder under out), present only when make_default_model.sh measured them.
# The copy in the other precision (INT8=1): int8 beside an fp32 graph, fp32 beside an int8 one.
SETS = {"public": "public", "private": "private", "aux_heldout": "aux", "aux_heldout_crop": "aux-crop"}
OPTIONAL = {"aux_heldout": "aux", "aux_heldout_crop": "aux-crop"} | {
    f"{prec}_{key}": f"{prec}-{folder}" for prec in ("int8", "fp32") for key, folder in SETS.items()
}


def metrics(out: Path, folder: str) -> dict:
    path = out / folder / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"bundle_default_model: error: cannot read {path} ({e})") from None


def headline(m: dict) -> dict:
    keep = ("n", "top1", "top2", "top3", "balanced_accuracy", "macro_f1", "ece")
    return {name: {k: s[k] for k in keep} for name, s in m["sets"].items()}


def build_card(out: Path, runs: list[Path], graph: bytes) -> dict[str, Any]:
    card: dict[str, Any] = {
        "name": "default",
        "file": "default.onnx",
        "sha256": hashlib.sha256(graph).hexdigest(),
        "bytes": len(graph),
        # One run, or the members of a mean-of-softmax ensemble.
        "trained_from": [str(r) for r in runs],
        "configs": [
            yaml.safe_load((r / "config.yaml").read_text()) if (r / "config.yaml").exists() else None
            for r in runs
        ],
    }
    public = metrics(out, "public")
    card["public"], card["private"] = headline(public), headline(metrics(out, "private"))
    card["precision"] = public["model"].get("precision")
    for key, folder in OPTIONAL.items():
        if (out / folder / "metrics.json").exists():
            m = metrics(out, folder)
            card[key] = headline(m)
            if key.startswith("aux_heldout"):  # which data, and the central fraction scored
                card["aux_data"] = m["data_path"]
                card.update({"aux_crop": m["crop"]} if "crop" in m else {})
    for prec in ("int8", "fp32"):
        if (out / f"default-{prec}.onnx").exists():
            card[f"{prec}_bytes"] = (out / f"default-{prec}.onnx").stat().st_size
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "out", type=Path, help="make_default_model.sh's output folder (default.onnx, public/, ...)"
    )
    ap.add_argument("runs", type=Path, nargs="+", help="the training run(s) the model came from")
    args = ap.parse_args(argv)
    from ferkit.io import atomic_write_bytes, atomic_write_text

    try:
        graph = (args.out / "default.onnx").read_bytes()
    except OSError as e:
        print(f"bundle_default_model: error: cannot read {args.out / 'default.onnx'} ({e})", file=sys.stderr)
        return 1
    try:
        card = build_card(args.out, args.runs, graph)
    except (KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        print(
            f"bundle_default_model: error: a metrics.json or config.yaml is not as expected ({e!r})",
            file=sys.stderr,
        )
        return 1
    DEST.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(graph, DEST / "default.onnx")
    atomic_write_text(DEST / "default.json", json.dumps(card, indent=1) + "\n")
    print(f"bundled {DEST / 'default.onnx'} ({card['bytes'] / 1e6:.1f} MB, sha256 {card['sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
