"""Text frontend for GPT-SoVITS voices: text in api_v2's languages to GPT-SoVITS's phones,
cut into language runs; a Mandarin or Cantonese run also carries its cleaned text and the
phone count of each character (the engine aligns BERT features with them).

Language names (api_v2's): zh, en, ja, ko, yue read everything but English words in that
language; auto detects each run's language and auto_yue reads its Chinese as Cantonese;
all_zh, all_ja, all_ko, all_yue read numbers in that language too. v1 voices know zh, en,
ja, auto, all_zh, all_ja (`languages_for`). Japanese, Korean and Cantonese need the
`gsv-languages` extra (text/packages.py)."""
from __future__ import annotations

import re
from typing import Iterator
from dataclasses import dataclass

from voxpipe.stages.families.gpt_sovits.languages import LANGS, V1_LANGS, languages_for
from voxpipe.stages.families.gpt_sovits.text.en import clean_en, g2p_en
from voxpipe.stages.families.gpt_sovits.text.langseg import HANGUL, KANA, language_runs
from voxpipe.stages.families.gpt_sovits.text.packages import LanguageUnavailable, check
from voxpipe.stages.families.gpt_sovits.text.symbols import PUNCTUATION, known_phones, phone_ids
from voxpipe.stages.families.gpt_sovits.text.zh import HANZI, clean_zh, g2p_zh
from voxpipe.stages.text.normalize import clean, normalize, normalize_parts

# The languages read before this frontend knew Japanese, Korean and Cantonese: their text
# goes through voxpipe's normalizer whole, then is cut into Mandarin and English runs.
_ZH_EN_LANGS = ("zh", "en", "all_zh")
_KANA_HANGUL_RE = re.compile(f"[{KANA}{HANGUL}]")
# The packages a language name may need before any text is seen.
_NEEDS = {"ja": "ja", "all_ja": "ja", "ko": "ko", "all_ko": "ko", "yue": "yue", "all_yue": "yue", "auto_yue": "yue"}

__all__ = ["LANGS", "V1_LANGS", "LanguageUnavailable", "Segment", "check_language", "languages_for",
           "normalize_for", "phone_count", "segments"]
_RUN_RE = re.compile(f"([{HANZI}]+)|([A-Za-z]+(?:['-][A-Za-z]+)*)")
_END_MARKS = set(PUNCTUATION)


@dataclass(frozen=True)
class Segment:
    lang: str  # "zh" | "en" | "ja" | "ko" | "yue"
    norm_text: str
    phones: tuple[str, ...]
    word2ph: tuple[int, ...] = ()  # zh and yue only: phones per character of norm_text

    @property
    def ids(self) -> list[int]:
        return phone_ids(list(self.phones))


def _runs(text: str, lang: str) -> list[tuple[str, str]]:
    """(language, text) runs; marks and spaces stay with the run before them."""
    if lang in ("zh", "en") and not (lang == "zh" and re.search("[A-Za-z]", text)):
        return [(lang, text)]
    runs: list[tuple[str, str]] = []
    pos = 0
    for match in _RUN_RE.finditer(text):
        run_lang = "zh" if match.group(1) else "en"
        if runs and runs[-1][0] == run_lang:
            runs[-1] = (run_lang, runs[-1][1] + text[pos:match.end()])
        elif runs:
            runs[-1] = (runs[-1][0], runs[-1][1] + text[pos:match.start()])
            runs.append((run_lang, match.group()))
        else:
            runs.append((run_lang, text[pos:match.end()]))
        pos = match.end()
    if runs:
        runs[-1] = (runs[-1][0], runs[-1][1] + text[pos:])
    return runs


def check_language(lang: str, version: str | None = None) -> None:
    """ValueError for a name this voice cannot read; LanguageUnavailable (a ValueError)
    when its packages are missing."""
    allowed = languages_for(version)
    if lang not in allowed:
        which = "a v1 voice" if version == "v1" else "GPT-SoVITS"
        raise ValueError(f"text_lang {lang!r} is not a language {which} reads; choose one of {', '.join(allowed)}")
    if lang in _NEEDS:
        check(_NEEDS[lang])


def _whole_text_normalized(text: str, lang: str) -> bool:
    return lang in _ZH_EN_LANGS or (lang == "auto" and not _KANA_HANGUL_RE.search(text))


def normalize_for(text: str, lang: str) -> str:
    """The request text as the planner splits it: read out by voxpipe's normalizer for the
    Mandarin and English names (and auto on text with neither kana nor Hangul); else only
    tidied, since OpenJTalk, g2pk2 and the Cantonese cleaner read numbers themselves."""
    return normalize(text) if _whole_text_normalized(text, lang) else clean(text)


def normalize_parts_for(text: str, lang: str) -> Iterator[tuple[str, bool]]:
    """`normalize_for` a part at a time (each with whether it is the last), for the
    streaming planner. Text that is only tidied is read whole: its readers see whole
    sentences anyway, and the cut rules of `normalize_parts` are the normalizer's."""
    if _whole_text_normalized(text, lang):
        yield from normalize_parts(text)
    else:
        yield clean(text), True


def _segment(run_lang: str, run: str, normalized: bool) -> Segment | None:
    """One language run's segment; None when nothing in it is said."""
    if run_lang == "zh":
        cleaned = clean_zh(run if normalized else normalize(run, "zh"))
        if not cleaned:
            return None
        phones, word2ph = g2p_zh(cleaned)
        return Segment("zh", cleaned, tuple(phones), tuple(word2ph))
    if run_lang == "en":
        cleaned = clean_en(run if normalized else normalize(run, "en"))
        phones = g2p_en(cleaned)
        return Segment("en", cleaned, tuple(phones)) if phones else None
    check(run_lang)
    if run_lang == "ja":
        from voxpipe.stages.families.gpt_sovits.text.ja import clean_ja, g2p_ja

        cleaned = clean_ja(run)
        phones = g2p_ja(cleaned)
        return Segment("ja", cleaned, tuple(phones)) if phones else None
    if run_lang == "ko":
        from voxpipe.stages.families.gpt_sovits.text.ko import g2p_ko

        phones = g2p_ko(run)
        return Segment("ko", run, tuple(phones)) if phones else None
    from voxpipe.stages.families.gpt_sovits.text.yue import clean_yue, g2p_yue

    cleaned = clean_yue(run)
    if not cleaned:
        return None
    phones, word2ph = g2p_yue(cleaned)
    return Segment("yue", cleaned, tuple(phones), tuple(word2ph))


def segments(text: str, lang: str = "auto", final_mark: bool = True, version: str | None = None) -> list[Segment]:
    """Normalized, cleaned language runs of `text` with their phones (phones a `version`
    model lacks as UNK). With `final_mark` a text not ending in a mark gets one
    (GPT-SoVITS ends every sentence so). Raises ValueError for a name `version` does not
    read, LanguageUnavailable when the language's packages are missing."""
    check_language(lang, version)
    normalized = _whole_text_normalized(text, lang)
    if normalized:
        legacy = "zh" if lang == "all_zh" else lang
        runs = _runs(normalize(text, legacy), legacy)
    else:
        runs = language_runs(clean(text), lang)
    out = [seg for run_lang, run in runs if (seg := _segment(run_lang, run, normalized)) is not None]
    out = [Segment(s.lang, s.norm_text, tuple(known_phones(list(s.phones), version)), s.word2ph) for s in out]
    if final_mark and out and out[-1].phones[-1] not in _END_MARKS:
        last = out[-1]
        word2ph = last.word2ph + (1,) if last.word2ph else ()
        out[-1] = Segment(last.lang, last.norm_text + ".", last.phones + (".",), word2ph)
    if len(out) == 1 and out[0].lang == "en" and len(out[0].phones) < 4:
        out[0] = Segment("en", out[0].norm_text, (",",) + out[0].phones)  # as GPT-SoVITS pads short English
    return out


def phone_count(text: str, lang: str = "auto", version: str | None = None) -> int:
    return sum(len(s.phones) for s in segments(text, lang, final_mark=False, version=version))
