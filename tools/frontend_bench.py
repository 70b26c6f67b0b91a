"""Text frontend speed on one core: normalization and splitting, in characters per second.

    python tools/frontend_bench.py [--seconds S] [--budget N]

Splitting is timed twice: with a free count (the splitter's own work) and with espeak-ng
phoneme counts from a cold cache (what a request really pays): the bundled voice for English,
the same voice set to espeak's Mandarin ("cmn") for Chinese, as a Chinese Piper voice would be.
The numbers_* rows repeat one number-heavy paragraph to time the number rules; repeats hit
the splitter's count memo, so their espeak column is not shown.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

from voxpipe.stages.families.piper.phonemize import Phonemizer
from voxpipe.stages.text.normalize import normalize
from voxpipe.stages.text.split import split_text
from voxpipe.stages.voices import VoiceCatalog

from voxpipe.bench.texts import DEFAULT_TEXTS_DIR as BENCH  # the bench texts, shipped in the package


# The bench texts have almost no digits; these rows time the number rules as well.
_NUMBERS_EN = ("On 2024-03-05 at 3:30 p.m., Dr. Smith paid $1,234.50 for 12 kg of parts (15% off), "
               "e.g. 3.5 km of cable at 100 km/h; see example.com or mail sales@example.com. "
               "In 1999, 2005 and the 1990s, 21st-century sales rose 5-10% to ¥500 per 16 GB. ")
_NUMBERS_ZH = "会议于2024年3月5日下午3:30开始，票价¥35.50，增长了15%，全程5km，气温-5°C，共有1,234人参加。"


def _texts() -> dict[str, str]:
    zh_rows = (BENCH / "texts_zh.tsv").read_text(encoding="utf-8").splitlines()
    zh = "\n".join(line.split("\t", 1)[1] for line in zh_rows if line and not line.startswith("#"))
    return {"longform_en": (BENCH / "longform_en.txt").read_text(encoding="utf-8"), "texts_zh": zh,
            "numbers_en": _NUMBERS_EN * 8, "numbers_zh": _NUMBERS_ZH * 8}


def _rate(chars: int, work: Callable[[], object], seconds: float) -> float:
    """Best characters per second over repeated runs lasting about `seconds` in all."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            return chars / best


def _letters(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="frontend_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    parser.add_argument("--budget", type=int, default=400, help="chunk budget in phonemes (default 400)")
    args = parser.parse_args(argv)
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})  # one core
    try:
        _table(args)
    finally:
        if pinned:
            os.sched_setaffinity(0, cores)
    return 0


def _table(args: argparse.Namespace) -> None:
    english = VoiceCatalog(None).get("joe")
    chinese = dataclasses.replace(english, settings=dataclasses.replace(english.settings, espeak_voice="cmn"))
    print(f"{'text':<12} {'chars':>6} {'normalize':>14} {'split (free)':>14} {'split (espeak)':>15}  chunks")
    print(f"(one core, best of repeated runs over {args.seconds:g} s each; budget {args.budget} phonemes;"
          " voice joe, as cmn for Chinese)")
    for name, raw in _texts().items():
        normalized = normalize(raw)
        chars = len(raw)
        norm = _rate(chars, lambda: normalize(raw), args.seconds)
        free = _rate(chars, lambda: split_text(normalized, budget=args.budget, count=_letters), args.seconds)
        spec = chinese if name.endswith("zh") else english
        chunks = len(split_text(normalized, budget=args.budget, count=Phonemizer(spec).count))
        if name.startswith("numbers"):
            real_text = "-"
        else:
            # a new Phonemizer each run: its count cache starts empty, as for a new text
            real = _rate(chars, lambda: split_text(normalized, budget=args.budget, count=Phonemizer(spec).count),
                         args.seconds)
            real_text = f"{real:,.0f} c/s"
        print(f"{name:<12} {chars:>6} {norm:>10,.0f} c/s {free:>10,.0f} c/s {real_text:>15}  {chunks:>6}")


if __name__ == "__main__":
    raise SystemExit(main())
