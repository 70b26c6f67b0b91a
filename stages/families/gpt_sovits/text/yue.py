"""Cantonese text -> GPT-SoVITS phones, with the phone count of every character.

The text is cleaned as GPT-SoVITS cleans Cantonese: spaces and brackets go, traditional
characters become simplified ones, numbers are read out (in characters), the marks become
the punctuation phones, and anything else that is not a character goes. ToJyutping gives
each character its Jyutping syllable, which is cut in two phones (an onset and a toned
rest), both prefixed with Y to stay apart from the Mandarin phones.
"""
from __future__ import annotations

import re
from functools import lru_cache

from voxpipe.stages.families.gpt_sovits.text.packages import require
from voxpipe.stages.families.gpt_sovits.text.symbols import PUNCTUATION
from voxpipe.stages.text.normalize_zh import normalize_zh

HANZI = "\u4e00-\u9fa5"
_DROPPED_FIRST = re.compile(r"[—《》【】<>{}()（）#&@“”^_|\\ ]")
_SPOKEN_SIGNS = {"/": "每", "+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等",
                 **{chr(0x2460 + i): n for i, n in enumerate("一二三四五六七八九十")}}
_DROPPED_AFTER = re.compile(r"[-—《》【】<=>{}()（）#&@“”^_|\\]")
_MARKS = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",", "$": ".",
          "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'", "(": "'", ")": "'", "《": "'",
          "》": "'", "【": "'", "】": "'", "[": "'", "]": "'", "—": "-", "～": "-", "~": "-", "「": "'", "」": "'"}
_NOT_KEPT = re.compile(f"[^{HANZI}{re.escape(''.join(PUNCTUATION))}]+")
_FULLWIDTH = {**{chr(0xFF01 + i): chr(0x21 + i) for i in range(94) if chr(0x21 + i).isalnum()}, "\u3000": " "}
# How GPT-SoVITS cuts a Jyutping syllable: the first of these it starts with is its onset
# (the order matters: "aai" is cut after "aa"); the rest, or the onset's last letter when
# nothing is left, carries the tone.
_ONSETS = ("aa", "aai", "aak", "aap", "aat", "aau", "ai", "au", "ap", "at", "ak", "a", "p", "b", "e", "ts", "t", "dz",
           "d", "kw", "k", "gw", "g", "f", "h", "l", "m", "ng", "n", "s", "y", "w", "c", "z", "j", "ong", "on", "ou",
           "oi", "ok", "o", "uk", "ung", "sp", "spl", "spn", "sil")


# Where hanziconv's table parts from GPT-SoVITS's: 冇 (Cantonese "have not") is no
# traditional form of 没, and 鍾 stays the 锺 GPT-SoVITS's table writes.
_SIMPLIFIED_AS_GSV = {"冇": "冇", "鍾": "锺"}


@lru_cache(maxsize=1)
def _to_simplified():
    return require("yue", "hanziconv").HanziConv.toSimplified


def _simplified(text: str) -> str:
    convert = _to_simplified()
    return "".join(_SIMPLIFIED_AS_GSV.get(ch) or convert(ch) for ch in text) if text else text


@lru_cache(maxsize=1)
def _jyutping():
    return require("yue", "ToJyutping").get_jyutping_list


def clean_yue(text: str) -> str:
    """Text as the Cantonese G2P reads it: simplified characters and punctuation phones."""
    text = _DROPPED_FIRST.sub("", text)
    text = _simplified(text).translate(str.maketrans(_FULLWIDTH))
    text = normalize_zh(text)
    text = "".join(_SPOKEN_SIGNS.get(ch, ch) for ch in text)
    text = _DROPPED_AFTER.sub("", text)
    text = "".join(_MARKS.get(ch, ch) for ch in text)
    return _NOT_KEPT.sub("", text)


def _syllable_phones(syllable: str) -> list[str]:
    tone = syllable[-1] if syllable[-1].isdigit() else ""
    bare = syllable[:-1] if tone else syllable
    onset = next((o for o in _ONSETS if bare.startswith(o)), None)
    if onset is None:
        return ["UNK", "UNK"]
    rest = bare[len(onset):] or onset[-1]
    return ["Y" + onset, "Y" + rest + tone]


def g2p_yue(norm_text: str) -> tuple[list[str], list[int]]:
    """Cleaned Cantonese text -> phones and phones per character (2 per character, 1 per mark)."""
    phones: list[str] = []
    word2ph: list[int] = []
    for word, syllable in _jyutping()(norm_text):
        if all(ch in PUNCTUATION for ch in word):
            phones += list(word)
            word2ph += [1] * len(word)
        elif syllable:
            phones += _syllable_phones(syllable)
            word2ph.append(2)
        else:  # a character ToJyutping cannot read
            phones += ["UNK", "UNK"]
            word2ph.append(2)
    return phones, word2ph
