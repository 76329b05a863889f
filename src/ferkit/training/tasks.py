"""What a training step minimises, as a small task object (after timm's ``task/``): the loop calls
``task.loss(logits, labels, crops)`` and does not care whether it trains on labels or with a teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ferkit.config import TrainConfig
from ferkit.training.distill import Teacher, distillation_loss


class ClassificationTask:
    """Cross-entropy on the labels, optionally class-weighted and label-smoothed."""

    def __init__(self, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        """The batch's loss; ``crops`` are the augmented [0, 255] inputs before normalisation."""
        return F.cross_entropy(
            logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing
        )


class DistillationTask(ClassificationTask):
    """``(1 - alpha) * cross-entropy + alpha * T^2 * KL(teacher_T || student_T)``; the teacher sees the
    student's own augmented crops (see ``ferkit.training.distill``)."""

    def __init__(
        self,
        teacher: Teacher,
        alpha: float,
        temperature: float,
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(class_weights, label_smoothing)
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        soft = self.teacher.soft_targets(crops, self.temperature)
        hard = super().loss(logits, labels, crops)
        return (1 - self.alpha) * hard + self.alpha * distillation_loss(logits, soft, self.temperature)


def make_task(
    cfg: TrainConfig, class_weights: torch.Tensor | None, device: torch.device, classes: list[str]
) -> ClassificationTask:
    """The task ``cfg`` asks for: distillation when it names a teacher, cross-entropy otherwise."""
    if not cfg.teacher:
        return ClassificationTask(class_weights, cfg.label_smoothing)
    teacher = Teacher(cfg.teacher, device, cfg.augment.crop, classes)
    return DistillationTask(
        teacher, cfg.distill_alpha, cfg.distill_temperature, class_weights, cfg.label_smoothing
    )
