"""The leakage report of a ``study-converged`` run: the study's reported figures, ferkit under the study's
protocol (LEAKY) and ferkit under the official protocol, side by side; the curves of both protocols per
epoch; and the arithmetic that explains the gap (docs/LEAKAGE.md is this module's output).

A leaky test accuracy is a mixture: ``leaky = c * seen + (1 - c) * unseen``, where ``c`` is the share of
the leaky test part that the model trained on (pixel copies), ``seen`` its accuracy there (memorisation)
and ``unseen`` its accuracy on the rest (recognition). Every quantity is measured per epoch by the run's
monitor, so a row that does not reach the study's figure can be explained by which term falls short;
the study's figure itself implies ``seen = (reported - (1 - c) * unseen) / c``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ferkit.data.leakage import LEAKY
from ferkit.errors import ConfigError, DataError, one_line
from ferkit.experiments.table import METRICS, RUN_HINT, read_cell, read_json
from ferkit.io import atomic_write, atomic_write_text
from ferkit.training.loop import best_epoch

# The study's reported top-1 / top-2 / top-3 (%), as quoted in issue 15.
STUDY_REPORTED: dict[str, tuple[float, float, float]] = {
    "tuned": (66.15, 82.22, 90.89),
    "ros": (85.97, 92.71, 96.49),
    "smote": (87.18, 93.88, 96.84),
    "smote_tomek": (82.88, 91.82, 95.64),
    "ensemble": (97.18, 99.58, 99.72),
    "ros_noaug": (85.97, 92.71, 96.49),  # a probe of the +ROS row: the study's +ROS figure
}
MEMBERS = ("ros", "smote", "smote_tomek")
PROBES = ("ros_noaug",)  # grid rows beyond the study's own: same columns, not ensemble members


def _history(cell: Path) -> list[dict[str, Any]]:
    """The cell's per-epoch records; DataError naming the file and line when one is damaged."""
    f = cell / "metrics.jsonl"
    if not f.is_file():
        return []
    hist, where = [], "the file"
    try:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            where = f"line {i}"
            if line.strip():
                hist.append(json.loads(line))
                if not isinstance(hist[-1], dict):
                    raise ValueError("not a JSON object")
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise DataError(f"{f}: {where} is damaged ({one_line(e, 200)})") from None
    return hist


def _cell(out: Path, row: str, protocol: str) -> dict[str, Any]:
    cell = out / row / protocol
    hist = _history(cell)
    metrics = cell / METRICS
    return {
        "metrics": read_cell(metrics) if metrics.is_file() else None,
        "history": hist,
        "best": best_epoch(hist),  # the epoch the run selected, by fit's own rule
        "monitor": read_json(cell / "monitor.json"),
        "leakage": read_json(cell / "leakage.json"),
    }


def collect_report(out: str | Path) -> dict[str, Any]:
    """Per row: the study's figures and both protocols' cells (finished or in progress)."""
    out = Path(out)
    if not (out / "run.json").is_file():
        raise ConfigError(f"{out} is not an experiment results folder (no run.json)")
    run = read_json(out / "run.json", RUN_HINT)
    rows: dict[str, dict[str, Any]] = {}
    for row in ("tuned", *MEMBERS, "ensemble", *PROBES):
        rows[row] = {"study_reported": STUDY_REPORTED[row]}
        for protocol in ("study", "official"):
            rows[row][protocol] = _cell(out, row, protocol)
    return {"run": run, "rows": rows}


def _pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}"


def _top(cell: dict[str, Any]) -> list[float | None]:
    m = (cell.get("metrics") or {}).get("metrics") or {}
    return [m.get("top1"), m.get("top2"), m.get("top3")]


def _seen_share(cell: dict[str, Any]) -> float | None:
    mon = (cell.get("monitor") or {}).get("leaky")
    return mon["seen"] / mon["images"] if mon and mon["images"] else None


def implied_seen_accuracy(reported: float, share: float, unseen: float) -> float | None:
    """The accuracy on the copies that a reported leaky accuracy implies; None without copies or when
    no accuracy on them could reach it (the rest would have to score higher)."""
    if share <= 0:
        return None
    implied = (reported - (1 - share) * unseen) / share
    return implied if implied <= 1 else None


def _tops(values: list[float | None]) -> str:
    return " / ".join(_pct(v) for v in values) if any(v is not None for v in values) else "—"


def _epochs(cell: dict[str, Any]) -> str:
    h = cell["history"]
    if not h:
        return "—"
    best = cell["best"]["epoch"] if cell["best"] else "?"
    done = "" if cell["metrics"] else ", running"
    return f"{len(h)} (best {best}{done})"


def _leak_share(cell: dict[str, Any]) -> str:
    """Exact copies and SMOTE neighbours of training images in the cell's leaky test part."""
    leak = cell.get("leakage") or (cell.get("metrics") or {}).get("leakage")
    prov = (leak or {}).get("provenance")
    if prov:
        n = prov["test_images"]
        return f"{_pct(prov['exact'] / n)}% + {_pct(prov['smote_neighbour'] / n)}% of {n}"
    if leak and leak.get("label") == LEAKY:
        return f"{_pct(leak['exact'] / leak['test_images'])}% (exact) of {leak['test_images']}"
    mon = (cell.get("monitor") or {}).get("leaky")
    return "—" if not mon else f"{_pct(mon['seen'] / mon['images'])}% (exact) of {mon['images']}¹"


def _study_column(row: str, r: dict[str, Any]) -> str:
    if row == "tuned":  # no study-protocol cell: the tuned model scored on the unresampled pool's test part
        best = r["official"]["best"]
        return f"{_pct(best.get('leaky_acc'))} (top-1)¹" if best and "leaky_acc" in best else "—"
    return _tops(_top(r["study"]))


def render_table(report: dict[str, Any]) -> str:
    """The side-by-side table (Markdown)."""
    head = (
        "| Row | Study, reported (top-1 / 2 / 3) | ferkit, study's protocol, "
        f"{LEAKY} (top-1 / 2 / 3) | ferkit, official protocol: PrivateTest (top-1 / 2 / 3) | "
        "Leaky test part: exact copies + SMOTE neighbours of training | Epochs, study / official |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for row, r in report["rows"].items():
        official = r["official"]
        lines.append(
            f"| {ROW_NAMES[row]} | {' / '.join(f'{v:.2f}' for v in r['study_reported'])} | "
            f"{_study_column(row, r)} | {_tops(_top(official))} | "
            f"{_leak_share(r['official'] if row == 'tuned' else r['study'])} | "
            f"{_epochs(r['study'])} / {_epochs(official)} |"
        )
    return "\n".join(lines)


ROW_NAMES = {
    "tuned": "tuned (Adam 1e-4)",
    "ros": "+ROS",
    "smote": "+SMOTE",
    "smote_tomek": "+SMOTE-Tomek",
    "ensemble": "3-model ensemble",
    "ros_noaug": "+ROS, no per-batch augmentation (probe)",
}


def explain_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per balanced row, at the selected epoch of its study cell: the copy share c, accuracy on the
    copies (seen) and on the rest (unseen), training-sample accuracy, and what the study's figure implies."""
    out = []
    for row in (*MEMBERS, *PROBES):
        cell = report["rows"][row]["study"]
        best, share = cell["best"], _seen_share(cell)
        if not best or share is None or "leaky_seen_acc" not in best:
            continue
        reported = report["rows"][row]["study_reported"][0] / 100
        out.append(
            {
                "row": row,
                "epoch": best["epoch"],
                "share_seen": share,
                "leaky_acc": best["leaky_acc"],
                "seen_acc": best["leaky_seen_acc"],
                "unseen_acc": best.get("leaky_unseen_acc"),
                "train_eval_acc": best.get("train_eval_acc"),
                "reported": reported,
                "implied_seen_acc": implied_seen_accuracy(
                    reported, share, best.get("leaky_unseen_acc") or 0.0
                ),
            }
        )
    return out


def render_explanation(rows: list[dict[str, Any]]) -> str:
    head = (
        "| Row (study protocol, selected epoch) | c: share of the leaky test part it trained on | "
        "accuracy on those copies | on the rest | training sample | leaky = c·copies + (1−c)·rest | "
        "study reported | copies accuracy the study's figure implies |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for e in rows:
        lines.append(
            f"| {ROW_NAMES[e['row']]} (epoch {e['epoch']}) | {_pct(e['share_seen'])}% | "
            f"{_pct(e['seen_acc'])} | "
            f"{_pct(e['unseen_acc'])} | {_pct(e['train_eval_acc'])} | {_pct(e['leaky_acc'])} | "
            f"{_pct(e['reported'])} | {_pct(e['implied_seen_acc'])} |"
        )
    return "\n".join(lines)


def _series(cell: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    pts = [(h["epoch"], h[key]) for h in cell["history"] if key in h]
    return [p[0] for p in pts], [100 * p[1] for p in pts]


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Leaky and official accuracy against epochs, one panel per row (tuned, ROS, SMOTE, SMOTE-Tomek and the
    no-augmentation probe)."""
    import matplotlib  # heavy: only when a report is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ("tuned", *MEMBERS, *PROBES)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.6), sharey=True)
    for ax, row in zip(axes, panels):
        r = report["rows"][row]
        study, official = r["study"], r["official"]
        leaky_src = official if row == "tuned" else study
        ax.plot(*_series(leaky_src, "leaky_acc"), color="tab:red", lw=2, label=f"{LEAKY} test part")
        ax.plot(
            *_series(leaky_src, "leaky_unseen_acc"),
            color="tab:red",
            ls=":",
            label="… its images not trained on",
        )
        ax.plot(*_series(leaky_src, "train_eval_acc"), color="0.5", label="training sample (no augmentation)")
        ax.plot(
            *_series(official, "private_acc"), color="tab:blue", lw=2, label="official protocol: PrivateTest"
        )
        ax.axhline(r["study_reported"][0], color="tab:red", ls="--", lw=1, label="study, reported")
        if not study["history"] and not official["history"]:
            ax.text(0.5, 0.5, "not run yet", transform=ax.transAxes, ha="center", color="0.4")
            ax.set_xlim(0, 10)
        ax.set_title(ROW_NAMES[row] + ("" if row == "tuned" else "\n(continues tuned)"), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


def _replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the block between ``<!-- generated:NAME -->`` markers replaced (appended if absent)."""
    start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + block + "\n"


def render_generated(report: dict[str, Any], figure: str, command: str) -> str:
    run = report["run"]
    return "\n".join(
        [
            (
                f"Produced by `{command}` from `{run.get('data')}` (grid `{run.get('grid')}`, budget "
                f"`{run.get('budget')}`, seed {run.get('seed')}); accuracies in %. ¹: see the notes."
            ),
            "",
            render_table(report),
            "",
            f"![Leaky and official accuracy per epoch]({figure})",
            "",
            "Why the leaky figures are what they are, at each study-protocol model's selected epoch:",
            "",
            render_explanation(explain_rows(report)),
        ]
    )


SKELETON = """# Leakage: the study's numbers, reproduced through its own protocol

The reference study pooled all of FER2013, resampled it, and only then split it 80/10/10, so its test
part holds copies and SMOTE interpolations of its training images. This page puts its reported figures,
ferkit under the study's protocol ({leaky}) and ferkit under the official protocol side by side.
""".replace("{leaky}", LEAKY)


def write_report(out: str | Path, docs: str | Path, command: str) -> dict[str, Any]:
    """Write ``docs/LEAKAGE.md`` (its generated block), ``docs/leakage_curves.png`` and the generated
    block of ``docs/RESULTS.md``; returns the collected report."""
    report = collect_report(out)
    docs = Path(docs)
    plot_curves(report, docs / "leakage_curves.png")
    body = render_generated(report, "leakage_curves.png", command)
    for name in ("LEAKAGE.md", "RESULTS.md"):
        page = docs / name
        text = page.read_text() if page.is_file() else (SKELETON if name == "LEAKAGE.md" else "")
        atomic_write_text(page, _replace_block(text, "study-converged", body))
    atomic_write_text(Path(out) / "leakage_report.json", json.dumps(report, indent=1, default=str))
    return report
