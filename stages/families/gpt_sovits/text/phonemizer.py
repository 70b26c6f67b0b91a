"""The planner's view of GPT-SoVITS G2P: the same small interface as the Piper
phonemizer (count, text_to_ids) plus the language runs a chunk carries to the engine."""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import numpy as np

from voxpipe.stages.families.gpt_sovits.spec import gsv_config
from voxpipe.stages.families.gpt_sovits.text import Segment, segments
from voxpipe.stages.families.gpt_sovits.text.langseg import HAN, HANGUL, KANA
from voxpipe.stages.families.gpt_sovits.text.symbols import PUNCTUATION

_CJK_RE = re.compile(f"[{HAN}{KANA}]")
_HANGUL_RE = re.compile(f"[{HANGUL}]")
_WORD_RE = re.compile(r"[A-Za-z]+")


class GsvPhonemizer:
    def __init__(self, spec: Any) -> None:
        self.spec = spec
        cfg = gsv_config(spec)
        self.lang = cfg.language  # the voice's default text language
        self.version = cfg.version  # None: not known before the weights load (v1-v2ProPlus)
        self._recent: OrderedDict[tuple[str, str], list[Segment]] = OrderedDict()

    def count(self, text: str) -> int:
        """An estimate for splitting, cheap enough to call on every candidate piece: two
        phones per Han character or kana, three per Hangul syllable, about one per English
        letter, one per mark."""
        return 2 * len(_CJK_RE.findall(text)) + 3 * len(_HANGUL_RE.findall(text)) + sum(
            len(w) for w in _WORD_RE.findall(text)) + sum(1 for ch in text if ch in ",.!?;:，。！？；：、…")

    def segments(self, text: str, lang: str | None = None) -> list[Segment]:
        """`text`'s runs read in `lang` (default: the voice's language)."""
        key = (text, lang or self.lang)
        cached = self._recent.get(key)
        if cached is None:
            cached = self._recent[key] = segments(text, key[1], version=self.version)
            while len(self._recent) > 256:
                self._recent.popitem(last=False)
        return cached

    def text_to_ids(self, text: str, lang: str | None = None) -> np.ndarray:
        """Phone ids; none for text with nothing to say (only marks), so that the planner
        leaves such pieces out."""
        segs = self.segments(text, lang)
        if all(p in PUNCTUATION for s in segs for p in s.phones):
            return np.zeros(0, dtype=np.int64)
        return np.asarray([i for s in segs for i in s.ids], dtype=np.int64)

    def chunk_fields(self, text: str, lang: str | None = None) -> dict[str, list]:
        """The Chunk fields that carry `text`'s language runs to the engine."""
        segs = self.segments(text, lang)
        return {"seg_langs": [s.lang for s in segs], "seg_texts": [s.norm_text for s in segs],
                "seg_phones": [len(s.phones) for s in segs], "seg_word2ph": [list(s.word2ph) for s in segs]}


SAMPLING_RANGES = {"top_k": (0, 1024), "top_p": (0.0, 1.0), "temperature": (0.01, 5.0),
                   "repetition_penalty": (1.0, 5.0)}


def sampling_options(options: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """A request's semantic-token sampling, its voice's defaults filling the gaps; raises
    ValueError naming a value out of range (top_k=0: no top-k cut; top_k=1: greedy)."""
    out = {}
    for name, (low, high) in SAMPLING_RANGES.items():
        value = getattr(options, name, None)
        value = defaults.get(name) if value is None else value
        if not low <= value <= high or (name == "top_p" and value == 0):
            raise ValueError(f"{name}={value} is outside {'(' if name == 'top_p' else '['}{low}, {high}]")
        out[name] = int(value) if name == "top_k" else float(value)
    return out
