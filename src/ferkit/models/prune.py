"""Structured pruning of a VGGNet into a narrower registered one, to start training from its knowledge.

Each convolution keeps the output channels that matter most on real faces: a channel's score is its mean
activation (after BatchNorm and ReLU) times the L1 norm of the weights that read it in the next layer
(the next convolution, or the first fully connected layer for the last stage). The narrower model is then
fine-tuned (``finetune_from=``); pruning alone loses accuracy that training recovers.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.errors import ModelError
from ferkit.models.registry import create_model
from ferkit.models.vgg import VGGNet


def _convs(model: VGGNet) -> list[tuple[nn.Conv2d, nn.BatchNorm2d, nn.ReLU]]:
    layers = list(model.features)
    return [
        (layers[i], layers[i + 1], layers[i + 2])  # type: ignore[misc]
        for i in range(len(layers))
        if isinstance(layers[i], nn.Conv2d)
    ]


@torch.no_grad()
def channel_scores(model: VGGNet, crops: torch.Tensor) -> list[torch.Tensor]:
    """Per convolution, a score per output channel (mean activation x L1 weight of its readers)."""
    convs = _convs(model)
    acts: dict[nn.Module, torch.Tensor] = {}
    handles = [
        relu.register_forward_hook(lambda m, _i, out: acts.__setitem__(m, out.mean((0, 2, 3))))
        for _, _, relu in convs
    ]
    model.eval()(crops)
    for h in handles:
        h.remove()
    fc = model.classifier[1]
    assert isinstance(fc, nn.Linear)
    readers = [conv.weight.abs().sum((0, 2, 3)) for conv, _, _ in convs[1:]]
    last = convs[-1][0].out_channels
    readers.append(fc.weight.abs().reshape(fc.out_features, last, -1).sum((0, 2)))
    return [acts[relu] * r for (_, _, relu), r in zip(convs, readers, strict=True)]


def _take(dst: nn.Module, src: nn.Module, out_idx: torch.Tensor, in_idx: torch.Tensor | None) -> None:
    for name, t in [*src.named_parameters(recurse=False), *src.named_buffers(recurse=False)]:
        v = t.data
        if v.dim() > 0:
            v = v[out_idx]
            if in_idx is not None and v.dim() > 1:
                v = v[:, in_idx]
        getattr(dst, name).data.copy_(v)


@torch.no_grad()
def prune_vgg(model: VGGNet, target: str, crops: torch.Tensor) -> VGGNet:
    """``model`` narrowed to the registered VGGNet ``target`` (same depth and FC size, fewer channels),
    keeping each layer's highest-scoring channels on ``crops`` (normalised (N, 1, S, S) faces)."""
    new = create_model(target)
    if not isinstance(new, VGGNet):
        raise ModelError(f"{target} is not a VGGNet")
    old_convs, new_convs = _convs(model), _convs(new)
    old_fc, new_fc = model.classifier[1], new.classifier[1]
    assert isinstance(old_fc, nn.Linear) and isinstance(new_fc, nn.Linear)
    if len(old_convs) != len(new_convs) or old_fc.out_features != new_fc.out_features:
        raise ModelError(f"{target} does not have the source model's depth and FC size")
    keep_in: torch.Tensor | None = None
    scores = channel_scores(model, crops)
    for score, (oc, ob, _), (nc, nb, _) in zip(scores, old_convs, new_convs, strict=True):
        if nc.out_channels > oc.out_channels:
            raise ModelError(f"{target} is wider than the source model")
        keep = score.topk(nc.out_channels).indices.sort().values
        _take(nc, oc, keep, keep_in)
        _take(nb, ob, keep, None)
        keep_in = keep
    assert keep_in is not None
    per = old_fc.in_features // old_convs[-1][0].out_channels  # spatial positions per channel
    cols = (keep_in[:, None] * per + torch.arange(per)).reshape(-1)
    new_fc.weight.data.copy_(old_fc.weight.data[:, cols])
    new_fc.bias.data.copy_(old_fc.bias.data)
    new.classifier[4].load_state_dict(model.classifier[4].state_dict())
    new.classifier[7].load_state_dict(model.classifier[7].state_dict())
    return new.eval()
