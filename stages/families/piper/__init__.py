"""The Piper/VITS family: piper's voice folders, espeak-ng G2P, VITS options, and the
onnx / torch / tensorrt / null runtimes with dynamic batching and windowed streaming."""
from voxpipe.stages.families.piper.family import PiperFamily

__all__ = ["PiperFamily"]
