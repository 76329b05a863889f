"""Typed choices in the training config, helpful errors, no development data path, and onecycle for real."""

from __future__ import annotations

import shutil
from itertools import pairwise
from typing import get_args

import numpy as np
import pytest
import torch
from conftest import make_synthetic, tiny_cfg, tiny_data, write_fer_csv

from ferkit.cli import main
from ferkit.config import Balance, TrainConfig, load_train_config, load_yaml, resolve_config_path
from ferkit.data.dataset import FaceDataset
from ferkit.errors import ConfigError
from ferkit.experiments.grid import load_grid
from ferkit.models.checkpoint import load_checkpoint
from ferkit.training.data import BALANCE_METHODS, prepare_training_data
from ferkit.training.loop import fit, make_scheduler


def test_bad_choices_are_refused_when_the_config_loads_all_in_one_line():
    with pytest.raises(ConfigError) as e:
        load_train_config(None, ["optimizer=bogus", "scheduler=onecyle", "balance=smot", "augment.subset=al"])
    msg = str(e.value)
    assert "\n" not in msg
    assert "optimizer: 'bogus' is not one of sgd|adam|adamw" in msg
    assert "scheduler: 'onecyle'" in msg and "did you mean onecycle?" in msg
    assert "balance: 'smot'" in msg and "smote_tomek" in msg
    assert "augment.subset: 'al' is not one of all|balanced" in msg
    cfg = load_train_config(
        None, ["optimizer=adamw", "scheduler=onecycle", "balance=smote_enn", "protocol=study"]
    )
    assert (cfg.optimizer, cfg.scheduler, cfg.balance, cfg.protocol) == (
        "adamw",
        "onecycle",
        "smote_enn",
        "study",
    )


@pytest.mark.parametrize(
    "override, hint",
    [
        ("epoch=3", "did you mean epochs?"),
        ("augment.rotaton=3", "did you mean augment.rotation?"),
        ("augment.copies.hflp=0.1", "did you mean augment.copies.hflip?"),
    ],
)
def test_unknown_keys_suggest_the_nearest_known_one_at_any_depth(override, hint):
    with pytest.raises(ConfigError, match="unknown config field") as e:
        load_train_config(None, [override])
    assert hint in str(e.value)


def test_choices_come_from_the_literals_and_configs_built_in_python_are_checked_too():
    assert BALANCE_METHODS == get_args(Balance)
    x, y = make_synthetic(2)
    ds = FaceDataset(
        np.concatenate([x, x]),
        np.concatenate([y, y]),
        np.array(["Training"] * len(y) + ["PublicTest"] * len(y), dtype=object),
    )
    with pytest.raises(ConfigError, match="balance: 'smot'"):
        prepare_training_data(TrainConfig(balance="smot"), ds)
    with pytest.raises(ConfigError, match="protocol"):
        prepare_training_data(TrainConfig(protocol="leaky"), ds)


def test_grid_test_time_crops_are_typed(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: g\nevaluate: {split: PrivateTest, tta: tencrop}\nbudgets: {cpu: {}}\n"
        "rows:\n  - {id: a, name: a, config: cpu}\n"
    )
    with pytest.raises(ConfigError, match="evaluate.tta: 'tencrop'.*did you mean ten_crop"):
        load_grid(grid)
    grid.write_text(
        "name: g\nbudgets: {cpu: {evaluate: {tta: mirror, splitt: x}}}\n"
        "rows:\n  - {id: a, name: a, config: cpu}\n"
    )
    with pytest.raises(ConfigError, match="evaluate.splitt"):
        load_grid(grid)


def test_no_default_data_path(tmp_path, capsys):
    assert TrainConfig().data is None
    for name in ("cpu", "paper", "tuned"):
        assert "data" not in load_yaml(resolve_config_path(name)), name
    assert main(["train", "-c", "cpu", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data PATH" in err and "data=PATH" in err
    assert not (tmp_path / "run").exists()


def test_resume_with_a_shipped_config_takes_the_runs_own_data(tmp_path, capsys):
    csv = write_fer_csv(tmp_path / "fer.csv", n_per_class=4)
    out = str(tmp_path / "run")
    same = [
        "-c",
        "cpu",
        "--out",
        out,
        "model=vgg_fer_w16",
        "batch_size=16",
        "progress=false",
        "warmup_epochs=0",
    ]
    assert main(["train", "--data", str(csv), *same, "epochs=1"]) == 0
    assert main(["train", "--resume", *same, "epochs=2"]) == 0  # no --data: the run's config.yaml has it
    assert "epoch 2:" in capsys.readouterr().out


def test_cli_show_config_refuses_bad_choices(capsys):
    assert main(["train", "--show-config", "optimizer=bogus", "scheduler=onecyle", "balance=smot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer" in err and "onecycle?" in err and "smote?" in err


def test_onecycle_rises_to_lr_then_falls():
    cfg = TrainConfig(scheduler="onecycle", lr=0.1, epochs=4, warmup_epochs=1)
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=cfg.lr, momentum=0.9)
    sched = make_scheduler(cfg, opt, steps_per_epoch=10)
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(40):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    peak = int(np.argmax(lrs))
    assert 5 <= peak <= 15 and lrs[peak] == pytest.approx(0.1, rel=0.01)  # warm-up: one epoch of four
    assert all(a < b for a, b in pairwise(lrs[: peak + 1]))  # rises ...
    assert all(a >= b for a, b in pairwise(lrs[peak:-1]))  # ... then falls
    assert lrs[0] < 0.1 / 10 and min(lrs[-3:]) < 0.1 / 1000
    assert opt.param_groups[0]["momentum"] == 0.9  # cfg.momentum is kept


def test_onecycle_runs_and_resumes_exactly(tmp_path):
    data = tiny_data()
    full = fit(tiny_cfg(tmp_path / "full", epochs=3, scheduler="onecycle"), data=data)
    lrs = [h["lr"] for h in full["history"]]
    assert lrs[-1] < 0.01 / 100 < lrs[0]
    # "Killed" after epoch 2: the run folder as it was then (its last.pt is today's last.prev.pt).
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    (tmp_path / "cut" / "last.prev.pt").replace(tmp_path / "cut" / "last.pt")
    resumed = fit(tiny_cfg(tmp_path / "cut", epochs=3, scheduler="onecycle"), data=data, resume=True)
    assert resumed["epochs_this_run"] == 1 and [h["lr"] for h in resumed["history"]] == lrs
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert "total_steps" in a["scheduler"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)
    # More epochs on resume: the schedule stretches over them instead of running out of steps.
    more = fit(tiny_cfg(tmp_path / "cut", epochs=4, scheduler="onecycle"), data=data, resume=True)
    assert more["epochs_run"] == 4
