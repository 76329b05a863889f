"""Inference: ``recognizer`` (the engine: ONNX Runtime or PyTorch), ``export`` and ``quantize`` (ONNX
graphs, fp16/int8), faces/video helpers. The torch-free ONNX runner is ``ferkit.models.onnx``.

Kept empty on purpose: importing a submodule must not pull in torch or ONNX Runtime.
"""
