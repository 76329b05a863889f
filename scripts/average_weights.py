"""Average the weights of checkpoints of one architecture (a "model soup", Wortsman et al. 2022) into one
checkpoint: meaningful for runs that share a start (one fine-tuned from the other), not for unrelated ones.
BatchNorm statistics are averaged too; the first checkpoint gives everything else (meta, calibration).

    python scripts/average_weights.py runs/ft2-w32kd/best.pt runs/ft2-w32kd2/best.pt -o runs/soup.pt
    ferkit evaluate runs/soup.pt --data ../shared/data/fer2013 --split PublicTest --tta center
"""

from __future__ import annotations

import argparse
import sys

import torch

from ferkit.errors import ModelError
from ferkit.models.checkpoint import load_checkpoint, meta_from_checkpoint, save_torch
from ferkit.models.integrity import with_weights


def average(paths: list[str]) -> dict:
    """The first checkpoint with its floating-point weights replaced by the mean over all of them."""
    ckpts = [load_checkpoint(p) for p in paths]
    names = {meta_from_checkpoint(c).name for c in ckpts}
    if len(names) > 1:
        raise ModelError(f"the checkpoints are of different architectures ({', '.join(sorted(names))})")
    mean = {
        k: torch.stack([c["model"][k].float() for c in ckpts]).mean(0).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in ckpts[0]["model"].items()
    }
    return with_weights(ckpts[0], mean)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="two or more checkpoints (best.pt files)")
    ap.add_argument("-o", "--out", required=True, help="the averaged checkpoint")
    args = ap.parse_args(argv)
    if len(args.checkpoints) < 2:
        ap.error("give two or more checkpoints to average")
    save_torch(average(args.checkpoints), args.out)
    print(f"wrote {args.out}: mean of {len(args.checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
