"""A null engine: quiet noise sized like real speech, with no model at all.

For measuring what the pipeline itself costs (IPC, scheduling, merging) apart from
inference, and for tests that need many fast requests.

The audio is a deterministic function of the chunk's phoneme ids (never all zeros), so
two daemons make the same samples for the same text: a test can check that a request
resumed on another daemon lost or repeated nothing by comparing samples.

`VOXPIPE_NULL_EMULATED_GPU_MS` (milliseconds, default 0) makes each chunk cost that
much wall time without using a core, as a GPU's inference would: throughput of a fleet
of daemons can then be measured on a machine with few cores.

`VOXPIPE_NULL_EMULATED_LOAD_MS` (default 0) likewise makes loading a voice cost that
much wall time (a GPT-SoVITS voice takes about 2 s to reach a GPU), and
`VOXPIPE_NULL_EMULATED_VOICE_MIB` (default 0) the memory a loaded voice is said to take,
so the worker's voice cache (bounded by `worker.voice_cache_mib`) holds as many voices as
a GPU would and evicts the rest: a cache miss then costs what it costs."""
from __future__ import annotations

import hashlib
import os
import time
from typing import Sequence

import numpy as np

from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice

from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.voices import VoiceSpec

SAMPLES_PER_ID = 256  # about what a Piper voice makes of one phoneme id at length_scale 1
AMPLITUDE = 0.05
EMULATED_GPU_ENV = "VOXPIPE_NULL_EMULATED_GPU_MS"
EMULATED_LOAD_ENV = "VOXPIPE_NULL_EMULATED_LOAD_MS"
EMULATED_VOICE_MIB_ENV = "VOXPIPE_NULL_EMULATED_VOICE_MIB"


def _env_number(name: str, unit: str, upper: float, environ: dict[str, str] | None) -> float:
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise EngineError(f"{name}={raw!r} is not a number of {unit}") from None
    if not 0.0 <= value <= upper:
        raise EngineError(f"{name}={raw!r} must be between 0 and {upper:g} {unit}")
    return value


def emulated_gpu_s(environ: dict[str, str] | None = None) -> float:
    """Seconds of emulated GPU time per chunk, from the environment."""
    return _env_number(EMULATED_GPU_ENV, "milliseconds", 60_000.0, environ) / 1000.0


def emulated_load_s(environ: dict[str, str] | None = None) -> float:
    """Seconds an emulated voice load takes, from the environment."""
    return _env_number(EMULATED_LOAD_ENV, "milliseconds", 600_000.0, environ) / 1000.0


def emulated_voice_bytes(environ: dict[str, str] | None = None) -> int:
    """Bytes a loaded voice is said to take, from the environment."""
    return int(_env_number(EMULATED_VOICE_MIB_ENV, "MiB", 1_048_576.0, environ) * 2**20)


def null_audio(phoneme_ids: np.ndarray, length_scale: float) -> np.ndarray:
    """The chunk's samples: low-level noise seeded by its phoneme ids."""
    n = int(len(phoneme_ids) * SAMPLES_PER_ID * length_scale)
    digest = hashlib.blake2b(np.ascontiguousarray(phoneme_ids, dtype=np.int64).tobytes(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    return (rng.uniform(-AMPLITUDE, AMPLITUDE, n)).astype(np.float32)


class NullEngine(Engine):
    name = "null"

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.gpu_s_per_chunk = emulated_gpu_s()
        self.load_s = emulated_load_s()
        self.voice_bytes = emulated_voice_bytes()

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        if self.load_s:
            time.sleep(self.load_s)  # a load onto the GPU: the worker waits, no core is used
        return LoadedVoice(spec=spec, model=None, nbytes=self.voice_bytes)

    def synthesize(self, voice: LoadedVoice, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        if self.gpu_s_per_chunk:
            time.sleep(self.gpu_s_per_chunk * len(items))  # sleeping: the time passes, no core is used
        return [null_audio(item.phoneme_ids, item.length_scale) for item in items]
