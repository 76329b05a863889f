"""The package's shape: imports point one way, and the inference path runs without the training extras."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ferkit"
# data -> models -> training / evaluation -> inference / experiments -> app -> cli (lower layers first).
LAYERS = {
    **dict.fromkeys(["labels", "errors", "io", "config", "runtime", "extras"], 0),
    "data": 1,
    "models": 2,
    "training": 3,
    "evaluation": 3,
    "inference": 4,
    "experiments": 4,
    "app": 5,
    "cli": 6,  # the command line also starts the app
}
# What the lean install (`pip install ferkit`) does not have.
EXTRAS_ONLY = ["torch", "sklearn", "imblearn", "scipy", "matplotlib", "onnx", "fastapi", "uvicorn"]


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ferkit" else None


def import_edges() -> set[tuple[str, str, str]]:
    """(from unit, to unit, file) for every ferkit import at any depth, functions included."""
    edges = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        src = parts[1] if len(parts) > 1 else None  # None: the root package, the public API facade
        if src is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                dst = _unit(name)
                if dst and dst != src:
                    edges.add((src, dst, str(path.relative_to(ROOT))))
    return edges


def test_every_unit_has_a_layer():
    units = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert units - set(LAYERS) <= {"weights", "configs"}, f"new units need a layer: {units - set(LAYERS)}"


def test_imports_point_one_way():
    wrong = sorted(
        f"{f}: {a} -> {b}"
        for a, b, f in import_edges()
        if not (LAYERS[b] < LAYERS[a] or LAYERS[a] == LAYERS[b] == 0)
    )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for a, b, _ in import_edges():
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert not [u for u in graph if reaches(u, u, {u})]


def _run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where the training and serving extras cannot be imported."""
    prelude = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {EXTRAS_ONLY!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Block())
        import importlib.util
        _find = importlib.util.find_spec
        importlib.util.find_spec = lambda n, *a: None if n.split(".")[0] in BLOCKED else _find(n, *a)
    """)
    env = {**os.environ, "FERKIT_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_inference_path_needs_no_extra(tmp_path):
    """`ferkit predict`, `Recognizer` and a photo's faces, bundled model, as after `pip install ferkit`."""
    r = _run_without_extras(
        """
        import json, sys
        from ferkit.cli import main
        rc = main(["predict", "examples/astronaut.png", "--no-progress", "-o", "out.jsonl"])
        assert rc == 0, rc
        import numpy as np
        from ferkit import CLASSES, Recognizer
        [p] = Recognizer.load().predict(np.full((48, 48), 128, np.uint8))
        assert abs(float(p.probs.sum()) - 1) < 1e-4
        from ferkit.data.images import read_image
        from ferkit.inference.faces import FaceAnalyzer
        [face] = FaceAnalyzer(Recognizer.load()).analyze(read_image("examples/astronaut.png"))
        assert face.to_dict(CLASSES)["label"] == "Happy"
        import ferkit
        [f] = ferkit.analyze("examples/astronaut.png")  # the bundled BlazeFace detector, no extra needed
        assert f.label == "Happy" and len(f.keypoints) == 6, f.to_dict()
        rows = [json.loads(line) for line in open("out.jsonl")]
        print(rows[0]["label"], sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
        assert main(["models"]) == 0
    """.replace("out.jsonl", str(tmp_path / "out.jsonl")),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "Happy []"  # the smiling astronaut, and no extra was imported
    assert "needs the [train] extra" in r.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["train", "--data", "x"], "train"),
        (["serve"], "serve"),
        (["evaluate", "m.pt", "--data", "x"], "train"),
    ],
)
def test_missing_extra_is_one_line(tmp_path, argv, extra):
    r = _run_without_extras(
        f"""
        import sys
        from ferkit.cli import main
        sys.exit(main({argv!r}))
    """,
        tmp_path,
    )
    assert r.returncode == 6, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"ferkit: error: ferkit {argv[0]} needs the [{extra}] extra: pip install 'ferkit[{extra}]'"
    ]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FERKIT_SKIP_VENV_TEST") == "1", reason="FERKIT_SKIP_VENV_TEST=1")
def test_lean_install_in_a_fresh_venv(tmp_path):
    """`pip install ferkit` (this tree) in a new venv: no torch, and the README's main job runs."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    r = subprocess.run(
        [str(venv / "bin" / "ferkit"), "predict", str(ROOT / "examples" / "astronaut.png"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert '"label": "Happy"' in r.stdout
    probe = f"import importlib.util as u; print([m for m in {EXTRAS_ONLY!r} if u.find_spec(m)])"
    have = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True)
    assert have.stdout.strip() == "[]"


def test_library_functions_fit_on_a_screen():
    """Every function in the library is under 80 lines (the training loop reads top to bottom)."""
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n >= 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)
