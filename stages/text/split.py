"""Cutting normalized text into chunks that fit a phoneme budget, where a reader would pause.

The text is read as tokens (an English word with the punctuation stuck to it, or one Chinese
character with the marks after it), each with the strength of the boundary after it
(`Rank`). A chunk is always a run of whole tokens, so chunks never cut inside a word, a
number, an abbreviation or an address. The policy fixes hard cuts; inside each hard span,
pieces at the strongest boundary present are packed greedily up to the budget, and a piece
over the budget is cut at the next weaker boundary, down to single tokens.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Callable

from voxpipe.stages.text.normalize_zh import CJK
from voxpipe.stages.text.policies import CUT_POLICIES, Rank, Span, hard_cuts, resolve_policy

__all__ = ["CUT_POLICIES", "TextChunk", "resolve_policy", "split_text"]


@dataclass(frozen=True)
class TextChunk:
    text: str  # the chunk's (normalized) text
    units: int  # its size in the budget's unit (phonemes of the target voice)
    oversize: bool = False  # a single unsplittable token over budget (reported, not an error)


@dataclass(slots=True)
class _Token:
    start: int
    end: int
    rank: int = Rank.WORD  # strength of the boundary after this token
    mark: str = ""  # the punctuation that closes it, if any
    weight: float = 1.0  # words it counts as, for the first chunk


# ---------------------------------------------------------------- tokens

_OPEN = "“‘「『《〈【〔（([{"
_CLOSE = "”’」』》〉】〕）)]}\"'"
_FW_MARKS = "，。！？；：、…—～·”」』》〉】〕）"  # marks that end a token wherever they stand
_CJK_TRAIL = _FW_MARKS + "’,.!?;:\"')]}"
_O, _FW = re.escape(_OPEN), re.escape(_FW_MARKS)
_TOKEN = re.compile(
    rf"[{_O}]*[{CJK}][{re.escape(_CJK_TRAIL)}]*"  # a Chinese character and the marks after it
    rf"|(?:[^\s{CJK}{_FW}{_O}]|[{_O}](?![{CJK}]))+(?:[{_FW}][{re.escape(_CJK_TRAIL)}]*)?"  # a word, number, address
    rf"|[{_FW}][{re.escape(_CJK_TRAIL)}]*"
    r"|\S")
_CJK_RE = re.compile(f"[{CJK}]")
_SENTENCE_MARKS = set("。！？!?")
_CLAUSE_MARKS = set(",;:，；：、—–")
_NO_SENTENCE_END = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "mt.", "e.g.", "i.e.", "vs.", "cf.",
                    "gen.", "capt.", "sgt.", "rev.", "gov.", "sen.", "rep.", "ft.", "approx."}
_INITIAL = re.compile(r"[A-Z]\.")
_NUMBER_WORDS = frozenset("""zero oh one two three four five six seven eight nine ten eleven twelve thirteen
    fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
    hundred thousand million billion trillion point minus first second third fourth fifth sixth seventh eighth
    ninth tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth
    twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth hundredth thousandth
    millionth billionth""".split())
# Words that a spoken amount, date, time or measure is made of: a cut between two of them would
# split "five dollars and fifty cents" or "March fifth twenty twenty-four".
_QUANTITY_WORDS = _NUMBER_WORDS | frozenset("""and o'clock am pm dollar cent euro pound penny pence yen percent
    degree celsius fahrenheit per january february march april may june july august september october
    november december kilometer meter centimeter millimeter kilogram gram milligram liter milliliter mile
    minute hour millisecond byte kilobyte megabyte gigabyte terabyte hertz kilohertz megahertz gigahertz watt
    kilowatt volt foot feet inch inches ounce half halves quarter quarters""".split())
# Spoken addresses: "example dot com slash docs" stays whole.
_ADDRESS_GLUE = frozenset(("dot", "slash", "dash", "underscore"))
_ZH_NUMERALS = set("零〇一二两三四五六七八九十百千万亿点负")
_ZH_UNITS = set("年月日号点分秒元角个位只件本张条次天岁名台辆架棵头匹双对块片杯碗份种项门节层间家所场队人倍句遍"
                "公米克升度毫厘千瓦伏赫兹摄氏美欧英镑时钟之")
_NUMERIC = re.compile(r"[\d.,]+")


def _word(core: str) -> str:
    return core.strip(_OPEN + _CLOSE + ",.;:!?…").lower()


def _is_quantity_word(word: str) -> bool:
    if not word:
        return False
    if word[0].isdigit():
        return bool(_NUMERIC.fullmatch(word))
    return all(part in _QUANTITY_WORDS or (part.endswith("s") and part[:-1] in _QUANTITY_WORDS)
               for part in word.split("-"))


def _glued(core: str, nxt: str) -> bool:
    """Whether `core` and the next token belong to one spoken number, amount or address."""
    if _CJK_RE.match(core[-1]):
        a, b = core[-1], nxt.lstrip(_OPEN)[:1]
        return (a in _ZH_NUMERALS and (b in _ZH_NUMERALS or b in _ZH_UNITS)) or (a in _ZH_UNITS and b in _ZH_NUMERALS)
    left, right = _word(core), _word(nxt)
    if left in _ADDRESS_GLUE or right in _ADDRESS_GLUE:
        return True
    if len(left) == 1 and len(right) == 1 and left.isalpha() and right.isalpha():
        return True  # spelled letters: "U S A", "w w w"
    return _is_quantity_word(left) and _is_quantity_word(right)


def _starts_lower(text: str) -> bool:
    first = text.lstrip(_OPEN)[:1]
    return first.islower() or first.isdigit()


def _is_initial(word: str, prev: str | None, nxt: str | None) -> bool:
    # "J. R. R. Tolkien", "John F. Kennedy" -- but "the U S A. Then" ends a sentence.
    if not _INITIAL.fullmatch(word) or nxt is None or not nxt.lstrip(_OPEN)[:1].isupper():
        return False
    if prev is None or _INITIAL.fullmatch(prev) or (prev.rstrip(_CLOSE) or " ")[-1] in ".!?。！？":
        return True
    return prev[:1].isupper() and len(prev) > 1 and prev.isalpha()


def _boundary(token: str, nxt: str | None, prev: str | None = None) -> tuple[int, str]:
    """Rank of the boundary after `token` (followed by `nxt` on the same line, after `prev`)
    and its mark."""
    core = token.rstrip(_CLOSE)
    if not core:
        return Rank.WORD, ""
    last = core[-1]
    if last in _SENTENCE_MARKS:
        lowered_after = last in "!?" and nxt is not None and _starts_lower(nxt)  # "Stop!" he said.
        return (Rank.CLAUSE if lowered_after else Rank.SENTENCE), last
    if last == "…" or core.endswith("..."):
        mark = "…" if last == "…" else "."
        return (Rank.CLAUSE if nxt is not None and _starts_lower(nxt) else Rank.SENTENCE), mark
    if last == ".":
        if len(core) > 1 and _CJK_RE.match(core[-2]):
            return Rank.SENTENCE, "."
        word = core.lstrip(_OPEN)
        if word.lower() in _NO_SENTENCE_END or _is_initial(word, prev, nxt) or (nxt is not None and _starts_lower(nxt)):
            return Rank.WORD, ""
        return Rank.SENTENCE, "."
    if last in _CLAUSE_MARKS or core in ("-", "--"):
        return Rank.CLAUSE, last
    if token[len(core):].strip("\"'”’") or (nxt is not None and nxt[:1] in "(（"):
        return Rank.CLAUSE, ""  # a parenthesis opens or closes
    if nxt is not None and _glued(core, nxt):
        return Rank.NUMBER, ""
    return Rank.WORD, ""


def tokenize(text: str) -> list[_Token]:
    """Tokens of `text` with the boundary after each; whitespace between them is not kept."""
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    tokens = []
    for i, (start, end) in enumerate(spans):
        word = text[start:end]
        weight = 0.5 if _CJK_RE.search(word) else 1.0  # a Chinese word is about two characters
        if i + 1 == len(spans):
            tokens.append(_Token(start, end, Rank.PARAGRAPH, _boundary(word, None)[1], weight))
            continue
        gap_breaks = text.count("\n", end, spans[i + 1][0])
        nxt = text[spans[i + 1][0]:spans[i + 1][1]]
        prev = text[spans[i - 1][0]:spans[i - 1][1]] if i else None
        rank, mark = _boundary(word, None if gap_breaks else nxt, prev)
        if gap_breaks:
            rank = Rank.PARAGRAPH if gap_breaks > 1 else max(rank, Rank.SENTENCE)
        tokens.append(_Token(start, end, rank, mark, weight))
    for i in range(1, len(tokens) - 2):  # "john at example dot com": the "at" of an address
        at, after = tokens[i], tokens[i + 2]
        if text[at.start:at.end] == "at" and text[after.start:after.end] == "dot":
            for token in (tokens[i - 1], at):
                if token.rank == Rank.WORD:
                    token.rank = Rank.NUMBER
    return tokens


# ---------------------------------------------------------------- packing

class _Packer:
    """Packs token spans into chunks within the budget, counting each piece once."""

    def __init__(self, text: str, tokens: list[_Token], budget: int, count: Callable[[str], int]) -> None:
        self.text, self.tokens, self.budget, self._count = text, tokens, budget, count
        self._memo: dict[str, int] = {}

    def span_text(self, lo: int, hi: int) -> str:
        return self.text[self.tokens[lo].start:self.tokens[hi - 1].end]

    def units(self, lo: int, hi: int) -> int:
        text = self.span_text(lo, hi)
        n = self._memo.get(text)
        if n is None:
            n = self._memo[text] = int(self._count(text))
        return n

    def chunk(self, lo: int, hi: int, units: int) -> TextChunk:
        return TextChunk(self.span_text(lo, hi), units, oversize=units > self.budget)

    def pack(self, lo: int, hi: int, units: int | None = None) -> list[TextChunk]:
        """Chunks for tokens[lo:hi]: one if it fits, else its pieces at its strongest boundary."""
        if units is None and (hi - lo == 1 or len(self.span_text(lo, hi)) <= 2 * self.budget):
            # Worth counting whole only when it may fit (about a phoneme a character, and
            # spaces and marks count for nothing); a longer span is counted by its pieces,
            # which packing needs anyway.
            units = self.units(lo, hi)
        if units is not None and (units <= self.budget or hi - lo == 1):
            return [self.chunk(lo, hi, units)]
        top = max(self.tokens[k].rank for k in range(lo, hi - 1))
        return self.greedy(self._cut(lo, hi, top))

    def _cut(self, lo: int, hi: int, rank: int) -> list[Span]:
        spans, start = [], lo
        for k in range(lo, hi - 1):
            if self.tokens[k].rank >= rank:
                spans.append((start, k + 1))
                start = k + 1
        spans.append((start, hi))
        return spans

    def greedy(self, pieces: list[Span]) -> list[TextChunk]:
        """Pieces in order, as many to a chunk as fit; a piece over budget is cut finer."""
        out: list[TextChunk] = []
        queue = deque(pieces)
        group: list[tuple[int, int, int]] = []  # (lo, hi, units) of the pieces in the open chunk
        estimate = 0
        while queue or group:
            if not queue:
                self._close(group, queue, out)
                group, estimate = [], 0
                continue
            a, b = queue.popleft()
            n = self.units(a, b)
            if group and estimate + self._join(a) + n <= self.budget:
                group.append((a, b, n))
                estimate += self._join(a) + n
            elif group:
                queue.appendleft((a, b))
                self._close(group, queue, out)
                group, estimate = [], 0
            elif n > self.budget:
                out.extend(self.pack(a, b, n))
            else:
                group, estimate = [(a, b, n)], n
        return out

    def _join(self, k: int) -> int:
        # A space or a clause mark between two pieces is read as one more phoneme (a pause);
        # Chinese characters side by side join with nothing.
        before, after = self.tokens[k - 1], self.tokens[k]
        return 1 if after.start > before.end or before.rank >= Rank.CLAUSE else 0

    def _close(self, group: list[tuple[int, int, int]], queue: deque[Span], out: list[TextChunk]) -> None:
        # The sum of the pieces is an estimate (a voice may read words differently in context):
        # check the whole, and hand pieces back to the queue until it fits.
        while len(group) > 1 and self.units(group[0][0], group[-1][1]) > self.budget:
            lo, hi, _ = group.pop()
            queue.appendleft((lo, hi))
        lo, hi = group[0][0], group[-1][1]
        out.append(self.chunk(lo, hi, group[0][2] if len(group) == 1 else self.units(lo, hi)))


# ---------------------------------------------------------------- the first chunk

def _first_cut(tokens: list[_Token], words: int, final: bool = True) -> int | None:
    """Index of the first chunk's last token: the first clause mark after at least `words`
    words, or the first sentence's end, whichever comes first; None if that is the whole
    text (`final`: these tokens are all of it; a part of a text that goes on may be cut at
    its last token). A cut between words would break a phrase (and leave a pause inside it): windowed
    streaming makes the first audio fast without one."""
    seen = 0.0
    for i, token in enumerate(tokens):
        seen += token.weight
        if token.rank >= Rank.SENTENCE or (token.rank >= Rank.CLAUSE and seen >= words):
            return i if i < len(tokens) - 1 or not final else None
    return None


# ---------------------------------------------------------------- entry point

def split_text(text: str, *, budget: int, count: Callable[[str], int], policy: str = "punctuation",
               first_chunk: bool = True, first_chunk_words: int = 4, sentences_per_chunk: int = 4,
               chars_per_chunk: int = 50, final: bool = True) -> list[TextChunk]:
    """Cut already-normalized `text` into chunks of at most `budget` units as measured by
    `count` (phonemes of the target voice). With `first_chunk`, the first chunk stops at the
    first clause mark after at least `first_chunk_words` words (or the first sentence's end)
    so first audio comes fast (not under policy "none", which asks for no cuts). A single
    token over budget becomes its own chunk marked `oversize`.

    `final` false: `text` is a part of a longer text that goes on after a paragraph break
    (see stages/text/stream.py); its chunks are then those the whole text would have there."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1, not {budget}")
    if first_chunk_words < 1 or sentences_per_chunk < 1 or chars_per_chunk < 1:
        raise ValueError("first_chunk_words, sentences_per_chunk and chars_per_chunk must be at least 1")
    policy = resolve_policy(policy)
    tokens = tokenize(text)
    if not tokens:
        return []
    packer = _Packer(text, tokens, budget, count)
    chunks: list[TextChunk] = []
    lo = 0
    if first_chunk and policy != "none":
        cut = _first_cut(tokens, first_chunk_words, final)
        if cut is not None:
            # Over budget (a tiny budget): keep the words that fit; the rest flows on.
            while cut > 0 and packer.units(0, cut + 1) > budget:
                cut -= 1
                while cut > 0 and tokens[cut].rank < Rank.WORD:
                    cut -= 1
            chunks.extend(packer.pack(0, cut + 1))
            lo = cut + 1
    for a, b in hard_cuts(policy, tokens, lo, len(tokens), sentences_per_chunk=sentences_per_chunk,
                          chars_per_chunk=chars_per_chunk, final=final):
        chunks.extend(packer.pack(a, b))
    return chunks
