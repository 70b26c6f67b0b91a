"""The streamed plan (a text read a part at a time) has exactly the chunks of the whole-text
plan: on generated texts whose paragraphs meet at every kind of boundary (abbreviations,
numbers, symbols, initials, Chinese), for every cut policy and both families."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from voxpipe.config import Config
from voxpipe.ipc.messages import Chunk, SynthesisOptions, SynthesisRequest
from voxpipe.stages.frontend.planner import PlanError, Planner
from voxpipe.stages.text.normalize import normalize, normalize_parts
from voxpipe.stages.text.split import CUT_POLICIES, split_text
from voxpipe.stages.text.stream import safe_parts
from voxpipe.stages.voices import VoiceCatalog
from tests.daemon_proc import longform

_WORDS = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=7).map(str.capitalize),
    st.sampled_from(["Dr.", "St.", "Mr.", "e.g.", "etc.", "no.", "3.14", "1,000", "5", "$5", "U.S.", "J.", "A.", "p.m.",
                     "at", "dot", "com", "and", "fifty", "million", "&", "%", "+", "=", "/", "~", "No.", "Fig.",
                     "twenty-four", "don't", "(aside)", '"Quoted"', "“Curly”", "—", "-", "...", "…", "I",
                     "example.com", "March", "2024-03-05", "3:30", "ok", "km"]),
)
_HAN = st.sampled_from(list("的一是了我不人在他有这个上们来到时大地为子中你说生国年二三十百千万零点两"))
_ZH_MARKS = st.sampled_from(list("，。！？、；：") + ["……", "“", "”", "「", "」"])
_EN_SEPARATORS = st.sampled_from([" ", " ", " ", ", ", ". ", "; ", ": ", "! ", "? ", "\n", '." '])
_PARAGRAPH_BREAKS = st.sampled_from(["\n\n", "\n\n", "\n \n", "\r\n\r\n", "\n\n\n", " \n\t\n "])


@st.composite
def paragraph(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        parts = [draw(_HAN) + (draw(_ZH_MARKS) if draw(st.integers(0, 4)) == 0 else "")
                 for _ in range(draw(st.integers(1, 20)))]
        return "".join(parts)
    parts = [draw(_WORDS) + draw(_EN_SEPARATORS) for _ in range(draw(st.integers(1, 14)))]
    ending = draw(st.sampled_from(["", ".", ".", "!", "?", '."', ".)"]))
    return "".join(parts).strip() + ending


@st.composite
def text(draw) -> str:
    paragraphs = draw(st.lists(paragraph(), min_size=1, max_size=6))
    out = paragraphs[0]
    for p in paragraphs[1:]:
        out += draw(_PARAGRAPH_BREAKS) + p
    return out


_OPTIONS = st.fixed_dictionaries({
    "budget": st.integers(1, 80),
    "policy": st.sampled_from(CUT_POLICIES),
    "first_chunk": st.booleans(),
    "first_chunk_words": st.integers(1, 8),
    "sentences_per_chunk": st.integers(1, 5),
    "chars_per_chunk": st.integers(1, 60),
})


def letters(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def split_streamed(text: str, options: dict) -> list:
    """What the streamed plan splits: each part on its own, the first chunk rule on the
    first part with words in it."""
    options = dict(options)
    parts = [(normalize(text), True)] if options["policy"] == "none" else normalize_parts(text)
    chunks = []
    for part, last in parts:
        pieces = split_text(part, count=letters, final=last, **options)
        if pieces:
            options["first_chunk"] = False
        chunks.extend(pieces)
    return chunks


@settings(max_examples=400, deadline=None)
@given(text(), _OPTIONS)
def test_parts_split_on_their_own_give_the_whole_texts_chunks(text: str, options: dict) -> None:
    assert split_streamed(text, options) == split_text(normalize(text), count=letters, **options)


def test_a_text_is_cut_only_at_safe_paragraph_breaks():
    cuts = [part for part, _ in safe_parts(longform())]
    assert len(cuts) == longform().count("\n\n") + 1  # the long form's paragraphs all end plainly
    unsafe = ("He met Dr.\n\nSmith there.", "It costs 5\n\n% more.", "Bread &\n\nButter.", "We left.\n\nand then.",
              "See Fig.\n\nThree.", "We stayed at St.\n\nJohn's.", "It was 5 p.m.\n\nThen we left.", "你好。\n\nHello.")
    for text in unsafe:
        assert [part for part, _ in safe_parts(text)] == [text], text
    assert list(safe_parts("One day.\r\n\r\n“Then” it rained.\n\n你好。\n\n我们走。")) == [
        ("One day.", False), ("“Then” it rained.\n\n你好。", False), ("我们走。", True)]


def plan_streamed(planner: Planner, request: SynthesisRequest) -> list[Chunk]:
    stream = planner.start(request, 1e12)
    chunks: list[Chunk] = []
    while not stream.done:
        chunks.extend(stream.advance())
    return chunks


def assert_same_plan(planner: Planner, request: SynthesisRequest) -> None:
    try:
        whole = planner.plan(request, 1e12).chunks
    except PlanError as exc:
        with pytest.raises(PlanError) as streamed_error:
            plan_streamed(planner, request)
        assert streamed_error.value.code == exc.code
        return
    streamed = plan_streamed(planner, request)
    # Seeds: the request's own, or one drawn per plan; either way chunk n has base + n.
    key = lambda c, base: (c.seq, c.text, c.inputs.ids, c.inputs.options, c.inputs.extras, c.seed - base, c.engine,
                           c.voice)
    assert [key(c, streamed[0].seed) for c in streamed] == [key(c, whole[0].seed) for c in whole]
    if request.options.seed is not None:
        assert streamed[0].seed == whole[0].seed == request.options.seed
    # Until the plan is complete the total is not known: only the last chunk carries it.
    assert [c.count for c in streamed] == [0] * (len(whole) - 1) + [len(whole)]
    assert len({c.submitted_at for c in streamed}) == 1  # one plan


@pytest.fixture(scope="module")
def joe_planner() -> Planner:
    config = Config()
    return Planner(config, VoiceCatalog(config.voices_path()))


@settings(max_examples=40, deadline=None)
@given(text(), st.sampled_from(CUT_POLICIES), st.booleans(), st.sampled_from([None, 7]))
def test_streamed_plan_equals_whole_plan_piper(joe_planner, text, policy, first_chunk, seed):
    options = SynthesisOptions(policy=policy, first_chunk=first_chunk, seed=seed)
    assert_same_plan(joe_planner, SynthesisRequest("r", text, "joe", True, options))


def test_long_form_first_chunk_comes_before_the_rest_is_read(joe_planner):
    text = "\n\n".join([longform()] * 50)
    stream = joe_planner.start(SynthesisRequest("r", text, "joe", True, SynthesisOptions()), 1e12)
    first: list[Chunk] = []
    while not first:
        first = stream.advance()
    assert not stream.done and first[0].seq == 0 and first[0].count == 0
    assert_same_plan(joe_planner, SynthesisRequest("r", longform(), "joe", True, SynthesisOptions()))


def test_a_text_with_nothing_to_say_is_refused_when_its_end_is_read(joe_planner):
    request = SynthesisRequest("r", "…\n\n()\n\n—", "joe", True, SynthesisOptions())
    with pytest.raises(PlanError) as err:
        plan_streamed(joe_planner, request)
    assert err.value.code == "unspeakable"
    assert_same_plan(joe_planner, request)


@pytest.fixture(scope="module")
def gsv_planner(tmp_path_factory) -> Planner:
    pytest.importorskip("torch")
    from voxpipe.stages import families

    voices = tmp_path_factory.mktemp("gsv-voices")
    families.get("gpt-sovits").write_random_voice(voices, "gv2", version="v2", seed=1)
    return Planner(Config(), VoiceCatalog(voices))


GSV_TEXTS = ("你好，世界。This is a test.\n\n今天天气很好。我们去公园。\n\nHello there. The cost is 5 dollars.",
             "第一段有二十三个人。\n\n第二段，三点五公里！\n\n“第三段”。",
             "It rained all day.\n\nThen, at 3:30 p.m., Dr. Smith left.\n\n“Well,” she said.\n\nBye now.")


@pytest.mark.slow
@pytest.mark.parametrize("policy", CUT_POLICIES)
def test_streamed_plan_equals_whole_plan_gpt_sovits(gsv_planner, policy):
    for text in GSV_TEXTS:
        assert_same_plan(gsv_planner, SynthesisRequest("r", text, "gv2", False, SynthesisOptions(policy=policy)))

