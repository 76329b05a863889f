"""The default model's build helpers without data or models: the card that scripts/bundle_default_model.py
writes (optional sets only when measured) and benchmarks/peer_speed.py's ``--onnx`` items."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _metrics(folder: Path, set_name: str, crop: float | None = None) -> None:
    """A metrics.json with the fields the card reads (``ferkit evaluate -o`` writes many more)."""
    stats = {"n": 10, "top1": 0.5, "top2": 0.7, "top3": 0.8, "balanced_accuracy": 0.4, "macro_f1": 0.3}
    m = {
        "model": {"precision": "fp32"},
        "data_path": "../shared/data/affectnet" if set_name == "heldout" else "../shared/data/fer2013",
        "sets": {set_name: {**stats, "ece": 0.05, "nll": 1.2}},
    }
    if crop is not None:
        m["crop"] = crop
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(m))


def _bundle(tmp_path: Path, out: Path) -> dict:
    """Run a copy of the script whose package folder is under tmp_path (never the real one)."""
    script = tmp_path / "repo" / "scripts" / "bundle_default_model.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "scripts" / "bundle_default_model.py", script)
    subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "run")], check=True)
    return json.loads((tmp_path / "repo" / "src" / "ferkit" / "weights" / "default.json").read_text())


def test_card_adds_the_optional_sets_only_when_measured(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "default.onnx").write_bytes(b"graph")
    _metrics(out / "public", "PublicTest")
    _metrics(out / "private", "PrivateTest")
    card = _bundle(tmp_path, out)
    assert card["public"]["PublicTest"]["top1"] == 0.5 and "nll" not in card["public"]["PublicTest"]
    assert card["precision"] == "fp32"
    assert not {k for k in card if k.startswith(("aux", "int8"))}

    _metrics(out / "aux", "heldout")
    _metrics(out / "aux-crop", "heldout", crop=0.8)
    for split in ("public", "private", "aux", "aux-crop"):
        _metrics(out / f"int8-{split}", "heldout" if "aux" in split else split)
    (out / "default-int8.onnx").write_bytes(b"int8")
    card = _bundle(tmp_path, out)
    assert card["aux_heldout"] == card["aux_heldout_crop"] == card["int8_aux_heldout_crop"]
    assert set(card["aux_heldout"]["heldout"]) == set(card["public"]["PublicTest"])
    assert {"int8_public", "int8_private", "int8_aux_heldout"} <= set(card)
    assert card["aux_data"] == "../shared/data/affectnet" and card["aux_crop"] == 0.8
    assert card["int8_bytes"] == 4 and not {k for k in card if k.startswith("fp32")}

    # an int8 graph shipped: the fp32 copy is the comparison
    shutil.rmtree(out / "int8-public"), (out / "default-int8.onnx").unlink()
    for split in ("public", "private", "aux", "aux-crop"):
        _metrics(out / f"fp32-{split}", "heldout" if "aux" in split else split)
    (out / "default-fp32.onnx").write_bytes(b"fp32fp32")
    card = _bundle(tmp_path, out)
    assert {"fp32_public", "fp32_private", "fp32_aux_heldout", "fp32_aux_heldout_crop"} <= set(card)
    assert card["fp32_bytes"] == 8 and "int8_public" not in card and "int8_bytes" not in card


def test_a_missing_metrics_file_leaves_the_bundled_model_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "default.onnx").write_bytes(b"new graph")
    _metrics(out / "public", "PublicTest")  # no private/metrics.json
    script = tmp_path / "repo" / "scripts" / "bundle_default_model.py"
    script.parent.mkdir(parents=True)
    shutil.copyfile(ROOT / "scripts" / "bundle_default_model.py", script)
    weights = tmp_path / "repo" / "src" / "ferkit" / "weights"
    weights.mkdir(parents=True)
    (weights / "default.onnx").write_bytes(b"old graph")
    r = subprocess.run(
        [sys.executable, str(script), str(out), "run"], check=False, capture_output=True, text=True
    )
    assert r.returncode == 1 and "cannot read" in r.stderr and "private" in r.stderr
    assert "Traceback" not in r.stderr and (weights / "default.onnx").read_bytes() == b"old graph"
    r = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr and "Traceback" not in r.stderr


def test_peer_speed_onnx_items(tmp_path):
    path = ROOT / "benchmarks" / "peer_speed.py"
    spec = importlib.util.spec_from_file_location("peer_speed_bench", path)
    assert spec and spec.loader
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b""), b.write_bytes(b"")
    assert ps.onnx_items(f"w16={a},w32={b}") == [("w16", a), ("w32", b)]
    for bad in ("w16", f"={a}", "w16=", f"w16={tmp_path / 'missing.onnx'}"):
        with pytest.raises(argparse.ArgumentTypeError):
            ps.onnx_items(bad)
