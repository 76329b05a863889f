"""The results table of a grid run: Markdown for people, JSON for scripts, from the cells' metrics.json."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferkit.data.leakage import LEAKY
from ferkit.errors import ConfigError, DataError, one_line
from ferkit.experiments.grid import Grid, load_grid
from ferkit.io import atomic_write_text

COLUMNS = ("top1", "top2", "top3", "balanced_accuracy")
METRICS = "metrics.json"  # a cell's result, written last: a cell that has it is finished
RUN_HINT = "; it records what the folder's run asked for: restore it, or delete it and rerun that command"
CELL_KEYS = ("row", "name", "protocol", "label", "evaluated_on", "metrics")


def read_json(path: Path, hint: str = "") -> dict[str, Any] | None:
    """The JSON object in ``path``, None when there is no such file; DataError naming the file when it is
    not a JSON object (empty, cut short, edited by hand). ``hint`` says what to do about it."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise DataError(f"{path}: not valid JSON ({one_line(e, 200)}){hint}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}{hint}")
    return obj


def read_cell(path: Path) -> dict[str, Any]:
    """A finished cell's ``metrics.json``; DataError when it is damaged (deleting it reruns the cell)."""
    hint = "; delete it to rerun the cell"
    cell = read_json(path, hint)
    if cell is None:
        raise DataError(f"{path}: no such file")
    missing = [k for k in CELL_KEYS if k not in cell]
    if missing or not isinstance(cell["metrics"], dict):
        raise DataError(f"{path}: not a cell's result (missing {', '.join(missing) or 'metrics'}){hint}")
    return cell


def finished_cells(out: str | Path) -> list[dict[str, Any]]:
    """Every finished cell's ``metrics.json`` under ``out``."""
    return [read_cell(p) for p in sorted(Path(out).glob(f"*/*/{METRICS}"))]


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _copies(leak: dict[str, Any] | None) -> str:
    if not leak:
        return "—"
    return f"{leak['exact']} / {leak['near']} of {leak['test_images']}"


def collect(out: str | Path, grid: Grid | None = None) -> dict[str, Any]:
    """JSON-ready table: run facts and, per row in grid order, each protocol's metrics and leakage."""
    out = Path(out)
    spec = read_json(out / "run.json", RUN_HINT) or {}
    if grid is None and spec.get("grid"):
        try:
            grid = load_grid(spec["grid"])
        except ConfigError:  # a grid file that moved: the table still comes from the cells
            grid = None
    cells = finished_cells(out)
    order = [r.id for r in grid.rows] if grid else list(dict.fromkeys(c["row"] for c in cells))
    names = {r.id: r.name for r in grid.rows} if grid else {}
    rows = []
    for rid in order:
        mine = {c["protocol"]: c for c in cells if c["row"] == rid}
        if not mine:
            continue
        row: dict[str, Any] = {"id": rid, "name": names.get(rid) or next(iter(mine.values()))["name"]}
        for proto, c in mine.items():
            row[proto] = {
                "label": c["label"],
                "evaluated_on": c["evaluated_on"],
                **{k: c["metrics"].get(k) for k in COLUMNS},
                "leakage": c.get("leakage"),
                "sets": c.get("sets"),
                "epochs_run": (c.get("train") or {}).get("epochs_run"),
                "model": (c.get("config") or {}).get("model"),
            }
        rows.append(row)
    return {
        "run": spec,
        "machine": f"{platform.node()} ({platform.machine()})",
        "created": datetime.now(UTC).isoformat(timespec="minutes"),
        "rows": rows,
    }


def render_markdown(table: dict[str, Any]) -> str:
    spec = table["run"]
    rows = table["rows"]
    has_study = any("study" in r for r in rows)
    models = sorted({r[p]["model"] for r in rows for p in ("official", "study") if p in r and r[p]["model"]})
    split = next((r["official"]["evaluated_on"] for r in rows if "official" in r), "PrivateTest")
    lines = [
        f"# Experiment `{spec.get('grid', '?')}` — budget `{spec.get('budget', '?')}`",
        "",
        f"Data `{spec.get('data')}`"
        + (f", auxiliary `{spec['aux']}`" if spec.get("aux") else "")
        + f"; model {', '.join(models) or '?'}; seed {spec.get('seed')}"
        + (f"; overrides `{' '.join(spec['overrides'])}`" if spec.get("overrides") else "")
        + ".",
        "",
        (
            f"**Official protocol** (columns 2–5): train on Training, select on PublicTest, report {split} "
            f"(nothing tunes on it), test-time crops: {spec.get('tta', '?')}. Accuracies in %."
        ),
    ]
    if has_study:
        lines += [
            "",
            (
                f"**{LEAKY}** columns: the reference study's protocol — all of FER2013 pooled, "
                "resampled, *then* split 80/10/10 — scored on that protocol's own test part, which shares "
                "copies with its training part. They show how much of the study's reported accuracy was "
                "leakage; they are not results."
            ),
            (
                "Copies = test images that are exact copies of a training image / that have a training image "
                "closer (L2) than the closest pair within the original test set."
            ),
        ]
    head = ["Row", "Top-1", "Top-2", "Top-3", "Bal. acc."]
    if has_study:
        head += [
            f"Copies of {split} in training",
            f"{LEAKY} top-1",
            f"{LEAKY} top-2",
            f"{LEAKY} top-3",
            f"{LEAKY} bal. acc.",
            f"{LEAKY} test copies in training",
        ]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        o, s = r.get("official"), r.get("study")
        cells = [r["name"]] + [_pct(o.get(k)) if o else "—" for k in COLUMNS]
        if has_study:
            cells.append(_copies(o.get("leakage")) if o else "—")
            cells += [_pct(s.get(k)) if s else "" for k in COLUMNS]
            cells.append(_copies(s.get("leakage")) if s else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            f"Machine: {table['machine']}; table written {table['created']}. Per-cell metrics, configs and "
            "leakage audits: `<row>/<protocol>/metrics.json`, `leakage.json`; all figures: `results.json`."
        ),
        "",
    ]
    return "\n".join(lines)


def write_table(out: str | Path, grid: Grid | None = None) -> dict[str, Any]:
    """(Re)write ``results.json`` and ``results.md`` in ``out``; returns the JSON table."""
    out = Path(out)
    table = collect(out, grid)
    atomic_write_text(out / "results.json", json.dumps(table, indent=1))
    atomic_write_text(out / "results.md", render_markdown(table))
    return table
