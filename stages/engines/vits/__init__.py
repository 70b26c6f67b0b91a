"""PyTorch implementation of Piper's VITS voices (inference only)."""
from stages.engines.vits.load import load_piper_onnx
from stages.engines.vits.model import VitsConfig, VitsModel

__all__ = ["VitsConfig", "VitsModel", "load_piper_onnx"]
