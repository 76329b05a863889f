"""``Recognizer``: face crops in, the seven expression probabilities out — one engine for the API,
the CLI and the app.

    rec = Recognizer.load("model.onnx")            # or a checkpoint, an ensemble, or None (bundled model)
    [p] = rec.predict(face)                        # numpy HxW / HxWx1 / HxWx3 RGB / HxWx4 RGBA, or PIL
    p.label, p.score, p.probs                      # "Happy", 0.93, float32 (7,) in CLASSES order

ONNX Runtime on the CPU by default: a checkpoint or ensemble is exported to an in-memory graph at
load (checked against PyTorch like ``ferkit export``); ``backend="torch"`` (or a GPU ``device``) runs
PyTorch instead. Faces go through in batches of 64; a single face is one small call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.data.images import pil_to_array, to_face_input
from ferkit.errors import ConfigError, InputError, ModelError
from ferkit.labels import CLASSES
from ferkit.models.files import load_model_file, model_file_type
from ferkit.models.onnx import OnnxModel
from ferkit.runtime import check_device, check_tta

BACKENDS = ("auto", "onnx", "torch")
BATCH_SIZE = 64
MIN_SIDE = 8  # a face crop narrower than this carries no expression (and is usually a shape mistake)
DEFAULT_MODEL = "weights/default.onnx"  # package data of ferkit


@dataclass
class FacePrediction:
    """A face's result: ``probs`` (float32, CLASSES order) + top class ``index``, ``label``, ``score``."""

    probs: np.ndarray
    index: int
    label: str
    score: float
    classes: tuple[str, ...] = field(default=CLASSES, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"label", "score", "index", "probs": {class: p}}`` (classes in fixed order)."""
        return {
            "label": self.label,
            "score": self.score,
            "index": self.index,
            "probs": {c: float(p) for c, p in zip(self.classes, self.probs)},
        }


def default_model_path() -> Path:
    """The bundled model, ``ferkit/weights/default.onnx``; ModelError when this install has none."""
    p = Path(str(resources.files("ferkit").joinpath(DEFAULT_MODEL)))
    if not p.is_file():
        raise ModelError(
            f"no bundled model in this installation ({p} is missing); pass a model file: "
            "a checkpoint (.pt), an ensemble or an exported .onnx"
        )
    return p


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "getbands")


def prepare_faces(faces: Any, size: int = 48) -> np.ndarray:
    """One face or many -> uint8 (N, size, size) grayscale model input.

    One face: a PIL image or an array HxW, HxWx1, HxWx3 (RGB), HxWx4 (RGBA), uint8/uint16/float
    ([0,1] or [0,255]), any size (centre-cropped to a square, then resized). Many: a list/tuple of
    those, or a stacked array NxHxW / NxHxWxC. An empty list gives N = 0; an empty, NaN, 5-D or
    otherwise malformed array, or a crop under 8 pixels on a side, raises InputError.
    """
    if _is_pil(faces):
        items: list[Any] = [faces]
    elif isinstance(faces, (list, tuple)):
        items = list(faces)
    elif isinstance(faces, np.ndarray) or hasattr(faces, "__array__"):
        a = np.asarray(faces)
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise InputError(f"expected numeric image data, got an array of dtype {a.dtype}")
        if a.size == 0:
            raise InputError(f"empty image array (shape {a.shape})")
        if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4)):
            items = [a]  # one face, HxW or HxWxC (a 1-, 3- or 4-pixel-wide stack is not a thing)
        elif a.ndim == 3:
            if a.dtype == np.uint8 and a.shape[1:] == (size, size):
                return np.ascontiguousarray(a)  # already model input: the fast path
            items = list(a)
        elif a.ndim == 4:
            items = list(a)
        else:
            raise InputError(
                f"expected a face HxW[xC] or a stack NxHxW[xC], got a {a.ndim}-D array {a.shape}"
            )
    else:
        raise InputError(
            f"expected a face image (numpy array or PIL image) or a list of them, got {type(faces).__name__}"
        )
    out = np.empty((len(items), size, size), np.uint8)
    for i, item in enumerate(items):
        try:
            if _is_pil(item):
                item = pil_to_array(item)
            elif not isinstance(item, np.ndarray):
                if not hasattr(item, "__array__"):
                    raise InputError(f"expected a numpy array or PIL image, got {type(item).__name__}")
                item = np.asarray(item)
            if item.dtype == object or item.dtype.kind not in "biuf":
                raise InputError(f"expected numeric image data, got dtype {item.dtype}")
            if item.ndim in (2, 3) and item.size and min(item.shape[:2]) < MIN_SIDE:
                raise InputError(
                    f"face crop too small ({item.shape[0]}x{item.shape[1]} pixels; "
                    f"at least {MIN_SIDE}x{MIN_SIDE})"
                )
            out[i] = to_face_input(item, size)
        except InputError as e:
            raise InputError(f"face {i}: {e}" if len(items) > 1 else str(e)) from None
    return out


def looks_like_photo(height: int, width: int) -> bool:
    """A whole photo rather than a face crop: large (short side >= 400 px), or large-ish and clearly not
    square (short side >= 160 px, long side >= 1.3 x short side). Face crops are square-ish and, from
    datasets, small (FER2013 48 px, AffectNet 96-224 px)."""
    short, long = min(height, width), max(height, width)
    return short >= 400 or (short >= 160 and long >= 1.3 * short)


def _warn_if_photo(faces: Any) -> None:
    import warnings

    items = faces if isinstance(faces, (list, tuple)) else [faces]
    for item in items[:64]:
        if _is_pil(item):
            w, h = item.size
        else:
            shape = getattr(item, "shape", None)
            if shape is None or len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] not in (1, 3, 4)):
                continue
            h, w = shape[:2]
        if looks_like_photo(int(h), int(w)):
            warnings.warn(
                f"Recognizer.predict reads each input as one face crop, but a {w}x{h} image looks like a "
                "whole photo; for the faces in a photo use ferkit.analyze(image) (or ferkit.FaceAnalyzer)",
                UserWarning,
                stacklevel=3,
            )
            return


class _TorchEngine:
    def __init__(self, ensemble: Any, tta: str, device: str) -> None:
        import torch

        self.torch, self.ensemble, self.tta, self.device = torch, ensemble.to(device).eval(), tta, device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            return self.ensemble.predict_proba(x, self.tta).float().cpu().numpy()


class Recognizer:
    """Predicts expressions of face crops; build it with ``Recognizer.load``."""

    def __init__(
        self,
        engine: Any,
        *,
        name: str,
        classes: list[str],
        backend: str,
        tta: str,
        image_size: int = 48,
        device: str = "cpu",
        batch_size: int = BATCH_SIZE,
        source: str | None = None,
    ) -> None:
        self._engine = engine
        self.name, self.classes, self.backend, self.tta = name, tuple(classes), backend, tta
        self.image_size, self.device, self.batch_size, self.source = image_size, device, batch_size, source

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        backend: str = "auto",
        threads: int | None = None,
        tta: str | None = None,
        device: str = "cpu",
    ) -> Recognizer:
        """A checkpoint (.pt), an ensemble file or an exported .onnx; None: the bundled default model.

        ``backend``: ``auto`` (ONNX Runtime on the CPU, PyTorch on a GPU ``device``), ``onnx`` or
        ``torch``. ``threads``: intra-op threads (ONNX Runtime session option; for PyTorch,
        ``torch.set_num_threads``, which is process-wide); None = the library's default (all cores).
        ``tta``: ``center``, ``mirror`` or ``ten_crop``; None = the model's own (an .onnx file's built-in
        crops, otherwise ``center``). An .onnx file cannot change its built-in crops: asking for other
        ones is a ModelError. Checkpoints and ensembles need the ``[train]`` extra (PyTorch).
        """
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if tta is not None:
            check_tta(tta)
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise ConfigError(f"threads must be a non-negative integer, got {threads!r}")
        device = str(device)
        p = default_model_path() if path is None else Path(path)
        if backend == "auto":
            backend = "onnx" if device == "cpu" else "torch"
        if backend == "onnx" and device != "cpu":
            raise ConfigError(f"the onnx backend runs on the CPU; use backend='torch' for device {device!r}")
        if backend == "torch" and model_file_type(p) == "onnx":
            raise ConfigError(f"{p} is an ONNX file: it runs with backend='onnx' (or 'auto')")
        model = load_model_file(p, threads=threads)
        if isinstance(model, OnnxModel):
            if tta is not None and tta != model.tta:
                raise ModelError(
                    f"{p.name} has {model.tta!r} test-time crops built in; load it with "
                    f"tta={model.tta!r} or export it again with --tta {tta}"
                )
            return cls(
                model,
                name=model.name,
                classes=model.classes,
                backend="onnx",
                tta=model.tta,
                image_size=model.image_size,
                device=device,
                source=str(p),
            )
        return cls._from_ensemble(
            model, p, backend=backend, threads=threads, tta=tta or "center", device=device
        )

    @classmethod
    def _from_ensemble(
        cls, ens: Any, p: Path, *, backend: str, threads: int | None, tta: str, device: str
    ) -> Recognizer:
        """A PyTorch ensemble run by PyTorch, or exported to an in-memory ONNX graph (checked like export)."""
        name = ens.names[0] if len(ens.members) == 1 else p.stem
        engine: Any
        if backend == "torch":
            import torch

            if threads:
                torch.set_num_threads(threads)
            check_device(device)
            engine = _TorchEngine(ens, tta, device)
        else:
            from ferkit.inference.export import export_onnx, probe_images  # torch: only for torch files

            exported = export_onnx(ens, tta=tta, source=p.name, probes=probe_images(8))
            engine = OnnxModel(exported.data, threads=threads, name=name)
        return cls(
            engine,
            name=name,
            classes=ens.classes,
            backend=backend,
            tta=tta,
            image_size=ens.image_size,
            device=device,
            source=str(p),
        )

    def predict_proba(self, faces: Any) -> np.ndarray:
        """Probabilities (N, 7) float32 in ``classes`` order; ``faces``: see ``prepare_faces``."""
        x = prepare_faces(faces, self.image_size)
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        if len(x) <= self.batch_size:
            return np.asarray(self._engine(x), dtype=np.float32)
        return np.concatenate(
            [self._engine(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        ).astype(np.float32, copy=False)

    def predict(self, faces: Any) -> list[FacePrediction]:
        """One ``FacePrediction`` per face, in input order. Each input is taken as one face crop; an input
        that looks like a whole photo gets a warning pointing to ``ferkit.analyze``."""
        _warn_if_photo(faces)
        probs = self.predict_proba(faces)
        out = []
        for p in probs:
            i = int(p.argmax())
            out.append(
                FacePrediction(
                    probs=p, index=i, label=self.classes[i], score=float(p[i]), classes=self.classes
                )
            )
        return out

    def __repr__(self) -> str:
        return (
            f"Recognizer(name={self.name!r}, backend={self.backend!r}, tta={self.tta!r}, "
            f"device={self.device!r})"
        )
