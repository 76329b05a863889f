"""The model shipped inside the package (``ferkit/weights/default.onnx``) and its card."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ferkit.errors import ModelError
from ferkit.extras import missing_extra_message


def bundled_card() -> dict[str, Any] | None:
    """The bundled model's ``default.json`` (file, sha256, metrics), or None if this install has none."""
    p = Path(str(resources.files("ferkit").joinpath("weights/default.json")))
    return json.loads(p.read_text()) if p.is_file() else None


def describe_bundled() -> str:
    card = bundled_card()
    if card is None:
        return "bundled model: none in this installation"
    lines = [f"bundled model: {card['file']} ({card['bytes'] / 1e6:.1f} MB, sha256 {card['sha256'][:16]}...)"]
    for part in ("public", "private"):
        for name, m in card.get(part, {}).items():
            lines.append(
                f"  {name:<40} top-1 {m['top1']:.2%}  balanced {m['balanced_accuracy']:.2%}  "
                f"macro-F1 {m['macro_f1']:.2%}"
            )
    return "\n".join(lines)


def describe_local(runs: str | Path = "runs") -> list[str]:
    """One line per ``runs/*/best.pt``: architecture, epoch and validation accuracy."""
    paths = sorted(Path(runs).glob("*/best.pt"))
    if paths and importlib.util.find_spec("torch") is None:
        return [f"  {len(paths)} run(s): {missing_extra_message('torch', 'reading checkpoints')}"]
    if not paths:
        return []
    from ferkit.models.checkpoint import load_checkpoint, meta_from_checkpoint  # torch: only where needed

    lines = []
    for p in paths:
        try:
            ck = load_checkpoint(p)
            name = meta_from_checkpoint(ck).name
        except ModelError as e:
            lines.append(f"  {p}: unreadable ({e})")
            continue
        m: dict[str, Any] = ck["metrics"] if isinstance(ck.get("metrics"), dict) else {}
        val = [
            m.get(k) if isinstance(m.get(k), float | int) else float("nan")
            for k in ("val_acc", "val_balanced_acc")
        ]
        epoch = ck.get("epoch", "?")
        lines.append(
            f"  {p!s:<32} {name:<14} epoch {epoch!s:>3}  val acc {val[0]:.2%}  balanced {val[1]:.2%}"
        )
    return lines
