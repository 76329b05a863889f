"""ONNX export: parity with PyTorch for single models and ensembles in every crop mode, metadata,
fp16/int8 variants, the no-file-on-failure rule, the ONNX scorer and the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from ferkit import create_model
from ferkit.cli import main
from ferkit.errors import ConfigError, ModelError
from ferkit.inference.export import export_onnx, probe_images, read_metadata, torch_probs
from ferkit.inference.quantize import calibration_faces, compare, to_fp16, to_int8
from ferkit.models.checkpoint import save_torch
from ferkit.models.ensemble import Ensemble, build_ensemble, load_torch, save_ensemble
from ferkit.models.onnx import OnnxModel
from ferkit.models.registry import ModelMeta
from ferkit.training.checkpoint import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


PROBES = probe_images(6, seed=1)


def checkpoint(path, seed: int, temperature: float = 1.0):
    torch.manual_seed(seed)
    model = create_model("vgg_fer_w16")
    with torch.no_grad():  # trained-looking BatchNorm statistics, so outputs are far from uniform
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.02, 0.1)
    save_torch(make_checkpoint(model, ModelMeta("vgg_fer_w16", temperature=temperature)), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    members = [checkpoint(d / f"m{i}.pt", i, t) for i, t in enumerate((1.0, 1.7))]
    save_ensemble(build_ensemble(members, combine="prob"), d / "ens.pt")
    return {"single": members[0], "ensemble": d / "ens.pt", "members": members, "dir": d}


@pytest.fixture(scope="module")
def single_onnx(files):
    return export_onnx(files["single"], probes=PROBES).data


@pytest.mark.parametrize("tta", ["center", "mirror", "ten_crop"])
@pytest.mark.parametrize("kind", ["single", "ensemble"])
def test_parity_with_pytorch(files, kind, tta, tmp_path):
    out = tmp_path / "m.onnx"
    res = export_onnx(files[kind], out, tta=tta, probes=PROBES)
    assert res.parity < 1e-4 and out.is_file()
    model = OnnxModel(out)
    batch = model.predict_proba(PROBES)
    one_by_one = np.concatenate([model(PROBES[i : i + 1]) for i in range(len(PROBES))])
    assert np.abs(batch - one_by_one).max() < 1e-6  # the batch size is dynamic, not traced
    assert batch.std() > 1e-3  # parity is not vacuous: the outputs are not all uniform
    meta = read_metadata(out)
    assert meta["tta"] == tta and json.loads(meta["classes"])[3] == "Happy" and meta["input"] == "uint8"
    assert len(json.loads(meta["members"])) == (1 if kind == "single" else 2)


def test_float_input_and_logit_ensemble(files):
    ens = load_torch(files["ensemble"])
    ens = Ensemble(list(ens.members), ens.metas, combine="logit", temperature=1.3)
    res = export_onnx(ens, tta="mirror", input_format="float", probes=PROBES)
    model = OnnxModel(res.data)
    assert model.input_dtype == np.float32 and model.metadata["combine"] == "logit"
    assert (
        np.abs(model.predict_proba(PROBES.astype(np.float32)) - torch_probs(ens, PROBES, "mirror")).max()
        < 1e-4
    )


def test_parity_failure_leaves_no_file(files, tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match="does not match PyTorch"):
        export_onnx(files["single"], out, probes=PROBES, tol=-1.0)  # an impossible limit
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(files):
    with pytest.raises(ConfigError, match="crop"):
        export_onnx(files["single"], tta="five_crop")
    with pytest.raises(ModelError, match="input format"):
        export_onnx(files["single"], input_format="int16")
    with pytest.raises(ModelError, match="ferkit metadata"):
        raw = onnx.load_from_string(export_onnx(files["single"], probes=PROBES[:2]).data)
        del raw.metadata_props[:]
        OnnxModel(raw.SerializeToString())


@pytest.mark.parametrize("variant", ["fp16", "dynamic", "static"])
def test_fp16_and_int8_load_and_predict(single_onnx, variant):
    data = to_fp16(single_onnx) if variant == "fp16" else to_int8(single_onnx, variant, calibration=PROBES)
    model = OnnxModel(data)
    assert model.precision == ("fp16" if variant == "fp16" else f"int8-{variant}")
    p = model.predict_proba(PROBES)
    assert p.shape == (len(PROBES), 7) and np.isfinite(p).all()
    assert np.allclose(p.sum(1), 1.0, atol=1e-3)
    diff = compare(single_onnx, data, PROBES, labels=np.arange(len(PROBES)) % 7)
    assert diff["max_abs_diff"] < 0.1 and "accuracy_change" in diff
    if variant == "fp16":
        assert len(data) < 0.6 * len(single_onnx)


def test_static_int8_needs_calibration(single_onnx):
    with pytest.raises(ModelError, match="calibration"):
        to_int8(single_onnx, "static")


def test_calibration_faces_are_one_fixed_draw():
    """`ferkit export --int8 static` and the benchmarks calibrate on one fixed draw of faces in file order."""
    faces = np.arange(2000, dtype=np.int64)[:, None, None] * np.ones((1, 48, 48), dtype=np.int64)
    a, b = calibration_faces(faces), calibration_faces(faces.copy())
    assert len(a) == 512 and np.array_equal(a, b)
    firsts = a[:, 0, 0]
    assert np.all(np.diff(firsts) > 0) and firsts[-1] > 1500  # sorted, drawn from the whole set
    assert len(calibration_faces(faces[:100])) == 100  # fewer faces than asked: all of them


def test_onnx_scorer_for_evaluate(files, tmp_path):
    from ferkit.evaluation.scorers import OnnxScorer, load_scorer

    out = tmp_path / "m.onnx"
    export_onnx(files["single"], out, tta="mirror", probes=PROBES)
    scorer = load_scorer(out)
    assert isinstance(scorer, OnnxScorer) and scorer.name == "m"
    p = scorer.predict_proba(PROBES, "mirror")
    assert p.shape == (len(PROBES), 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ModelError, match="built in"):
        scorer.predict_proba(PROBES, "ten_crop")


def test_evaluate_onnx_uses_its_built_in_crops_by_default(files, fer_csv, tmp_path):
    from ferkit.evaluation.evaluate import evaluate

    out = tmp_path / "m.onnx"
    export_onnx(files["single"], out, tta="mirror", probes=PROBES)
    assert evaluate(out, fer_csv, split="PublicTest")["tta"] == "mirror"
    assert evaluate(files["single"], fer_csv, split="PublicTest")["tta"] == "ten_crop"


def test_cli_export(files, fer_folders, tmp_path, capsys):
    out = tmp_path / "ens.onnx"
    assert (
        main(["export", str(files["ensemble"]), "-o", str(out), "--tta", "mirror", "--input", "float"]) == 0
    )
    assert read_metadata(out)["tta"] == "mirror" and read_metadata(out)["input"] == "float"
    q = tmp_path / "q.onnx"
    assert (
        main(["export", str(files["single"]), "-o", str(q), "--int8", "static", "--data", str(fer_folders)])
        == 0
    )
    text = capsys.readouterr().out
    assert "parity ONNX Runtime vs PyTorch" in text and "on PublicTest" in text and "points" in text
    assert OnnxModel(q).precision == "int8-static"


def test_cli_export_errors_are_one_line(files, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["export", str(tmp_path / "nope.pt"), "-o", str(out)]) == 4
    assert main(["export", str(files["single"]), "-o", str(out), "--int8", "static"]) != 0
    (tmp_path / "junk.pt").write_text("junk")
    assert main(["export", str(tmp_path / "junk.pt"), "-o", str(out)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("ferkit: error:") for line in err)
    assert not out.exists()
