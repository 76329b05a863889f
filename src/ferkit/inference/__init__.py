"""Inference: ``recognizer`` (the engine: ONNX Runtime or PyTorch), ``export`` and ``quantize`` (ONNX
graphs, fp16/int8), ``onnx_model`` (a torch-free ONNX Runtime runner), faces/video helpers.

Kept empty on purpose: importing a submodule must not pull in torch or ONNX Runtime.
"""
