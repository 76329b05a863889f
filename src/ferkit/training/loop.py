"""The training loop: one readable function, ``fit(cfg)``.

Protocol: train on ``cfg.train_split`` (Training), choose the schedule, early stopping and the best
checkpoint on ``cfg.val_split`` (PublicTest). PrivateTest is never touched here.
Runs under ``torchrun --nproc_per_node=N`` with DistributedDataParallel (gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.config import TrainConfig, to_dict
from ferkit.data.augment import augment_batch
from ferkit.errors import ConfigError, ModelError
from ferkit.io import atomic_write, atomic_write_text
from ferkit.models.checkpoint import load_checkpoint, save_torch
from ferkit.models.registry import ModelMeta, create_model
from ferkit.models.transforms import center_crop, normalize
from ferkit.runtime import resolve_device
from ferkit.training.checkpoint import make_checkpoint
from ferkit.training.data import TrainingData, prepare_training_data
from ferkit.training.distill import Teacher, check_distill_config, distillation_loss

# What an interrupted run may change when it resumes; everything else must match the run's config.
RESUME_MAY_CHANGE = frozenset({"epochs", "early_stopping", "threads", "device", "progress", "out", "data"})


def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optimizer: unknown {cfg.optimizer!r}; use sgd, adam or adamw")


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    if cfg.scheduler in ("cosine", "onecycle"):
        total = max(1, cfg.epochs * steps_per_epoch)
        warm = cfg.warmup_epochs * steps_per_epoch

        def lr_at(step: int) -> float:  # linear warm-up, then cosine to zero; stepped per batch
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    if cfg.scheduler == "none":
        return None
    raise ConfigError(f"scheduler: unknown {cfg.scheduler!r}; use plateau, cosine or none")


@torch.inference_mode()
def evaluate_arrays(model: torch.nn.Module, meta: ModelMeta, images: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 512) -> dict[str, float]:
    """Single centre-crop accuracy, balanced accuracy and loss on uint8 images already on the device."""
    model.eval()
    preds, loss = [], 0.0
    for i in range(0, len(images), batch_size):
        x = center_crop(normalize(images[i:i + batch_size], meta), meta.input_size)
        logits = model(x).float()
        loss += F.cross_entropy(logits, labels[i:i + batch_size], reduction="sum").item()
        preds.append(logits.argmax(1))
    p = torch.cat(preds)
    recalls = [(p[labels == c] == c).float().mean().item() for c in labels.unique()]
    return {"val_loss": loss / len(labels), "val_acc": (p == labels).float().mean().item(),
            "val_balanced_acc": float(np.mean(recalls))}


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state[k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy"), a.legend()
    b.plot(ep, [h["train_acc"] for h in history], label="train (augmented)")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.plot(ep, [h["val_balanced_acc"] for h in history], label="validation, balanced")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the fields it lacks (added to ferkit since) filled in, at any depth."""
    out = dict(defaults)
    for k, v in saved.items():
        out[k] = _with_defaults(v, defaults[k]) if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
    return out


def fit(cfg: TrainConfig, resume: bool = False, data: TrainingData | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` as configured; returns a summary. Writes to ``cfg.out``:
    ``last.pt`` (full state, for --resume), ``best.pt`` (best validation accuracy), ``metrics.jsonl``,
    ``config.yaml``, ``curves.png``.
    """
    import yaml

    rank, local_rank, world = _dist_info()
    distributed = world > 1
    device = resolve_device(cfg.device)
    if distributed:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    main_proc = rank == 0
    out = Path(cfg.out)
    last_path = out / "last.pt"
    if last_path.exists() and not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not last_path.exists():
        raise ConfigError(f"nothing to resume: {last_path} does not exist")
    if not 0 < cfg.augment.crop <= 48:
        raise ConfigError(f"augment.crop must be between 1 and the image side 48, got {cfg.augment.crop}")
    check_distill_config(cfg.teacher, cfg.distill_alpha, cfg.distill_temperature)

    torch.manual_seed(cfg.seed + rank)
    if data is None:
        from ferkit.data.load import load_dataset

        data = prepare_training_data(cfg, load_dataset(cfg.data))
    if len(data.train_labels) == 0 or len(data.val_labels) == 0:
        raise ConfigError("training or validation split is empty")

    # The whole dataset lives on the device as uint8; batches are augmented there.
    x_train = torch.from_numpy(np.ascontiguousarray(data.train_images)).to(device)
    y_train = torch.from_numpy(data.train_labels.astype(np.int64)).to(device)
    x_val = torch.from_numpy(np.ascontiguousarray(data.val_images)).to(device)
    y_val = torch.from_numpy(data.val_labels.astype(np.int64)).to(device)
    pixels = data.train_images.astype(np.float32) / 255.0
    meta = ModelMeta(name=cfg.model, args=dict(cfg.model_args), image_size=int(data.train_images.shape[-1]),
                     input_size=cfg.augment.crop, mean=round(float(pixels.mean()), 4),
                     std=round(float(pixels.std()), 4))
    del pixels

    model = create_model(cfg.model, **cfg.model_args).to(device)
    if cfg.finetune_from and not resume:
        src = load_checkpoint(cfg.finetune_from)
        try:
            model.load_state_dict(src["model"])
        except RuntimeError as e:
            raise ModelError(f"finetune_from: weights do not fit {cfg.model}: {str(e).splitlines()[0]}") from None
        meta.mean, meta.std = src["meta"]["mean"], src["meta"]["std"]
    teacher = Teacher(cfg.teacher, device, cfg.augment.crop, meta.classes) if cfg.teacher else None
    steps_per_epoch = max(1, len(y_train) // (cfg.batch_size * world))
    opt = make_optimizer(cfg, model.parameters())
    sched = make_scheduler(cfg, opt, steps_per_epoch)
    per_batch_sched = cfg.scheduler in ("cosine", "onecycle")
    class_w = torch.tensor(data.class_weights, device=device) if data.class_weights is not None else None
    sample_w = torch.tensor(data.sample_weights) if data.sample_weights is not None else None

    g_cpu = torch.Generator().manual_seed(cfg.seed)  # epoch order: identical on all ranks
    g_aug = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 17 + rank)
    gens = {"cpu": g_cpu, "aug": g_aug}
    start_epoch, best, since_best, history = 1, -1.0, 0, []
    if resume:
        ck = load_checkpoint(last_path)
        # Fields added to TrainConfig after the run started take their defaults.
        run_cfg = _with_defaults(ck["config"], to_dict(TrainConfig()))
        changed = [k for k, v in to_dict(cfg).items() if k not in RESUME_MAY_CHANGE and run_cfg.get(k) != v]
        if changed:
            raise ConfigError(f"--resume with settings that differ from the run's own ({', '.join(changed)}); "
                              f"only {', '.join(sorted(RESUME_MAY_CHANGE))} may change")
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError as e:
            raise ModelError(f"{last_path} does not fit {cfg.model}: {str(e).splitlines()[0]}") from None
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck.get("scheduler"):
            sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"], gens)
        meta = ModelMeta(**ck["meta"])
        start_epoch, best, since_best = ck["epoch"] + 1, ck["best_val_acc"], ck["since_best"]
        history = list(ck["history"])

    ddp_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
           if cfg.amp and device.type == "cuda" else nullcontext())
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if data.notes:
            atomic_write_text(out / "data.json", json.dumps(data.notes, indent=1))

    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.time()
        ddp_model.train()
        if sample_w is not None:
            order = torch.multinomial(sample_w, len(sample_w), replacement=True, generator=g_cpu)
        else:
            order = torch.randperm(len(y_train), generator=g_cpu)
        order = order[rank::world][: steps_per_epoch * cfg.batch_size].to(device)
        batches = range(steps_per_epoch)
        if cfg.progress and main_proc:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        n_seen = 0
        for step in batches:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            crops = augment_batch(x_train[idx], cfg.augment, g_aug)
            x = normalize(crops, meta)
            y = y_train[idx]
            with amp:
                logits = ddp_model(x)
                soft = teacher.soft_targets(crops, cfg.distill_temperature) if teacher else None
            loss = F.cross_entropy(logits.float(), y, weight=class_w, label_smoothing=cfg.label_smoothing)
            if soft is not None:
                loss = ((1 - cfg.distill_alpha) * loss
                        + cfg.distill_alpha * distillation_loss(logits, soft, cfg.distill_temperature))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_batch_sched:
                sched.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
            n_seen += len(y)
        val = evaluate_arrays(model, meta, x_val, y_val)
        val_acc = val["val_acc"]
        if sched is not None and not per_batch_sched:
            sched.step(val_acc)
        record = {"epoch": epoch, "train_loss": loss_sum.item() / steps_per_epoch,
                  "train_acc": correct.item() / n_seen, **val, "lr": opt.param_groups[0]["lr"],
                  "seconds": round(time.time() - t0, 2), "images_per_s": round(n_seen * world / (time.time() - t0), 1)}
        history.append(record)
        improved = val_acc > best
        if improved:
            best, since_best = val_acc, 0
        else:
            since_best += 1
        if main_proc:
            state = {"config": to_dict(cfg), "epoch": epoch, "metrics": record, "best_val_acc": best}
            if improved:
                save_torch(make_checkpoint(model, meta, **state), out / "best.pt")
            save_torch(make_checkpoint(
                model, meta, **state, optimizer=opt.state_dict(),
                scheduler=sched.state_dict() if sched is not None else None,
                rng=_rng_state(gens), since_best=since_best, history=history), last_path)
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            print(f"epoch {epoch}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
                  f"val loss {val['val_loss']:.4f} acc {val_acc:.4f} balanced {val['val_balanced_acc']:.4f}"
                  f" | lr {record['lr']:.2e} | {record['images_per_s']:.0f} img/s{'  *best*' if improved else ''}",
                  flush=True)
        if cfg.early_stopping and since_best >= cfg.early_stopping:
            stopped_early = True
            if main_proc:
                print(f"early stopping: no improvement in {since_best} epochs", flush=True)
            break
    if main_proc and history:
        _plot_curves(history, out / "curves.png")
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"out": str(out), "best_val_acc": best, "epochs_run": len(history),
            "epochs_this_run": len(history) - (start_epoch - 1), "stopped_early": stopped_early, "history": history}
