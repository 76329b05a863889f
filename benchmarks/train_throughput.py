"""Training images/s: ferkit's batch-tensor pipeline vs a per-image PIL + DataLoader pipeline.

Both do the same augmentation (zoom, translation, rotation, flip, random 40x40 crop, random erasing)
and the same SGD step on the same model; the data path alone is timed too. Run:

    python benchmarks/train_throughput.py --model vgg_fer --steps 20
    python benchmarks/train_throughput.py --model vgg_fer_w32 --device cuda   # on a GPU
    python benchmarks/train_throughput.py --model vgg_fer_w32 --world --skip-pil   # + world augmentation

``--world`` adds a row for the batch pipeline with the augmentation for other cameras switched on (WORLD
below: contrast, gamma, blur, JPEG, noise, detector-like crop jitter), and times that augmentation's
steps alone, so its cost is measured side by side with the default augmentation.

Uses real FER2013 images when --data is given, random uint8 faces otherwise
(speed does not depend on content).
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ferkit.config import AugmentConfig

# The augmentation for faces from other cameras, as recommended for issue 12's training run.
WORLD = {
    "contrast": 0.4,
    "gamma": 0.4,
    "blur": 0.3,
    "jpeg": 0.3,
    "noise_std": 0.04,
    "noise_prob": 0.3,
    "crop_jitter": 0.5,
}
from ferkit.data.augment import augment_batch
from ferkit.models import create_model


class PilAugmentDataset(torch.utils.data.Dataset):
    """The straightforward way: one PIL image at a time, torchvision-style transforms by hand."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, cfg: AugmentConfig) -> None:
        self.images, self.labels, self.cfg = images, labels, cfg

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        c = self.cfg
        im = Image.fromarray(self.images[i])
        zoom = random.uniform(*c.scale)
        angle = random.uniform(-c.rotation, c.rotation)
        tx, ty = (random.uniform(-c.translate, c.translate) * 48 for _ in range(2))
        # inverse affine matrix for PIL: rotate + scale about the centre, then shift
        a = math.radians(angle)
        cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
        cx = cy = 24
        matrix = (cos, -sin, cx - cos * cx + sin * cy - tx, sin, cos, cy - sin * cx - cos * cy - ty)
        im = im.transform((48, 48), Image.AFFINE, matrix, resample=Image.BILINEAR)
        if random.random() < c.hflip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        left, top = random.randint(0, 48 - c.crop), random.randint(0, 48 - c.crop)
        im = im.crop((left, top, left + c.crop, top + c.crop))
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).unsqueeze(0)
        if random.random() < c.erasing:
            h = random.randint(4, 20)
            w = random.randint(4, 20)
            t, lft = random.randint(0, c.crop - h), random.randint(0, c.crop - w)
            x[:, t : t + h, lft : lft + w] = torch.rand(1, h, w)
        return (x - 0.5) / 0.25, int(self.labels[i])


def train_steps(model, opt, batches, device) -> tuple[float, int]:
    model.train()
    n, t0 = 0, None
    for i, (x, y) in enumerate(batches):
        if i == 1:  # skip the first (warm-up) step
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, n = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg_fer")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the PIL pipeline")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--data", help="FER2013 path (optional)")
    ap.add_argument("--world", action="store_true", help="also time the world augmentation (WORLD)")
    ap.add_argument("--skip-pil", action="store_true", help="skip the PIL + DataLoader pipeline")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.batch_size * (args.steps + 1)
    if args.data:
        from ferkit.data.load import load_dataset

        ds = load_dataset(args.data).split("Training")
        images, labels = ds.images[:n], ds.labels[:n]
    else:
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n)
    cfg = AugmentConfig()
    world = AugmentConfig(**WORLD)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}, model {args.model}, batch {args.batch_size}"
    )

    # data path alone
    g = torch.Generator(device=device).manual_seed(0)
    xt = torch.from_numpy(images).to(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        augment_batch(xt[i * args.batch_size : (i + 1) * args.batch_size], cfg, g)
    if device.type == "cuda":
        torch.cuda.synchronize()
    batch_aug = args.steps * args.batch_size / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(args.steps):
        augment_batch(xt[i * args.batch_size : (i + 1) * args.batch_size], world, g)
    world_aug = args.steps * args.batch_size / (time.perf_counter() - t0)
    pil_ds = PilAugmentDataset(images, labels, cfg)
    t0 = time.perf_counter()
    for i in range(args.steps * args.batch_size):
        pil_ds[i]
    pil_aug = args.steps * args.batch_size / (time.perf_counter() - t0)

    results = {}
    names = ["batch-tensor (ferkit)"] + (["batch-tensor, world augmentation"] if args.world else [])
    names += [] if args.skip_pil else [f"PIL + DataLoader ({args.workers} workers)"]
    augs = {"batch-tensor (ferkit)": batch_aug, "batch-tensor, world augmentation": world_aug}
    for name in names:
        torch.manual_seed(0)
        model = create_model(args.model).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        if name.startswith("batch"):
            yt = torch.from_numpy(labels.astype(np.int64)).to(device)
            acfg = world if "world" in name else cfg

            def batches(yt=yt, acfg=acfg):
                for i in range(args.steps + 1):
                    sl = slice(i * args.batch_size, (i + 1) * args.batch_size)
                    yield (augment_batch(xt[sl], acfg, g) / 255.0 - 0.5) / 0.25, yt[sl]

            results[name] = train_steps(model, opt, batches(), device)[0]
        else:
            loader = torch.utils.data.DataLoader(
                pil_ds,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=args.workers,
                drop_last=True,
                pin_memory=device.type == "cuda",
            )
            results[name] = train_steps(model, opt, loader, device)[0]
    print(f"{'pipeline':<32} {'augment only (img/s)':>22} {'train step (img/s)':>20}")
    for name, rate in results.items():
        print(f"{name:<32} {augs.get(name, pil_aug):>22.0f} {rate:>20.1f}")


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
