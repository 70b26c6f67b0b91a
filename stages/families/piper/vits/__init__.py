"""PyTorch implementation of Piper's VITS voices (inference only)."""
from voxpipe.stages.families.piper.vits.load import load_piper_onnx
from voxpipe.stages.families.piper.vits.model import VitsConfig, VitsModel

__all__ = ["VitsConfig", "VitsModel", "load_piper_onnx"]
