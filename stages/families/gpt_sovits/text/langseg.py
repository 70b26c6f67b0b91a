"""Cutting a text into language runs as GPT-SoVITS's api_v2 languages read it.

A text is first cut by script: Latin words, Hangul, digits, and CJK stretches (Han
characters and kana together); marks and spaces stay with the stretch before them. A CJK
stretch (numbers inside it included) is cut again after its sentence marks: a piece with
kana is Japanese, and so are a few Han characters opening a Japanese piece; other Han
pieces are Chinese.
Digits then join a neighbour (as GPT-SoVITS decides: the language on both sides, the side
a sentence mark points to, else the longer side).

Then the language name decides: `auto` keeps the detected languages; `ja`, `ko`, `zh`,
`yue` read everything but the English runs in that language; `all_X` likewise, with digits
read in X; `auto_yue` and `all_yue` read Chinese runs as Cantonese; `en` reads it all as
English.
"""
from __future__ import annotations

import re

KANA = "\u3040-\u30ff"
HAN = "\u3005\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
_SCRIPT_RE = re.compile(f"(?P<cjk>[{HAN}{KANA}]+)|(?P<ko>[{HANGUL}]+)|(?P<en>[A-Za-z]+)|(?P<digit>[0-9]+)")
_KANA_RE = re.compile(f"[{KANA}]")
_HAN_RE = re.compile(f"[{HAN}]")
_DIGITS_RE = re.compile(f"([0-9]+[^0-9{HAN}{KANA}]*)|[^0-9]+")
_PIECE_RE = re.compile("[^。！？.!?…]*[。！？.!?…]*")
_ENGLISH_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$")
_SENTENCE_MARKS = (",", ".", "!", "?", "，", "。", "！", "？")
_ALL = {"all_zh": "zh", "all_ja": "ja", "all_ko": "ko", "all_yue": "zh"}


def _merge(runs: list[list[str]], lang: str, text: str) -> None:
    if runs and runs[-1][0] == lang:
        runs[-1][1] += text
    else:
        runs.append([lang, text])


def script_runs(text: str) -> list[list[str]]:
    """[language, text] by script; 'digit' for numbers, not yet given to a neighbour."""
    runs: list[list[str]] = []
    matches = list(_SCRIPT_RE.finditer(text))
    if not matches:
        return [["x", text]] if text else []
    bounds = [0 if i == 0 else m.start() for i, m in enumerate(matches)] + [len(text)]
    i = 0
    while i < len(matches):
        kind = matches[i].lastgroup
        if kind != "cjk":
            _merge(runs, kind, text[bounds[i]:bounds[i + 1]])
            i += 1
            continue
        j = i + 1  # a CJK stretch runs on across marks and numbers to the next other script
        while j < len(matches) and matches[j].lastgroup in ("cjk", "digit"):
            j += 1
        while matches[j - 1].lastgroup == "digit":
            j -= 1
        _cjk_stretch(runs, text[bounds[i]:bounds[j]])
        i = j
    return runs


def _cjk_stretch(runs: list[list[str]], stretch: str) -> None:
    """Han and kana, cut after sentence marks: a piece with kana is Japanese, and so are
    a few Han characters opening a Japanese piece (世界！今日は…); others are Chinese."""
    pieces = [p for p in _PIECE_RE.findall(stretch) if p]
    kana = [bool(_KANA_RE.search(p)) for p in pieces]
    for k, piece in enumerate(pieces):
        japanese = kana[k] or (k + 1 < len(pieces) and kana[k + 1] and len(_HAN_RE.findall(piece)) <= 2)
        for part in _DIGITS_RE.finditer(piece):
            _merge(runs, "digit" if part.group(1) else "ja" if japanese else "zh", part.group())


def detected_runs(text: str, default: str = "") -> list[list[str]]:
    """Script runs with their digits given to a language: `default` when given (which
    then also takes every run but English), else a neighbour's."""
    runs: list[list[str]] = []
    for lang, part in script_runs(text):
        if lang == "digit":
            _merge(runs, default or "digit", part)
        elif _ENGLISH_RE.match(part):
            _merge(runs, "en", part)
        else:
            _merge(runs, default or lang, part)
    if any(lang == "digit" for lang, _ in runs):
        runs = _place_digits(runs)
    placed: list[list[str]] = []
    for i, (lang, part) in enumerate(runs):
        if lang == "x":
            lang = placed[-1][0] if placed else runs[1][0] if len(runs) > 1 else "zh"
        _merge(placed, lang, part)
    return placed


def _place_digits(runs: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    last = len(runs) - 1
    for i, (lang, part) in enumerate(runs):
        if lang == "digit":
            if out and i == last:
                lang = out[-1][0]
            elif not out and i < last:
                lang = runs[1][0]
            elif out and i < last:
                before, after = out[-1], runs[i + 1]
                if before[0] == after[0]:
                    lang = before[0]
                elif before[1][-1] in _SENTENCE_MARKS:
                    lang = after[0]
                elif after[1][0] in _SENTENCE_MARKS:
                    lang = before[0]
                elif part[-1] in ("。", "."):
                    lang = before[0]
                else:
                    lang = before[0] if len(before[1]) >= len(after[1]) else after[0]
            else:
                lang = "zh"
        _merge(out, lang, part)
    return out


def language_runs(text: str, language: str) -> list[tuple[str, str]]:
    """(language, text) runs of `text` read with an api_v2 language name."""
    text = re.sub(" {2,}", " ", text)
    if language == "en":
        return [("en", text)] if text else []
    if language in _ALL:
        runs = detected_runs(text, _ALL[language])
    else:
        runs = detected_runs(text)
    if language in ("auto_yue", "all_yue"):
        return [("yue" if lang == "zh" else lang, part) for lang, part in runs]
    if language == "auto" or language in _ALL:
        return [(lang, part) for lang, part in runs]
    merged: list[list[str]] = []
    for lang, part in runs:
        _merge(merged, "en" if lang == "en" else language, part)
    return [(lang, part) for lang, part in merged]
