"""Word timings any family can use: the words of a chunk's text, how they line up with
the word groups a phonemizer made of it, and their places in the chunk's audio.

A chunk's words travel from the text frontend to the runner as `[text, first, end]`
triples in `FamilyInputs.extras["words"]`: the half-open range of the chunk's token ids
that speaks the word. The runner turns them into `WordSpan`s (samples of the chunk's
audio) from the engine's samples per token where it knows them, else by spreading the
audio evenly over the tokens (an estimate).
"""
from __future__ import annotations

import unicodedata
from typing import Callable, Sequence

import numpy as np

from voxpipe.ipc.messages import Chunk, WordSpan

WordIds = list  # [text, first id, end id]
MAX_GROUP = 3  # most words one side of an alignment step may take together


def text_words(text: str) -> list[str]:
    """The words of a text as a reader sees them: whitespace-separated, punctuation around
    them stripped, pieces with no letter or digit (dashes, lone symbols) left out."""
    words = []
    for token in text.split():
        word = _strip_punctuation(token)
        if any(ch.isalnum() for ch in word):
            words.append(word)
    return words


def _strip_punctuation(token: str) -> str:
    start, end = 0, len(token)
    while start < end and not token[start].isalnum():
        start += 1
    while end > start and not token[end - 1].isalnum():
        end -= 1
    return token[start:end]


def is_spoken(symbol: str) -> bool:
    """A phoneme that makes sound (letters, modifier letters and combining marks), as
    opposed to punctuation, spaces and symbols."""
    return unicodedata.category(symbol)[0] in "LM"


def align_groups(text_lengths: Sequence[float], unit_lengths: Sequence[float]) -> list[tuple[int, int, int, int]]:
    """Line up words of the text with a phonemizer's word groups when their counts differ
    (it may join words, "of the", or split one, "forty-two"). Both sides come as lengths
    (phonemes each word has alone; phonemes in each group); a dynamic program matches
    runs of up to MAX_GROUP against one (or one against up to MAX_GROUP), or leaves one
    side's item unmatched at a high price, minimizing the length mismatch.
    Returns (text_start, text_end, unit_start, unit_end) ranges covering both sides in order."""
    n, m = len(text_lengths), len(unit_lengths)
    tcum = np.concatenate([[0.0], np.cumsum(text_lengths)])
    ucum = np.concatenate([[0.0], np.cumsum(unit_lengths)])
    inf = float("inf")
    cost = np.full((n + 1, m + 1), inf)
    back: dict[tuple[int, int], tuple[int, int]] = {}
    cost[0, 0] = 0.0
    moves = [(a, b) for a in range(MAX_GROUP + 1) for b in range(MAX_GROUP + 1)
             if (a, b) != (0, 0) and min(a, b) <= 1]
    for i in range(n + 1):
        for j in range(m + 1):
            here = cost[i, j]
            if here == inf:
                continue
            for a, b in moves:
                ni, nj = i + a, j + b
                if ni > n or nj > m:
                    continue
                mismatch = abs((tcum[ni] - tcum[i]) - (ucum[nj] - ucum[j]))
                step = mismatch + (0.5 * (a + b - 2) if a and b else 4.0 + mismatch)
                if here + step < cost[ni, nj]:
                    cost[ni, nj] = here + step
                    back[(ni, nj)] = (i, j)
    groups = []
    at = (n, m)
    while at != (0, 0):
        prev = back[at]
        groups.append((prev[0], at[0], prev[1], at[1]))
        at = prev
    return groups[::-1]


def split_range(first: int, end: int, weights: Sequence[float]) -> list[tuple[int, int]]:
    """[first, end) cut into consecutive integer ranges in proportion to weights."""
    if not weights:
        return []
    total = float(sum(weights))
    if total <= 0:
        weights, total = [1.0] * len(weights), float(len(weights))
    cuts = [first + round((end - first) * float(c) / total) for c in np.cumsum([0.0, *weights])]
    return [(cuts[k], cuts[k + 1]) for k in range(len(weights))]


def word_spans(words: Sequence[WordIds], durations: np.ndarray | None, n_ids: int, total: int) -> list[WordSpan]:
    """Words with their id ranges -> spans in samples of the chunk's `total` samples.
    `durations` are the engine's samples per id; None spreads the audio evenly over the ids."""
    if n_ids <= 0 or total <= 0 or not words:
        return [WordSpan(str(w[0]), 0, 0) for w in words]
    if durations is None or len(durations) != n_ids or float(np.sum(durations)) <= 0:
        ends = np.arange(n_ids + 1, dtype=np.float64) * (total / n_ids)
    else:
        ends = np.concatenate([[0.0], np.cumsum(np.asarray(durations, dtype=np.float64))])
        ends *= total / ends[-1]  # equal already, unless the model stretched a silent chunk
    spans = []
    for text, first, end in words:
        first, end = max(0, min(int(first), n_ids)), max(0, min(int(end), n_ids))
        start = int(round(ends[first]))
        spans.append(WordSpan(str(text), start, max(start, int(round(ends[end])))))
    return spans


def even_spans(words: Sequence[str], weights: Sequence[float], total: int) -> list[WordSpan]:
    """Words spread over `total` samples in proportion to weights (no durations known)."""
    return [WordSpan(w, a, b) for w, (a, b) in zip(words, split_range(0, max(0, total), weights))]


WordTimer = Callable[[Chunk, "np.ndarray | None", int], list[WordSpan]]


def chunk_word_spans(chunk: Chunk, durations: np.ndarray | None, total: int) -> list[WordSpan]:
    """A chunk's words (from its extras) placed in its `total` samples of audio."""
    words = chunk.inputs.extras.get("words")
    if not words:
        return []
    return word_spans(words, durations, len(chunk.inputs.ids), total)
