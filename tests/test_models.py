"""Model registry: every registered model builds and has the right shape; errors are loud."""

from __future__ import annotations

import pytest
import torch

from ferkit.cli import main
from ferkit.errors import ModelError
from ferkit.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_40x40_faces_to_7_logits(name):
    m = create_model(name).eval()
    with torch.no_grad():
        assert m(torch.zeros(3, 1, 40, 40)).shape == (3, 7)


def test_the_study_vggnet_exactly():
    m = create_model("vgg_fer")
    assert sum(p.numel() for p in m.parameters()) == 29_890_759  # ~29.9M as in the paper
    convs = [x for x in m.features if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.features) == 8
    assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m.features) == 4
    fcs = [x for x in m.classifier if isinstance(x, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(2048, 4096), (4096, 4096), (4096, 7)]
    assert [d.p for d in m.classifier if isinstance(d, torch.nn.Dropout)] == [0.2, 0.2]


def test_width_and_fc_are_arguments():
    m = create_model("vgg_fer", width=8, fc=64)
    assert [x.out_channels for x in m.features if isinstance(x, torch.nn.Conv2d)][-1] == 64


def test_unknown_name_and_argument_fail_loudly():
    with pytest.raises(ModelError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(ModelError, match="no argument"):
        create_model("vgg_fer", depth=3)
    for bad in ({"width": 0}, {"dropout": 5}, {"fc": "x"}):  # hand-edited checkpoint metadata, say
        with pytest.raises(ModelError, match="cannot build model 'vgg_fer' with"):
            create_model("vgg_fer", **bad)


def test_cli_models_lists_architectures(capsys, tmp_path):
    assert main(["models", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vgg_fer " in out and "29.89M" in out and "bundled model" in out
    assert main(["models", "vgg_fer_w*", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vgg_fer_w16" in out and "vgg_fer " not in out
    # A pattern that matches nothing (`ferkit models list`) says so and names what there is.
    assert main(["models", "list", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "none matches 'list'" in out and "vgg_fer_w32" in out


def test_average_weights_script_means_the_weights_and_refuses_mixed_architectures(tmp_path):
    """scripts/average_weights.py (a model soup): the mean of the weights, a checkpoint that loads."""
    import subprocess
    import sys
    from pathlib import Path

    from ferkit.models.checkpoint import load_checkpoint, model_from_checkpoint
    from ferkit.models.registry import ModelMeta
    from ferkit.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    paths = []
    for i, name in enumerate(["vgg_fer_w16", "vgg_fer_w16", "vgg_fer_w24"]):
        paths.append(tmp_path / f"{i}.pt")
        save_checkpoint(create_model(name), ModelMeta(name), paths[-1])
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"

    def average(*p):
        cmd = [sys.executable, str(script), *map(str, p), "-o", str(tmp_path / "soup.pt")]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    assert average(paths[0], paths[1]).returncode == 0
    a, b = load_checkpoint(paths[0])["model"], load_checkpoint(paths[1])["model"]
    model, _ = model_from_checkpoint(tmp_path / "soup.pt")  # the checksum was recomputed
    w = model.state_dict()["features.0.weight"]
    torch.testing.assert_close(w, (a["features.0.weight"] + b["features.0.weight"]) / 2)
    bad = average(paths[0], paths[2])
    assert (
        bad.returncode == ModelError.exit_code
        and "different architectures" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_cli_models_runs_lists_a_damaged_run_as_unreadable(capsys, tmp_path):
    """A best.pt without the metadata ferkit train writes is listed as unreadable, not a crash."""
    from media import tiny_checkpoint

    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.models.integrity import with_weights

    (tmp_path / "good").mkdir()
    ckpt = tiny_checkpoint(tmp_path / "good" / "best.pt")
    ck = load_checkpoint(ckpt)
    del ck["meta"]
    (tmp_path / "bad").mkdir()
    torch.save(with_weights(ck, ck["model"]), tmp_path / "bad" / "best.pt")
    assert main(["models", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bad/best.pt: unreadable (the checkpoint has no model metadata)" in out
    assert "good/best.pt" in out and "val acc" in out
