"""Which of a Piper chunk's phoneme ids speak which word of its text.

espeak-ng separates the words it speaks with a space phoneme, but its words are not
always the text's: it joins some ("of the" -> one group), splits others, and reads
abbreviations its own way. Equal counts are matched one to one; otherwise the groups
are lined up by length against each word phonemized alone (stages/families/words.py).
"""
from __future__ import annotations

from voxpipe.stages.families.words import WordIds, align_groups, is_spoken, split_range, text_words
from voxpipe.stages.families.piper.phonemize import PhonemizeError, Phonemizer


def phoneme_groups(phonemes: list[str], positions: list[int], n_ids: int) -> list[tuple[int, int, int]]:
    """The spoken word groups of a phoneme list: (first id, end id, spoken phonemes).
    A group's ids run from its first spoken phoneme to the end of its last one (with its
    padding), leaving out trailing punctuation and the pause that goes with it."""
    groups: list[tuple[int, int, int]] = []
    kept = [k for k, p in enumerate(positions) if p >= 0]
    next_start = {k: (positions[kept[i + 1]] if i + 1 < len(kept) else n_ids - 1) for i, k in enumerate(kept)}
    first = end = -1
    spoken = 0
    for k, symbol in enumerate([*phonemes, " "]):
        if symbol == " ":
            if spoken:
                groups.append((first, end, spoken))
            first, end, spoken = -1, -1, 0
            continue
        if positions[k] < 0 or not is_spoken(symbol):
            continue
        if first < 0:
            first = positions[k]
        end = next_start[k]
        spoken += 1
    return groups


def piper_words(phonemizer: Phonemizer, text: str, phonemes: list[str], positions: list[int],
                n_ids: int) -> list[WordIds]:
    """The text's words with the id range that speaks each ([text, first, end])."""
    words = text_words(text)
    groups = phoneme_groups(phonemes, positions, n_ids)
    if not words:
        return []
    if len(words) == len(groups):
        return [[w, a, b] for w, (a, b, _) in zip(words, groups)]
    alone = [sum(1 for p in _phonemes(phonemizer, w) if is_spoken(p)) or 1 for w in words]
    out: list[WordIds] = []
    last_end = groups[0][0] if groups else 0
    for t0, t1, g0, g1 in align_groups(alone, [g[2] for g in groups]):
        if g0 == g1:  # words espeak did not speak: an empty span where they would be
            out += [[w, last_end, last_end] for w in words[t0:t1]]
            continue
        first, end = groups[g0][0], groups[g1 - 1][1]
        last_end = end
        if t1 - t0 == 1:
            out.append([words[t0], first, end])
        else:  # one group for several words: share it by their lengths alone
            out += [[w, a, b] for w, (a, b) in zip(words[t0:t1], split_range(first, end, alone[t0:t1]))]
    return out


def _phonemes(phonemizer: Phonemizer, word: str) -> list[str]:
    try:
        return phonemizer.phonemes(word)
    except PhonemizeError:  # a word espeak cannot read alone still gets a place, by its letters
        return list(word)
