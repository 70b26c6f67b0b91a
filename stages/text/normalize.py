"""Text normalization entry point: cleans up Unicode and whitespace, detects the language
and sends English and Chinese runs to their own normalizers, so mixed text keeps both.
"""
from __future__ import annotations

import re
from typing import Iterator

from voxpipe.stages.text.stream import safe_parts
from voxpipe.stages.text.normalize_en import normalize_en
from voxpipe.stages.text.normalize_zh import CJK, HAN_RE, normalize_zh

LANGS = ("en", "zh", "auto")

_INVISIBLE = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ODD_SPACES = re.compile("[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_LINE_BREAKS = re.compile(r"\r\n?|[\u2028\u2029\x85]")
_BLANK_LINES = re.compile(r"[ ]*\n[ \n]*\n[ ]*")
_SPACES = re.compile(r"[ ]{2,}")
# Full-width letters, digits and symbols are the ASCII ones in disguise; the Chinese clause
# marks among them stay full-width (they are the canonical Chinese forms).
_FULLWIDTH = re.compile("[\uff01-\uff5e\uffe5]")
_CHINESE_MARKS = set("，！？；：（）～")
_TO_ASCII_MARKS = str.maketrans({"，": ",", "！": "!", "？": "?", "；": ";", "：": ":", "（": "(", "）": ")",
                                 "～": "~", "。": ".", "、": ",", "「": '"', "」": '"', "『": '"', "』": '"'})
_SPACED_MARKS = re.compile(r"([,!?;:.])(?=[^\s\d,!?;:.)\"])")

# A run of non-Chinese text is English when it has a word of Latin letters that is not just a
# unit ("5km" stays Chinese: 五公里).
_NON_CJK_RUN = re.compile(rf"[^{CJK}\u3000-\u303f\uff01-\uff0f\uff1a-\uff1f\u2018-\u201d\u2026\u2014]+")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_UNIT_WORDS = {"km", "cm", "mm", "m", "kg", "mg", "g", "ml", "mL", "L", "l", "ms", "s", "min", "h",
               "TB", "GB", "MB", "KB", "GHz", "MHz", "kHz", "Hz", "kW", "W", "V", "mAh", "C", "F"}


def clean(text: str) -> str:
    """Invisible characters dropped, odd spaces and line breaks made plain, full-width
    ASCII made half-width; single line breaks kept, blank lines collapsed to one."""
    text = _INVISIBLE.sub("", _LINE_BREAKS.sub("\n", text))
    text = _ODD_SPACES.sub(" ", text)
    if _FULLWIDTH.search(text):
        text = _FULLWIDTH.sub(_halfwidth, text)
    text = _BLANK_LINES.sub("\n\n", text)
    text = _SPACES.sub(" ", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def _halfwidth(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _CHINESE_MARKS:
        return ch
    return "¥" if ch == "\uffe5" else chr(ord(ch) - 0xFEE0)


def detect(text: str) -> str:
    """"zh" when the text has Chinese characters, else "en"."""
    return "zh" if HAN_RE.search(text) else "en"


def _is_english(run: str) -> bool:
    return any(word not in _UNIT_WORDS for word in _LATIN_WORD.findall(run))


def _mixed(text: str) -> str:
    # English runs go to the English normalizer; everything else, with its digits, to the
    # Chinese one, so "2024年" and "3个" are read in Chinese and "iPhone 15" in English.
    out: list[str] = []
    last = 0
    for match in _NON_CJK_RUN.finditer(text):
        run = match.group()
        if not _is_english(run):
            continue
        core = run.strip()
        lead = run[:len(run) - len(run.lstrip())]
        trail = run[len(run.rstrip()):]
        out.append(normalize_zh(text[last:match.start()]))
        out.append(lead + normalize_en(core) + trail)
        last = match.end()
    out.append(normalize_zh(text[last:]))
    return "".join(out)


def _english_only(text: str) -> str:
    # With no Chinese around, Chinese-style marks are plain ASCII punctuation.
    if any(ch in text for ch in "，！？；：（）～。、「」『』"):
        text = _SPACED_MARKS.sub(r"\1 ", text.translate(_TO_ASCII_MARKS))
    return normalize_en(text)


def normalize(text: str, lang: str = "auto") -> str:
    """Text as words a voice reads. `lang`: "en", "zh", or "auto" (Chinese if the text has
    Chinese characters; mixed Chinese and English text keeps both)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; choose one of {', '.join(LANGS)}")
    text = clean(text)
    return _normalize_clean(text, detect(text) if lang == "auto" else lang, bool(HAN_RE.search(text)))


def _normalize_clean(text: str, lang: str, has_han: bool) -> str:
    # `has_han`: whether the whole text (not just this part of it) has Chinese characters.
    if lang == "en":
        return normalize_en(text) if has_han else _english_only(text)
    return _SPACES.sub(" ", _mixed(text)).strip()


def normalize_parts(text: str, lang: str = "auto") -> Iterator[tuple[str, bool]]:
    """`normalize(text, lang)` a part at a time, lazily, each part with whether it is the
    last: the text is cut only where nothing
    on one side changes how the other is read (stages/text/stream.py), and the language is
    decided once for the whole text. The parts, split on their own, give the chunks the
    whole normalized text gives."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; choose one of {', '.join(LANGS)}")
    has_han = bool(HAN_RE.search(text))  # clean() keeps every Chinese character
    if lang == "auto":
        lang = "zh" if has_han else "en"
    for part, last in safe_parts(text):
        yield _normalize_clean(clean(part), lang, has_han), last
