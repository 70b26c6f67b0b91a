"""Piper/VITS request options, declared once (stages/families/options.py): every
interface (CLI flags, client, HTTP routes) takes them from here."""
from __future__ import annotations

from dataclasses import dataclass

from voxpipe.stages.families.options import Options, option


@dataclass
class PiperOptions(Options):
    noise_scale: float | None = option(None, 0.0, 2.0, doc="VITS noise (voice's default)")
    length_scale: float | None = option(None, 0.1, 5.0, doc="slower above 1 (voice's default)")
    noise_w: float | None = option(None, 0.0, 2.0, doc="duration noise (voice's default)")
    speaker_id: int = option(0, 0, None, doc="speaker of a multi-speaker voice")
