"""Experiment grids: named rows (a training recipe plus settings) under a budget, as YAML.

A grid file (shipped ones live in ``ferkit/experiments/grids``, e.g. ``study``) has ``rows``, each with
``id``, ``name``, a base ``config`` (a shipped or file training config) or ``finetune: <row id>`` (start
from that row's best checkpoint, with its recipe) or ``ensemble: [<row id>, ...]`` (the mean of those
rows' softmax, per protocol; nothing trained), optional ``set`` (config overrides), ``study: true``
(also run under the study's leaky protocol) and ``aux: true`` (needs auxiliary data). ``budgets`` map a
budget name to overrides for every cell (``set``), for fine-tuning cells (``finetune_set``) and for the
evaluation (``evaluate``, e.g. centre crops instead of ten crops on a CPU). ``monitor: true`` records,
every epoch of every cell, accuracy on the leaky test part, PrivateTest and a training sample
(``ferkit.experiments.monitor``; never used for selection).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ferkit.config import Protocol, TrainConfig, apply_overrides, from_dict, load_yaml
from ferkit.errors import ConfigError
from ferkit.runtime import TTA

GRIDS_DIR = Path(__file__).parent / "grids"
PROTOCOLS: tuple[str, ...] = get_args(Protocol)  # ("official", "study")


@dataclass
class EvaluateSettings:
    """How cells are evaluated (a grid's or budget's ``evaluate``): the report split and test-time crops."""

    split: str = "PrivateTest"
    tta: TTA = "ten_crop"


def check_evaluate(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """``settings`` (an ``evaluate`` mapping, possibly partial) when its keys and values are known."""
    try:
        from_dict(EvaluateSettings, settings, prefix="evaluate.")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return dict(settings)


@dataclass
class Row:
    id: str
    name: str
    config: str | None = None
    finetune: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    study: bool = False
    aux: bool = False
    ensemble: list[str] = field(default_factory=list)  # member rows: softmax averaged, nothing trained

    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS if self.study else PROTOCOLS[:1]


@dataclass
class Budget:
    note: str = ""
    set: dict[str, Any] = field(default_factory=dict)
    finetune_set: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)  # overrides the grid's evaluate (e.g. tta)


@dataclass
class Grid:
    name: str
    rows: list[Row]
    budgets: dict[str, Budget]
    evaluate: dict[str, Any] = field(default_factory=lambda: {"split": "PrivateTest", "tta": "ten_crop"})
    description: str = ""
    monitor: bool = False  # record leaky-test, PrivateTest and training-sample accuracy every epoch

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise ConfigError(f"grid {self.name}: no row {row_id!r} (rows: {', '.join(r.id for r in self.rows)})")

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ConfigError(f"grid {self.name}: no budget {name!r} (budgets: {', '.join(self.budgets)})")
        return self.budgets[name]

    def recipe(self, row: Row) -> str:
        """The base training config of a row (a fine-tuning row inherits its parent's)."""
        seen = []
        while row.config is None:
            if row.finetune is None or row.id in seen:
                raise ConfigError(f"grid {self.name}: row {row.id!r} needs a config or a finetune parent")
            seen.append(row.id)
            row = self.row(row.finetune)
        return row.config

    def with_dependencies(self, only: list[str] | None) -> list[Row]:
        """The rows to run, in grid order: ``only`` (all if empty) plus the rows they fine-tune from."""
        if not only:
            return list(self.rows)
        wanted: set[str] = set()
        stack = list(only)
        while stack:
            r = self.row(stack.pop())
            if r.id not in wanted:
                wanted.add(r.id)
                stack += [r.finetune] if r.finetune else []
                stack += r.ensemble
        return [r for r in self.rows if r.id in wanted]

    def cell_config(
        self,
        row: Row,
        protocol: str,
        budget: str,
        *,
        data: str,
        out: str | Path,
        aux: str | None = None,
        seed: int = 0,
        finetune_from: str | None = None,
        overrides: list[str] | None = None,
    ) -> TrainConfig:
        """recipe <- budget.set <- (budget.finetune_set) <- row.set <- run facts <- user overrides."""
        b = self.budget(budget)
        cfg = load_yaml(self.recipe(row))
        cfg = apply_overrides(cfg, [f"{k}={_yaml(v)}" for k, v in b.set.items()])
        if row.finetune:
            cfg = apply_overrides(cfg, [f"{k}={_yaml(v)}" for k, v in b.finetune_set.items()])
        cfg = apply_overrides(cfg, [f"{k}={_yaml(v)}" for k, v in row.set.items()])
        cfg.update(data=str(data), out=str(out), seed=seed, protocol=protocol, finetune_from=finetune_from)
        if row.aux:
            cfg["aux_data"] = aux
        return from_dict(TrainConfig, apply_overrides(cfg, overrides or []))


def _yaml(v: Any) -> str:
    return json.dumps(v)  # JSON is YAML: the override parser reads it back unchanged


def resolve_grid(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = GRIDS_DIR / (p.stem + ".yaml")
    if p.parent == Path(".") and shipped.is_file():
        return shipped
    raise ConfigError(f"experiment grid not found: {p} (shipped grids: {', '.join(list_grids())})")


def list_grids() -> list[str]:
    return sorted(f.stem for f in GRIDS_DIR.glob("*.yaml"))


def load_grid(name_or_path: str | Path) -> Grid:
    """Read and check a grid: unknown keys, duplicate ids and dangling ``finetune`` fail loudly."""
    path = resolve_grid(name_or_path)
    raw = load_yaml(path)
    unknown = set(raw) - {"name", "description", "evaluate", "budgets", "rows", "monitor"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        rows = [from_dict(Row, dict(r)) for r in raw.get("rows") or []]
        budgets = {k: from_dict(Budget, dict(v or {})) for k, v in (raw.get("budgets") or {}).items()}
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None
    evaluate = check_evaluate(raw.get("evaluate") or {"split": "PrivateTest", "tta": "ten_crop"}, str(path))
    for name, b in budgets.items():
        check_evaluate(b.evaluate, f"{path}: budget {name}")
    grid = Grid(
        raw.get("name", path.stem),
        rows,
        budgets,
        evaluate,
        raw.get("description", ""),
        bool(raw.get("monitor")),
    )
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: duplicate row ids")
    for r in rows:
        for m in r.ensemble:
            if m not in ids[: ids.index(r.id)]:
                raise ConfigError(
                    f"{path}: ensemble row {r.id!r} needs member {m!r} among the rows before it"
                )
            if grid.row(m).study != r.study:
                raise ConfigError(
                    f"{path}: ensemble row {r.id!r} and member {m!r} must share study: true/false"
                )
        if r.ensemble:
            continue
        grid.recipe(r)  # every other row resolves to a recipe
        if r.finetune and ids.index(r.finetune) > ids.index(r.id):
            raise ConfigError(f"{path}: row {r.id!r} fine-tunes {r.finetune!r}, which comes after it")
    return grid
