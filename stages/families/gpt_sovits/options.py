"""GPT-SoVITS request options, declared once (stages/families/options.py): every
interface (CLI flags, client, HTTP routes) takes them from here."""
from __future__ import annotations

from dataclasses import dataclass

from voxpipe.stages.families.gpt_sovits.languages import LANGS
from voxpipe.stages.families.options import Options, option


@dataclass
class GsvOptions(Options):
    noise_scale: float | None = option(None, 0.0, 2.0, doc="SoVITS noise (voice's default)")
    length_scale: float | None = option(None, 0.1, 5.0, doc="1 / speed (voice's default speed)")
    top_k: int | None = option(None, 0, 1024, doc="sample among the k likeliest tokens; 0: no cut; 1: greedy")
    top_p: float | None = option(None, 0.0, 1.0, open_low=True, doc="nucleus sampling threshold")
    temperature: float | None = option(None, 0.01, 5.0, doc="sampling temperature")
    repetition_penalty: float | None = option(None, 1.0, 5.0, doc="penalty on repeated tokens")
    sample_steps: int | None = option(None, 1, 128, doc="v3/v4: CFM steps (voice's default: v3 32, v4 8)")
    fragment_interval: float = option(0.0, 0.0, 5.0, doc="seconds of silence between the text's fragments "
                                                         "(chunks); api_v2's default is 0.3")
    text_lang: str | None = option(None, choices=LANGS, doc="how the text is read (api_v2's names; default: the "
                                                          "voice's language)")
