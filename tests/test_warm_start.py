"""Warm starts: an exported VGGNet back in PyTorch (trainable again), and pruning to a narrower one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from ferkit.errors import ModelError
from ferkit.inference.export import export_onnx
from ferkit.models import create_model
from ferkit.models.checkpoint import model_from_checkpoint
from ferkit.models.ensemble import Ensemble
from ferkit.models.onnx_import import unfold_batchnorm, vgg_from_onnx
from ferkit.models.prune import prune_vgg
from ferkit.models.registry import ModelMeta
from ferkit.models.transforms import center_crop, normalize

pytest.importorskip("onnx")


def _trained_like(name: str, seed: int = 0) -> torch.nn.Module:
    """A model whose BatchNorms hold non-trivial statistics, as after training."""
    torch.manual_seed(seed)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)  # type: ignore[union-attr]
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def _crops(images: np.ndarray, meta: ModelMeta) -> torch.Tensor:
    return center_crop(normalize(torch.from_numpy(images), meta), meta.input_size)


def test_exported_model_comes_back_with_the_same_logits_and_trainable_batchnorms(tmp_path):
    src = _trained_like("vgg_fer_w16")
    meta = ModelMeta("vgg_fer_w16", mean=0.45, std=0.3)
    path = tmp_path / "m.onnx"
    export_onnx(Ensemble([src], [meta]).eval(), path, probes=_faces(4))

    model, back = vgg_from_onnx(path)
    assert (back.name, back.mean, back.std, back.input_size) == ("vgg_fer_w16", 0.45, 0.3, 40)
    x = _crops(_faces(64, seed=1), meta)
    with torch.no_grad():
        want = src(x)
        torch.testing.assert_close(model(x), want, atol=1e-4, rtol=1e-4)
        unfold_batchnorm(model, x)
        torch.testing.assert_close(model.eval()(x), want, atol=1e-4, rtol=1e-4)
        # in training mode each BatchNorm normalises by the batch, whose statistics it now holds
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train()  # (dropout stays off: it is not what this checks)
        torch.testing.assert_close(model(x), want, atol=1e-4, rtol=1e-4)


def test_a_file_that_is_not_a_graph_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("garbage")
    with pytest.raises(ModelError, match="is not an ONNX graph"):
        vgg_from_onnx(bad)
    with pytest.raises(ModelError, match="not found"):
        vgg_from_onnx(tmp_path / "missing.onnx")
    src = _trained_like("vgg_fer_w16")
    export_onnx(Ensemble([src], [ModelMeta("vgg_fer_w16")]).eval(), tmp_path / "m.onnx", probes=_faces(4))
    from ferkit.inference.quantize import to_fp16

    (tmp_path / "half.onnx").write_bytes(to_fp16((tmp_path / "m.onnx").read_bytes()))
    with pytest.raises(ModelError, match="not in float32"):
        vgg_from_onnx(tmp_path / "half.onnx")


def test_pruning_to_the_same_width_keeps_the_function():
    src = _trained_like("vgg_fer_w16")
    x = _crops(_faces(32), ModelMeta("vgg_fer_w16"))
    pruned = prune_vgg(src, "vgg_fer_w16", x)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), src(x))


def test_pruning_drops_channels_that_carry_nothing_first():
    src = _trained_like("vgg_fer_w32")
    x = _crops(_faces(32), ModelMeta("vgg_fer_w32"))
    # silence 8 of the first convolution's 32 channels: a 24-wide model keeps exactly the other 24
    dead = torch.arange(0, 32, 4)
    first_bn = src.features[1]
    with torch.no_grad():
        first_bn.weight[dead] = 0
        first_bn.bias[dead] = -1
    pruned = prune_vgg(src, "vgg_fer_w24", x)
    alive = torch.tensor([c for c in range(32) if c not in set(dead.tolist())])
    torch.testing.assert_close(pruned.features[0].weight, src.features[0].weight[alive])
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in src.parameters())
    assert pruned(x).shape == (32, 7)


def test_pruning_to_a_model_of_another_shape_is_a_clear_error():
    src = _trained_like("vgg_fer_w24")
    x = _crops(_faces(8), ModelMeta("vgg_fer_w24"))
    with pytest.raises(ModelError, match="FC size"):
        prune_vgg(src, "vgg_fer_w16", x)  # FC 512, the source has 1024
    with pytest.raises(ModelError, match="wider"):
        prune_vgg(src, "vgg_fer_w32", x)
    with pytest.raises(ModelError, match="not a VGGNet"):
        prune_vgg(src, "sepres_fer", x)


def test_warm_start_script_writes_a_checkpoint_that_trains_on(tmp_path, fer_csv):
    """scripts/warm_start.py: exported graph -> pruned checkpoint -> ``finetune_from=`` for a short run."""
    graph = tmp_path / "w32.onnx"
    meta = ModelMeta("vgg_fer_w32")
    export_onnx(Ensemble([_trained_like("vgg_fer_w32")], [meta]).eval(), graph, probes=_faces(4))
    script = Path(__file__).resolve().parents[1] / "scripts" / "warm_start.py"
    ckpt = tmp_path / "w24.pt"
    done = subprocess.run(
        [sys.executable, str(script), str(graph), "--data", str(fer_csv), "-o", str(ckpt)]
        + ["--prune", "vgg_fer_w24", "--faces", "32"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "FERKIT_CACHE_DIR": str(tmp_path / "cache")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pruned to vgg_fer_w24: PublicTest centre crop top-1" in done.stdout
    model, back = model_from_checkpoint(ckpt)
    assert back.name == "vgg_fer_w24" and back.temperature == 1.0
    assert model.features[0].out_channels == 24

    out = tmp_path / "run"
    trained = run_cli(
        "train", "--data", str(fer_csv), "-o", str(out), "model=vgg_fer_w24", f"finetune_from={ckpt}",
        "epochs=1", "batch_size=16", "progress=false", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert (out / "best.pt").is_file()
