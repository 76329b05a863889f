"""The study's recipe at full size on one GPU, in a fixed wall-clock budget (issue 15, item 4).

Stages, each with ferkit's own ``fit`` on the official split (train on Training, select on PublicTest,
report PrivateTest, which nothing here trains or selects on):

1. ``paper``: the study's VGGNet (``vgg_fer``, 29.9M parameters) with ``configs/paper.yaml``'s recipe
   (SGD, Nesterov momentum 0.9, weight decay 1e-4, its augmentation, 40x40 crops), from scratch.
2. ``ros``, ``smote``, ``smote_tomek``: the study's resampled members (``balance=``; resampling touches
   Training only), fine-tuned from the paper model (``--members finetune``, the default) or trained from
   scratch (``--members scratch``). The resampling runs in a separate process on the CPU while the GPU
   trains the paper model.
3. ``ensemble``: the three members, mean of softmax (``ferkit ensemble build``'s default).
4. ``student``: ``--student`` (default ``vgg_fer_w32``, the bundled model's architecture; ``sepres_fer``
   is the fast candidate) distilled from the ensemble (``teacher=``), from scratch.
5. ``export``: the student's checkpoint and its ONNX graph (ferkit's export, parity-checked on real faces,
   centre crop built in), and the graph's PrivateTest accuracy and agreement with the checkpoint.

Every model is evaluated on PublicTest and PrivateTest (and PrivateTest without its rows duplicated in
Training), centre and ten-crop, top-1/2/3 and balanced accuracy. Under ``--out`` (the run tool's $OUT)
it writes 5 files (the tool takes 8 of at most 16 MiB): ``metrics.json`` (rewritten after every stage:
a run cut short keeps what it has), ``run.log``, ``curves.png`` (each stage's loss and accuracy per
epoch), ``student.pt`` (13 MB for vgg_fer_w32) and ``student.onnx``. The 120 MB VGGNets stay in
``--work`` (default: a new folder on /dev/shm when it has 4 GB free, removed at the end).

Choices
-------
- Batch 256 (the study: 64), lr by the linear scaling rule (Goyal et al. 2017): 0.01 x 256 / 64 = 0.04,
  3 warm-up epochs, then cosine to zero over the epochs the stage's time allows (the study's plateau
  schedule needs hundreds of epochs to anneal; a budget needs a schedule that ends when it does).
  A step of 256 is 0.9% of Training, near the 0.6% (8k of ImageNet's 1.28M images) up to which that rule
  was shown to keep accuracy, so larger batches are not taken; and 256 keeps the GPU busy where 64 would
  leave it waiting on kernel launches (a vgg_fer step of 64 crops is about 0.7 ms of arithmetic).
  Not measured: no GPU has been lent to this project yet.
- Members fine-tuned from the paper model, as ``scripts/study_ensemble_cpu.sh`` does at the CPU budget:
  each starts from the paper model, so the ensemble cannot get under-trained members if the GPU is
  slower than planned. lr 0.01 (a quarter of the peak), 1 warm-up epoch and cosine: a restart large
  enough to move them apart; seeds of their own. From scratch (``--members scratch``) they would be
  more diverse but need the paper stage's time three times over (and 1.76x its data per epoch).
- Shares of the training time (the budget less setup and ``--reserve``): paper 42%, each member 10%,
  student 28% (scratch: 20% each). A stage's deadline is its share of what is left when it starts, so
  time one stage leaves goes to the next; ``fit(deadline=...)`` stops at the end of the epoch that passes
  it. The epoch count (the cosine's length) is planned from a 2-epoch calibration fit of the paper and
  student configurations on their full data (validation and checkpoints included); the members take
  the paper run's own epoch times, scaled by their data.
- bf16 autocast, channels-last, data resident on the GPU. ``torch.compile`` (``--compile auto``, on a
  GPU) compiles the VGGNet, whose one compilation the paper stage and the three members share, and not
  the student: compiled once for one stage, its step mostly the teacher's three uncompiled forward passes.
- Data: ``gpu_data/fer2013.npz`` from ``scripts/pack_fer2013.py`` (lossless WebP mosaics). Lossless it is
  56.1 MB, which with the repository's 18 MB exceeds the run tool's 64 MiB; so PublicTest and PrivateTest
  travel bit-exact (their duplicate masks too) and Training within +-1 grey level (43.7 MB in all).

Figures (2026-12-02)
--------------------
Measured on this 2-vCPU VM while a long training run kept both cores busy (load average 3-4; this at
``nice -n 19``, one thread): lower bounds. fit's images/s of epoch 2 on 512 random Training faces, batch 64:

    python scripts/gpu_full_run.py --device cpu --batch 64 --measure 512 [--student sepres_fer]

    vgg_fer (paper and members)                  16.8-18.2 images/s  (quiet, 2 threads: 73.5, RESULTS.md)
    vgg_fer_w32 student, teacher 3 x vgg_fer     16.6 images/s
    sepres_fer student, teacher 3 x vgg_fer      18.9 images/s  (the teacher's passes dominate the step)

Planned on the H200, an estimate (never measured here): a vgg_fer training step costs 2.1 GFLOP per 40x40
crop (0.70 forward, x3): 60 TFLOP per Training epoch, 106 per resampled one (50,505 images); the
student's is 2.6 GFLOP per crop (0.5 for vgg_fer_w32, 2.1 for the teacher's three forward passes;
torch.utils.flop_counter). At a quarter of the H200's measured 790 TFLOP/s bf16 that is 0.3, 0.53 and
0.37 s of arithmetic per epoch; each vgg_fer epoch also writes ~360 MB of checkpoints with their
checksums (1.0-1.7 s here; guessed 0.3-0.6 s there). So about 0.8 s per paper epoch (75 epochs a
minute), 1.0 s per member epoch (60 a minute) and 0.5 s per student epoch (120 a minute), uncertain by a
factor of two: with 540 s, roughly 150 paper epochs, 40 per member and 250 for the student (capped at
300). The calibration fits replace these guesses with measurements on the day.

On the day: one call of the run tool
------------------------------------
Here, once (the pack, the two wheels the GPU image lacks, gpu_data/ in .git/info/exclude):
``python scripts/pack_fer2013.py --data ../shared/data/fer2013``. Then, with the machine's start, about
11 of the 15 minutes of device time (too few left to rerun it; give the machine back after)::

    command: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site
      gpu_data/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
      OMP_WAIT_POLICY=PASSIVE || exit; nvidia-smi --query-gpu=name,memory.total,driver_version
      --format=csv,noheader; python3 scripts/gpu_full_run.py --data gpu_data/fer2013.npz --out $OUT
      --budget 540
    carry: ["gpu_data"]
    timeout_s: 600

(the command is one line, 370 characters; the lines above are wrapped for reading).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
log = logging.getLogger("gpu_full_run")

STAGES = ("paper", "ros", "smote", "smote_tomek", "student")
MEMBERS = ("ros", "smote", "smote_tomek")
SHARES = {
    "finetune": {"paper": 0.42, "ros": 0.10, "smote": 0.10, "smote_tomek": 0.10, "student": 0.28},
    "scratch": {"paper": 0.20, "ros": 0.20, "smote": 0.20, "smote_tomek": 0.20, "student": 0.20},
}
SEEDS = {"paper": 0, "ros": 1, "smote": 2, "smote_tomek": 3, "student": 4}
BASE_LR, BASE_BATCH = 0.01, 64  # the study's recipe (configs/paper.yaml)
MEMBER_LR = 0.25  # fine-tuning members restart at this fraction of the peak lr (0.01 at batch 256)
CALIBRATION_EPOCHS = 2
KEEP = ("n", "top1", "top2", "top3", "balanced_accuracy")


# ----------------------------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="gpu_data/fer2013.npz", help="the pack from scripts/pack_fer2013.py")
    ap.add_argument("--out", default=os.environ.get("OUT") or "outputs/gpu_full_run")
    ap.add_argument("--work", default=None, help="run folders (default: a new folder on /dev/shm or tmp)")
    ap.add_argument("--budget", type=float, default=540.0, help="wall-clock seconds for everything")
    ap.add_argument("--reserve", type=float, default=40.0, help="seconds kept for the last evaluation")
    ap.add_argument("--model", default="vgg_fer", help="the paper stage's and the members' architecture")
    ap.add_argument("--student", default="vgg_fer_w32", help="the distilled model (e.g. sepres_fer)")
    ap.add_argument("--members", default="finetune", choices=sorted(SHARES))
    ap.add_argument("--batch", type=int, default=256, help="lr follows: 0.01 x batch / 64")
    ap.add_argument("--max-epochs", type=int, default=300, help="cap on any stage's planned epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--tta", default="center,ten_crop", help="test-time crops evaluated, comma-separated")
    ap.add_argument(
        "--measure",
        type=int,
        default=0,
        metavar="N",
        help="only measure fit's images/s of --model and of --student (with a teacher of three --model) "
        "on N Training faces, 2 epochs each, and exit",
    )
    args = ap.parse_args(argv)
    for name in ("budget", "batch", "max_epochs"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    from ferkit.errors import ModelError
    from ferkit.models.registry import require_model

    for flag in ("model", "student"):
        try:
            require_model(getattr(args, flag))
        except ModelError as e:
            ap.error(f"--{flag}: {e}")
    return args


def start_logging(out: Path) -> list[logging.Handler]:
    """Everything logged (ferkit's training log too) to stderr and to ``out/run.log``."""
    out.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(out / "run.log", "w"),
    ]
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    return handlers


class Clock:
    """The budget: ``left()`` seconds of training time, and each stage's deadline from its share."""

    def __init__(self, budget: float, reserve: float, shares: dict[str, float]) -> None:
        self.t0, self.budget, self.reserve, self.shares = time.time(), budget, reserve, shares

    def spent(self) -> float:
        return time.time() - self.t0

    def left(self) -> float:
        return max(0.0, self.budget - self.reserve - self.spent())

    def deadline(self, stage: str) -> float:
        todo = STAGES[STAGES.index(stage) :]
        return time.time() + self.left() * self.shares[stage] / sum(self.shares[s] for s in todo)


@dataclasses.dataclass
class Run:
    """Everything the stages share."""

    args: argparse.Namespace
    clock: Clock
    out: Path
    work: Path
    device: str
    gpu: bool
    pack: Any  # pack_fer2013.Pack
    metrics: dict[str, Any]
    checkpoints: dict[str, Path] = dataclasses.field(default_factory=dict)
    epoch_wall: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def flag(self, choice: str) -> bool:
        return self.gpu if choice == "auto" else choice == "on"

    def save(self) -> None:
        """metrics.json, written atomically after every stage (a run cut short keeps what it has)."""
        from ferkit.io import atomic_write_text

        self.metrics["seconds_spent"] = round(self.clock.spent(), 1)
        atomic_write_text(self.out / "metrics.json", json.dumps(self.metrics, indent=1) + "\n")


def torch_setup(args: argparse.Namespace) -> tuple[str, bool, dict[str, Any]]:
    import torch

    from ferkit.runtime import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dynamo = getattr(torch, "_dynamo", None)
    for name in ("cache_size_limit", "recompile_limit"):  # one compiled graph per stage and run
        if dynamo is not None and hasattr(dynamo.config, name):
            setattr(dynamo.config, name, 64)
    facts = {
        "device": torch.cuda.get_device_name(device) if gpu else "cpu",
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    return str(device), gpu, facts


def read_pack(path: str) -> Any:
    sys.path.insert(0, str(HERE))
    from pack_fer2013 import load_pack

    return load_pack(path)


def resampling_ready() -> str | None:
    """None when imbalanced-learn is installed, else why the resampled members cannot be trained."""
    import importlib.util

    missing = [name for name in ("imblearn", "sklearn_compat") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: carry gpu_data/wheels and install them first"
    return None


# ------------------------------------------------------------------------------------------- recipe


def stage_config(run: Run, stage: str, epochs: int, out: Path) -> Any:
    """The stage's TrainConfig: configs/paper.yaml, the batch and its lr, cosine, the stage's own part."""
    from ferkit.config import load_train_config

    args = run.args
    model = args.student if stage == "student" else args.model
    values: dict[str, Any] = {
        "model": model,
        "batch_size": args.batch,
        "lr": BASE_LR * args.batch / BASE_BATCH,
        "scheduler": "cosine",
        "warmup_epochs": min(3, epochs // 10),
        "epochs": epochs,
        "early_stopping": 0,
        "seed": SEEDS[stage],
        "device": run.device,
        "amp": True,
        "channels_last": run.flag(args.channels_last),
        # auto: compile the study's VGGNet (four stages share one compilation), not the student (one use,
        # and its step is mostly the uncompiled teacher's three forward passes)
        "compile": run.flag(args.compile) and (stage != "student" or args.compile == "on"),
        "progress": False,
        "out": str(out),
        "data": str(args.data),
    }
    if stage in MEMBERS:
        values["balance"] = stage
        if args.members == "finetune" and "paper" in run.checkpoints:
            values.update(
                finetune_from=str(run.checkpoints["paper"]),
                lr=MEMBER_LR * values["lr"],
                warmup_epochs=min(1, epochs // 5),
            )
    if stage == "student":
        values["teacher"] = str(run.checkpoints["ensemble"])
    return load_train_config("paper", values=values)


def train_val(pack: Any) -> Any:
    """Training and PublicTest only: PrivateTest never reaches training code."""
    ds = pack.dataset
    return ds.subset(np.isin(ds.splits, ["Training", "PublicTest"]))


class Resampling:
    """The members' resampled training sets, made in another process on the CPU while the GPU trains
    (here, when no process can be started: each when its stage asks for it)."""

    def __init__(self, run: Run) -> None:
        from ferkit.training.data import prepare_training_data

        self.why = resampling_ready()
        self.pool: Any = None
        self.jobs: dict[str, Any] = {}
        self.todo = {s: (prepare_training_data, stage_config(run, s, 1, run.work / s)) for s in MEMBERS}
        self.data = train_val(run.pack)
        if self.why:
            log.warning("resampled members skipped: %s", self.why)
            return
        try:
            self.pool = mp.get_context("spawn").Pool(1)
        except OSError as e:  # no /dev/shm for its semaphores, say
            log.warning("no resampling process (%s): resampling in this one, before each member", e)
            return
        for s, (work, cfg) in self.todo.items():
            self.jobs[s] = self.pool.apply_async(work, (cfg, self.data))
        self.pool.close()

    def get(self, stage: str, seconds: float) -> Any:
        """The stage's training data, waiting at most ``seconds`` for the resampling process."""
        if self.why:
            raise RuntimeError(self.why)
        if stage not in self.jobs:
            work, cfg = self.todo[stage]
            return work(cfg, self.data)
        try:
            return self.jobs[stage].get(timeout=max(1.0, seconds))
        except mp.TimeoutError:
            raise RuntimeError(f"the resampled {stage} set was not ready in time") from None

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.terminate()


# -------------------------------------------------------------------------------------------- stages


def timed_fit(cfg: Any, data: Any, deadline: float | None) -> tuple[dict[str, Any], float]:
    """ferkit's fit, with each epoch's end time in its record (``wall``); (summary, seconds)."""
    from ferkit.training.loop import fit

    t0 = time.time()
    summary = fit(cfg, data=data, monitor=lambda model, meta: {"wall": time.time()}, deadline=deadline)
    return summary, time.time() - t0


def epoch_times(history: list[dict[str, Any]], t_start: float) -> tuple[float, float]:
    """(seconds per epoch, seconds before the first epoch's work): from the epochs' end times."""
    walls = [h["wall"] for h in history]
    per_epoch = statistics.median(np.diff(walls)) if len(walls) > 1 else walls[0] - t_start
    return float(per_epoch), max(0.0, walls[0] - t_start - per_epoch)


def calibrate(run: Run, stage: str, data: Any) -> dict[str, Any]:
    """Two epochs of the stage's configuration on its full data: the seconds an epoch takes on this
    machine (validation and checkpoints included) and before the first (compilation included)."""
    out = run.work / f"calibrate-{stage}"
    cfg = stage_config(run, stage, CALIBRATION_EPOCHS, out)
    t0 = time.time()
    summary, seconds = timed_fit(cfg, data, None)
    per_epoch, setup = epoch_times(summary["history"], t0)
    shutil.rmtree(out, ignore_errors=True)
    run.epoch_wall[stage] = (per_epoch, setup)
    return {
        "epoch_seconds": round(per_epoch, 2),
        "setup_seconds": round(setup, 1),
        "seconds": round(seconds, 1),
    }


def plan_epochs(run: Run, stage: str, deadline: float, n_images: int) -> int:
    """As many epochs as fit before ``deadline`` at the measured pace (a second compile of an architecture
    is mostly cached: its setup is counted at most 20 s)."""
    ref = stage if stage in run.epoch_wall else "paper"
    per_epoch, setup = run.epoch_wall[ref]
    per_epoch *= n_images / max(1, len(run.pack.dataset.split("Training"))) if ref != stage else 1.0
    setup = min(setup, 20.0) if ref == stage else setup  # the calibration's cold compile is cached
    return max(1, min(run.args.max_epochs, int((deadline - time.time() - setup) / max(per_epoch, 1e-3))))


def _compact(history: list[dict[str, Any]], t_start: float) -> list[dict[str, Any]]:
    keys = (
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_balanced_acc",
        "lr",
        "images_per_s",
    )
    rows = []
    for h in history:
        row = {k: round(h[k], 5) if isinstance(h[k], float) else h[k] for k in keys if k in h}
        # the end of the epoch's validation, counted from the fit's start
        row["elapsed_s"] = round(h["wall"] - t_start, 2)
        rows.append(row)
    return rows


def train_stage(run: Run, stage: str, data: Any) -> dict[str, Any]:
    """Calibrate when there is no measurement of this model yet, plan the epochs, fit before the deadline."""
    if stage == "student" and "ensemble" not in run.checkpoints:
        raise RuntimeError("no teacher: the ensemble stage did not finish")
    deadline = run.clock.deadline(stage)
    info: dict[str, Any] = {"deadline_in_s": round(deadline - time.time(), 1)}
    if stage in ("paper", "student") or "paper" not in run.epoch_wall:
        info["calibration"] = calibrate(run, stage, data)
    n_train = len(data.train_labels)
    epochs = plan_epochs(run, stage, deadline, n_train)
    out = run.work / stage
    cfg = stage_config(run, stage, epochs, out)
    t0 = time.time()
    summary, seconds = timed_fit(cfg, data, deadline)
    history = summary["history"]
    if stage == "paper":  # the members' pace: this run's own epochs
        run.epoch_wall["paper"] = epoch_times(history, t0)
    for name in ("last.pt", "last.prev.pt"):
        (out / name).unlink(missing_ok=True)
    run.checkpoints[stage] = out / "best.pt"
    per_epoch = n_train // cfg.batch_size * cfg.batch_size
    steady = [h["images_per_s"] for h in history[1:]] or [history[0]["images_per_s"]]
    best = max(history, key=lambda h: h["val_acc"])
    info.update(
        model=cfg.model,
        train_images=n_train,
        images_per_epoch=per_epoch,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        finetune_from=Path(cfg.finetune_from).parent.name if cfg.finetune_from else None,
        epochs_planned=epochs,
        epochs=len(history),
        stopped_by_deadline=summary["stopped_by_deadline"],
        fit_seconds=round(seconds, 1),
        images_per_s=round(statistics.median(steady), 1),
        images_per_s_wall=round(per_epoch * len(history) / seconds, 1),
        best_epoch=best["epoch"],
        best_val_acc=round(best["val_acc"], 4),
        resampling=(data.notes or {}).get("train_counts") if stage in MEMBERS else None,
        history=_compact(history, t0),
    )
    return info


def _pick(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k] for k in KEEP}


def evaluate_model(run: Run, path: Path) -> dict[str, Any]:
    """top-1/2/3 and balanced accuracy on PublicTest and PrivateTest (and PrivateTest without the rows
    duplicated in Training), for each test-time crop asked for."""
    from ferkit.evaluation import compute_metrics, load_scorer

    scorer = load_scorer(path, batch_size=1024 if run.gpu else 256, device=run.device)
    result: dict[str, Any] = {}
    for split in ("PublicTest", "PrivateTest"):
        part = run.pack.dataset.split(split)
        dup = run.pack.in_training.get(split)
        for tta in run.args.tta.split(","):
            probs = scorer.predict_proba(part.images, tta)
            result.setdefault(split, {})[tta] = _pick(compute_metrics(probs, part.labels))
            if split == "PrivateTest" and dup is not None and dup.any() and not dup.all():
                name = f"{split} without Training duplicates"
                result.setdefault(name, {})[tta] = _pick(compute_metrics(probs[~dup], part.labels[~dup]))
    return result


def ensemble_stage(run: Run) -> dict[str, Any]:
    """The members' mean of softmax (or the paper model alone when no member was trained)."""
    from ferkit.models.ensemble import build_ensemble, save_ensemble

    members = [s for s in MEMBERS if s in run.checkpoints] or ["paper"]
    path = run.work / "ensemble.pt"
    save_ensemble(build_ensemble([run.checkpoints[s] for s in members], combine="prob"), path)
    run.checkpoints["ensemble"] = path
    return {"members": members, "combine": "prob"}


def export_student(run: Run) -> dict[str, Any]:
    """student.pt and student.onnx in --out; the ONNX graph against the checkpoint on PrivateTest."""
    from ferkit.evaluation import compute_metrics, load_scorer
    from ferkit.inference.export import export_onnx

    if "student" not in run.checkpoints:
        raise RuntimeError("no student checkpoint: the student stage did not finish")
    src = run.checkpoints["student"]
    shutil.copyfile(src, run.out / "student.pt")
    faces = run.pack.dataset.split("PublicTest").images[:64]  # real faces for the parity check
    result = export_onnx(src, run.out / "student.onnx", tta="center", probes=faces, source="student.pt")
    private = run.pack.dataset.split("PrivateTest")
    p_onnx = load_scorer(run.out / "student.onnx").predict_proba(private.images, "center")
    p_ckpt = load_scorer(src, device=run.device).predict_proba(private.images, "center")
    return {
        "parity_max_abs_diff": float(result.parity),
        "PrivateTest_center": _pick(compute_metrics(p_onnx, private.labels)),
        "argmax_agreement_with_checkpoint": round(float((p_onnx.argmax(1) == p_ckpt.argmax(1)).mean()), 5),
    }


def plot_curves(run: Run, path: Path) -> None:
    """One PNG: a row per trained stage, loss and accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ferkit.io import atomic_write

    stages = [
        (s, run.metrics["stages"][s]["history"])
        for s in STAGES
        if "history" in run.metrics["stages"].get(s, {})
    ]
    if not stages:
        return
    fig, axes = plt.subplots(len(stages), 2, figsize=(10, 2.6 * len(stages)), squeeze=False)
    for (name, hist), (a, b) in zip(stages, axes):
        ep = [h["epoch"] for h in hist]
        a.plot(ep, [h["train_loss"] for h in hist], label="train")
        a.plot(ep, [h["val_loss"] for h in hist], label="PublicTest")
        b.plot(ep, [h["train_acc"] for h in hist], label="train (augmented)")
        b.plot(ep, [h["val_acc"] for h in hist], label="PublicTest")
        b.plot(ep, [h["val_balanced_acc"] for h in hist], label="PublicTest, balanced")
        a.set_ylabel(f"{name}\ncross-entropy"), b.set_ylabel("accuracy")
        a.legend(fontsize=7), b.legend(fontsize=7)
    axes[-1][0].set_xlabel("epoch"), axes[-1][1].set_xlabel("epoch")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main


def run_stage(run: Run, stage: str, work: Any) -> None:
    """``work()`` as one stage: its result (or why it failed or was skipped) in metrics.json at once."""
    import torch

    t0 = time.time()
    log.info("stage %s: %.0f s left for training", stage, run.clock.left())
    try:
        result = work()
        result["status"] = result.get("status", "done")
    except Exception as e:  # a failed stage must not lose the others' outputs
        log.exception("stage %s failed", stage)
        result = {"status": f"failed: {type(e).__name__}: {str(e).strip()[:500]}"}
    result["seconds"] = round(time.time() - t0, 1)
    if stage in run.checkpoints and result["status"] == "done":
        try:
            result["eval"] = evaluate_model(run, run.checkpoints[stage])
        except Exception as e:
            log.exception("evaluating %s failed", stage)
            result["eval"] = f"failed: {type(e).__name__}: {e}"
    run.metrics["stages"][stage] = result
    run.save()
    if "history" in result:
        plot_curves(run, run.out / "curves.png")  # after every training stage: nothing waits for the end
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("stage %s: %s in %.0f s", stage, result["status"], time.time() - t0)


def setup(args: argparse.Namespace, out: Path) -> Run:
    """The pack decoded, the device set up, the work folder made, metrics.json begun."""
    clock = Clock(args.budget, args.reserve, SHARES[args.members])
    t = time.time()
    pack = read_pack(args.data)  # first: a missing pack fails before anything slow
    decode_s = time.time() - t
    log.info(
        "data: %s decoded in %.1f s (largest pixel error per split: %s)", args.data, decode_s, pack.max_error
    )
    device, gpu, facts = torch_setup(args)
    log.info("device %s (%s), torch %s", device, facts["device"], facts["torch"])
    shm = Path("/dev/shm")
    ram = shm if shm.is_dir() and shutil.disk_usage(shm).free > 4e9 else None
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ferkit-gpu-run-", dir=ram))
    work.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "machine": facts,
        "budget": {"seconds": args.budget, "reserve": args.reserve, "shares": SHARES[args.members]},
        "data": {
            "pack": str(args.data),
            "images": {
                s: int((pack.dataset.splits == s).sum()) for s in ("Training", "PublicTest", "PrivateTest")
            },
            "max_pixel_error": pack.max_error,
            "duplicates_in_training": {s: int(m.sum()) for s, m in pack.in_training.items()},
            "decode_seconds": round(decode_s, 1),
        },
        "recipe": {"batch_size": args.batch, "lr_rule": "linear: 0.01 x batch / 64", "members": args.members},
        "stages": {},
    }
    return Run(args, clock, out, work, device, gpu, pack, metrics)


def run_all(run: Run) -> None:
    """Every stage in turn; each writes its part of metrics.json as it ends."""
    from ferkit.training.data import prepare_training_data

    run.save()
    resampling = Resampling(run)
    try:
        base = prepare_training_data(stage_config(run, "paper", 1, run.work / "paper"), train_val(run.pack))
        run_stage(run, "paper", lambda: train_stage(run, "paper", base))
        for s in MEMBERS:
            run_stage(run, s, lambda s=s: train_stage(run, s, resampling.get(s, run.clock.left() - 30)))
    finally:
        resampling.stop()
    run_stage(run, "ensemble", lambda: ensemble_stage(run))
    run_stage(run, "student", lambda: train_stage(run, "student", base))
    run_stage(run, "export", lambda: export_student(run))
    run.metrics["files"] = {p.name: p.stat().st_size for p in sorted(run.out.iterdir()) if p.is_file()}
    run.save()
    log.info("done in %.0f s: %s", run.clock.spent(), ", ".join(run.metrics["files"]))


def measure(run: Run, n_images: int) -> dict[str, float]:
    """fit's images/s (epoch 2 of 2: training and validation on 64 PublicTest faces) of --model, then of
    --student distilled from three copies of that model, on ``n_images`` Training faces."""
    from ferkit.models.ensemble import build_ensemble, save_ensemble
    from ferkit.training.data import TrainingData

    train, val = run.pack.dataset.split("Training"), run.pack.dataset.split("PublicTest")
    rng = np.random.default_rng(0)
    t, v = rng.permutation(len(train))[:n_images], rng.permutation(len(val))[:64]
    data = TrainingData(train.images[t], train.labels[t], val.images[v], val.labels[v])
    result = {}
    for stage in ("paper", "student"):
        cfg = stage_config(run, stage, CALIBRATION_EPOCHS, run.work / f"measure-{stage}")
        summary, _ = timed_fit(cfg, data, None)
        name = f"{cfg.model} (teacher: 3 x {run.args.model})" if stage == "student" else cfg.model
        result[name] = summary["history"][-1]["images_per_s"]
        if stage == "paper":
            best = run.work / "measure-paper" / "best.pt"
            save_ensemble(build_ensemble([best] * 3), run.work / "ensemble.pt")
            run.checkpoints["ensemble"] = run.work / "ensemble.pt"
        log.info("measured %s: %.1f images/s", name, result[name])
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    handlers = start_logging(out)
    from ferkit.errors import FerkitError

    run = None
    try:
        run = setup(args, out)
        if args.measure:
            run.metrics["measured_images_per_s"] = measure(run, args.measure)
            run.save()
        else:
            run_all(run)
            failed = [
                s for s, r in run.metrics["stages"].items() if str(r.get("status", "")).startswith("failed")
            ]
            if failed:  # metrics.json says why; the exit status must say that it did not all work
                log.error("stages that failed: %s", ", ".join(failed))
                return 1
        return 0
    except FerkitError as e:  # bad input (a missing pack, say): one line, no traceback
        log.error("%s", e)
        return e.exit_code
    finally:
        if run is not None and not args.work:  # a folder of our own (on /dev/shm: RAM) goes
            shutil.rmtree(run.work, ignore_errors=True)
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    sys.exit(main())
