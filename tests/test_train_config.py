"""Typed choices and numeric ranges in the training config, helpful errors, no development data path, and
onecycle for real."""

from __future__ import annotations

import shutil
from itertools import pairwise
from typing import get_args

import numpy as np
import pytest
import torch
import yaml
from conftest import make_synthetic, tiny_cfg, tiny_data, write_fer_csv

from ferkit.cli import main
from ferkit.config import Balance, TrainConfig, load_train_config, load_yaml, resolve_config_path, to_dict
from ferkit.data.dataset import FaceDataset
from ferkit.errors import ConfigError
from ferkit.experiments.grid import list_grids, load_grid
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


def test_numbers_in_scientific_notation_are_numbers_on_the_command_line_in_files_and_grids(tmp_path, capsys):
    cfg = load_train_config(
        None,
        ["lr=1e-3", "weight_decay=5E-4", "distill_temperature=1e+1", "epochs=1e2", "augment.scale=[8e-1, 1]"],
    )
    assert (cfg.lr, cfg.weight_decay, cfg.distill_temperature) == (0.001, 0.0005, 10.0)
    assert cfg.epochs == 100 and isinstance(cfg.epochs, int) and cfg.augment.scale == (0.8, 1.0)
    with pytest.raises(ConfigError, match=r"^epochs: expected an integer, got '1e-3'$"):
        load_train_config(None, ["epochs=1e-3"])  # an int field takes whole numbers only
    assert load_train_config(None, ["out=1e3"]).out == "1e3"  # a string field keeps the text
    assert load_train_config(None, ["model_args.dropout=1e-1"]).model_args == {"dropout": 0.1}
    file = tmp_path / "c.yaml"
    file.write_text("lr: 1e-3\naugment: {noise_std: 5e-2}\n")
    cfg = load_train_config(file)
    assert (cfg.lr, cfg.augment.noise_std) == (0.001, 0.05)
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nbudgets: {cpu: {set: {lr: 1e-4}}}\nrows:\n  - {id: a, name: a, config: cpu}\n")
    g = load_grid(grid)
    cell = g.cell_config(g.row("a"), "official", "cpu", data="d", out="o", overrides=["weight_decay=1e-5"])
    assert (cell.lr, cell.weight_decay) == (1e-4, 1e-5)
    assert main(["train", "--show-config", "lr=1e-3"]) == 0
    assert "lr: 0.001\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=-1", "lr must be >= 0, got -1.0"),
        ("lr=-1e-3", "lr must be >= 0, got -0.001"),
        ("lr=.inf", "lr must be a finite number, got inf"),
        ("batch_size=0", "batch_size must be >= 1, got 0"),
        ("batch_size=-5", "batch_size must be >= 1, got -5"),
        ("epochs=0", "epochs must be >= 1, got 0"),
        ("label_smoothing=2", "label_smoothing must be in [0, 1), got 2.0"),
        ("threads=-1", "threads must be >= 0, got -1"),
        ("momentum=1", "momentum must be in [0, 1), got 1.0"),
        ("weight_decay=-1e-4", "weight_decay must be >= 0, got -0.0001"),
        ("early_stopping=-1", "early_stopping must be >= 0, got -1"),
        ("warmup_epochs=-2", "warmup_epochs must be >= 0, got -2"),
        ("plateau_factor=1", "plateau_factor must be in (0, 1), got 1.0"),
        ("aux_crop=0", "aux_crop must be in (0, 1], got 0.0"),
        ("seed=-1", "seed must be in [0, 4294967296), got -1"),
        ("distill_alpha=1.5", "distill_alpha must be in [0, 1], got 1.5"),
        ("augment.hflip=1.5", "augment.hflip must be in [0, 1], got 1.5"),
        ("augment.crop=49", "augment.crop must be in [1, 48], got 49"),
        ("augment.scale=[1.2, 0.8]", "augment.scale must be [low, high] with low <= high, got [1.2, 0.8]"),
        ("augment.jpeg_quality=[0, 90]", "augment.jpeg_quality must be in [1, 100], got [0, 90]"),
        ("augment.copies.noise_prob=-0.1", "augment.copies.noise_prob must be in [0, 1], got -0.1"),
        ("model_args={dropout: 1}", "model_args.dropout must be in [0, 1), got 1"),
        ("momentum=0", "momentum must be > 0 with optimizer=sgd and nesterov=true, got 0.0"),
    ],
)
def test_numbers_out_of_range_are_refused_when_the_config_loads(override, message):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, [override])
    assert str(e.value) == message


def test_range_errors_come_all_in_one_line_and_the_edges_of_each_range_are_accepted():
    with pytest.raises(ConfigError) as e:
        load_train_config(None, ["lr=-1", "augment.crop=0", "augment.copies.hflip=2"])
    assert str(e.value).count(" must be ") == 3 and "\n" not in str(e.value)
    edges = [
        "lr=0",
        "epochs=1",
        "batch_size=1",
        "label_smoothing=0",
        "momentum=0",
        "nesterov=false",
        "threads=0",
        "early_stopping=0",
        "aux_crop=1",
        "augment.hflip=1",
        "augment.crop=48",
        "augment.scale=[1, 1]",
        "model_args={dropout: 0}",
    ]
    cfg = load_train_config(None, edges)
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.threads, cfg.augment.crop) == (0, 1, 1, 0, 48)


def test_shipped_configs_and_every_grid_cell_still_load():
    for name in ("cpu", "paper", "tuned"):
        load_train_config(name)
    cells = 0
    for name in list_grids():
        grid = load_grid(name)
        for row in grid.rows:
            for protocol in row.protocols() if not row.ensemble else ():
                for budget in grid.budgets:
                    parent = "x.pt" if row.finetune else None
                    grid.cell_config(row, protocol, budget, data="d", out="o", aux="a", finetune_from=parent)
                    cells += 1
    assert cells > 10


@pytest.mark.parametrize("override", ["batch_size=0", "batch_size=-5", "epochs=0", "lr=-1", "threads=-1"])
def test_cli_refuses_out_of_range_settings_before_writing_anything(tmp_path, capsys, override):
    csv = write_fer_csv(tmp_path / "fer.csv", n_per_class=2)
    out = tmp_path / "run"
    assert main(["train", "--data", str(csv), "--out", str(out), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and override.split("=")[0] in err and "internal error" not in err
    assert not out.exists()
    out.mkdir()  # a run's folder: --resume reads its config.yaml, then the overrides, the same way
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(TrainConfig(data=str(csv), out=str(out)))))
    assert main(["train", "--resume", "--out", str(out), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and override.split("=")[0] in err and "internal error" not in err


def test_configs_built_in_python_are_range_checked_by_fit(tmp_path):
    with pytest.raises(ConfigError, match=r"^batch_size must be >= 1, got 0$"):
        fit(tiny_cfg(tmp_path / "run", batch_size=0), data=tiny_data())
    with pytest.raises(ConfigError, match=r"^model_args.dropout must be in \[0, 1\), got 1.5$"):
        fit(tiny_cfg(tmp_path / "run", model_args={"dropout": 1.5}), data=tiny_data())
    assert not (tmp_path / "run").exists()


def test_a_config_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path, capsys):
    file = tmp_path / "bin.yaml"
    file.write_bytes(b"\xff\xfe" + "lr: 0.1\n".encode("utf-16-le"))
    with pytest.raises(ConfigError, match=r"bin\.yaml: not a UTF-8 text file"):
        load_train_config(file)
    assert main(["train", "-c", str(file), "--show-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(file) in err and "internal error" not in err
