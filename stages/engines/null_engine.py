"""A null engine: silence sized like real speech, with no model at all.

For measuring what the pipeline itself costs (IPC, scheduling, merging) apart from
inference, and for tests that need many fast requests."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from voxpipe.stages.engines.base import Engine, LoadedVoice, SynthesisItem
from voxpipe.stages.voices import VoiceSpec

SAMPLES_PER_ID = 256  # about what a Piper voice makes of one phoneme id at length_scale 1


class NullEngine(Engine):
    name = "null"

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        return LoadedVoice(spec=spec, model=None, nbytes=0)

    def synthesize(self, voice: LoadedVoice, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        return [np.zeros(int(len(item.phoneme_ids) * SAMPLES_PER_ID * item.length_scale), dtype=np.float32)
                for item in items]
