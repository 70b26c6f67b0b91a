"""The GPT-SoVITS family (v1-v4) from users' unconverted checkpoints (docs/gpt-sovits.md).

Everything of it is in this folder:
- family.py, spec.py, voice_config.py: the plug-in, its voice folders (`voice.toml`), its options;
- text/: its G2P into language runs (Mandarin, English);
- decoder/: the text-to-semantic decoder, continuously batched step by step;
- models/: checkpoint loading, the SoVITS synthesizer (v1-v2ProPlus), the CFM mel decoder
  and vocoders (v3/v4), feature models (BERT, HuBERT, speaker), windowed rendering;
- engine.py, item.py, runner.py: the `gpt-sovits` engine (a voice loader) and the serving
  runner the worker drives;
- random_voice*.py: random-weight voices in the released layouts, for tests and benchmarks;
- http/: api_v2's routes (`/tts`, `/set_*`).
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # The plug-in class loads on first use: the package's light modules (its declared
    # options) are importable without the family's models and text frontend.
    if name == "GptSovitsFamily":
        from voxpipe.stages.families.gpt_sovits.family import GptSovitsFamily

        return GptSovitsFamily
    raise AttributeError(name)

__all__ = ["GptSovitsFamily"]
