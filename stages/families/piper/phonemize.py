"""Text to phoneme ids for a Piper voice, through piper's espeak-ng bridge.

espeak-ng keeps global state (one voice at a time), so every call goes through one
lock and sets the voice it needs.
"""
from __future__ import annotations

import threading
import unicodedata
from functools import lru_cache

import numpy as np

from voxpipe.stages.families.piper.spec import piper_settings
from voxpipe.stages.voices import VoiceSpec

BOS, EOS, PAD = "^", "$", "_"
_LOCK = threading.Lock()
_initialized = False
_voice: str | None = None  # the voice espeak is set to


class PhonemizeError(Exception):
    """Text could not be phonemized for a voice (unsupported phoneme type, espeak failure)."""


def _espeak():
    global _initialized
    from piper import espeakbridge
    from piper.phonemize_espeak import ESPEAK_DATA_DIR

    if not _initialized:
        espeakbridge.initialize(str(ESPEAK_DATA_DIR))
        _initialized = True
    return espeakbridge


def espeak_phonemes(espeak_voice: str, text: str) -> list[str]:
    """All phonemes of `text` as codepoints (clause punctuation kept), in one list."""
    global _voice
    with _LOCK:
        bridge = _espeak()
        if espeak_voice != _voice:
            # Setting a voice costs more than phonemizing a short sentence; keep the last one
            # (espeak is used only through this function in voxpipe's processes).
            bridge.set_voice(espeak_voice)
            _voice = espeak_voice
        clauses = bridge.get_phonemes(text)
    phonemes: list[str] = []
    for index, (clause, terminator, end_of_sentence) in enumerate(clauses):
        clause = _strip_language_flags(clause) + terminator
        if terminator in (",", ":", ";") or (end_of_sentence and index < len(clauses) - 1):
            clause += " "
        phonemes.extend(unicodedata.normalize("NFD", clause))
    while phonemes and phonemes[-1] == " ":
        phonemes.pop()
    return phonemes


def _strip_language_flags(clause: str) -> str:
    # espeak marks words of another language as "(en)...(fr)"; the flags are not phonemes.
    out, depth = [], 0
    for ch in clause:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return "".join(out)


class Phonemizer:
    """Phonemizes text for one voice and maps phonemes to that voice's ids."""

    def __init__(self, spec: VoiceSpec) -> None:
        settings = piper_settings(spec)
        if settings.phoneme_type not in ("espeak", "text"):
            raise PhonemizeError(f"voice {spec.name!r}: phoneme type {settings.phoneme_type!r} is not supported")
        self.spec = spec
        self.settings = settings
        self._id_map = settings.phoneme_id_map
        # Memoized: the splitter counts the phonemes of every chunk it makes, and the
        # planner then needs the same chunks' phonemes; espeak runs once per piece.
        self._cached = lru_cache(maxsize=4096)(self._phonemize)

    def phonemes(self, text: str) -> list[str]:
        return list(self._cached(text))

    def _phonemize(self, text: str) -> tuple[str, ...]:
        return tuple(self._phonemes_uncached(text))

    def _phonemes_uncached(self, text: str) -> list[str]:
        if self.settings.phoneme_type == "text":
            return list(unicodedata.normalize("NFD", text))
        try:
            return espeak_phonemes(self.settings.espeak_voice, text)
        except Exception as exc:  # the C bridge raises plain RuntimeError
            raise PhonemizeError(f"voice {self.spec.name!r}: phonemizer failed: {exc}") from exc

    def ids(self, phonemes: list[str]) -> np.ndarray:
        """Phonemes to ids, wrapped as Piper models expect: BOS, pad after each, EOS."""
        return self.ids_with_positions(phonemes)[0]

    def ids_with_positions(self, phonemes: list[str]) -> tuple[np.ndarray, list[int]]:
        """`ids(phonemes)`, and for each phoneme the index of its first id (-1: dropped);
        a phoneme's ids run up to the next kept phoneme's (its padding included)."""
        id_map, pad = self._id_map, self._id_map.get(PAD, [])
        ids: list[int] = [*id_map.get(BOS, []), *pad]
        positions: list[int] = []
        for phoneme in phonemes:
            mapped = id_map.get(phoneme)
            if mapped is None:
                positions.append(-1)
                continue  # unknown phonemes are dropped, as piper does
            positions.append(len(ids))
            ids.extend(mapped)
            ids.extend(pad)
        ids.extend(id_map.get(EOS, []))
        return np.asarray(ids, dtype=np.int64), positions

    def text_to_ids(self, text: str) -> np.ndarray:
        return self.ids(self.phonemes(text))

    def count(self, text: str) -> int:
        """Number of phonemes in `text`."""
        return len(self._cached(text))
