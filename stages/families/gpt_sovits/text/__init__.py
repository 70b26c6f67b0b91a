"""Text frontend for GPT-SoVITS voices: Mandarin, English and mixed text to GPT-SoVITS's
v2 phones, cut into language runs; a Mandarin run also carries its cleaned text and the
phone count of each character, which the engine needs to align BERT features."""
from __future__ import annotations

import re
from dataclasses import dataclass

from voxpipe.stages.families.gpt_sovits.text.en import clean_en, g2p_en
from voxpipe.stages.families.gpt_sovits.text.symbols import PUNCTUATION, phone_ids
from voxpipe.stages.families.gpt_sovits.text.zh import HANZI, clean_zh, g2p_zh
from voxpipe.stages.text.normalize import normalize

LANGS = ("zh", "en", "auto")
_RUN_RE = re.compile(f"([{HANZI}]+)|([A-Za-z]+(?:['-][A-Za-z]+)*)")
_END_MARKS = set(PUNCTUATION)


@dataclass(frozen=True)
class Segment:
    lang: str  # "zh" | "en"
    norm_text: str
    phones: tuple[str, ...]
    word2ph: tuple[int, ...] = ()  # zh only: phones per character of norm_text

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


def segments(text: str, lang: str = "auto", final_mark: bool = True) -> list[Segment]:
    """Normalized, cleaned language runs of `text` with their phones. With `final_mark`
    a text not ending in a mark gets one (GPT-SoVITS ends every sentence so)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; choose one of {', '.join(LANGS)}")
    out: list[Segment] = []
    for run_lang, run in _runs(normalize(text, "auto" if lang == "auto" else lang), lang):
        if run_lang == "zh":
            cleaned = clean_zh(run)
            if not cleaned:
                continue
            phones, word2ph = g2p_zh(cleaned)
            out.append(Segment("zh", cleaned, tuple(phones), tuple(word2ph)))
        else:
            cleaned = clean_en(run)
            phones = g2p_en(cleaned)
            if not phones:
                continue
            out.append(Segment("en", cleaned, tuple(phones)))
    if final_mark and out and out[-1].phones[-1] not in _END_MARKS:
        last = out[-1]
        if last.lang == "zh":
            out[-1] = Segment("zh", last.norm_text + ".", last.phones + (".",), last.word2ph + (1,))
        else:
            out[-1] = Segment("en", last.norm_text + ".", last.phones + (".",))
    if len(out) == 1 and out[0].lang == "en" and len(out[0].phones) < 4:
        out[0] = Segment("en", out[0].norm_text, (",",) + out[0].phones)  # as GPT-SoVITS pads short English
    return out


def phone_count(text: str, lang: str = "auto") -> int:
    return sum(len(s.phones) for s in segments(text, lang, final_mark=False))
