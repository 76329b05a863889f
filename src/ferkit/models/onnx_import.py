"""A VGGNet back from a graph written by ``ferkit export``, as a PyTorch model that can train again.

The exported graph carries each BatchNorm folded into its convolution (weights and bias). Loading it sets
every BatchNorm to the identity; ``unfold_batchnorm`` then gives each BatchNorm the statistics of its
input on real faces (scale = std, shift = mean), so the model computes exactly the same at evaluation and
almost the same in training mode, where a BatchNorm normalises by its batch. Needs the ``onnx`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ferkit.errors import ModelError
from ferkit.models.registry import ModelMeta, create_model


def _logit_bias(graph: object) -> list[float] | None:
    """The prior-correction offsets: the 7-vector constant added after the temperature division."""
    from onnx import numpy_helper

    consts = {
        n.output[0]: numpy_helper.to_array(a.t)
        for n in graph.node  # type: ignore[attr-defined]
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    }
    for n in graph.node:  # type: ignore[attr-defined]
        if n.op_type == "Add":
            for i in n.input:
                if i in consts and consts[i].size == 7:
                    return [float(v) for v in consts[i].ravel()]
    return None


def _num(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def vgg_from_onnx(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """The single member of an exported fp32 graph, rebuilt in PyTorch with identity BatchNorms."""
    import onnx
    from onnx import numpy_helper

    if not Path(path).is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises its own types on files that are not ONNX
        raise ModelError(f"{path} is not an ONNX graph ({type(e).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    members = json.loads(props.get("members", "[]"))
    if len(members) != 1:
        raise ModelError(f"{path}: want a graph of one model, found {len(members)} members")
    member = members[0]
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}
    if any(t.dtype != torch.float32 for k, t in inits.items() if k.startswith("onnx::Conv_")):
        raise ModelError(f"{path}: weights not in float32 (an fp16 or int8 export?); give the fp32 graph")
    model = create_model(member["model"], **member.get("args", {})).eval()
    folded = iter([inits[n] for n in sorted((k for k in inits if k.startswith("onnx::Conv_")), key=_num)])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if m.bias is None:
                raise ModelError(f"{path}: a convolution without the folded BatchNorm's shift")
            m.weight.data, m.bias.data = next(folded), next(folded)
        elif isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.weight.data.fill_(1), m.bias.data.zero_(), m.running_mean.zero_()
            m.running_var.fill_(1 - m.eps)
    for name, p in model.named_parameters():
        key = f"ensemble.members.0.{name}"
        if key in inits:
            p.data = inits[key]
    meta = ModelMeta(
        member["model"],
        args=member.get("args", {}),
        mean=member["mean"],
        std=member["std"],
        input_size=member["input_size"],
        temperature=member["temperature"],
        logit_bias=_logit_bias(proto.graph),
    )
    return model, meta


@torch.no_grad()
def unfold_batchnorm(model: nn.Module, crops: torch.Tensor) -> nn.Module:
    """Give each identity BatchNorm its input's per-channel mean and variance on ``crops`` (normalised
    (N, 1, S, S)), as running statistics and as its affine shift and scale: the same function at
    evaluation, a trainable BatchNorm again."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = inputs[0]
        stats[m] = (x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False))  # what training divides by

    handles = [m.register_forward_hook(hook) for m in norms]
    model.eval()(crops)
    for h in handles:
        h.remove()
    for m in norms:
        mean, var = stats[m]
        assert m.running_mean is not None and m.running_var is not None
        m.running_mean.copy_(mean), m.running_var.copy_(var)
        m.weight.copy_(torch.sqrt(var + m.eps)), m.bias.copy_(mean)
    return model
