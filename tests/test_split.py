"""Splitting: boundaries, packing within the budget, cut policies, the first chunk, and
`voxpipe split`."""
from __future__ import annotations

import io
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from voxpipe.stages.text.normalize import normalize
from voxpipe.stages.text.policies import Rank
from voxpipe.stages.text.split import CUT_POLICIES, TextChunk, resolve_policy, split_text, tokenize
from voxpipe.daemon.commands import split as split_cli

from voxpipe.bench.texts import DEFAULT_TEXTS_DIR as BENCH  # the bench texts, shipped in the package


def letters(text: str) -> int:
    """A cheap stand-in for a phoneme count: letters and digits."""
    return sum(ch.isalnum() for ch in text)


def texts(chunks: list[TextChunk]) -> list[str]:
    return [c.text for c in chunks]


@lru_cache(maxsize=1)
def phonemizer():
    from voxpipe.stages.families.piper.phonemize import Phonemizer
    from voxpipe.stages.voices import VoiceCatalog

    return Phonemizer(VoiceCatalog(None).get("joe"))


# ---------------------------------------------------------------- policy names

def test_policy_names() -> None:
    assert {"punctuation", "sentences", "length", "none"} <= set(CUT_POLICIES)
    for name in CUT_POLICIES:
        assert resolve_policy(name) == name


@pytest.mark.parametrize("alias, name", [("cut0", "none"), ("cut1", "sentences"), ("cut2", "length"),
                                         ("cut3", "period_zh"), ("cut4", "period_en"), ("cut5", "clauses"),
                                         (" CUT5 ", "clauses"), ("period-zh", "period_zh")])
def test_gpt_sovits_aliases(alias: str, name: str) -> None:
    assert resolve_policy(alias) == name


@pytest.mark.parametrize("bad", ["cut6", "", "sentence", "auto_cut"])
def test_unknown_policy(bad: str) -> None:
    with pytest.raises(ValueError):
        resolve_policy(bad)
    with pytest.raises(ValueError):
        split_text("Hi.", budget=10, count=letters, policy=bad)


def test_bad_budget() -> None:
    with pytest.raises(ValueError):
        split_text("Hi.", budget=0, count=letters)


def test_empty_text() -> None:
    assert split_text("", budget=10, count=letters) == []
    assert split_text("  \n\n ", budget=10, count=letters) == []


# ---------------------------------------------------------------- where cuts may fall

def split_all(text: str, budget: int = 1000, **kw) -> list[str]:
    return texts(split_text(text, budget=budget, count=letters, first_chunk=False, **kw))


@pytest.mark.parametrize("text, expected", [
    # abbreviations, initials, decimals and addresses are not sentence ends
    ("Dr. Smith arrived. He left.", ["Dr. Smith arrived.", "He left."]),
    ("Pay 3.50 now. Then go.", ["Pay 3.50 now.", "Then go."]),
    ("Buy fruit, e.g. apples. Then go.", ["Buy fruit, e.g. apples.", "Then go."]),
    ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
    ("John F. Kennedy spoke. Then.", ["John F. Kennedy spoke.", "Then."]),
    ("Made in the U S A. Then we left.", ["Made in the U S A.", "Then we left."]),
    ("I said no. Then I left.", ["I said no.", "Then I left."]),
    ("See example.com/a,b today. Now.", ["See example.com/a,b today.", "Now."]),
    ("It is 3:30, 1,000 km. Fine.", ["It is 3:30, 1,000 km.", "Fine."]),
    # quotes and brackets go with their sentence
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("(It rained.) We stayed.", ["(It rained.)", "We stayed."]),
    ('"Stop!" he said. Fine.', ['"Stop!" he said.', "Fine."]),
    # ellipses: a sentence end before a capital, a pause before lower case
    ("Wait... Go now.", ["Wait...", "Go now."]),
    ("Wait... go now. Yes.", ["Wait... go now.", "Yes."]),
])
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    assert split_all(text, policy="period_en") == expected
    assert split_all(text, budget=letters(text) - 1) == expected  # the budget cuts at the same places


@pytest.mark.parametrize("text, expected", [
    ("他说：“你好。”然后走了。", ["他说：", "“你好。”", "然后走了。"]),
    ("等等……好的。", ["等等……", "好的。"]),
    ("“好！”他说，「走吧」。", ["“好！”", "他说，", "「走吧」。"]),
])
def test_chinese_quotes_and_ellipses(text: str, expected: list[str]) -> None:
    assert split_all(text, policy="clauses") == expected


def test_default_chunks_hold_one_sentence() -> None:
    # As Piper does: one sentence a model call, however much room the budget leaves.
    text = "One two three. Four five six? Seven eight nine! Ten."
    assert split_all(text) == ["One two three.", "Four five six?", "Seven eight nine!", "Ten."]
    assert split_all("Dr. Smith paid 3.50 at St. Mary's. He left.") == ["Dr. Smith paid 3.50 at St. Mary's.", "He left."]


def test_packed_policy_packs_sentences_up_to_budget() -> None:
    text = "One two three. Four five six. Seven eight nine. Ten."
    # each sentence has 11-14 letters; two fit in 30
    assert split_all(text, budget=30, policy="packed") == ["One two three. Four five six.", "Seven eight nine. Ten."]
    assert split_all(text, budget=1000, policy="packed") == [text]


def test_long_sentence_cut_at_clauses_then_words() -> None:
    text = "Alpha beta gamma, delta epsilon zeta, eta theta iota kappa lambda mu nu xi omicron pi rho."
    chunks = split_text(text, budget=25, count=letters, first_chunk=False)
    assert texts(chunks) == ["Alpha beta gamma,", "delta epsilon zeta,", "eta theta iota kappa",
                             "lambda mu nu xi omicron", "pi rho."]
    assert all(c.units <= 25 and not c.oversize for c in chunks)


def test_unpunctuated_chinese_cut_between_characters_near_budget() -> None:
    text = "当请求到达时守护进程会先规范化文本再转换成音素最后交给合成进程生成音频"
    chunks = split_text(text, budget=10, count=letters, first_chunk=False)
    assert "".join(texts(chunks)) == text
    assert [c.units for c in chunks] == [10, 10, 10, 5]


def test_numbers_stay_whole_when_budget_cuts_words() -> None:
    text = "we paid one thousand two hundred thirty-four dollars and fifty cents for it"
    number = "one thousand two hundred thirty-four dollars and fifty cents"
    for budget in (55, 60, 70):  # the amount alone has 52 letters
        chunks = texts(split_text(text, budget=budget, count=letters, first_chunk=False))
        assert any(number in chunk for chunk in chunks), chunks


def test_oversize_token_is_reported_alone() -> None:
    text = "A supercalifragilisticexpialidocious word."
    chunks = split_text(text, budget=10, count=letters, first_chunk=False)
    assert texts(chunks) == ["A", "supercalifragilisticexpialidocious", "word."]
    assert [c.oversize for c in chunks] == [False, True, False]


def test_paragraphs_are_cut() -> None:
    assert split_all("One. Two.\n\nThree.", policy="packed") == ["One. Two.", "Three."]
    assert split_all("One. Two.\n\nThree.") == ["One.", "Two.", "Three."]
    assert split_all("One. Two.\n\nThree.", policy="none") == ["One. Two.\n\nThree."]


def test_units_are_counts_of_the_chunk() -> None:
    for chunk in split_text("Alpha beta. Gamma delta, epsilon. Zeta!", budget=12, count=letters):
        assert chunk.units == letters(chunk.text)


# ---------------------------------------------------------------- policies

def test_policy_none_keeps_text_whole_within_budget() -> None:
    text = "Hello there, how are you? I am fine. Thanks."
    assert texts(split_text(text, budget=1000, count=letters, policy="cut0")) == [text]  # no first chunk either
    assert all(c.units <= 15 for c in split_text(text, budget=15, count=letters, policy="none"))


def test_policy_sentences_every_n() -> None:
    text = "A one. B two. C three. D four. E five."
    assert split_all(text, policy="sentences", sentences_per_chunk=2) == ["A one. B two.", "C three. D four.", "E five."]
    assert split_all(text, policy="cut1") == ["A one. B two. C three. D four.", "E five."]


def test_policy_length_closes_after_n_chars_and_merges_short_tail() -> None:
    text = "Alpha beta, gamma delta, epsilon zeta. Eta theta, iota kappa, lambda mu. Nu xi."
    assert split_all(text, policy="length", chars_per_chunk=20) == [
        "Alpha beta, gamma delta,", "epsilon zeta. Eta theta,", "iota kappa, lambda mu. Nu xi."]
    assert split_all(text, policy="cut2") == [text]  # under 50 characters past the first cut: one chunk


def test_policy_period_zh() -> None:
    text = "今天天气很好，我们去公园。然后吃饭！最后回家。"
    assert split_all(text, policy="cut3") == ["今天天气很好，我们去公园。", "然后吃饭！最后回家。"]


def test_policy_period_en() -> None:
    text = "Hi! I am here. You? Yes, 3.5 of us."
    assert split_all(text, policy="cut4") == ["Hi! I am here.", "You? Yes, 3.5 of us."]


def test_policy_clauses() -> None:
    text = "Hi, you; me: us. 你好，世界、朋友。"
    assert split_all(text, policy="cut5") == ["Hi,", "you;", "me:", "us.", "你好，", "世界、", "朋友。"]


@pytest.mark.parametrize("policy", CUT_POLICIES)
def test_budget_applies_on_top_of_every_policy(policy: str) -> None:
    text = "Alpha beta gamma delta epsilon. Zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma."
    for chunk in split_text(text, budget=20, count=letters, policy=policy):
        assert chunk.units <= 20


# ---------------------------------------------------------------- the first chunk

def test_first_chunk_is_the_first_clause() -> None:
    text = "The lighthouse at the end of the pier, painted white, turned all night. And more."
    assert texts(split_text(text, budget=1000, count=letters)) == [
        "The lighthouse at the end of the pier,", "painted white, turned all night.", "And more."]


def test_a_short_first_clause_runs_on() -> None:
    text = "Hello, this is a rather long first sentence, with more to come. And more."
    chunks = texts(split_text(text, budget=1000, count=letters, first_chunk_words=4))
    assert chunks[0] == "Hello, this is a rather long first sentence,"
    text = "Well, yes. And more."
    assert texts(split_text(text, budget=1000, count=letters))[0] == "Well, yes."  # the sentence ends first


@pytest.mark.parametrize("text", [
    "This sentence has many words before any mark appears at all. Next.",
    "The lighthouse at the end of the northern pier was painted white. Storms came.",
    "The price is five dollars and fifty cents today.",
    "one thousand two hundred thirty-four thousand five hundred people came.",
])
def test_first_chunk_is_never_cut_between_words(text: str) -> None:
    first = texts(split_text(text, budget=1000, count=letters))[0]
    assert first[-1] in ".,;:!?", first  # a phrase is never cut where a reader would not pause


def test_first_chunk_in_chinese_counts_two_characters_a_word() -> None:
    text = "当请求到达时守护进程会先规范化文本，按句子切分。"
    assert texts(split_text(text, budget=1000, count=letters))[0] == "当请求到达时守护进程会先规范化文本，"
    assert texts(split_text("你好，世界。", budget=1000, count=letters))[0] == "你好，世界。"  # one word: runs on


def test_no_first_chunk() -> None:
    text = "Hello, this is a rather long first sentence. And more."
    assert split_all(text) == ["Hello, this is a rather long first sentence.", "And more."]


def _longform() -> str:
    return normalize((BENCH / "longform_en.txt").read_text(encoding="utf-8"))


def test_longform_first_chunk_a_clause_then_one_sentence_a_chunk() -> None:
    p = phonemizer()
    text = _longform()
    chunks = split_text(text, budget=400, count=p.count)
    first, rest = chunks[0], chunks[1:]
    assert first.text[-1] in ".,;:!?" and first.units < 200
    assert rest
    for chunk in rest:
        assert chunk.text[-1] in ".!?", chunk.text  # every later chunk ends a sentence...
        assert chunk.units <= 400 and not chunk.oversize
        assert chunk.units == p.count(chunk.text)
        # ...and holds exactly one (no sentence end inside it)
        assert all(t.rank < Rank.SENTENCE for t in tokenize(chunk.text)[:-1]), chunk.text
    for chunk in rest[1:]:
        assert chunk.text[0].isupper()
    assert re.sub(r"\s", "", "".join(texts(chunks))) == re.sub(r"\s", "", text)


def test_longform_packed_policy_packs_sentences_near_budget() -> None:
    p = phonemizer()
    chunks = split_text(_longform(), budget=400, count=p.count, first_chunk=False, policy="packed")
    # paragraphs are cut; inside each, sentences pack until the next would not fit
    assert len(chunks) <= 10
    assert max(c.units for c in chunks) > 300


def _bench_zh() -> list[str]:
    rows = (BENCH / "texts_zh.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in rows if line and not line.startswith("#")]


@pytest.mark.parametrize("text", _bench_zh())
def test_bench_chinese_texts_split_at_their_punctuation(text: str) -> None:
    text = normalize(text)
    clauses = re.findall(r"[^，。！？；、：]+[，。！？；、：]", text)
    assert split_all(text, policy="clauses") == clauses
    # default policy: the first chunk is the first clauses up to a mark after four words (eight
    # characters); the rest is one sentence
    chunks = texts(split_text(text, budget=1000, count=letters))
    assert chunks[0][-1] in "，。！？；、：" and (len(chunks[0].rstrip("，。！？；、：")) >= 8 or chunks == [text])
    assert len(chunks) <= 2 and "".join(chunks) == text
    # a small budget still only cuts at marks while the clauses fit
    small = texts(split_text(text, budget=max(letters(c) for c in clauses), count=letters,
                                     first_chunk=False))
    assert all(chunk[-1] in "，。！？；、：" for chunk in small)


@pytest.mark.parametrize("text, budget", [
    ("Dr. Smith paid $5.50 on 2024-03-05 at 3:30 p.m. and left.", 40),
    ("Visit https://example.com/docs, e.g. the FAQ, or mail help@example.com.", 50),
    ("如果明天早上天气晴朗，我们就去湖边散步，然后一起吃午饭。", 120),
    ("The museum opened in 1999; it has 1,234 maps and 56 letters. Tickets cost €12.", 60),
])
def test_real_phonemizer_chunks_fit(text: str, budget: int) -> None:
    p = phonemizer()
    normalized = normalize(text)
    chunks = split_text(normalized, budget=budget, count=p.count)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.units == p.count(chunk.text)
        assert chunk.units <= budget or chunk.oversize
    assert re.sub(r"\s", "", "".join(texts(chunks))) == re.sub(r"\s", "", normalized)


# ---------------------------------------------------------------- voxpipe split

def cli(*argv: str) -> int:
    return split_cli.main(list(argv))


def test_cli_json(capsys) -> None:
    assert cli("--json", "--budget", "60", "Dr. Smith paid $5.50. He left at 3 p.m. today.") == 0
    payload = json.loads(capsys.readouterr().out)
    chunks = payload["chunks"]
    assert chunks[0]["text"] == "Doctor Smith paid five dollars and fifty cents."
    assert " ".join(c["text"] for c in chunks) == "Doctor Smith paid five dollars and fifty cents. He left at three PM today."
    assert all(set(c) == {"text", "phonemes", "oversize"} and c["phonemes"] <= 60 for c in chunks)


def test_cli_text_output_and_options(capsys) -> None:
    assert cli("--no-first-chunk", "--policy", "cut5", "--lang", "zh", "你好，世界。") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("你好，") and lines[1].endswith("世界。")


def test_cli_stdin(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("One. Two.\n"))
    assert cli("--json", "--no-first-chunk", "-") == 0
    assert [c["text"] for c in json.loads(capsys.readouterr().out)["chunks"]] == ["One.", "Two."]


@pytest.mark.parametrize("argv", [["   "], ["...!?"], ["--policy", "cut9", "hi"], ["--budget", "0", "hi"],
                                  ["--voice", "nobody", "hi"]])
def test_cli_errors_exit_2(capsys, argv: list[str]) -> None:
    assert cli(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("voxpipe split: ")


def test_first_chunk_over_a_tiny_budget_keeps_what_fits() -> None:
    text = "the quick brown fox jumps over the lazy dog and keeps running"
    chunks = split_text(text, budget=20, count=letters)
    assert texts(chunks)[0] == "the quick brown fox"
    assert all(c.units <= 20 for c in chunks) and len(chunks[1].text.split()) > 1


def test_frontend_bench_runs(capsys) -> None:
    from tests.dev_scripts import load_script
    frontend_bench = load_script("frontend_bench")

    assert frontend_bench.main(["--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "longform_en" in out and "texts_zh" in out and "c/s" in out
