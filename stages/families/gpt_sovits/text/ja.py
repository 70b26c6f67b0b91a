"""Japanese text -> GPT-SoVITS phones, read by OpenJTalk (`pyopenjtalk-plus`, whose wheel
carries its dictionary).

Every stretch of Japanese characters becomes OpenJTalk's phones with pitch marks taken
from its full-context labels: `[` where the pitch rises, `]` where it falls, `#` at an
accent-phrase border, `_` for a pause (the border and pause marks are no phones of the
models: they become UNK and pad, as in GPT-SoVITS). Any other character is a mark of its
own, kept as the punctuation phone it stands for.
"""
from __future__ import annotations

import re
from functools import lru_cache

from voxpipe.stages.families.gpt_sovits.text.packages import require
from voxpipe.stages.families.gpt_sovits.text.symbols import PUNCTUATION

_JA_CHARS = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_MARK_RE = re.compile(f"[^{_JA_CHARS}]")
_MARK_PHONES = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ","}
_REPEATED_MARK_RE = re.compile(f"([{re.escape(''.join(PUNCTUATION))}])[{re.escape(''.join(PUNCTUATION))}]+")
_PHONE_RE = re.compile(r"-(.*?)\+")
_VOWELS_AND_CODAS = frozenset(("a", "e", "i", "o", "u", "A", "E", "I", "O", "U", "N", "cl"))


@lru_cache(maxsize=1)
def _openjtalk():
    return require("ja", "pyopenjtalk")


def clean_ja(text: str) -> str:
    """A mark repeated right after itself or another mark says nothing more."""
    return _REPEATED_MARK_RE.sub(r"\1", text)


def _label_number(pattern: str, label: str) -> int:
    match = re.search(pattern, label)
    return int(match.group(1)) if match else -50


def _accented_phones(sentence: str) -> list[str]:
    """OpenJTalk's phones of a run of Japanese characters, unvoiced vowels as voiced
    ones, with the pitch, border and pause marks; without the opening and closing marks."""
    jtalk = _openjtalk()
    labels = jtalk.make_label(jtalk.run_frontend(sentence))
    out: list[str] = []
    for n, label in enumerate(labels):
        phone = _PHONE_RE.search(label).group(1)
        if phone in ("A", "E", "I", "O", "U"):
            phone = phone.lower()
        if phone == "sil":
            if n == 0:
                out.append("^")
            elif n == len(labels) - 1:
                question = _label_number(r"!(\d+)_", label)
                if question in (0, 1):
                    out.append("$" if question == 0 else "?")
            continue
        if phone == "pau":
            out.append("_")
            continue
        out.append(phone)
        mora_kind = _label_number(r"/A:([0-9\-]+)\+", label)
        position = _label_number(r"\+(\d+)\+", label)
        position_back = _label_number(r"\+(\d+)/", label)
        phrase_moras = _label_number(r"/F:(\d+)_", label)
        next_position = _label_number(r"\+(\d+)\+", labels[n + 1])
        if position_back == 1 and next_position == 1 and phone in _VOWELS_AND_CODAS:
            out.append("#")
        elif mora_kind == 0 and next_position == position + 1 and position != phrase_moras:
            out.append("]")
        elif position == 1 and next_position == 2:
            out.append("[")
    return out[1:-1]


def g2p_ja(text: str) -> list[str]:
    """Cleaned Japanese text -> phones (marks as their punctuation phones)."""
    text = text.replace("％", "パーセント").lower()
    phones: list[str] = []
    pos = 0
    for mark in list(_MARK_RE.finditer(text)) + [None]:
        end = mark.start() if mark else len(text)
        if end > pos:
            phones += _accented_phones(text[pos:end])
        if mark is None:
            break
        if mark.group() != " ":
            phones.append(_MARK_PHONES.get(mark.group(), mark.group()))
        pos = mark.end()
    return phones
