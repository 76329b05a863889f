"""The full-scale GPU run (scripts/gpu_full_run.py) in miniature on the CPU, its data pack
(scripts/pack_fer2013.py), and what it added to the training loop: channels-last, torch.compile with a
clean fallback, and a wall-clock deadline."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_synthetic, tiny_cfg, tiny_data, write_fer_csv

from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError
from ferkit.inference.export import probe_images
from ferkit.models.checkpoint import load_checkpoint
from ferkit.models.ensemble import load_torch
from ferkit.models.onnx import OnnxModel
from ferkit.models.registry import create_model
from ferkit.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import pack_fer2013

STAGES = ("paper", "ros", "smote", "smote_tomek", "ensemble", "student", "export")

# ------------------------------------------------------------------------------------------- the pack


def _dataset(seed: int = 0) -> FaceDataset:
    """Imbalanced synthetic Training (so resampling has work), balanced test splits, and two
    PrivateTest rows that are copies of Training rows (the "without duplicates" set)."""
    x, y = make_synthetic(counts=[24, 5, 10, 30, 16, 12, 20], seed=seed)
    xv, yv = make_synthetic(4, seed=seed + 1)
    xt, yt = make_synthetic(4, seed=seed + 2)
    xt[:2], yt[:2] = x[:2], y[:2]
    splits = ["Training"] * len(y) + ["PublicTest"] * len(yv) + ["PrivateTest"] * len(yt)
    return FaceDataset(
        np.concatenate([x, xv, xt]), np.concatenate([y, yv, yt]), np.array(splits, dtype=object)
    )


def _write_pack(dataset: FaceDataset, path: Path, near: int = 1) -> Path:
    np.savez(path, **pack_fer2013.pack(dataset, {"Training": near}))
    return path


@pytest.fixture(scope="module")
def pack_file(tmp_path_factory) -> Path:
    return _write_pack(_dataset(), tmp_path_factory.mktemp("pack") / "pack.npz")


def test_codec_round_trip_lossless_and_near_lossless():
    x = make_synthetic(3, seed=5)[0][:, 8:24, 10:30]  # any image size; small is quick
    assert np.array_equal(pack_fer2013.decode(pack_fer2013.encode(x, 0)), x)
    near = pack_fer2013.decode(pack_fer2013.encode(x, 1))
    assert np.abs(near.astype(int) - x).max() == 1  # within +-1, and lossy (noise is not smooth)
    damaged = pack_fer2013.encode(x, 0)
    damaged["sha256"] = np.array("0" * 64)
    with pytest.raises(DataError, match="checksum"):
        pack_fer2013.decode(damaged)


def test_pack_keeps_test_splits_exact_and_their_duplicate_masks(tmp_path, pack_file):
    back = pack_fer2013.load_pack(pack_file)
    pack_fer2013.check_round_trip(_dataset(), back)
    assert back.max_error == {"Training": 1, "PublicTest": 0, "PrivateTest": 0}
    assert back.in_training["PrivateTest"].sum() == 2 and back.in_training["PublicTest"].sum() == 0
    with pytest.raises(DataError, match="not found"):
        pack_fer2013.load_pack(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable pack"):
        pack_fer2013.load_pack(tmp_path / "bad.npz")


def test_packer_command_packs_a_csv_and_checks_it(tmp_path, capsys):
    csv = write_fer_csv(tmp_path / "fer2013.csv", n_per_class=2)
    out = tmp_path / "gpu_data" / "fer2013.npz"  # outside the repository: no exclude entry, no wheels
    assert (
        pack_fer2013.main(["--data", str(csv), "--out", str(out), "--near-training", "1", "--no-wheel"]) == 0
    )
    assert "checked the round trip" in capsys.readouterr().out
    assert pack_fer2013.load_pack(out).max_error == {"Training": 1, "PublicTest": 0, "PrivateTest": 0}
    assert pack_fer2013.main(["--data", str(tmp_path / "none.csv"), "--out", str(out)]) == DataError.exit_code
    assert "pack_fer2013: error:" in capsys.readouterr().err
    folder = tmp_path / "gpu_data"
    code = pack_fer2013.main(["--data", str(csv), "--out", str(folder), "--no-wheel"])
    assert code == DataError.exit_code and "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["fer2013.npz"]  # no temporary file left


def test_script_reports_a_missing_pack_in_one_line(tmp_path, caplog):
    import gpu_full_run

    with caplog.at_level(logging.ERROR):
        code = gpu_full_run.main(["--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "out")])
    assert code == DataError.exit_code
    assert "packed data not found" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--budget", "-5"], "--budget must be positive"),
        (["--batch", "0"], "--batch must be positive"),
        (["--model", "nosuch"], "--model: unknown model 'nosuch'"),
    ],
)
def test_script_refuses_bad_options_before_any_work(tmp_path, capsys, argv, words):
    import gpu_full_run

    with pytest.raises(SystemExit) as e:
        gpu_full_run.main(["--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "out"), *argv])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_a_run_whose_stages_fail_exits_1(tmp_path, pack_file, monkeypatch, caplog):
    import gpu_full_run

    def broken(run, stage, data):
        raise RuntimeError("no GPU memory, say")

    monkeypatch.setattr(gpu_full_run, "train_stage", broken)
    monkeypatch.setattr(gpu_full_run, "resampling_ready", lambda: "not in this test")
    argv = ["--data", str(pack_file), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")]
    with caplog.at_level(logging.ERROR):
        assert gpu_full_run.main([*argv, "--device", "cpu", "--budget", "60"]) == 1
    assert "stages that failed: paper, ros, smote, smote_tomek, ensemble, student, export" in caplog.text


# ------------------------------------------------------------------------------- the run, in miniature


def test_full_run_in_miniature_writes_everything_the_gpu_run_returns(tmp_path, pack_file):
    """The script as the GPU machine runs it (another process, every stage, the resampling process),
    with a small model, one epoch per stage and a few hundred synthetic faces."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPTS / "gpu_full_run.py"), "--data", str(pack_file), "--out", str(out)]
    cmd += ["--work", str(tmp_path / "work"), "--model", "vgg_fer_w16", "--student", "vgg_fer_w16"]
    cmd += ["--batch", "32", "--max-epochs", "1", "--budget", "240", "--reserve", "5", "--device", "cpu"]
    cmd += ["--tta", "center"]  # ten-crop (also on by default) costs ten times the arithmetic
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert r.returncode == 0, r.stderr[-3000:]

    # What comes back from the run tool: at most 8 files of at most 16 MiB, plainly named, one folder.
    files = sorted(p for p in out.iterdir())
    assert [p.name for p in files] == ["curves.png", "metrics.json", "run.log", "student.onnx", "student.pt"]
    assert len(files) <= 8 and all(p.is_file() and p.stat().st_size <= 16 * 2**20 for p in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)

    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["max_pixel_error"] == {"Training": 1, "PublicTest": 0, "PrivateTest": 0}
    assert m["data"]["duplicates_in_training"]["PrivateTest"] == 2
    stages = m["stages"]
    assert {s: v["status"] for s, v in stages.items()} == dict.fromkeys(STAGES, "done")
    for s in ("paper", "ros", "smote", "smote_tomek", "student"):
        st = stages[s]
        assert st["epochs"] == 1 and st["fit_seconds"] > 0 and st["images_per_s"] > 0, s
        assert len(st["history"]) == 1 and "val_acc" in st["history"][0]
    for s in ("paper", "student"):
        assert stages[s]["calibration"]["epoch_seconds"] > 0
    for s in ("ros", "smote", "smote_tomek"):
        assert stages[s]["finetune_from"] == "paper"
        counts = stages[s]["resampling"]  # Training's classes brought up to the largest (30)
        assert counts == [30] * 7 if s != "smote_tomek" else 30 * 7 >= sum(counts) > 117, (s, counts)
    assert stages["ensemble"]["members"] == ["ros", "smote", "smote_tomek"]
    for s in ("paper", "ros", "smote", "smote_tomek", "ensemble", "student"):
        ev = stages[s]["eval"]
        assert set(ev) == {"PublicTest", "PrivateTest", "PrivateTest without Training duplicates"}, s
        assert ev["PrivateTest without Training duplicates"]["center"]["n"] == 26
        for split in ev.values():
            k = split["center"]
            assert 0 <= k["top1"] <= k["top2"] <= k["top3"] <= 1 and 0 <= k["balanced_accuracy"] <= 1
    assert stages["export"]["argmax_agreement_with_checkpoint"] == 1.0

    # The ONNX graph predicts what the checkpoint predicts, on faces it has not seen.
    faces = np.concatenate([make_synthetic(2, seed=9)[0], probe_images(8, seed=3)])
    onnx_classes = OnnxModel(out / "student.onnx").predict_proba(faces).argmax(1)
    ens = load_torch(out / "student.pt")
    with torch.inference_mode():
        torch_classes = ens.predict_proba(torch.from_numpy(faces)).argmax(1).numpy()
    assert np.array_equal(onnx_classes, torch_classes)
    assert load_checkpoint(out / "student.pt")["meta"]["name"] == "vgg_fer_w16"
    assert "stage student: done" in (out / "run.log").read_text()


def test_measure_mode_reports_the_stage_models_images_per_second(tmp_path, pack_file, one_torch_thread):
    import gpu_full_run

    args = ["--data", str(pack_file), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    args += ["--model", "vgg_fer_w16", "--student", "vgg_fer_w16", "--batch", "16", "--device", "cpu"]
    assert gpu_full_run.main([*args, "--measure", "32"]) == 0
    measured = json.loads((tmp_path / "out" / "metrics.json").read_text())["measured_images_per_s"]
    assert sorted(measured) == ["vgg_fer_w16", "vgg_fer_w16 (teacher: 3 x vgg_fer_w16)"]
    assert all(v > 0 for v in measured.values())


# --------------------------------------------------------------------------------- the loop additions


def _keys(path: Path) -> list[str]:
    return sorted(load_checkpoint(path)["model"])


def test_channels_last_trains_and_saves_the_same_keys(tmp_path, one_torch_thread):
    s = fit(tiny_cfg(tmp_path / "cl", epochs=1, channels_last=True), data=tiny_data())
    assert s["epochs_run"] == 1
    assert _keys(tmp_path / "cl" / "best.pt") == sorted(create_model("vgg_fer_w16").state_dict())
    load_torch(tmp_path / "cl" / "best.pt")  # loads into a plain model


def test_compile_keeps_results_and_checkpoint_keys(tmp_path, monkeypatch, one_torch_thread):
    """torch.compile (its eager backend here: no C++ compiler needed) trains exactly as without it: the
    warm-up pass leaves weights, batch-norm statistics and the random state alone; best.pt has the plain
    module's keys (no ``_orig_mod.``)."""
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kw):
        calls.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    data = tiny_data()
    plain = fit(tiny_cfg(tmp_path / "plain", epochs=2), data=data)
    compiled = fit(tiny_cfg(tmp_path / "compiled", epochs=2, compile=True), data=data)
    assert len(calls) == 1
    assert [h["train_loss"] for h in compiled["history"]] == pytest.approx(
        [h["train_loss"] for h in plain["history"]], rel=1e-5
    )
    assert _keys(tmp_path / "compiled" / "best.pt") == _keys(tmp_path / "plain" / "best.pt")


def test_a_failing_compile_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch, caplog):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Broken())
    with caplog.at_level(logging.WARNING, logger="ferkit.training.loop"):
        s = fit(tiny_cfg(tmp_path / "run", epochs=1, compile=True), data=tiny_data())
    assert s["epochs_run"] == 1
    assert "torch.compile failed (RuntimeError: no C++ compiler found); training without it" in caplog.text


def test_deadline_stops_at_the_end_of_an_epoch_and_keeps_the_files(tmp_path):
    s = fit(tiny_cfg(tmp_path / "run", epochs=5), data=tiny_data(), deadline=time.time())
    assert s["epochs_run"] == 1 and s["stopped_by_deadline"] and not s["stopped_early"]
    for name in ("best.pt", "last.pt", "metrics.jsonl", "curves.png"):
        assert (tmp_path / "run" / name).is_file()
    assert not fit(tiny_cfg(tmp_path / "free", epochs=1), data=tiny_data())["stopped_by_deadline"]


def test_runs_from_before_the_new_fields_resume(tmp_path):
    """A run saved before channels_last/compile existed resumes (the fields take their defaults), and a
    resumed run may switch them."""
    out = tmp_path / "run"
    fit(tiny_cfg(out, epochs=1), data=tiny_data())
    for name in ("last.pt", "last.prev.pt"):
        if (out / name).exists():
            ck = torch.load(out / name, weights_only=False)
            for k in ("channels_last", "compile"):
                del ck["config"][k]
            torch.save(ck, out / name)
    s = fit(tiny_cfg(out, epochs=2, channels_last=True), data=tiny_data(), resume=True)
    assert s["epochs_run"] == 2 and s["epochs_this_run"] == 1
