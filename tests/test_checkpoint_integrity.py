"""Issue 14 item 7: a corrupt, truncated or model-only last.pt is caught; --resume falls back or says why."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from conftest import tiny_cfg, tiny_data, write_fer_csv

from ferkit.cli import main
from ferkit.errors import ModelError
from ferkit.models import ModelMeta, create_model
from ferkit.models.checkpoint import load_checkpoint, save_torch
from ferkit.models.integrity import CHECKSUM_KEY, verify_checkpoint, weights_checksum
from ferkit.training.loop import fit


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished 2-epoch run: last.pt (epoch 2), last.prev.pt (epoch 1), best.pt."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    fit(tiny_cfg(run, epochs=2), data=tiny_data())
    return run


@pytest.fixture
def run(two_epochs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(two_epochs, copy)
    return copy


def flip_weight_bytes(path, n=64):
    """Invert ``n`` bytes in the middle of the largest weight tensor's data inside a saved checkpoint."""
    ck = load_checkpoint(path)
    name = max(ck["model"], key=lambda k: ck["model"][k].numel())
    raw = ck["model"][name].numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw)
    assert at >= 0, "tensor bytes not found in the file"
    mid = at + len(raw) // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def test_checkpoints_carry_a_checksum_of_their_weights(run):
    for name in ("last.pt", "last.prev.pt", "best.pt"):
        ck = load_checkpoint(run / name)
        assert ck[CHECKSUM_KEY] == weights_checksum(ck["model"]), name
    assert (
        load_checkpoint(run / "last.prev.pt")["epoch"] == 1 and load_checkpoint(run / "last.pt")["epoch"] == 2
    )
    old = load_checkpoint(run / "best.pt")
    del old[CHECKSUM_KEY]  # written before checksums: still loads
    verify_checkpoint(old)


def test_flipped_bytes_are_detected_and_resume_falls_back_with_a_warning(run, caplog):
    flip_weight_bytes(run / "last.pt")
    with pytest.raises(ModelError, match="checksum"):
        load_checkpoint(run / "last.pt")
    with caplog.at_level(logging.WARNING, logger="ferkit"):
        s = fit(tiny_cfg(run, epochs=3), data=tiny_data(), resume=True)
    assert "checksum" in caplog.text and "last.prev.pt (epoch 1)" in caplog.text
    assert s["epochs_this_run"] == 2 and [h["epoch"] for h in s["history"]] == [1, 2, 3]
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


def test_flipped_bytes_without_a_previous_state_is_a_clear_error(run):
    flip_weight_bytes(run / "last.pt")
    (run / "last.prev.pt").unlink()
    with pytest.raises(ModelError, match="cannot resume: .*checksum.*no earlier state"):
        fit(tiny_cfg(run, epochs=3), data=tiny_data(), resume=True)


def test_truncated_last_falls_back_with_a_warning(run, caplog):
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="ferkit"):
        s = fit(tiny_cfg(run, epochs=2), data=tiny_data(), resume=True)
    assert "not a readable model file" in caplog.text and "resuming from" in caplog.text
    assert s["epochs_this_run"] == 1 and load_checkpoint(run / "last.pt")["epoch"] == 2


def test_best_over_last_gets_a_clear_message_from_the_cli(tmp_path, capsys):
    csv = write_fer_csv(tmp_path / "fer.csv", n_per_class=4)
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(csv),
        "--out",
        str(out),
        "model=vgg_fer_w16",
        "batch_size=16",
        "progress=false",
    ]
    assert main([*args, "epochs=1"]) == 0
    shutil.copyfile(out / "best.pt", out / "last.pt")
    capsys.readouterr()
    code = main(["train", "--out", str(out), "--resume", "epochs=2"])
    err = capsys.readouterr().err
    assert code not in (0, 70) and "KeyError" not in err and err.count("\n") == 1
    assert "model weights only" in err and "finetune_from=" in err


def test_a_changed_weight_tensor_is_caught_even_when_saved_whole(run):
    ck = load_checkpoint(run / "best.pt")
    name = next(iter(ck["model"]))
    ck["model"][name] = ck["model"][name] + 1e-3 * torch.ones_like(ck["model"][name])
    save_torch(ck, run / "edited.pt")
    with pytest.raises(ModelError, match="checksum"):
        load_checkpoint(run / "edited.pt")


def test_corrupt_checkpoints_and_ensemble_members_are_refused_by_every_loader(tmp_path):
    """Prediction, evaluation, export and ensembles verify the weights checksum too, not only --resume."""
    from ferkit.evaluation.scorers import load_scorer
    from ferkit.models.ensemble import build_ensemble, load_torch, save_ensemble
    from ferkit.training.checkpoint import save_checkpoint

    good = save_checkpoint(create_model("vgg_fer_w16"), ModelMeta("vgg_fer_w16"), tmp_path / "good.pt")
    ens_path = tmp_path / "ens.pt"
    save_ensemble(build_ensemble([good, good]), ens_path)
    for path in (good, ens_path):
        obj = torch.load(path, weights_only=True)
        weights = obj["model"] if "model" in obj else obj["members"][1]["model"]
        next(iter(weights.values())).view(-1)[:4] += 1.0  # flipped bits inside the weights
        save_torch(obj, tmp_path / f"bad-{path.name}")
        for load in (load_torch, load_scorer):
            with pytest.raises(ModelError, match="checksum"):
                load(tmp_path / f"bad-{path.name}")
    with pytest.raises(ModelError, match="checksum"):
        build_ensemble([good, tmp_path / "bad-good.pt"])
