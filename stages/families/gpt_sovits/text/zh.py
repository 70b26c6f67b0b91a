"""Mandarin text -> GPT-SoVITS phones, with the phone count of every character (for
aligning the BERT features).

Readings come from pypinyin's dictionaries (its phrase dictionary settles most
polyphonic characters inside known words); a polyphonic character outside any known
multi-character word is read by g2pM, a small neural disambiguation model that ships in
its package. Then the common tone sandhi: 3-3 -> 2-3 inside a word, 不 before a fourth
tone, 一 outside numbers.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

from voxpipe.stages.families.gpt_sovits.text.pinyin import PinyinError, split
from voxpipe.stages.families.gpt_sovits.text.symbols import PUNCTUATION

HANZI = "\u4e00-\u9fa5"
HANZI_RE = re.compile(f"[{HANZI}]")
_RUN_RE = re.compile(f"[{HANZI}]+")
# Marks GPT-SoVITS keeps, as the ASCII phones; everything else that is not a character goes.
_MARKS = {"，": ",", "。": ".", "！": "!", "？": "?", "；": ",", "：": ",", "、": ",", ";": ",", ":": ",",
          "…": "…", "～": "…", "~": "…", "—": "-", "–": "-", "·": ",", "/": ",", "$": "."}
_KEEP_RE = re.compile(f"[^{HANZI}{re.escape(''.join(PUNCTUATION))}]+")
_REPEATED_MARK_RE = re.compile(f"([{re.escape(''.join(PUNCTUATION))}])[{re.escape(''.join(PUNCTUATION))}]+")
_NUMERALS = set("零一二三四五六七八九十百千万亿两")


def clean_zh(text: str) -> str:
    """Keep characters and GPT-SoVITS's punctuation phones; collapse repeated marks."""
    text = text.replace("嗯", "恩").replace("呣", "母")
    text = "".join(_MARKS.get(ch, ch) for ch in text)
    return _REPEATED_MARK_RE.sub(r"\1", _KEEP_RE.sub("", text))


@lru_cache(maxsize=1)
def _g2pm():
    from g2pM import G2pM

    return G2pM()


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@lru_cache(maxsize=4096)
def _is_polyphone(ch: str) -> bool:
    from pypinyin import Style, pinyin

    readings = {r[:-1] if r[-1].isdigit() else r for r in pinyin(ch, style=Style.TONE3, heteronym=True)[0]}
    return len(readings) > 1


def _readings(run: str) -> list[str]:
    """Toned pinyin ('hao3', neutral 5) for every character of a run of characters."""
    from pypinyin import Style, lazy_pinyin
    from pypinyin.constants import PHRASES_DICT

    base = lazy_pinyin(run, style=Style.TONE3, neutral_tone_with_five=True)
    if len(base) != len(run):
        base = [lazy_pinyin(ch, style=Style.TONE3, neutral_tone_with_five=True)[0] for ch in run]
    in_phrase = [False] * len(run)
    pos = 0
    for word in _jieba().lcut(run, HMM=False):
        if len(word) > 1 and word in PHRASES_DICT:
            in_phrase[pos:pos + len(word)] = [True] * len(word)
        pos += len(word)
    if any(not known and _is_polyphone(ch) for ch, known in zip(run, in_phrase)):
        guessed = _g2pm()(run, tone=True, char_split=False)
        if len(guessed) == len(run):
            base = [g if (not known and _is_polyphone(ch) and g[-1:].isdigit()) else b
                    for ch, b, g, known in zip(run, base, guessed, in_phrase)]
    return base


def _sandhi(run: str, syllables: list[str]) -> list[str]:
    tones = [s[-1] for s in syllables]
    out = list(syllables)
    pos = 0
    for word in _jieba().lcut(run, HMM=False):
        for i in range(pos, pos + len(word) - 1):
            if tones[i] == "3" and tones[i + 1] == "3":
                tones[i] = "2"
        pos += len(word)
    for i, ch in enumerate(run):
        nxt = tones[i + 1] if i + 1 < len(run) else None
        if ch == "不" and nxt == "4":
            tones[i] = "2"
        elif ch == "一" and nxt is not None:
            numeric = (i > 0 and run[i - 1] in _NUMERALS) or run[i + 1] in _NUMERALS or run[i + 1] == "一"
            if not numeric:
                tones[i] = "2" if nxt == "4" else "4"
    return [s[:-1] + t for s, t in zip(out, tones)]


def g2p_zh(norm_text: str) -> tuple[list[str], list[int]]:
    """Cleaned Mandarin text -> phones and phones per character (2 per character, 1 per mark)."""
    phones: list[str] = []
    word2ph: list[int] = []
    pos = 0
    for match in list(_RUN_RE.finditer(norm_text)) + [None]:
        end = match.start() if match else len(norm_text)
        for ch in norm_text[pos:end]:  # marks between runs
            phones.append(ch)
            word2ph.append(1)
        if match is None:
            break
        run = match.group()
        for syllable in _sandhi(run, _readings(run)):
            tone = syllable[-1] if syllable[-1] in "12345" else "5"
            try:
                initial, final = split(syllable.rstrip("12345"))
            except PinyinError:
                initial, final = "UNK", "UNK"
                tone = ""
            phones += [initial, final + tone]
            word2ph.append(2)
        pos = match.end()
    return phones, word2ph
