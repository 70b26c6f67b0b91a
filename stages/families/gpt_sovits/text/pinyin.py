"""Pinyin syllables -> GPT-SoVITS's Mandarin (initial, final) symbols.

GPT-SoVITS splits every syllable in two symbols even when it has no written initial
(y-, w-, or a glottal AA/EE/OO onset), spells the u of j/q/x/y as v, and writes the
apical i of zi/ci/si as i0 and of zhi/chi/shi/ri as ir.
"""
from __future__ import annotations

_GLOTTAL = {"a": "AA", "e": "EE", "o": "OO"}
_Y_FINALS = {"an": "En", "e": "E", "i": "i", "ou": "ou"}  # everything else after y: as written, u -> v
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z",
             "c", "s")
_FULL_FINALS = {"iou": "iu", "uei": "ui", "uen": "un"}  # pinyin spelling contractions


class PinyinError(ValueError):
    """Not a Mandarin syllable."""


def split(syllable: str) -> tuple[str, str]:
    """'zhang' -> ('zh', 'ang'); 'yan' -> ('y', 'En'); 'er' -> ('EE', 'er'). No tone digit."""
    s = syllable.lower().replace("ü", "v").replace("u:", "v")
    if not s or not s.isalpha():
        raise PinyinError(f"not a pinyin syllable: {syllable!r}")
    if s[0] == "y":
        rest = s[1:]
        if rest in _Y_FINALS:
            return "y", _Y_FINALS[rest]
        if rest.startswith(("u", "v")):
            rest = "v" + rest[1:]
        if rest in ("in", "ing", "v", "van", "ve", "vn", "a", "ang", "ao", "o", "ong"):
            return "y", rest
        raise PinyinError(f"not a pinyin syllable: {syllable!r}")
    if s[0] == "w":
        rest = s[1:] or "u"
        if rest in ("u", "a", "ai", "an", "ang", "ei", "en", "eng", "o"):
            return "w", rest
        raise PinyinError(f"not a pinyin syllable: {syllable!r}")
    if s[0] in _GLOTTAL:
        return _GLOTTAL[s[0]], s
    initial = next((i for i in _INITIALS if s.startswith(i)), None)
    if initial is None or len(s) == len(initial):
        raise PinyinError(f"not a pinyin syllable: {syllable!r}")
    final = _FULL_FINALS.get(s[len(initial):], s[len(initial):])
    if initial in ("j", "q", "x") and final.startswith("u"):
        final = "v" + final[1:]
    elif final == "i" and initial in ("z", "c", "s"):
        final = "i0"
    elif final == "i" and initial in ("zh", "ch", "sh", "r"):
        final = "ir"
    elif final == "ue" and initial in ("n", "l"):
        final = "ve"
    return initial, final
