"""PyTorch implementation of Piper's VITS voices (inference only)."""
from voxpipe.stages.engines.vits.load import load_piper_onnx
from voxpipe.stages.engines.vits.model import VitsConfig, VitsModel

__all__ = ["VitsConfig", "VitsModel", "load_piper_onnx"]
