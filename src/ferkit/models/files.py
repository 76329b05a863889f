"""One loader for every model file: an exported ``.onnx`` graph, a checkpoint or an ensemble.

``load_model_file`` dispatches on the file type, for every command and for ``Recognizer``:

- ``.onnx`` -> ``OnnxModel`` (ONNX Runtime; torch is never imported);
- a torch file (``.pt``/``.pth``/``.ckpt``, or any zip-format torch file) -> ``Ensemble``: an ensemble
  file as it is, a checkpoint as an ensemble of one (``Ensemble.file_format`` says which). Reading it
  needs the ``[train]`` extra (PyTorch).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferkit.errors import ModelError
from ferkit.extras import require
from ferkit.models.onnx import OnnxModel

if TYPE_CHECKING:
    from ferkit.models.ensemble import Ensemble

ONNX_SUFFIX = ".onnx"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
GENERIC_STEMS = ("best", "last", "final", "model", "checkpoint")


def file_label(path: Path) -> str:
    """A short name for a model file: its stem, prefixed by its folder for runs/vgg/best.pt -> vgg/best."""
    if path.stem.lower() in GENERIC_STEMS and path.parent.name:
        return f"{path.parent.name}/{path.stem}"
    return path.stem


def _is_torch_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def model_file_type(path: str | Path) -> str:
    """``"onnx"`` or ``"torch"`` for an existing model file; ModelError for anything else."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelError(f"not a model file: {p}")
    suffix = p.suffix.lower()
    if suffix == ONNX_SUFFIX:
        return "onnx"
    if suffix in TORCH_SUFFIXES or _is_torch_zip(p):
        return "torch"
    known = ", ".join((ONNX_SUFFIX, *TORCH_SUFFIXES))
    raise ModelError(f"{p}: unknown model file type {suffix or '(no suffix)'!r} (known: {known})")


def load_model_file(
    path: str | Path, *, device: Any = "cpu", threads: int | None = None
) -> OnnxModel | Ensemble:
    """The model in ``path``: an ``OnnxModel`` for ``.onnx`` files, else an eval-mode ``Ensemble``."""
    p = Path(path)
    if model_file_type(p) == "onnx":
        if str(device) != "cpu":
            raise ModelError(f"ONNX files run on the CPU (ONNX Runtime); got device {device!r}")
        return OnnxModel(p, threads=threads)
    require(f"loading the PyTorch model {p.name}", "torch")
    from ferkit.models.ensemble import load_torch  # torch loads only for torch files

    return load_torch(p, device=device)
