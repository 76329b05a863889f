"""Model files with bad metadata or weights: one clear ModelError, before anything big is built, in every
command (issue 14, item 9)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from ferkit import Recognizer
from ferkit.cli import main
from ferkit.errors import ModelError
from ferkit.evaluation.scorers import load_scorer
from ferkit.inference.export import export_onnx, probe_images, read_metadata, set_metadata
from ferkit.models import ModelMeta, create_model
from ferkit.models.checkpoint import load_checkpoint, save_torch
from ferkit.models.integrity import CHECKSUM_KEY, weights_checksum
from ferkit.training.checkpoint import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROBES = probe_images(4)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "good.pt"
    torch.manual_seed(0)
    save_torch(make_checkpoint(create_model("vgg_fer_w16"), ModelMeta("vgg_fer_w16")), path)
    return path


def edited(good, tmp_path, name, meta=None, weights=None):
    ck = load_checkpoint(good)
    ck["meta"].update(meta or {})
    if weights is not None:
        weights(ck["model"])
        ck[CHECKSUM_KEY] = weights_checksum(ck["model"])  # well-formed file, bad values
    path = tmp_path / name
    save_torch(ck, path)
    return path


def nan_first(w):
    next(v for v in w.values() if v.is_floating_point()).view(-1)[0] = float("nan")


@pytest.mark.parametrize(
    ("meta", "weights", "match"),
    [
        ({"args": {"fc": 30000}}, None, "do not fit model"),
        ({"std": 0.0}, None, "std"),
        ({"mean": float("nan")}, None, "mean"),
        ({"classes": ["a", "b"]}, None, "7 classes"),
        ({"input_size": 64}, None, "sizes"),
        ({"temperature": -1.0}, None, "temperature"),
        (None, nan_first, "NaN"),
    ],
)
def test_bad_checkpoints_are_refused_by_every_command(good, tmp_path, capsys, meta, weights, match):
    path = edited(good, tmp_path, "bad.pt", meta, weights)
    with pytest.raises(ModelError, match=match):
        load_scorer(path)
    with pytest.raises(ModelError, match=match):
        Recognizer.load(path)
    face = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(PROBES[0]).save(face)
    assert main(["predict", str(face), "--face-crops", "--model", str(path), "--no-progress"]) == 4
    assert match in capsys.readouterr().err
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 4
    assert not (tmp_path / "m.onnx").exists()


def test_huge_architecture_in_metadata_allocates_nothing(good, tmp_path):
    """A 3 MB file whose metadata asks for fc=30000 (a 3.8 GB model) is refused before it is built."""
    path = edited(good, tmp_path, "huge.pt", {"args": {"fc": 30000}})
    peak_kb = "int(next(x for x in open('/proc/self/status') if x.startswith('VmHWM')).split()[1])"
    code = (  # VmHWM, not ru_maxrss: Linux keeps that across exec (the forked pytest process's figure)
        "import sys\nfrom ferkit.evaluation.scorers import load_scorer\n"
        "from ferkit.errors import ModelError\ntry:\n    load_scorer(sys.argv[1])\nexcept ModelError as e:\n"
        f"    print(e)\nprint({peak_kb} // 1024)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    message, peak_mb = r.stdout.strip().splitlines()
    assert "do not fit model" in message
    assert int(peak_mb) < 1000  # MB; building the model would take about 3,800


@pytest.fixture(scope="module")
def onnx_file(good, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(good, path, probes=PROBES)
    return path


def with_metadata(onnx_file, tmp_path, change):
    proto = onnx.load(str(onnx_file))
    meta = read_metadata(proto)
    change(meta)
    set_metadata(proto, meta)
    path = tmp_path / "edited.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.pop("classes"), "malformed"),
        (lambda m: m.update(classes="[not json"), "malformed"),
        (lambda m: m.update(classes=json.dumps(["Angry", "Happy"])), "7 classes"),
        (lambda m: m.update(input_shape=json.dumps(["N", -1, -1])), "input side"),
        (lambda m: m.update(input_shape=json.dumps(["N", 40, 40])), "input shape"),
        (lambda m: m.update(tta="five_crop"), "test-time crops"),
    ],
)
def test_bad_onnx_metadata_is_refused_at_load(onnx_file, tmp_path, capsys, change, match):
    path = with_metadata(onnx_file, tmp_path, change)
    with pytest.raises(ModelError, match=match):
        Recognizer.load(path)
    with pytest.raises(ModelError, match=match):
        load_scorer(path)
    face = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(PROBES[0]).save(face)
    assert main(["predict", str(face), "--face-crops", "--model", str(path), "--no-progress"]) == 4
    assert match in capsys.readouterr().err


def test_good_files_still_load(good, onnx_file):
    want = load_scorer(good).predict_proba(PROBES)
    assert np.abs(Recognizer.load(onnx_file).predict_proba(PROBES) - want).max() < 1e-4


def test_onnx_names_and_torch_files_are_not_confused(tmp_path):
    """A PyTorch file is never written under an .onnx name, and an .onnx file given where a checkpoint is
    needed (calibrate, export, ensemble build) is named for what it is."""
    import pytest

    from ferkit.errors import ModelError
    from ferkit.models.checkpoint import read_torch_dict, save_torch

    with pytest.raises(ModelError, match="for an ONNX graph use `ferkit export`"):
        save_torch({"a": 1}, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(ModelError, match="is an ONNX graph; this needs a PyTorch checkpoint"):
        read_torch_dict(tmp_path / "m.onnx")
