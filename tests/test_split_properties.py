"""Properties of splitting on random English, Chinese and mixed text: chunks are never empty,
never over budget (but for a single unsplittable token, marked oversize), keep every word in
order, and join back to the text up to whitespace."""
from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import given, settings, strategies as st

from voxpipe.stages.text.normalize import normalize
from voxpipe.stages.text.split import CUT_POLICIES, split_text, tokenize

SETTINGS = settings(max_examples=200, deadline=None)


def letters(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def squeeze(text: str) -> str:
    return re.sub(r"\s", "", text)


_LATIN_WORDS = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8).map(str.capitalize),
    st.sampled_from(["Dr.", "Mr.", "e.g.", "i.e.", "etc.", "3.14", "1,000", "U.S.", "J.", "example.com/a,b",
                     "twenty-four", "one", "hundred", "dollars", "and", "fifty", "dot", "at", "don't",
                     "keepers'", "(aside)", '"quoted"', "“curly”", "—", "-", "...", "…", "a.m."]),
)
_HAN = st.sampled_from(list("的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会"
                            "二三十百千万零点两"))
_ZH_MARKS = st.sampled_from(list("，。！？、；：") + ["……", "——", "“", "”", "「", "」"])
_EN_SEPARATORS = st.sampled_from([" ", " ", " ", ", ", ". ", "; ", ": ", " — ", "! ", "? ", "... ", "\n", "\n\n",
                                  '." ', ".) "])


@st.composite
def english(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 40))):
        parts.append(draw(_LATIN_WORDS))
        parts.append(draw(_EN_SEPARATORS))
    return "".join(parts).strip()


@st.composite
def chinese(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 60))):
        parts.append(draw(_HAN))
        if draw(st.integers(0, 5)) == 0:
            parts.append(draw(_ZH_MARKS))
    return "".join(parts)


@st.composite
def mixed(draw) -> str:
    return "".join(draw(st.lists(st.one_of(english(), chinese()), min_size=1, max_size=4)))


_OPTIONS = st.fixed_dictionaries({
    "budget": st.integers(1, 80),
    "policy": st.sampled_from(CUT_POLICIES + ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")),
    "first_chunk": st.booleans(),
    "first_chunk_words": st.integers(1, 8),
    "sentences_per_chunk": st.integers(1, 5),
    "chars_per_chunk": st.integers(1, 60),
})


def check(text: str, options: dict, count=letters) -> list:
    chunks = split_text(text, count=count, **options)
    for chunk in chunks:
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.units == count(chunk.text)
        if chunk.oversize:
            assert chunk.units > options["budget"]
            assert len(tokenize(chunk.text)) == 1, chunk.text  # only a single token may be over
        else:
            assert chunk.units <= options["budget"], chunk
    assert squeeze("".join(c.text for c in chunks)) == squeeze(text)
    return chunks


@SETTINGS
@given(english(), _OPTIONS)
def test_english_chunks(text: str, options: dict) -> None:
    chunks = check(text, options)
    # English is cut only between words: every word survives whole and in order
    assert [w for c in chunks for w in c.text.split()] == text.split()


@SETTINGS
@given(chinese(), _OPTIONS)
def test_chinese_chunks(text: str, options: dict) -> None:
    chunks = check(text, options)
    # a Chinese mark never starts a chunk: it stays with the character before it
    for chunk in chunks[1:]:
        assert chunk.text[0] not in "，。！？、；：”」"


@pytest.mark.slow
@SETTINGS
@given(mixed(), _OPTIONS)
def test_mixed_chunks(text: str, options: dict) -> None:
    check(text, options)


@settings(max_examples=60, deadline=None)
@given(st.one_of(english(), chinese(), mixed()), _OPTIONS)
def test_normalized_text_chunks(text: str, options: dict) -> None:
    normalized = normalize(text)
    chunks = check(normalized, options)
    assert (not chunks) == (not normalized)


@lru_cache(maxsize=1)
def _phonemizer():
    from voxpipe.stages.families.piper.phonemize import Phonemizer
    from voxpipe.stages.voices import VoiceCatalog

    return Phonemizer(VoiceCatalog(None).get("joe"))


@settings(max_examples=25, deadline=None)
@given(english(), st.integers(20, 200), st.sampled_from(CUT_POLICIES))
def test_real_phonemizer_budget(text: str, budget: int, policy: str) -> None:
    options = {"budget": budget, "policy": policy, "first_chunk": True, "first_chunk_words": 6,
               "sentences_per_chunk": 4, "chars_per_chunk": 50}
    check(normalize(text), options, count=_phonemizer().count)
