"""Reports of an evaluation result: ``metrics.json`` (everything), ``report.md`` (tables) and
``confusion.png`` (counts and row-normalised side by side); all written atomically.

The result is the dict ``ferkit.evaluation.evaluate`` returns: ``sets`` maps a set's name to its
metrics, ``members`` maps each ensemble member to its own ``sets``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.io import atomic_write, atomic_write_text

# (key in the metrics, column heading, kind): "pct" printed as a percentage, "num" as a plain number.
SUMMARY_COLUMNS = [
    ("n", "n", "int"),
    ("top1", "top-1", "pct"),
    ("top2", "top-2", "pct"),
    ("top3", "top-3", "pct"),
    ("balanced_accuracy", "bal. acc.", "pct"),
    ("macro_f1", "macro-F1", "pct"),
    ("ece", "ECE", "pct"),
    ("nll", "NLL", "num"),
]


def _fmt(value: Any, kind: str) -> str:
    if kind == "int":
        return str(int(value))
    if kind == "pct":
        return f"{100 * value:.2f}"
    return f"{value:.4f}"


def dedup_sentence(result: dict[str, Any]) -> str:
    """How many images of the split also occur in Training, and what was done about it."""
    d = result["dedup"]
    text = f"{d['duplicates']} of {d['of']} images of {result['split']} also occur in {d['reference']}"
    if d["duplicates"] == 0:
        return text
    if d["duplicates"] == d["of"]:
        return text + " (no set without them is left to report)"
    return text + "; the set without them is reported separately"


def summary_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, metrics) per table row: the scorer's sets first, then each member's."""
    rows = [(name, m) for name, m in result["sets"].items()]
    for member, sets in result.get("members", {}).items():
        rows += [(f"member {member}: {name}", m) for name, m in sets.items()]
    return rows


def format_table(result: dict[str, Any]) -> str:
    """A compact fixed-width summary table for the terminal (percentages, NLL in nats)."""
    header = ["set"] + [h for _, h, _ in SUMMARY_COLUMNS]
    body = [
        [label] + [_fmt(m[k], kind) for k, _, kind in SUMMARY_COLUMNS] for label, m in summary_rows(result)
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render_markdown(result: dict[str, Any]) -> str:
    """A short Markdown report: what was evaluated, the summary table, per-class tables."""
    model = result.get("model", {})
    lines = ["# ferkit evaluation", ""]
    lines.append(
        f"- model: `{result.get('model_path')}` ({model.get('kind', '?')}"
        + (f", {model['model']}" if model.get("model") else "")
        + f", temperature {model.get('temperature', 1.0):.3f})"
    )
    lines.append(
        f"- data: `{result.get('data_path')}`, split {result.get('split')}, "
        f"test-time crops: {result.get('tta')}"
        + (f", central {result['crop']:g} of each face" if result.get("crop", 1) != 1 else "")
    )
    if result.get("dedup"):
        lines.append(f"- {dedup_sentence(result)}")
    if result.get("command"):
        lines.append(f"- command: `{' '.join(result['command'])}`")
    if result.get("created"):
        lines.append(f"- date: {result['created']}")
    lines += [
        "",
        "## Summary",
        "",
        (
            "Percentages; balanced accuracy is the mean per-class recall (the study's \"weighted "
            'accuracy"), macro-F1 the unweighted mean over classes, ECE the expected calibration '
            "error (15 bins), NLL the mean negative log-likelihood."
        ),
        "",
    ]
    header = ["set"] + [h for _, h, _ in SUMMARY_COLUMNS]
    lines += _md_table(
        header,
        [[label] + [_fmt(m[k], kind) for k, _, kind in SUMMARY_COLUMNS] for label, m in summary_rows(result)],
    )
    for name, m in result["sets"].items():
        lines += ["", f"## Per class: {name}", ""]
        lines += _md_table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [
                    c,
                    _fmt(v["precision"], "pct"),
                    _fmt(v["recall"], "pct"),
                    _fmt(v["f1"], "pct"),
                    str(v["support"]),
                ]
                for c, v in m["per_class"].items()
            ],
        )
    return "\n".join(lines) + "\n"


def plot_confusion(metrics: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Counts and row-normalised confusion matrices side by side, saved atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = metrics["classes"]
    counts = np.asarray(metrics["confusion"])
    norm = np.asarray(metrics["confusion_normalized"])
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    axes = fig.subplots(1, 2)
    panels = [(axes[0], counts, "counts", "d", None), (axes[1], norm, "row-normalised (recall)", ".2f", 1.0)]
    for ax, mat, sub, fmt, vmax in panels:
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=vmax)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(sub)
        hi = mat.max() if mat.size else 0
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(
                    j,
                    i,
                    format(mat[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if hi and mat[i, j] > hi / 2 else "black",
                )
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def write_report(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, report.md and confusion.png (of the first set) into ``out_dir``."""
    out = Path(out_dir)
    paths = {"json": out / "metrics.json", "markdown": out / "report.md", "confusion": out / "confusion.png"}
    atomic_write_text(paths["json"], json.dumps(result, indent=2) + "\n")
    atomic_write_text(paths["markdown"], render_markdown(result))
    first, metrics = next(iter(result["sets"].items()))
    plot_confusion(metrics, paths["confusion"], title=f"{result.get('model', {}).get('name', '')} on {first}")
    return paths
