"""A trainable checkpoint from a shipped graph, optionally pruned to a narrower VGGNet (issue 12).

The bundled default.onnx is the only copy of the bundled model's weights (its training runs are not
kept). This rebuilds it in PyTorch with trainable BatchNorms (``ferkit.models.onnx_import``), optionally
prunes it (``ferkit.models.prune``), prints its PublicTest accuracy at the centre crop, and writes a
checkpoint for ``ferkit train ... finetune_from=OUT``. PrivateTest is not read.

    python scripts/warm_start.py src/ferkit/weights/default.onnx --data ../shared/data/fer2013 \\
        -o runs/warm/w24.pt --prune vgg_fer_w24
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch

from ferkit.data.load import load_dataset
from ferkit.evaluation.metrics import compute_metrics
from ferkit.models.onnx_import import unfold_batchnorm, vgg_from_onnx
from ferkit.models.prune import prune_vgg
from ferkit.models.registry import ModelMeta
from ferkit.models.transforms import center_crop, normalize
from ferkit.training.checkpoint import save_checkpoint


def crops(images: np.ndarray, meta: ModelMeta) -> torch.Tensor:
    return center_crop(normalize(torch.from_numpy(images), meta), meta.input_size)


@torch.no_grad()
def public_accuracy(model: torch.nn.Module, x: torch.Tensor, y: np.ndarray) -> str:
    m = compute_metrics(torch.softmax(model.eval()(x), 1).numpy(), y)
    return f"PublicTest centre crop top-1 {100 * m['top1']:.2f} / balanced {100 * m['balanced_accuracy']:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", help="an fp32 graph of one VGGNet written by `ferkit export`")
    ap.add_argument("--data", required=True, help="FER2013 (Training faces set the statistics)")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--prune", metavar="MODEL", help="a narrower registered VGGNet, e.g. vgg_fer_w24")
    ap.add_argument("--faces", type=int, default=4096, help="Training faces for the statistics")
    args = ap.parse_args()
    if args.faces < 1:
        ap.error(f"--faces must be at least 1, got {args.faces}")
    torch.set_num_threads(2)
    ds = load_dataset(args.data)
    train, public = ds.split("Training"), ds.split("PublicTest")
    model, meta = vgg_from_onnx(args.onnx)
    n = min(args.faces, len(train.images))  # a small dataset: all its Training faces
    idx = np.random.default_rng(0).choice(len(train.images), n, replace=False)
    stats = crops(train.images[idx], meta)
    x_pub = crops(public.images, meta)
    print("source (no temperature, no prior correction):", public_accuracy(model, x_pub, public.labels))
    model = unfold_batchnorm(model, stats)
    print("trainable BatchNorm:", public_accuracy(model, x_pub, public.labels))
    meta = dataclasses.replace(meta, temperature=1.0, logit_bias=None)
    if args.prune:
        model = unfold_batchnorm(prune_vgg(model, args.prune, stats), stats)  # type: ignore[arg-type]
        meta = dataclasses.replace(meta, name=args.prune, args={})
        print(f"pruned to {args.prune}:", public_accuracy(model, x_pub, public.labels))
    save_checkpoint(model, meta, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
