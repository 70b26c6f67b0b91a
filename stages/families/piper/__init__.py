"""The Piper/VITS family: piper's voice folders, espeak-ng G2P, VITS options, and the
onnx / torch / tensorrt / null runtimes with dynamic batching and windowed streaming."""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # The plug-in class loads on first use: the package's light modules (its declared
    # options) are importable without the family's models and text frontend.
    if name == "PiperFamily":
        from voxpipe.stages.families.piper.family import PiperFamily

        return PiperFamily
    raise AttributeError(name)

__all__ = ["PiperFamily"]
