"""The training loop, readable top to bottom: ``fit(cfg)`` checks and sets up the run, builds its state
(fresh, fine-tuned or resumed), then per epoch calls ``train_one_epoch``, ``validate`` and ``save_epoch``.

Protocol: train on ``cfg.train_split`` (Training), choose the schedule, early stopping and the best
checkpoint on ``cfg.val_split`` (PublicTest). PrivateTest is never touched here. With
``aux_sampling=per_batch`` each batch also holds a fixed share of auxiliary faces (AffectNet), the
auxiliary held-out part is validated every epoch too (``aux_val_*``), and ``cfg.select_on`` picks what
selection follows (``select_acc``: PublicTest, the held-out part, or their mean).
Runs under ``torchrun --nproc_per_node=N`` with DistributedDataParallel (gloo on CPU, nccl on GPU); only
rank 0 logs and saves. Progress goes to the ``ferkit.training.loop`` logger (the CLI shows it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from ferkit.config import TrainConfig, check_choices, check_ranges, to_dict
from ferkit.data.augment import augment_batch
from ferkit.data.load import load_dataset
from ferkit.errors import ConfigError, ModelError
from ferkit.io import atomic_write, atomic_write_text
from ferkit.models.checkpoint import load_checkpoint, save_torch
from ferkit.models.registry import ModelMeta, create_model
from ferkit.models.transforms import center_crop, normalize
from ferkit.runtime import resolve_device
from ferkit.training.checkpoint import make_checkpoint, previous_path, save_keeping_previous
from ferkit.training.data import TrainingData, prepare_training_data
from ferkit.training.distill import check_distill_config
from ferkit.training.tasks import ClassificationTask, make_task

log = logging.getLogger(__name__)

# What an interrupted run may change when it resumes; everything else must match the run's config.
RESUME_MAY_CHANGE = frozenset(
    {
        "epochs",
        "early_stopping",
        "threads",
        "device",
        "progress",
        "out",
        "data",
        "skip_bad",
        "channels_last",
        "compile",
    }
)
NO_DATA = "no training data: pass --data PATH or data=PATH"
# What a checkpoint holds besides its weights when it can continue a run (best.pt holds none of it).
RESUME_KEYS = ("config", "epoch", "optimizer", "rng", "best_val_acc", "since_best", "history")
NO_SCORE = -1.0  # the best selection accuracy before any epoch (every accuracy beats it)


# ---------------------------------------------------------------------------------------------- setup


@dataclass
class Runtime:
    """Where this process trains: its device and its place among torchrun's processes."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """The device, DDP (switched on by torchrun's ``WORLD_SIZE``) and the CPU thread count."""
    rank, local_rank, world = _dist_info()
    device = resolve_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Runtime(device, rank, world)


def check_run(cfg: TrainConfig, resume: bool, have_data: bool) -> None:
    """ConfigError for a run that cannot start: its folder, its data, its choices and settings."""
    out = Path(cfg.out)
    saved = [p for p in (out / "last.pt", previous_path(out / "last.pt")) if p.exists()]
    if saved and not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not saved:
        raise ConfigError(f"nothing to resume: {out / 'last.pt'} does not exist")
    if not have_data and cfg.data is None:
        raise ConfigError(NO_DATA)
    check_choices(cfg)
    check_ranges(cfg)  # configs built in Python too (loaded ones were checked by from_dict)
    check_distill_config(cfg.teacher)


def load_training_data(cfg: TrainConfig) -> TrainingData:
    """``cfg.data`` read (``cfg.skip_bad``: skipping unreadable files) and prepared for training."""
    if cfg.data is None:
        raise ConfigError(NO_DATA)
    return prepare_training_data(cfg, load_dataset(cfg.data, skip_bad=cfg.skip_bad))


@dataclass
class DeviceData:
    """The whole dataset on the training device as uint8; batches are augmented there."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    class_weights: torch.Tensor | None = None  # for class-weighted cross-entropy (on the device)
    sample_weights: torch.Tensor | None = None  # for a class-balanced sampler (on the CPU)
    x_aux: torch.Tensor | None = None  # aux_sampling=per_batch: the auxiliary training part
    y_aux: torch.Tensor | None = None
    aux_weights: torch.Tensor | None = None  # aux_balance=sampler (on the CPU)
    x_aux_val: torch.Tensor | None = None  # the auxiliary held-out part (second validation set)
    y_aux_val: torch.Tensor | None = None


def to_device(data: TrainingData, device: torch.device) -> DeviceData:
    def put(a: np.ndarray | None, dtype: Any = None) -> Any:
        if a is None:
            return None
        return torch.from_numpy(np.ascontiguousarray(a if dtype is None else a.astype(dtype))).to(device)

    return DeviceData(
        put(data.train_images),
        put(data.train_labels, np.int64),
        put(data.val_images),
        put(data.val_labels, np.int64),
        torch.tensor(data.class_weights, device=device) if data.class_weights is not None else None,
        torch.tensor(data.sample_weights) if data.sample_weights is not None else None,
        put(data.aux_images),
        put(data.aux_labels, np.int64),
        torch.tensor(data.aux_sample_weights) if data.aux_sample_weights is not None else None,
        put(data.aux_val_images),
        put(data.aux_val_labels, np.int64),
    )


def aux_per_batch(cfg: TrainConfig, data: DeviceData) -> int:
    """Auxiliary faces in each batch: round(batch x r / (1 + r)) for aux_ratio r, at least one FER2013
    face left; 0 without an auxiliary training part."""
    if data.x_aux is None or len(data.x_aux) == 0 or cfg.aux_ratio <= 0:
        return 0
    k = round(cfg.batch_size * cfg.aux_ratio / (1 + cfg.aux_ratio))
    return min(max(k, 1), cfg.batch_size - 1)


def initial_meta(cfg: TrainConfig, data: TrainingData) -> ModelMeta:
    """The model's metadata, with normalisation measured on the training pixels."""
    pixels = data.train_images.astype(np.float32) / 255.0
    return ModelMeta(
        name=cfg.model,
        args=dict(cfg.model_args),
        image_size=int(data.train_images.shape[-1]),
        input_size=cfg.augment.crop,
        mean=round(float(pixels.mean()), 4),
        std=round(float(pixels.std()), 4),
    )


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optimizer: unknown {cfg.optimizer!r}; use sgd, adam or adamw")


def make_scheduler(
    cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int, kind: str | None = None
) -> Any:
    """``cfg.scheduler`` (or ``kind``): plateau steps per epoch on validation accuracy; cosine (linear
    warm-up, then cosine to zero) and onecycle (torch's OneCycleLR up to ``cfg.lr``, warm-up fraction
    ``warmup_epochs / epochs`` or 0.3; momentum stays ``cfg.momentum``) step per batch."""
    kind = kind or cfg.scheduler
    total = max(1, cfg.epochs * steps_per_epoch)
    if kind == "plateau":
        return ReduceLROnPlateau(opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    if kind == "cosine":
        warm = cfg.warmup_epochs * steps_per_epoch

        def lr_at(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        return LambdaLR(opt, lr_at)
    if kind == "onecycle":
        pct = min(0.9, cfg.warmup_epochs / max(1, cfg.epochs)) if cfg.warmup_epochs else 0.3
        # One step more than the batches: the run's last step lands on the end of the cycle, not past it.
        return OneCycleLR(opt, max_lr=cfg.lr, total_steps=total + 1, pct_start=pct, cycle_momentum=False)
    if kind == "none":
        return None
    raise ConfigError(f"scheduler: unknown {kind!r}; use plateau, cosine, onecycle or none")


# ------------------------------------------------------------------------------------------ run state


@dataclass
class RunState:
    """Everything that changes while a run trains, and everything ``last.pt`` saves of it."""

    model: torch.nn.Module
    meta: ModelMeta
    opt: torch.optim.Optimizer
    sched: Any
    gens: dict[str, torch.Generator]  # "cpu": epoch order (same on all ranks), "aug": augmentation
    steps_per_epoch: int
    start_epoch: int = 1
    best: float = NO_SCORE
    since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def per_batch(self) -> bool:
        """Whether the scheduler steps per batch (cosine, onecycle) rather than per epoch (plateau)."""
        return self.sched is not None and not isinstance(self.sched, ReduceLROnPlateau)

    def add(self, record: dict[str, Any]) -> bool:
        """Append an epoch's record; True when it is the run's best so far (``best_epoch``)."""
        self.history.append(record)
        improved = best_epoch(self.history) is record
        score = selection_accuracy(record)
        self.best, self.since_best = (score, 0) if improved else (self.best, self.since_best + 1)
        return improved


def selection_accuracy(record: dict[str, Any]) -> float:
    """What model selection compares in an epoch's record: ``select_acc`` when there is an auxiliary
    validation set, else PublicTest's ``val_acc``."""
    return record.get("select_acc", record["val_acc"])


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the epoch a run selects (its ``best.pt``): the first whose selection accuracy beats
    every earlier epoch's, so the first maximum (a tie keeps the earlier epoch); None for no epochs."""
    best, top = None, NO_SCORE
    for record in history:
        if selection_accuracy(record) > top:
            best, top = record, selection_accuracy(record)
    return best


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state[k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the fields it lacks (added to ferkit since) filled in, at any depth."""
    out = dict(defaults)
    for k, v in saved.items():
        out[k] = (
            _with_defaults(v, defaults[k]) if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
        )
    return out


def check_resumable(ckpt: dict[str, Any], path: Path) -> None:
    """ModelError when ``ckpt`` is a model-only checkpoint (a best.pt), not a training state."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise ModelError(
            f"{path} holds model weights only (no {', '.join(missing)}; a copy of best.pt?), not a "
            f"training state: --resume continues from the last.pt its run wrote; to train on from "
            f"these weights, use finetune_from={path} with another --out"
        )


def load_resume_checkpoint(out: Path) -> tuple[dict[str, Any], Path]:
    """``out/last.pt``; when it is corrupt, truncated or missing, the state saved before it
    (``last.prev.pt``), with a warning. ModelError when neither can be used."""
    last = out / "last.pt"
    problems = []
    for path in (last, previous_path(last)):
        if not path.exists():
            problems.append(f"{path} does not exist")
            continue
        try:
            ckpt = load_checkpoint(path)
        except ModelError as e:
            problems.append(str(e))
            continue
        check_resumable(ckpt, path)
        if problems:
            log.warning("%s; resuming from %s (epoch %s) instead", problems[0], path, ckpt["epoch"])
        return ckpt, path
    raise ModelError(f"cannot resume: {problems[0]}; no earlier state to fall back to ({problems[1]})")


def _check_same_settings(cfg: TrainConfig, ckpt: dict[str, Any]) -> None:
    run_cfg = _with_defaults(ckpt["config"], to_dict(TrainConfig()))  # fields added since take their defaults
    changed = [k for k, v in to_dict(cfg).items() if k not in RESUME_MAY_CHANGE and run_cfg.get(k) != v]
    if changed:
        raise ConfigError(
            f"--resume with settings that differ from the run's own ({', '.join(changed)}); "
            f"only {', '.join(sorted(RESUME_MAY_CHANGE))} may change"
        )


def _scheduler_kind(cfg: TrainConfig, ckpt: dict[str, Any] | None) -> str:
    # Runs started before onecycle existed ran the cosine schedule under its name: they continue with it.
    if cfg.scheduler == "onecycle" and ckpt and "lr_lambdas" in (ckpt.get("scheduler") or {}):
        log.warning(
            "this run started when scheduler=onecycle ran the cosine schedule; it continues with cosine"
        )
        return "cosine"
    return cfg.scheduler


def _load_finetune(cfg: TrainConfig, path: str, model: torch.nn.Module, meta: ModelMeta) -> None:
    src = load_checkpoint(path)
    try:
        model.load_state_dict(src["model"])
    except RuntimeError as e:
        raise ModelError(f"finetune_from: weights do not fit {cfg.model}: {str(e).splitlines()[0]}") from None
    meta.mean, meta.std = src["meta"]["mean"], src["meta"]["std"]


def _restore(state: RunState, ckpt: dict[str, Any], path: Path) -> None:
    try:
        state.model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ModelError(f"{path} does not fit {state.meta.name}: {str(e).splitlines()[0]}") from None
    state.opt.load_state_dict(ckpt["optimizer"])
    if state.sched is not None and ckpt.get("scheduler"):
        span = {k: v for k, v in vars(state.sched).items() if k in ("total_steps", "_schedule_phases")}
        state.sched.load_state_dict(ckpt["scheduler"])
        vars(state.sched).update(span)  # onecycle: the schedule spans this run's epochs (they may change)
    _set_rng_state(ckpt["rng"], state.gens)
    state.meta = ModelMeta(**ckpt["meta"])
    state.start_epoch, state.best, state.since_best = (
        ckpt["epoch"] + 1,
        ckpt["best_val_acc"],
        ckpt["since_best"],
    )
    state.history = list(ckpt["history"])


def new_state(
    cfg: TrainConfig, meta: ModelMeta, rt: Runtime, n_train: int, resume: bool, n_aux: int = 0
) -> RunState:
    """The run's model, optimizer, scheduler and RNGs: fresh, fine-tuned from ``cfg.finetune_from``, or
    (``resume``) restored from ``last.pt``. ``n_aux``: auxiliary faces per batch (one epoch is one pass
    over the ``n_train`` FER2013 faces, ``batch_size - n_aux`` at a time)."""
    ckpt, path = load_resume_checkpoint(Path(cfg.out)) if resume else (None, None)
    if ckpt is not None:
        _check_same_settings(cfg, ckpt)
    model = create_model(cfg.model, **cfg.model_args).to(rt.device)
    if cfg.finetune_from and not resume:
        _load_finetune(cfg, cfg.finetune_from, model, meta)
    steps = max(1, n_train // ((cfg.batch_size - n_aux) * rt.world))
    opt = make_optimizer(cfg, model.parameters())
    sched = make_scheduler(cfg, opt, steps, kind=_scheduler_kind(cfg, ckpt))
    gens = {
        "cpu": torch.Generator().manual_seed(cfg.seed),
        "aug": torch.Generator(device=rt.device).manual_seed(cfg.seed * 1000 + 17 + rt.rank),
    }
    state = RunState(model, meta, opt, sched, gens, steps)
    if ckpt is not None and path is not None:
        _restore(state, ckpt, path)
    return state


# ---------------------------------------------------------------------------------------------- epoch


def _epoch_order(
    cfg: TrainConfig, rt: Runtime, state: RunState, data: DeviceData, per_batch: int
) -> torch.Tensor:
    """This rank's training indices for one epoch (weighted with replacement for the sampler)."""
    g = state.gens["cpu"]
    if data.sample_weights is not None:
        order = torch.multinomial(
            data.sample_weights, len(data.sample_weights), replacement=True, generator=g
        )
    else:
        order = torch.randperm(len(data.y_train), generator=g)
    return order[rt.rank :: rt.world][: state.steps_per_epoch * per_batch].to(rt.device)


def _aux_order(rt: Runtime, state: RunState, data: DeviceData, per_batch: int) -> torch.Tensor:
    """This rank's auxiliary indices for one epoch: class-weighted draws (aux_balance=sampler) or
    successive permutations of the auxiliary part, as many as the epoch's batches need."""
    assert data.y_aux is not None
    g, need = state.gens["cpu"], state.steps_per_epoch * per_batch * rt.world
    if data.aux_weights is not None:
        order = torch.multinomial(data.aux_weights, need, replacement=True, generator=g)
    else:
        n = len(data.y_aux)
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-need // n))])[:need]
    return order[rt.rank :: rt.world].to(rt.device)


def _autocast(cfg: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    """Mixed precision (bf16) on GPU when ``cfg.amp``; nothing otherwise."""
    if cfg.amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _batches(cfg: TrainConfig, rt: Runtime, epoch: int, steps: int) -> Any:
    if not (cfg.progress and rt.main):
        return range(steps)
    from tqdm import tqdm  # a progress bar only when asked for

    return tqdm(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True)


def train_one_epoch(
    cfg: TrainConfig,
    rt: Runtime,
    state: RunState,
    task: ClassificationTask,
    net: torch.nn.Module,
    data: DeviceData,
    epoch: int,
) -> dict[str, float]:
    """One pass: augment each batch on the device, step ``task``'s loss; returns loss, accuracy, images."""
    net.train()
    k = aux_per_batch(cfg, data)
    bs = cfg.batch_size - k  # FER2013 faces per batch; k auxiliary faces join them
    order = _epoch_order(cfg, rt, state, data, bs)
    aux_order = _aux_order(rt, state, data, k) if k else None
    amp = _autocast(cfg, rt.device)
    loss_sum = torch.zeros((), device=rt.device)
    correct = torch.zeros((), device=rt.device)
    n_seen = 0
    for step in _batches(cfg, rt, epoch, state.steps_per_epoch):
        idx = order[step * bs : (step + 1) * bs]
        faces, y = data.x_train[idx], data.y_train[idx]
        if aux_order is not None and data.x_aux is not None and data.y_aux is not None:
            aidx = aux_order[step * k : (step + 1) * k]
            faces, y = torch.cat([faces, data.x_aux[aidx]]), torch.cat([y, data.y_aux[aidx]])
        crops = augment_batch(faces, cfg.augment, state.gens["aug"])
        x = normalize(crops, state.meta)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            logits = net(x)
            loss = task.loss(logits, y, crops)
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        state.opt.step()
        if state.per_batch:
            state.sched.step()
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == y).sum()
        n_seen += len(y)
    return {
        "train_loss": loss_sum.item() / state.steps_per_epoch,
        "train_acc": correct.item() / n_seen,
        "images": n_seen,
    }


def batched_logits(
    model: torch.nn.Module, meta: ModelMeta, images: torch.Tensor, batch_size: int = 512
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, float logits) per batch of uint8 faces on the device: centre crop, eval mode, no grad."""
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            yield i, model(center_crop(normalize(images[i : i + batch_size], meta), meta.input_size)).float()


@torch.inference_mode()
def evaluate_arrays(
    model: torch.nn.Module, meta: ModelMeta, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> dict[str, float]:
    """Single centre-crop accuracy, balanced accuracy and loss on uint8 images already on the device."""
    preds, loss = [], 0.0
    for i, logits in batched_logits(model, meta, images, batch_size):
        loss += F.cross_entropy(logits, labels[i : i + batch_size], reduction="sum").item()
        preds.append(logits.argmax(1))
    p = torch.cat(preds)
    recalls = [(p[labels == c] == c).float().mean().item() for c in labels.unique()]
    return {
        "val_loss": loss / len(labels),
        "val_acc": (p == labels).float().mean().item(),
        "val_balanced_acc": float(np.mean(recalls)),
    }


def selection_score(cfg: TrainConfig, val: dict[str, float]) -> float:
    """What selection follows when there is an auxiliary validation set (``cfg.select_on``)."""
    if cfg.select_on == "val":
        return val["val_acc"]
    if cfg.select_on == "aux_val":
        return val["aux_val_acc"]
    return (val["val_acc"] + val["aux_val_acc"]) / 2


def validate(cfg: TrainConfig, state: RunState, data: DeviceData) -> dict[str, float]:
    """Validation metrics on PublicTest and, when there is one, the auxiliary held-out part (``aux_``
    keys, and ``select_acc``); a plateau scheduler steps on the accuracy selection follows."""
    val = evaluate_arrays(state.model, state.meta, data.x_val, data.y_val)
    if data.x_aux_val is not None and data.y_aux_val is not None and len(data.y_aux_val):
        aux = evaluate_arrays(state.model, state.meta, data.x_aux_val, data.y_aux_val)
        val.update({f"aux_{k}": v for k, v in aux.items()})
        val["select_acc"] = selection_score(cfg, val)
    if state.sched is not None and not state.per_batch:
        state.sched.step(selection_accuracy(val))
    return val


def epoch_line(record: dict[str, Any], improved: bool) -> str:
    """The one line logged per epoch."""
    aux = (
        f" | aux val acc {record['aux_val_acc']:.4f} balanced {record['aux_val_balanced_acc']:.4f}"
        f" | select {record['select_acc']:.4f}"
        if "aux_val_acc" in record
        else ""
    )
    return (
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
        f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f} "
        f"balanced {record['val_balanced_acc']:.4f}{aux}"
        f" | lr {record['lr']:.2e} | {record['images_per_s']:.0f} img/s{'  *best*' if improved else ''}"
    )


# ----------------------------------------------------------------------------------------------- save


def start_run_folder(cfg: TrainConfig, data: TrainingData) -> None:
    """``out/config.yaml`` (what ``--resume`` reads back) and ``out/data.json`` (counts, skipped files)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if data.notes:
        atomic_write_text(out / "data.json", json.dumps(data.notes, indent=1))


def save_epoch(cfg: TrainConfig, state: RunState, record: dict[str, Any], improved: bool) -> None:
    """``best.pt`` when improved, ``last.pt`` (full state; the one it replaces kept as ``last.prev.pt``),
    and ``metrics.jsonl``."""
    out = Path(cfg.out)
    facts = {"config": to_dict(cfg), "epoch": record["epoch"], "metrics": record, "best_val_acc": state.best}
    if improved:
        save_torch(make_checkpoint(state.model, state.meta, **facts), out / "best.pt")
    save_keeping_previous(
        make_checkpoint(
            state.model,
            state.meta,
            **facts,
            optimizer=state.opt.state_dict(),
            scheduler=state.sched.state_dict() if state.sched is not None else None,
            rng=_rng_state(state.gens),
            since_best=state.since_best,
            history=state.history,
        ),
        out / "last.pt",
    )
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation, as a PNG."""
    import matplotlib  # heavy: only once a run ends

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="validation")
    b.plot(ep, [h["train_acc"] for h in history], label="train (augmented)")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.plot(ep, [h["val_balanced_acc"] for h in history], label="validation, balanced")
    if all("aux_val_acc" in h for h in history):
        a.plot(ep, [h["aux_val_loss"] for h in history], label="auxiliary held-out")
        b.plot(ep, [h["aux_val_acc"] for h in history], label="auxiliary held-out")
        b.plot(ep, [h["aux_val_balanced_acc"] for h in history], label="auxiliary held-out, balanced")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy"), a.legend()
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


# ------------------------------------------------------------------------------------------ net, time


def _warm_up(cfg: TrainConfig, rt: Runtime, net: torch.nn.Module, model: torch.nn.Module) -> None:
    """One forward and backward pass of ``net`` on a zero batch of the training shape, so that
    ``torch.compile`` compiles (or fails) here rather than in the first step. The weights, the
    batch-norm statistics, the gradients and the random state are left as they were."""
    crop = cfg.augment.crop
    x = torch.zeros(cfg.batch_size, 1, crop, crop, device=rt.device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        cuda = [rt.device] if rt.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), _autocast(cfg, rt.device):
            net(x).float().mean().backward()
    finally:
        with torch.no_grad():
            for b, old in zip(model.buffers(), saved):
                b.copy_(old)
        model.zero_grad(set_to_none=True)


def training_net(cfg: TrainConfig, rt: Runtime, model: torch.nn.Module) -> torch.nn.Module:
    """What the training steps call: ``model`` (channels-last when ``cfg.channels_last``), wrapped in DDP
    under torchrun, compiled when ``cfg.compile``. ``model`` stays the plain module that is saved, so the
    checkpoints' keys do not change; a compilation that fails leaves the eager network, with a warning."""
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    net: torch.nn.Module = model
    if rt.distributed:
        net = DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if not cfg.compile:
        return net
    t0 = time.time()
    try:
        compiled: Any = torch.compile(net)
        _warm_up(cfg, rt, compiled, model)
    except Exception as e:  # noqa: BLE001 - compilers fail in many ways; training goes on without one
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        log.warning("torch.compile failed (%s: %s); training without it", type(e).__name__, first[:300])
        return net
    if rt.main:
        log.info("torch.compile: compiled the training network in %.1f s", time.time() - t0)
    return compiled


def out_of_time(deadline: float | None, rt: Runtime) -> bool:
    """Whether the wall-clock ``deadline`` (a ``time.time()`` value) has passed; rank 0 decides for all."""
    if deadline is None:
        return False
    late = time.time() >= deadline
    if rt.distributed:
        flag = torch.tensor([float(late)], device=rt.device)
        dist.broadcast(flag, 0)
        late = bool(flag.item())
    return late


# ------------------------------------------------------------------------------------------------ fit


Monitor = Callable[[torch.nn.Module, ModelMeta], dict[str, float]]


def fit(
    cfg: TrainConfig,
    resume: bool = False,
    data: TrainingData | None = None,
    monitor: Monitor | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Train ``cfg.model`` as configured; returns a summary. Writes to ``cfg.out``:
    ``last.pt`` (full state, for --resume; the one before it as ``last.prev.pt``), ``best.pt`` (best
    validation accuracy), ``metrics.jsonl``, ``config.yaml``, ``data.json``, ``curves.png``.

    ``monitor(model, meta)``, called after each epoch's validation, adds figures to the epoch's record
    (e.g. accuracy on sets that must never steer training); selection and early stopping never read them.
    ``deadline`` (a ``time.time()`` value): a wall-clock budget; the run stops at the end of the first
    epoch that ends after it (``stopped_by_deadline`` in the summary), its files written as usual.
    """
    check_run(cfg, resume, have_data=data is not None)
    rt = setup_runtime(cfg)
    torch.manual_seed(cfg.seed + rt.rank)
    if data is None:
        data = load_training_data(cfg)
    if len(data.train_labels) == 0 or len(data.val_labels) == 0:
        raise ConfigError("training or validation split is empty")
    device_data = to_device(data, rt.device)
    n_aux = aux_per_batch(cfg, device_data)
    state = new_state(cfg, initial_meta(cfg, data), rt, len(device_data.y_train), resume, n_aux)
    task = make_task(cfg, device_data.class_weights, rt.device, state.meta.classes)
    net = training_net(cfg, rt, state.model)
    if rt.main:
        start_run_folder(cfg, data)

    first, stopped_early, stopped_by_deadline = state.start_epoch, False, False
    for epoch in range(first, cfg.epochs + 1):
        t0 = time.time()
        train = train_one_epoch(cfg, rt, state, task, net, device_data, epoch)
        val = validate(cfg, state, device_data)
        record = {
            "epoch": epoch,
            "train_loss": train["train_loss"],
            "train_acc": train["train_acc"],
            **val,
            "lr": state.opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 2),
            "images_per_s": round(train["images"] * rt.world / (time.time() - t0), 1),
        }
        if monitor is not None and rt.main:
            record.update(monitor(state.model, state.meta))
            state.model.train()
        improved = state.add(record)
        if rt.main:
            save_epoch(cfg, state, record, improved)
            log.info(epoch_line(record, improved))
        if cfg.early_stopping and state.since_best >= cfg.early_stopping:
            stopped_early = True
            if rt.main:
                log.info("early stopping: no improvement in %d epochs", state.since_best)
            break
        if epoch < cfg.epochs and out_of_time(deadline, rt):
            stopped_by_deadline = True
            if rt.main:
                log.info("wall-clock budget spent: stopping after epoch %d of %d", epoch, cfg.epochs)
            break

    if rt.main and state.history:
        plot_curves(state.history, Path(cfg.out) / "curves.png")
    if rt.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return {
        "out": str(Path(cfg.out)),
        "best_val_acc": state.best,
        "epochs_run": len(state.history),
        "epochs_this_run": len(state.history) - (first - 1),
        "stopped_early": stopped_early,
        "stopped_by_deadline": stopped_by_deadline,
        "history": state.history,
    }
