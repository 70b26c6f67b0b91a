"""One GPT-SoVITS chunk as the engine takes it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voxpipe.ipc.messages import Chunk, FamilyInputs


@dataclass(frozen=True)
class GsvItem:
    phoneme_ids: np.ndarray  # int64 GPT-SoVITS phone ids, the language runs concatenated
    noise_scale: float
    length_scale: float  # 1 / speed
    seed: int | None = None
    # language runs: (lang, norm_text, n_phones, word2ph); a Mandarin run's text and phones
    # per character align its BERT features
    text_segments: tuple[tuple[str, str, int, tuple[int, ...]], ...] = ()
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    sample_steps: int | None = None  # v3/v4: CFM steps (None: the voice's default)


def gsv_item(chunk: Chunk) -> GsvItem:
    """A chunk's GPT-SoVITS inputs as the engine takes them."""
    o, x = chunk.inputs.options, chunk.inputs.extras
    runs = tuple((lang, text, int(n), tuple(w2p)) for lang, text, n, w2p in
                 zip(x.get("langs", []), x.get("texts", []), x.get("phones", []), x.get("word2ph", [])))
    return GsvItem(np.asarray(chunk.inputs.ids, dtype=np.int64), o["noise_scale"], o["length_scale"], chunk.seed,
                   runs, o["top_k"], o["top_p"], o["temperature"], o["repetition_penalty"], o.get("sample_steps"))


def item_chunk(item: GsvItem, request_id: str, seq: int = 0, text: str = "", deadline: float = math.inf,
               submitted_at: float = 0.0) -> Chunk:
    """The chunk whose `gsv_item` is `item`: how benchmarks and tests that make their own
    inputs hand them to the runner (a streamed chunk of a request of one chunk)."""
    runs = item.text_segments
    options = {"noise_scale": item.noise_scale, "length_scale": item.length_scale, "top_k": item.top_k,
               "top_p": item.top_p, "temperature": item.temperature, "repetition_penalty": item.repetition_penalty,
               "sample_steps": item.sample_steps}
    extras = {"langs": [r[0] for r in runs], "texts": [r[1] for r in runs], "phones": [r[2] for r in runs],
              "word2ph": [list(r[3]) for r in runs]}
    inputs = FamilyInputs([int(i) for i in item.phoneme_ids], options, extras)
    return Chunk(request_id, seq, 1, "", "gpt-sovits", text, inputs, item.seed, True, deadline,
                 submitted_at=submitted_at)
