"""Knowledge distillation: a frozen teacher (checkpoint or ensemble) guides the student.

The teacher sees the student's own augmented crop (so the targets match what the student saw) and
gives softened probabilities; the student's loss becomes

    (1 - alpha) * cross_entropy(student, label) + alpha * T^2 * KL(teacher_T || student_T)

with ``p_T = softmax(logits / T)`` (Hinton et al., 2015; the T^2 keeps the gradient scale independent
of T). An ensemble teacher combines its members' softened logits by its own rule (``Ensemble.combine_logits``:
mean or learned weights of probabilities, or mean logits). The members' calibration temperatures and
prior offsets are ignored: distillation uses their raw logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ferkit.errors import ConfigError
from ferkit.models.ensemble import load_torch
from ferkit.models.transforms import normalize


class Teacher:
    """A frozen model (or ensemble) that turns augmented [0,255] crops into soft targets."""

    def __init__(self, path: str | Path, device: torch.device, crop: int, classes: list[str]) -> None:
        with torch.random.fork_rng(devices=[]):  # building the members must not shift the run's RNG
            ens = load_torch(path, device=device)
        if list(ens.classes) != list(classes):
            raise ConfigError(f"teacher {path} predicts {ens.classes}, the student {classes}")
        for meta in ens.metas:
            if meta.input_size != crop:
                raise ConfigError(
                    f"teacher {path} expects {meta.input_size}x{meta.input_size} crops, "
                    f"the student is trained on {crop}x{crop} (augment.crop)"
                )
        for p in ens.parameters():
            p.requires_grad_(False)
        self.ensemble = ens
        self.path = str(path)

    @torch.no_grad()
    def soft_targets(self, crops: torch.Tensor, temperature: float) -> torch.Tensor:
        """(B, 1, crop, crop) float in [0, 255] -> (B, C) teacher probabilities at ``temperature``."""
        ens = self.ensemble
        logits = torch.stack(
            [model(normalize(crops, meta)).float() for model, meta in zip(ens.members, ens.metas)]
        )
        return ens.combine_logits(logits / temperature)


def distillation_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(teacher || student), both softened by T, averaged over the batch."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p, teacher_probs, reduction="batchmean") * temperature**2


def check_distill_config(teacher: str | None) -> None:
    """The teacher file exists (distill_alpha's and distill_temperature's ranges: ferkit.config.RANGES)."""
    if teacher is not None and not Path(teacher).is_file():
        raise ConfigError(f"teacher not found: {teacher}")
