"""Recognizer: every kind of face input, clear errors for bad ones, and the same answers from every
backend and file type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ferkit import CLASSES, Recognizer, create_model
from ferkit.errors import ConfigError, InputError, ModelError
from ferkit.inference.export import export_onnx, probe_images
from ferkit.inference.recognizer import FacePrediction, prepare_faces
from ferkit.models.checkpoint import save_torch
from ferkit.models.ensemble import build_ensemble, save_ensemble
from ferkit.models.registry import ModelMeta
from ferkit.training.checkpoint import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


RNG = np.random.default_rng(0)
GRAY = probe_images(3, seed=2)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "w16.pt"
    torch.manual_seed(0)
    save_torch(make_checkpoint(create_model("vgg_fer_w16"), ModelMeta("vgg_fer_w16")), path)
    return path


@pytest.fixture(scope="module")
def rec(ckpt):
    return Recognizer.load(ckpt, threads=1)


def test_one_face_gives_one_prediction(rec):
    [p] = rec.predict(GRAY[0])
    assert isinstance(p, FacePrediction) and p.probs.shape == (7,) and p.probs.dtype == np.float32
    assert p.label == CLASSES[p.index] == rec.classes[p.index] and p.score == pytest.approx(
        float(p.probs.max())
    )
    d = p.to_dict()
    assert (
        list(d["probs"]) == list(CLASSES)
        and d["label"] == p.label
        and abs(sum(d["probs"].values()) - 1) < 1e-5
    )
    assert rec.backend == "onnx" and rec.name == "w16" and rec.tta == "center"


def test_every_input_form(rec):
    g = GRAY[0]
    rgb = np.repeat(g[:, :, None], 3, axis=2)
    rgba = np.dstack([rgb, np.full_like(g, 255)])
    forms = [
        g,
        g[:, :, None],
        rgb,
        rgba,
        g.astype(np.float32) / 255,
        Image.fromarray(g),
        Image.fromarray(rgb),
        Image.fromarray(rgba),
        Image.fromarray(g).convert("P"),
    ]
    probs = rec.predict_proba(forms)
    assert probs.shape == (len(forms), 7)
    assert np.abs(probs - probs[0]).max() < 2e-2  # the same face, however it arrives
    odd = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd sizes: centre square, resized
    assert rec.predict_proba([odd, RNG.integers(0, 256, (200, 90), dtype=np.uint8)]).shape == (2, 7)
    assert np.allclose(rec.predict_proba(GRAY), rec.predict_proba(list(GRAY)))  # stack == list
    assert rec.predict([]) == [] and rec.predict_proba([]).shape == (0, 7)


def test_batches_match_single_faces(rec):
    many = np.concatenate([GRAY] * 30)  # 90 faces: two batches of 64
    probs = rec.predict_proba(many)
    assert probs.shape == (90, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.abs(probs[63] - rec.predict_proba(many[63])[0]).max() < 1e-6


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((0, 0)),
        np.zeros((0, 48, 48), np.uint8),
        np.zeros((1, 2, 48, 48, 1)),
        np.full((48, 48), np.nan),
        np.zeros((48, 48, 2)),
        np.zeros((4, 4)),
        np.array([["a"]]),
        "face.png",
        None,
        [np.zeros((48, 48)), "x"],
    ],
)
def test_bad_input_is_an_input_error(rec, bad):
    with pytest.raises(InputError):
        rec.predict(bad)


def test_prepare_faces_fast_path_keeps_uint8_stacks():
    assert prepare_faces(GRAY) is GRAY or np.shares_memory(prepare_faces(GRAY), GRAY)


def test_backends_and_file_types_agree(ckpt, rec, tmp_path):
    want = rec.predict_proba(GRAY)
    torch_rec = Recognizer.load(ckpt, backend="torch")
    assert torch_rec.backend == "torch" and np.abs(torch_rec.predict_proba(GRAY) - want).max() < 1e-5
    onnx_path = tmp_path / "m.onnx"
    export_onnx(ckpt, onnx_path, tta="mirror", probes=GRAY)
    onnx_rec = Recognizer.load(onnx_path)
    assert onnx_rec.tta == "mirror"  # an .onnx file brings its own crops
    mirror = Recognizer.load(ckpt, backend="torch", tta="mirror").predict_proba(GRAY)
    assert np.abs(onnx_rec.predict_proba(GRAY) - mirror).max() < 1e-5
    with pytest.raises(ModelError, match="built in"):
        Recognizer.load(onnx_path, tta="ten_crop")
    with pytest.raises(ConfigError, match="ONNX file"):
        Recognizer.load(onnx_path, backend="torch")
    ens = tmp_path / "ens.pt"
    save_ensemble(build_ensemble([ckpt, ckpt]), ens)
    ens_rec = Recognizer.load(ens, backend="torch")
    assert ens_rec.name == "ens" and np.abs(ens_rec.predict_proba(GRAY) - want).max() < 1e-5


def test_load_errors(ckpt, tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="not found"):
        Recognizer.load(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="backend"):
        Recognizer.load(ckpt, backend="tensorrt")
    with pytest.raises(ConfigError, match="threads"):
        Recognizer.load(ckpt, threads=-1)
    with pytest.raises(ConfigError, match="CPU"):
        Recognizer.load(ckpt, backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match="test-time crop"):
        Recognizer.load(ckpt, tta="five_crop")
    monkeypatch.setattr("ferkit.inference.recognizer.DEFAULT_MODEL", "weights/not-there.onnx")
    with pytest.raises(ModelError, match="no bundled model"):
        Recognizer.load()
