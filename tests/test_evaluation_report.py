"""evaluate_dataset (de-duplicated twin set, members), the report files, and ``ferkit evaluate``."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

import ferkit.cli
from ferkit.cli import main
from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError, ModelError
from ferkit.evaluation.evaluate import dedup_name, evaluate_dataset
from ferkit.evaluation.report import format_table, render_markdown, write_report
from ferkit.evaluation.scorers import Scorer
from ferkit.labels import CLASSES
from ferkit.models import ModelMeta, create_model
from ferkit.training.checkpoint import make_checkpoint

# The module, not the function of the same name that ferkit.evaluation exports.
evaluate_mod = importlib.import_module("ferkit.evaluation.evaluate")
N_DUP = 4


class Memoriser(Scorer):
    """Right on the images it saw in training, and always 'Disgust' on the others."""

    kind = "test"

    def __init__(self, name: str, train: FaceDataset) -> None:
        self.name, self.classes = name, list(CLASSES)
        self.seen = {img.tobytes(): int(y) for img, y in zip(train.images, train.labels)}

    def logits(self, images, tta="center"):
        out = np.zeros((len(images), 7))
        for i, img in enumerate(images):
            out[i, self.seen.get(img.tobytes(), 1)] = 6.0
        return out


class Pair(Scorer):
    """A two-member 'ensemble': the mean of its members' probabilities."""

    kind = "test-ensemble"

    def __init__(self, a: Scorer, b: Scorer) -> None:
        self.name, self.classes, self._members = "pair", list(CLASSES), {"a": a, "b": b}

    def members(self):
        return dict(self._members)

    def predict_proba(self, images, tta="center"):
        return np.mean([m.predict_proba(images, tta) for m in self._members.values()], axis=0)


class Constant(Scorer):
    def __init__(self, cls: int) -> None:
        self.name, self.cls, self.classes = f"always {CLASSES[cls]}", cls, list(CLASSES)

    def logits(self, images, tta="center"):
        return np.tile(np.eye(7)[self.cls] * 3, (len(images), 1))


@pytest.fixture
def planted(synthetic):
    """Training + PrivateTest where the first N_DUP PrivateTest rows are copies of Training images."""
    tr_x, tr_y = synthetic(3, seed=0)
    te_x, te_y = synthetic(3, seed=1)
    keep = te_y != 1  # Memoriser's fallback class is Disgust: keep it always wrong off the duplicates
    te_x, te_y = te_x[keep], te_y[keep]
    pick = np.array([0, 5, 10, 20])
    te_x[:N_DUP], te_y[:N_DUP] = tr_x[pick], tr_y[pick]
    images = np.concatenate([tr_x, te_x])
    labels = np.concatenate([tr_y, te_y])
    splits = np.array(["Training"] * len(tr_y) + ["PrivateTest"] * len(te_y), dtype=object)
    return FaceDataset(images, labels, splits)


def test_dedup_subset_excludes_planted_duplicates(planted):
    scorer = Memoriser("mem", planted.split("Training"))
    res = evaluate_dataset(scorer, planted, "PrivateTest", tta="center")
    n = int((planted.splits == "PrivateTest").sum())
    full, clean = res["sets"]["PrivateTest"], res["sets"][dedup_name("PrivateTest")]
    assert res["dedup"] == {"reference": "Training", "duplicates": N_DUP, "of": n}
    assert full["n"] == n and clean["n"] == n - N_DUP
    # The memoriser looks better than chance only thanks to the duplicates.
    assert full["top1"] == pytest.approx(N_DUP / n)
    assert clean["top1"] == 0.0


def test_dedup_with_a_given_mask_and_members(planted, monkeypatch):
    mask = np.zeros(int((planted.splits == "PrivateTest").sum()), dtype=bool)
    mask[[1, 2]] = True
    monkeypatch.setattr(evaluate_mod, "duplicate_mask", lambda ds, split: mask)
    scorer = Pair(Memoriser("mem", planted.split("Training")), Constant(3))
    res = evaluate_dataset(scorer, planted, "PrivateTest", tta="center")
    clean = dedup_name("PrivateTest")
    assert list(res["sets"]) == ["PrivateTest", clean]
    assert res["sets"][clean]["n"] == len(mask) - 2
    rows = planted.split("PrivateTest")
    expected = (rows.labels[~mask] == 3).mean()  # member b always says Happy
    assert res["members"]["b"][clean]["top1"] == pytest.approx(expected)
    assert set(res["members"]) == {"a", "b"}
    assert list(res["members"]["a"]) == ["PrivateTest", clean]


def test_no_dedup_for_training_all_or_when_disabled(planted, monkeypatch):
    monkeypatch.setattr(evaluate_mod, "duplicate_mask", lambda ds, split: pytest.fail("should not be called"))
    scorer = Constant(0)
    for split, dedup in [("Training", True), ("all", True), ("PrivateTest", False)]:
        res = evaluate_dataset(scorer, planted, split, tta="center", dedup=dedup)
        assert list(res["sets"]) == [split] and res["dedup"] is None
    assert evaluate_dataset(scorer, planted, "all", tta="center")["sets"]["all"]["n"] == len(planted)
    # A dataset with no Training split (e.g. only a test folder): no twin set either.
    only_test = planted.subset(planted.splits == "PrivateTest")
    assert list(evaluate_dataset(scorer, only_test, "PrivateTest", "center")["sets"]) == ["PrivateTest"]
    # Every row a duplicate: nothing left to score, so no (empty) twin set, but the count is kept.
    monkeypatch.setattr(evaluate_mod, "duplicate_mask", lambda ds, split: np.ones(len(only_test), dtype=bool))
    res = evaluate_dataset(scorer, planted, "PrivateTest", "center")
    assert list(res["sets"]) == ["PrivateTest"] and res["dedup"]["duplicates"] == len(only_test)
    with pytest.raises(DataError, match="'all' for every row"):
        evaluate_dataset(scorer, planted, "PublicTest", tta="center")


def sample_result(planted, monkeypatch):
    mask = np.zeros(int((planted.splits == "PrivateTest").sum()), dtype=bool)
    mask[:N_DUP] = True
    monkeypatch.setattr(evaluate_mod, "duplicate_mask", lambda ds, split: mask)
    scorer = Pair(Memoriser("mem", planted.split("Training")), Constant(3))
    res = evaluate_dataset(scorer, planted, "PrivateTest", tta="center")
    return {
        "command": ["ferkit", "evaluate", "pair.pt"],
        "model_path": "pair.pt",
        "data_path": "fer.csv",
        "model": scorer.describe(),
        **res,
    }


def test_report_files(planted, monkeypatch, tmp_path):
    result = sample_result(planted, monkeypatch)
    paths = write_report(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "confusion.png",
        "metrics.json",
        "report.md",
    ]
    saved = json.loads(paths["json"].read_text())
    assert saved["command"] == ["ferkit", "evaluate", "pair.pt"]
    assert saved["sets"]["PrivateTest"]["confusion"] == result["sets"]["PrivateTest"]["confusion"]
    assert set(saved["members"]) == {"a", "b"}
    md = paths["markdown"].read_text()
    top1 = result["sets"]["PrivateTest"]["top1"]
    assert f"| PrivateTest | {result['sets']['PrivateTest']['n']} | {100 * top1:.2f} |" in md
    assert f"| {dedup_name('PrivateTest')} |" in md
    assert "| member b: PrivateTest |" in md and "| member a: " + dedup_name("PrivateTest") + " |" in md
    assert "| class | precision | recall | F1 | support |" in md
    assert all(f"| {c} |" in md for c in CLASSES)
    assert f"{N_DUP} of {result['dedup']['of']} images of PrivateTest also occur in Training; the set" in md
    assert "`ferkit evaluate pair.pt`" in md
    png = paths["confusion"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_terminal_table(planted, monkeypatch):
    result = sample_result(planted, monkeypatch)
    lines = format_table(result).splitlines()
    assert lines[0].split()[:3] == ["set", "n", "top-1"]
    assert len(lines) == 2 + 2 + 2 * 2  # header, rule, 2 sets, 2 members x 2 sets
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert render_markdown(result).startswith("# ferkit evaluation")


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch):
    """``ferkit`` with only the evaluate subcommand (the others are not this file's business)."""
    monkeypatch.setattr(ferkit.cli, "COMMANDS", ["evaluate"])
    return main


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    torch.save(make_checkpoint(create_model("vgg_fer_w16"), ModelMeta(name="vgg_fer_w16")), path)
    return path


def test_cli_evaluate_writes_report(cli, tiny_ckpt, fer_csv, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        cli(
            [
                "evaluate",
                str(tiny_ckpt),
                "--data",
                str(fer_csv),
                "-o",
                str(out),
                "--batch-size",
                "16",
                "--tta",
                "mirror",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "top-1" in stdout and "PrivateTest" in stdout and "(tta mirror)" in stdout
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tta"] == "mirror" and saved["split"] == "PrivateTest"
    assert saved["sets"]["PrivateTest"]["n"] == 42  # 6 per class in the fixture
    # The fixture's splits share no image: no twin set repeating the first, but the count is reported.
    assert list(saved["sets"]) == ["PrivateTest"]
    assert saved["dedup"] == {"reference": "Training", "duplicates": 0, "of": 42}
    assert "0 of 42 images of PrivateTest also occur in Training\n" in stdout
    assert saved["command"][:3] == ["ferkit", "evaluate", str(tiny_ckpt)]
    assert saved["model"]["model"] == "vgg_fer_w16"
    assert (out / "report.md").read_text().startswith("# ferkit evaluation")
    assert (out / "confusion.png").stat().st_size > 0


def test_cli_evaluate_json(cli, tiny_ckpt, fer_csv, capsys):
    assert (
        cli(
            [
                "evaluate",
                str(tiny_ckpt),
                "--data",
                str(fer_csv),
                "--split",
                "PublicTest",
                "--tta",
                "center",
                "--no-dedup",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert list(res["sets"]) == ["PublicTest"] and res["dedup"] is None and "files" not in res


def test_cli_defaults(cli):
    args = ferkit.cli.build_parser().parse_args(["evaluate", "m.pt", "--data", "d"])
    # tta None: the crops built into an .onnx file, else ten_crop (resolved in evaluate())
    assert (args.tta, args.split, args.dedup, args.out, args.batch_size) == (
        None,
        "PrivateTest",
        True,
        None,
        256,
    )


def test_cli_missing_checkpoint(cli, fer_csv, tmp_path, capsys):
    code = cli(["evaluate", str(tmp_path / "nope.pt"), "--data", str(fer_csv)])
    err = capsys.readouterr().err
    assert code == ModelError.exit_code
    assert err.count("\n") == 1 and err.startswith("ferkit: error: model file not found")


def test_cli_not_a_checkpoint(cli, fer_csv, tmp_path, capsys):
    bogus = tmp_path / "model.pt"
    bogus.write_text("definitely not torch\n")
    code = cli(["evaluate", str(bogus), "--data", str(fer_csv), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == ModelError.exit_code
    assert err.count("\n") == 1 and "not a readable model file" in err
    assert not (tmp_path / "out").exists()


def test_cli_unknown_split(cli, tiny_ckpt, fer_csv, capsys):
    assert (
        cli(["evaluate", str(tiny_ckpt), "--data", str(fer_csv), "--split", "Validation"])
        == DataError.exit_code
    )
    assert "available: Training, PublicTest, PrivateTest" in capsys.readouterr().err


@pytest.mark.slow
def test_real_fer2013_privatetest_duplicates(shared_data, tiny_ckpt, tmp_path):
    """On the real FER2013, 260 PrivateTest images also occur in Training (shared/README.md)."""
    res = evaluate_mod.evaluate(tiny_ckpt, shared_data / "fer2013", tta="center", batch_size=512)
    assert res["sets"]["PrivateTest"]["n"] == 3589
    assert res["dedup"]["duplicates"] == 260
    assert res["sets"][dedup_name("PrivateTest")]["n"] == 3589 - 260


def test_cli_evaluate_skip_bad(cli, tiny_ckpt, fer_folders, tmp_path, capsys):
    """Issue 14 item 11: evaluate tells users to pass --skip-bad, and accepts it."""
    (fer_folders / "test" / "angry" / "PrivateTest_9999.png").write_bytes(b"not an image")
    assert (
        cli(["evaluate", str(tiny_ckpt), "--data", str(fer_folders), "--tta", "center"])
        == DataError.exit_code
    )
    err = capsys.readouterr().err
    assert "PrivateTest_9999.png" in err and "--skip-bad" in err
    out = tmp_path / "eval"
    args = [
        "evaluate",
        str(tiny_ckpt),
        "--data",
        str(fer_folders),
        "--tta",
        "center",
        "--skip-bad",
        "-o",
        str(out),
    ]
    assert cli(args) == 0
    assert "skipped in the data: 1" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert sum(report["data_skipped"].values()) == 1 and "--skip-bad" in report["command"]


def test_cli_evaluate_crop_scores_the_central_part_and_says_so(cli, tiny_ckpt, fer_csv, tmp_path, capsys):
    base = ["evaluate", str(tiny_ckpt), "--data", str(fer_csv), "--tta", "center", "--json"]
    assert cli(base) == 0
    plain = json.loads(capsys.readouterr().out)
    out = tmp_path / "eval"
    assert cli([*base, "--crop", "0.5", "-o", str(out)]) == 0
    tight = json.loads(capsys.readouterr().out)
    assert tight["crop"] == 0.5 and "crop" not in plain and "--crop" in tight["command"]
    assert tight["sets"]["PrivateTest"]["n"] == plain["sets"]["PrivateTest"]["n"]  # the same faces
    assert tight["sets"]["PrivateTest"]["nll"] != plain["sets"]["PrivateTest"]["nll"]  # seen otherwise
    assert "central 0.5 of each face" in (out / "report.md").read_text()
    assert cli([*base[:-1], "--crop", "0.5"]) == 0  # the printed table says so too
    assert "(tta center, central 0.5 of each face)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli([*base, "--crop", "1.5"])
    assert e.value.code == 2 and "must be in (0, 1]" in capsys.readouterr().err
