"""Word timings of a GPT-SoVITS chunk.

GPT-SoVITS has no durations to read (its decoder generates semantic tokens with no
alignment to the phones), so only a chunk's ends are measured: its words share the
chunk's audio by their letters (a CJK character counting two)."""
from __future__ import annotations

from voxpipe.ipc.messages import Chunk, WordSpan
from voxpipe.stages.families.words import even_spans, text_words


def gsv_words(text: str) -> list[str]:
    """The words of a GPT-SoVITS chunk: the text's words, each CJK character one word."""
    words: list[str] = []
    for word in text_words(text):
        run = ""
        for ch in word + " ":
            if _is_cjk(ch) or ch == " " or not (ch.isalnum() or ch in "'-."):
                stripped = run.strip("'-.")
                words += [stripped] if any(c.isalnum() for c in stripped) else []
                words += [ch] if _is_cjk(ch) else []
                run = ""
            else:
                run += ch
    return words


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\u3040" <= ch <= "\u30ff"


def gsv_chunk_words(chunk: Chunk, total: int) -> list[WordSpan]:
    """GPT-SoVITS has no durations to read (its decoder generates semantic tokens with no
    alignment to the phones), so only a chunk's ends are measured: its words share the
    chunk's audio by their letters (a CJK character counting two)."""
    words = gsv_words(chunk.text)
    weights = [sum(2 if _is_cjk(c) else 1 for c in w if c.isalnum()) for w in words]
    return even_spans(words, weights, total)
