"""Where a long text may be cut before it is normalized, so that it can be read a part at a
time: the first part's chunks go to synthesis while the rest is still unread.

A cut is safe when neither side changes how the other is read. Normalization and the
splitter look across a break at a few things (an abbreviation's dot and the word after it,
"&" or "+" between words, a number and its unit, an initial and the name after it, the
first chunk's end, the tail rule of the "length" policy), so a part ends only at a blank
line that follows a plain lowercase word and a sentence mark (English) or a Chinese full
stop, and only where the next paragraph begins with a capitalized word (English) or a
Chinese character. Every blank line is a hard cut for every policy but "none" (whose
text is therefore never cut), so the chunks of the parts, split on their own, are those
of the whole text: tests/test_plan_stream.py checks that on generated texts.
"""
from __future__ import annotations

import re
from typing import Iterator

from voxpipe.stages.text.normalize_zh import HAN

# A blank line as it comes in (clean() makes any such run one blank line).
_BLANK_LINE = re.compile(r"\r?\n(?:[ \t]*\r?\n)+[ \t]*")
# What the part before must end with (the look-behind is checked on the text up to the break).
_ENDS_EN = re.compile(r"(?<![\w.'’@&/-])([a-z]{2,})[.!?][\"'”’)]*[ \t]*\Z")
_ENDS_ZH = re.compile(rf"[{HAN}][。！？][”’」』）]*[ \t]*\Z")
# ... and what the part after must begin with.
_BEGINS_EN = re.compile(r"[\"“‘(]?[A-Z][a-z]")
_BEGINS_ZH = re.compile(f"[{HAN}]")
# Lowercase words that normalization reads as abbreviations (their dot may not end a sentence).
_ABBREVIATIONS = frozenset("etc approx vs cf viz eg ie al no nos am pm ft st dr mr mrs ms".split())
_LOOK_BEHIND = 40  # characters before a break enough to see the word that ends the part


def safe_break(text: str, start: int, end: int) -> bool:
    """Whether the blank line at text[start:end] is a safe cut."""
    first = max(0, start - _LOOK_BEHIND)
    before = text[first:start]
    if _ENDS_ZH.search(before):
        return _BEGINS_ZH.match(text, end) is not None
    m = _ENDS_EN.search(before)
    whole_word = m is not None and (m.start() > 0 or first == 0)  # not a longer word's tail
    return whole_word and m[1] not in _ABBREVIATIONS and _BEGINS_EN.match(text, end) is not None


def safe_parts(text: str) -> Iterator[tuple[str, bool]]:
    """`text` in parts cut at safe blank lines, lazily (the separators are left out), each
    with whether it is the last."""
    start = 0
    for m in _BLANK_LINE.finditer(text):
        if safe_break(text, m.start(), m.end()):
            yield text[start:m.start()], False
            start = m.end()
    yield text[start:], True
