"""Cut policies: where a text must be cut whatever the budget, by policy name.

GPT-SoVITS names its text-cut methods cut0..cut5; they are accepted as aliases of the
policies that mean the same here:

    cut0  none        no cut (the budget may still force one)
    cut1  sentences   every N sentences (N = 4)
    cut2  length      close a chunk at the first punctuation once it has N characters (N = 50),
                      a short tail joining the chunk before it
    cut3  period_zh   at each Chinese full stop 。
    cut4  period_en   at each English full stop . (never inside numbers or abbreviations)
    cut5  clauses     at every punctuation mark

GPT-SoVITS counts cut1's "sentences" between any of its marks, commas included, and its
cut4 splits at every dot; here a sentence is a sentence and a dot inside "3.5" or "e.g." is
not a cut. "punctuation", the default, cuts at every sentence end, as Piper does: one
sentence a model call keeps each sentence's own ending and the pause after it (sentences
merged into one call blur into each other); a sentence over the budget is cut at its
clauses. "packed" packs whole sentences up to the budget (fewer, longer calls). Every
policy but "none" also cuts at blank lines.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Callable, Protocol, Sequence

CUT_POLICIES: tuple[str, ...] = ("punctuation", "packed", "sentences", "length", "none", "period_zh", "period_en",
                                 "clauses")
POLICY_ALIASES = {"cut0": "none", "cut1": "sentences", "cut2": "length", "cut3": "period_zh",
                  "cut4": "period_en", "cut5": "clauses"}


class Rank(IntEnum):
    """How strong the boundary after a token is: where a reader may pause, weakest first."""

    NUMBER = 0     # inside one spoken number, amount, date or address ("twenty | four"): last resort
    WORD = 1       # between words, or between Chinese characters
    CLAUSE = 2     # after , ; : — 、 ，
    SENTENCE = 3   # after . ! ? 。！？ or a line break
    PARAGRAPH = 4  # a blank line


class Token(Protocol):
    start: int
    end: int
    rank: int
    mark: str


Span = tuple[int, int]  # token indices [lo, hi)


def resolve_policy(name: str) -> str:
    """The canonical policy name for `name` or a GPT-SoVITS alias; ValueError if unknown."""
    key = str(name).strip().lower().replace("-", "_")
    key = POLICY_ALIASES.get(key, key)
    if key not in CUT_POLICIES:
        known = ", ".join(CUT_POLICIES + tuple(POLICY_ALIASES))
        raise ValueError(f"unknown cut policy {name!r}; choose one of {known}")
    return key


def _cut_after(tokens: Sequence[Token], lo: int, hi: int, cut: Callable[[Token], bool]) -> list[Span]:
    spans, start = [], lo
    for k in range(lo, hi - 1):
        if cut(tokens[k]):
            spans.append((start, k + 1))
            start = k + 1
    spans.append((start, hi))
    return spans


def _every_n_sentences(tokens: Sequence[Token], lo: int, hi: int, n: int) -> list[Span]:
    spans, start, seen = [], lo, 0
    for k in range(lo, hi - 1):
        rank = tokens[k].rank
        if rank >= Rank.SENTENCE:
            seen += 1
            if seen >= n or rank >= Rank.PARAGRAPH:
                spans.append((start, k + 1))
                start, seen = k + 1, 0
    spans.append((start, hi))
    return spans


def _by_length(tokens: Sequence[Token], lo: int, hi: int, chars: int, final: bool) -> list[Span]:
    pieces = _cut_after(tokens, lo, hi, lambda t: t.rank >= Rank.CLAUSE)
    spans: list[Span] = []
    start = lo
    for a, b in pieces:
        if tokens[b - 1].end - tokens[start].start >= chars or tokens[b - 1].rank >= Rank.PARAGRAPH or b == hi:
            spans.append((start, b))
            start = b
    # As GPT-SoVITS does, a last piece shorter than the length joins the one before it
    # (unless a paragraph break lies between them). Only the text's last piece: a part of a
    # text that goes on (`final` false) ends at a paragraph break, so nothing joins there.
    if final and len(spans) > 1:
        (a, b), (c, d) = spans[-2], spans[-1]
        if tokens[d - 1].end - tokens[c].start < chars and tokens[b - 1].rank < Rank.PARAGRAPH:
            spans[-2:] = [(a, d)]
    return spans


def hard_cuts(policy: str, tokens: Sequence[Token], lo: int, hi: int, *,
              sentences_per_chunk: int, chars_per_chunk: int, final: bool = True) -> list[Span]:
    """The spans of tokens[lo:hi] that `policy` keeps apart; the budget may cut them further.
    `final` false: more of the text follows after a paragraph break (a streamed part)."""
    if hi <= lo:
        return []
    if policy == "none":
        return [(lo, hi)]
    if policy == "punctuation":
        return _cut_after(tokens, lo, hi, lambda t: t.rank >= Rank.SENTENCE)
    if policy == "packed":
        return _cut_after(tokens, lo, hi, lambda t: t.rank >= Rank.PARAGRAPH)
    if policy == "sentences":
        return _every_n_sentences(tokens, lo, hi, sentences_per_chunk)
    if policy == "length":
        return _by_length(tokens, lo, hi, chars_per_chunk, final)
    if policy == "period_zh":
        return _cut_after(tokens, lo, hi, lambda t: t.mark == "。" or t.rank >= Rank.PARAGRAPH)
    if policy == "period_en":
        return _cut_after(tokens, lo, hi, lambda t: (t.mark == "." and t.rank >= Rank.SENTENCE)
                          or t.rank >= Rank.PARAGRAPH)
    if policy == "clauses":
        return _cut_after(tokens, lo, hi, lambda t: t.rank >= Rank.CLAUSE)
    raise ValueError(f"unknown cut policy {policy!r}")
