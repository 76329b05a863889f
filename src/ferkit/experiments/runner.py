"""Run a grid: every (row, protocol) cell trained, evaluated and written to its own folder.

Layout under ``out``::

    run.json                      what was asked (grid, budget, data, seed, overrides): a rerun must match
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferkit.data.balance import RESAMPLE_METHODS
from ferkit.data.dataset import FaceDataset
from ferkit.data.leakage import LEAKY, audit_leakage, format_leakage
from ferkit.errors import ConfigError
from ferkit.experiments.grid import Grid, Row, load_grid
from ferkit.io import atomic_write_text

METRICS = "metrics.json"
KEEP = ("top1", "top2", "top3", "balanced_accuracy", "macro_f1", "n", "per_class", "confusion")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def cell_dir(out: Path, row: Row, protocol: str) -> Path:
    return out / row.id / protocol


def _check_spec(out: Path, spec: dict[str, Any]) -> None:
    """Refuse to mix runs of different grids, budgets, data or overrides in one results folder."""
    old = _read(out / "run.json")
    if old is None:
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "run.json", spec)
        return
    diff = [k for k in ("grid", "budget", "data", "aux", "seed", "overrides", "tta") if old.get(k) != spec.get(k)]
    if diff:
        raise ConfigError(f"{out} holds results of a different run ({', '.join(f'{k}: {old.get(k)!r}' for k in diff)}"
                          f"); choose another --out")


def _train(cfg: Any, data: Any, cell: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from ferkit.training.loop import fit

    resume = (cell / "last.pt").is_file()
    log(f"  {'resuming' if resume else 'training'} {cfg.model} for {cfg.epochs} epochs "
        f"({len(data.train_labels)} training images)")
    summary = fit(cfg, resume=resume, data=data)
    summary = {k: v for k, v in summary.items() if k != "history"}
    _write(cell / "train.json", summary)
    return summary


def run_cell(grid: Grid, row: Row, protocol: str, dataset: FaceDataset, cfg: Any, cell: Path,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) and evaluate one cell; returns what ``metrics.json`` holds."""
    from ferkit.data.study_protocol import cached_study_splits, study_method
    from ferkit.evaluation.evaluate import evaluate_dataset
    from ferkit.evaluation.metrics import compute_metrics
    from ferkit.evaluation.scorers import load_scorer
    from ferkit.runtime import resolve_device
    from ferkit.training.data import prepare_training_data

    t0 = time.perf_counter()
    split, tta = grid.evaluate.get("split", "PrivateTest"), grid.evaluate.get("tta", "ten_crop")
    study = protocol == "study"
    resampled = cfg.balance in RESAMPLE_METHODS
    train_summary = _read(cell / "train.json")
    leakage = _read(cell / "leakage.json")
    if train_summary is None or (leakage is None and (study or resampled)):
        data = prepare_training_data(cfg, dataset)  # under the study protocol this writes leakage.json
        if not study and resampled:  # the contrast: copies of the official test split in (resampled) training
            leakage = audit_leakage(data.train_images, dataset.split(split).images, protocol="official",
                                    method=cfg.balance, train_counts=data.notes.get("train_counts"))
            _write(cell / "leakage.json", leakage)
            log(f"  {format_leakage(leakage)}")
        if train_summary is None:
            train_summary = _train(cfg, data, cell, log)
        del data
    leakage = _read(cell / "leakage.json")
    scorer = load_scorer(cell / "best.pt", device=resolve_device(cfg.device))
    if study:
        parts = cached_study_splits(dataset, study_method(cfg.balance), cfg.seed, cfg.max_train_images)
        metrics = compute_metrics(scorer.predict_proba(parts.test.images, tta), parts.test.labels)
        sets = {"study-test": metrics}
        evaluated = f"study-test ({len(parts.test)} images, {LEAKY})"
    else:
        res = evaluate_dataset(scorer, dataset, split, tta)
        sets = res["sets"]
        metrics = sets[split]
        evaluated = split
    result = {
        "row": row.id, "name": row.name, "protocol": protocol, "label": LEAKY if study else "official",
        "evaluated_on": evaluated, "tta": tta,
        "metrics": {k: metrics[k] for k in KEEP if k in metrics},
        "sets": {name: {k: m[k] for k in ("top1", "top2", "top3", "balanced_accuracy", "n")} for name, m in sets.items()},
        "leakage": leakage, "train": train_summary, "data": _read(cell / "data.json"),
        "config": _read_yaml(cell / "config.yaml"), "eval_seconds": round(time.perf_counter() - t0, 1),
    }
    _write(cell / METRICS, result)
    tag = f"[{LEAKY}] " if study else ""
    log(f"  {tag}top-1 {metrics['top1']:.4f}  top-2 {metrics['top2']:.4f}  top-3 {metrics['top3']:.4f}  "
        f"balanced {metrics['balanced_accuracy']:.4f} on {evaluated}")
    if study and leakage:
        log(f"  {format_leakage(leakage)}")
    return result


def _read_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else None


def run_grid(grid: str | Grid, data: str | Path, out: str | Path, budget: str = "cpu", aux: str | None = None,
             only: list[str] | None = None, seed: int = 0, overrides: list[str] | None = None,
             tta: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the cells of ``grid`` not yet finished in ``out``, then write the table; returns it.

    ``tta`` overrides the test-time crops (the grid's ``evaluate.tta``, or its budget's) for every cell.
    """
    from ferkit.data.load import load_dataset
    from ferkit.experiments.table import write_table

    g = load_grid(grid) if not isinstance(grid, Grid) else grid
    g = dataclasses.replace(g, evaluate={**g.evaluate, **g.budget(budget).evaluate, **({"tta": tta} if tta else {})})
    out = Path(out)
    spec = {"grid": g.name, "budget": budget, "data": str(data), "aux": str(aux) if aux else None, "seed": seed,
            "overrides": list(overrides or []), "tta": g.evaluate.get("tta")}
    _check_spec(out, spec)
    rows = g.with_dependencies(only)
    if only:
        extra = [r.id for r in rows if r.id not in only]
        if extra:
            log(f"also running {', '.join(extra)}: {'they are' if len(extra) > 1 else 'it is'} fine-tuned from")
    dataset: FaceDataset | None = None
    done = skipped = 0
    for row in rows:
        if row.aux and not aux:
            log(f"{row.id}: skipped (needs auxiliary data: --aux PATH)")
            continue
        for protocol in row.protocols():
            cell = cell_dir(out, row, protocol)
            label = f"{row.id} [{protocol}{', ' + LEAKY if protocol == 'study' else ''}]"
            if (cell / METRICS).is_file():
                log(f"{label}: finished earlier, not recomputed")
                skipped += 1
                continue
            parent = None
            if row.finetune:
                parent = cell_dir(out, g.row(row.finetune), "official") / "best.pt"
                if not (cell_dir(out, g.row(row.finetune), "official") / METRICS).is_file():
                    raise ConfigError(f"{row.id} fine-tunes {row.finetune}, which has not finished")
            cfg = g.cell_config(row, protocol, budget, data=str(data), out=cell, aux=aux, seed=seed,
                                finetune_from=str(parent) if parent else None, overrides=overrides)
            if dataset is None:
                dataset = load_dataset(data)
                log(f"data: {data}\n{dataset.describe()}")
            log(f"{label}: {row.name}")
            run_cell(g, row, protocol, dataset, cfg, cell, log)
            done += 1
    table = write_table(out, g)
    log(f"{done} cell(s) run, {skipped} finished earlier; table: {out / 'results.md'}")
    return table


def finished_cells(out: str | Path) -> list[dict[str, Any]]:
    """Every finished cell's ``metrics.json`` under ``out``."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob(f"*/*/{METRICS}"))]

