"""Run a grid: every (row, protocol) cell trained, evaluated and written to its own folder.

Layout under ``out``::

    run.json                      what was asked (grid, budget, data, seed, overrides): a rerun must match
                                  (unless the run it records left no cell behind: then it is replaced)
    <row>/<protocol>/             the cell: best.pt, last.pt, metrics.jsonl, config.yaml (from fit),
                                  train.json (fit's summary), leakage.json, metrics.json (written last)
    results.json, results.md      the table (``ferkit.experiments.table``)

A cell with ``metrics.json`` is finished and never recomputed; a cell with ``last.pt`` but no
``train.json`` resumes its training; one with ``train.json`` only is evaluated. Official cells report
``evaluate.split`` (PrivateTest) of the dataset; study cells report the study's own test part and are
labelled LEAKY.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ferkit.config import TrainConfig
from ferkit.data.audit import image_hashes
from ferkit.data.balance import RESAMPLE_METHODS
from ferkit.data.dataset import FaceDataset
from ferkit.data.leakage import LEAKY, audit_leakage, format_leakage
from ferkit.data.load import load_dataset
from ferkit.data.study_protocol import StudySplit, cached_study_splits, study_method
from ferkit.errors import ConfigError, DataError, one_line
from ferkit.evaluation.evaluate import evaluate_dataset
from ferkit.evaluation.metrics import compute_metrics
from ferkit.evaluation.scorers import EnsembleScorer, load_scorer
from ferkit.experiments.grid import Grid, Row, load_grid
from ferkit.experiments.monitor import describe as describe_watch
from ferkit.experiments.monitor import make_monitor, watch_sets
from ferkit.experiments.table import METRICS, RUN_HINT, finished_cells, read_cell, read_json, write_table
from ferkit.io import atomic_write, atomic_write_text
from ferkit.models.ensemble import build_ensemble, ensemble_from_dict
from ferkit.models.registry import require_model
from ferkit.runtime import check_tta, resolve_device
from ferkit.training.data import TrainingData, prepare_training_data
from ferkit.training.loop import Monitor, check_run, fit

__all__ = ["METRICS", "cell_dir", "finished_cells", "run_cell", "run_grid"]

logger = logging.getLogger(__name__)
KEEP = ("top1", "top2", "top3", "balanced_accuracy", "macro_f1", "n", "per_class", "confusion")


def _read(path: Path) -> dict[str, Any] | None:
    return read_json(path, "; restore it, or delete the cell's folder to rerun the cell")


def _write(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def cell_dir(out: Path, row: Row, protocol: str) -> Path:
    return out / row.id / protocol


def _has_cells(out: Path) -> bool:
    """Whether any cell under ``out`` holds a file (a result, a checkpoint, a training in progress)."""
    return any(p.is_file() for p in out.glob("*/*/*"))


def _check_spec(out: Path, spec: dict[str, Any], log: Callable[[str], None]) -> None:
    """Refuse to mix runs of different grids, budgets, data or overrides in one results folder; record
    ``spec`` in ``run.json``. A ``run.json`` whose run left no cell behind is replaced, not obeyed."""
    old = read_json(out / "run.json", RUN_HINT)
    if old is not None:
        diff = [
            k
            for k in ("grid", "budget", "data", "aux", "seed", "overrides", "tta")
            if old.get(k) != spec.get(k)
        ]
        if not diff:
            return
        if _has_cells(out):
            raise ConfigError(
                f"{out} holds results of a different run ({', '.join(f'{k}: {old.get(k)!r}' for k in diff)}"
                f"); choose another --out"
            )
        log(f"{out / 'run.json'}: replaced (its run left no results)")
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "run.json", spec)


def _train(
    cfg: TrainConfig,
    data: TrainingData,
    cell: Path,
    log: Callable[[str], None],
    monitor: Monitor | None = None,
) -> dict[str, Any]:
    resume = (cell / "last.pt").is_file()
    log(
        f"  {'resuming' if resume else 'training'} {cfg.model} for {cfg.epochs} epochs "
        f"({len(data.train_labels)} training images)"
    )
    summary = fit(cfg, resume=resume, data=data, monitor=monitor)
    summary = {k: v for k, v in summary.items() if k != "history"}
    _write(cell / "train.json", summary)
    return summary


def _finish_cell(
    cell: Path,
    row: Row,
    protocol: str,
    scores: tuple[str, str, dict[str, Any], dict[str, Any]],
    t0: float,
    log: Callable[[str], None],
    **facts: Any,
) -> dict[str, Any]:
    """Write the cell's ``metrics.json`` (what it was evaluated on, its metrics, ``facts``) and log it."""
    evaluated, tta, metrics, sets = scores
    study = protocol == "study"
    result = {
        "row": row.id,
        "name": row.name,
        "protocol": protocol,
        "label": LEAKY if study else "official",
        "evaluated_on": evaluated,
        "tta": tta,
        "metrics": {k: metrics[k] for k in KEEP if k in metrics},
        "sets": {
            name: {k: m[k] for k in ("top1", "top2", "top3", "balanced_accuracy", "n")}
            for name, m in sets.items()
        },
        **facts,
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }
    _write(cell / METRICS, result)
    tag = f"[{LEAKY}] " if study else ""
    log(
        f"  {tag}top-1 {metrics['top1']:.4f}  top-2 {metrics['top2']:.4f}  top-3 {metrics['top3']:.4f}  "
        f"balanced {metrics['balanced_accuracy']:.4f} on {evaluated}"
    )
    return result


def run_cell(
    grid: Grid,
    row: Row,
    protocol: str,
    dataset: FaceDataset,
    cfg: Any,
    cell: Path,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Train (or resume) and evaluate one cell; returns what ``metrics.json`` holds."""
    t0 = time.perf_counter()
    split, tta = grid.evaluate.get("split", "PrivateTest"), grid.evaluate.get("tta", "ten_crop")
    study = protocol == "study"
    resampled = cfg.balance in RESAMPLE_METHODS
    train_summary = _read(cell / "train.json")
    leakage = _read(cell / "leakage.json")
    if train_summary is None or (leakage is None and (study or resampled)):
        data = prepare_training_data(cfg, dataset)  # under the study protocol this writes leakage.json
        if not study and resampled:  # the contrast: copies of the official test split in (resampled) training
            leakage = audit_leakage(
                data.train_images,
                dataset.split(split).images,
                protocol="official",
                method=cfg.balance,
                train_counts=(data.notes or {}).get("train_counts"),
            )
            _write(cell / "leakage.json", leakage)
            log(f"  {format_leakage(leakage)}")
        if train_summary is None:
            monitor = None
            if grid.monitor:
                watch = watch_sets(cfg, dataset, data.train_images, data.train_labels)
                log(f"  watching every epoch: {describe_watch(watch, cell)}")
                monitor = make_monitor(watch)
            train_summary = _train(cfg, data, cell, log, monitor)
        del data
    leakage = _read(cell / "leakage.json")
    scorer = load_scorer(cell / "best.pt", device=resolve_device(cfg.device))
    if study:
        parts = cached_study_splits(dataset, study_method(cfg.balance), cfg.seed, cfg.max_train_images)
        _save_study_parts(cell, parts)
        metrics = compute_metrics(scorer.predict_proba(parts.test.images, tta), parts.test.labels)
        sets = {"study-test": metrics}
        evaluated = f"study-test ({len(parts.test)} images, {LEAKY})"
    else:
        res = evaluate_dataset(scorer, dataset, split, tta)
        sets = res["sets"]
        metrics = sets[split]
        evaluated = split
    result = _finish_cell(
        cell,
        row,
        protocol,
        (evaluated, tta, metrics, sets),
        t0,
        log,
        leakage=leakage,
        train=train_summary,
        data=_read(cell / "data.json"),
        config=_read_yaml(cell / "config.yaml"),
    )
    if study and leakage:
        log(f"  {format_leakage(leakage)}")
    return result


STUDY_PARTS = "study_parts.npz"


def _save_study_parts(cell: Path, parts: StudySplit) -> None:
    """The cell's leaky test part and its training images' hashes, for the ensemble rows that use it."""
    test = parts.test
    arrays = {
        "test_images": test.images,
        "test_labels": test.labels,
        "train_hashes": parts.hashes("study-train"),
    }
    atomic_write(cell / STUDY_PARTS, lambda f: np.savez(f, allow_pickle=False, **arrays))


def _ensemble_scorer(grid: Grid, row: Row, protocol: str, out: Path, device: Any) -> EnsembleScorer:
    paths = [cell_dir(out, grid.row(m), protocol) / "best.pt" for m in row.ensemble]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"{row.id}: members not trained yet ({', '.join(missing)})")
    return EnsembleScorer(ensemble_from_dict(build_ensemble(paths), device), device=device)


def _study_parts(cell: Path, dataset: FaceDataset) -> Any:
    """A study cell's saved test part and training hashes; rebuilt from its config when not saved
    (``*.npz`` is not committed with a run that continues on another machine)."""
    if not (cell / STUDY_PARTS).is_file():
        cfg = _read_yaml(cell / "config.yaml")
        if cfg is None:
            raise DataError(f"{cell}: neither {STUDY_PARTS} nor config.yaml to rebuild it from")
        parts = cached_study_splits(
            dataset, study_method(cfg["balance"]), cfg["seed"], cfg.get("max_train_images", 0)
        )
        _save_study_parts(cell, parts)
    return np.load(cell / STUDY_PARTS)


def _study_ensemble_sets(
    grid: Grid, row: Row, out: Path, dataset: FaceDataset
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The members' leaky test parts pooled, and how many of them some member trained on (exact copies)."""
    parts = [_study_parts(cell_dir(out, grid.row(m), "study"), dataset) for m in row.ensemble]
    images = np.concatenate([p["test_images"] for p in parts])
    labels = np.concatenate([p["test_labels"] for p in parts])
    seen = np.isin(image_hashes(images), np.concatenate([p["train_hashes"] for p in parts]))
    leakage = {
        "label": LEAKY,
        "test_images": len(labels),
        "exact": int(seen.sum()),
        "near": 0,
        "exact_fraction": round(float(seen.mean()), 4),
        "note": "the members' leaky test parts pooled; exact = a pixel copy of some member's training image",
    }
    return images, labels, leakage


def run_ensemble_cell(
    grid: Grid,
    row: Row,
    protocol: str,
    dataset: FaceDataset,
    out: Path,
    device: str = "auto",
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Evaluate an ensemble row (the mean of its members' softmax) under ``protocol``; writes metrics.json."""
    t0 = time.perf_counter()
    split, tta = grid.evaluate.get("split", "PrivateTest"), grid.evaluate.get("tta", "ten_crop")
    scorer = _ensemble_scorer(grid, row, protocol, out, resolve_device(device))
    leakage = None
    if protocol == "study":
        images, labels, leakage = _study_ensemble_sets(grid, row, out, dataset)
        metrics = compute_metrics(scorer.predict_proba(images, tta), labels)
        sets, evaluated = (
            {"study-test": metrics},
            f"the members' study-test parts ({len(labels)} images, {LEAKY})",
        )
    else:
        sets = evaluate_dataset(scorer, dataset, split, tta)["sets"]
        metrics, evaluated = sets[split], split
    cell = cell_dir(out, row, protocol)
    cell.mkdir(parents=True, exist_ok=True)
    scores = (evaluated, tta, metrics, sets)
    return _finish_cell(cell, row, protocol, scores, t0, log, leakage=leakage, members=list(row.ensemble))


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """A cell's config.yaml (a mapping), None when there is none; DataError naming it when it is damaged."""
    if not path.is_file():
        return None
    try:
        obj = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError) as e:
        raise DataError(f"{path}: not valid YAML ({one_line(e, 200)})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a mapping of settings, got {type(obj).__name__}")
    return obj


def _parent_checkpoint(grid: Grid, row: Row, out: Path) -> str | None:
    """The finished official cell's best.pt that ``row`` fine-tunes; None for a row trained from scratch."""
    if not row.finetune:
        return None
    parent = cell_dir(out, grid.row(row.finetune), "official")
    if not (parent / METRICS).is_file():
        raise ConfigError(f"{row.id} fine-tunes {row.finetune}, which has not finished")
    return str(parent / "best.pt")


def _rows_to_run(g: Grid, only: list[str] | None, aux: str | None, log: Callable[[str], None]) -> list[Row]:
    """The rows to run, in grid order: ``only`` (all if empty) and the rows they fine-tune from or average.
    Without ``aux``, rows that need auxiliary data (or build on one that does) are left out, and refused
    (ConfigError) when ``only`` names them: their parents would train for nothing."""
    rows = g.with_dependencies(only)
    needs_aux: set[str] = set()
    for r in g.rows:  # a grid lists parents and members before the rows that use them
        if r.aux or r.finetune in needs_aux or needs_aux.intersection(r.ensemble):
            needs_aux.add(r.id)
    if not aux:
        asked = list(dict.fromkeys(r for r in only or [] if r in needs_aux))
        if asked:
            many = len(asked) > 1
            raise ConfigError(
                f"{', '.join(asked)} {'need' if many else 'needs'} auxiliary data: pass --aux PATH "
                f"(AffectNet class folders) or leave {'them' if many else 'it'} out of --only"
            )
        for r in rows:
            if r.id in needs_aux:
                log(f"{r.id}: skipped (needs auxiliary data: --aux PATH)")
        rows = [r for r in rows if r.id not in needs_aux]
    extra = [r.id for r in rows if only and r.id not in only]
    if extra:
        log(f"also running {', '.join(extra)}: {'they are' if len(extra) > 1 else 'it is'} fine-tuned from")
    return rows


def _check_cells(g: Grid, rows: list[Row], out: Path, budget: str, **facts: Any) -> bool:
    """What a run can check before it records run.json or trains: finished cells' ``metrics.json`` readable;
    each unfinished cell's config (grid, budget, ``--set`` values, model) valid, its auxiliary data
    present. ``facts``: ``cell_config``'s data, aux, seed and overrides. Whether any cell is unfinished."""
    pending = False
    for row in rows:
        for protocol in row.protocols():
            cell = cell_dir(out, row, protocol)
            if (cell / METRICS).is_file():
                read_cell(cell / METRICS)
                continue
            pending = True
            if row.ensemble:
                continue
            cfg = g.cell_config(row, protocol, budget, out=cell, **facts)
            check_run(cfg, resume=(cell / "last.pt").is_file(), have_data=True)
            require_model(cfg.model)
            if cfg.aux_data and not Path(cfg.aux_data).exists():
                raise DataError(f"auxiliary data not found: {cfg.aux_data}")
    return pending


def _load_data(data: str | Path, log: Callable[[str], None]) -> FaceDataset:
    dataset = load_dataset(data)
    log(f"data: {data}\n{dataset.describe()}")
    return dataset


def run_grid(
    grid: str | Grid,
    data: str | Path,
    out: str | Path,
    budget: str = "cpu",
    aux: str | None = None,
    only: list[str] | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
    tta: str | None = None,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Run the cells of ``grid`` not yet finished in ``out``, then write the table; returns it.

    ``tta`` overrides the test-time crops (the grid's ``evaluate.tta``, or its budget's) for every cell.
    Rows, ``overrides``, data and finished cells are checked before ``run.json`` is written or anything
    trains, so a refused command leaves ``out`` free for the corrected one. A damaged ``metrics.json``
    is reported (DataError), not silently recomputed.
    """
    g = load_grid(grid) if not isinstance(grid, Grid) else grid
    if tta is not None:
        check_tta(tta)
    g = dataclasses.replace(
        g, evaluate={**g.evaluate, **g.budget(budget).evaluate, **({"tta": tta} if tta else {})}
    )
    out = Path(out)
    spec = {
        "grid": g.name,
        "budget": budget,
        "data": str(data),
        "aux": str(aux) if aux else None,
        "seed": seed,
        "overrides": list(overrides or []),
        "tta": g.evaluate.get("tta"),
    }
    rows = _rows_to_run(g, only, aux, log)
    facts: dict[str, Any] = {"data": str(data), "aux": aux, "seed": seed, "overrides": overrides}
    dataset = _load_data(data, log) if _check_cells(g, rows, out, budget, **facts) else None
    _check_spec(out, spec, log)
    done = skipped = 0
    for row in rows:
        for protocol in row.protocols():
            cell = cell_dir(out, row, protocol)
            label = f"{row.id} [{protocol}{', ' + LEAKY if protocol == 'study' else ''}]"
            if (cell / METRICS).is_file():
                log(f"{label}: finished earlier, not recomputed")
                skipped += 1
                continue
            if dataset is None:  # not reached: _check_cells found this cell unfinished
                dataset = _load_data(data, log)
            if row.ensemble:
                log(f"{label}: {row.name}")
                run_ensemble_cell(g, row, protocol, dataset, out, log=log)
                done += 1
                continue
            parent = _parent_checkpoint(g, row, out)
            cfg = g.cell_config(row, protocol, budget, out=cell, finetune_from=parent, **facts)
            log(f"{label}: {row.name}")
            run_cell(g, row, protocol, dataset, cfg, cell, log)
            done += 1
    table = write_table(out, g)
    log(f"{done} cell(s) run, {skipped} finished earlier; table: {out / 'results.md'}")
    return table
