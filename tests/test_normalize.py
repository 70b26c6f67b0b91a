"""Normalization rules, one table row each: English, Chinese, mixed text and clean-up."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from voxpipe.stages.text.normalize import clean, detect, normalize
from voxpipe.stages.text.normalize_en import normalize_en
from voxpipe.stages.text.normalize_zh import normalize_zh

from voxpipe.bench.texts import DEFAULT_TEXTS_DIR as BENCH  # the bench texts, shipped in the package

EN_CASES = [
    # cardinals, thousands separators, decimals, negatives
    ("I have 3 cats.", "I have three cats."),
    ("It has 1,234,567 rows.", "It has one million two hundred thirty-four thousand five hundred sixty-seven rows."),
    ("Pi is 3.14.", "Pi is three point one four."),
    ("It is -5 outside.", "It is minus five outside."),
    ("Take 0.5 of it.", "Take zero point five of it."),
    ("Agent 007 and 105 people", "Agent zero zero seven and one hundred five people"),
    # ordinals
    ("the 1st, 2nd, 3rd and 21st", "the first, second, third and twenty-first"),
    # years and decades
    ("In 1999 it began.", "In nineteen ninety-nine it began."),
    ("In 2005 it ended.", "In two thousand five it ended."),
    ("Back in 1905 and 2024.", "Back in nineteen oh five and twenty twenty-four."),
    ("the 1990s and the '80s", "the nineteen nineties and the eighties"),
    # ranges
    ("Read pages 5-10.", "Read pages five to ten."),
    ("From 1990–1995 it grew.", "From nineteen ninety to nineteen ninety-five it grew."),
    # currencies
    ("It costs $5.50.", "It costs five dollars and fifty cents."),
    ("Only $1 or $0.99!", "Only one dollar or ninety-nine cents!"),
    ("Pay €3.20 or £12.", "Pay three euros and twenty cents or twelve pounds."),
    ("It was ¥500.", "It was five hundred yen."),
    ("A $2.5 million deal", "A two point five million dollars deal"),
    ("Tickets are $5-10.", "Tickets are five to ten dollars."),
    # percentages
    ("Growth was 15%.", "Growth was fifteen percent."),
    ("Down 2.5 % today", "Down two point five percent today"),
    # dates
    ("Due 2024-03-05.", "Due March fifth twenty twenty-four."),
    ("Due 3/5/2024.", "Due March fifth twenty twenty-four."),
    ("Due 25/12/2023.", "Due December twenty-fifth twenty twenty-three."),
    ("Due March 5, 2024, sharp.", "Due March fifth twenty twenty-four, sharp."),
    ("Born Jan. 1st 2000", "Born January first two thousand"),
    ("On 5 March 2024 we met.", "On the fifth of March twenty twenty-four we met."),
    # times
    ("Meet at 3:30.", "Meet at three thirty."),
    ("Meet at 3:30 p.m. today.", "Meet at three thirty PM today."),
    ("Meet at 10:05 am.", "Meet at ten oh five AM."),
    ("Meet at 3:00.", "Meet at three o'clock."),
    ("Open from 9 a.m. until 5 p.m. Then we rest.", "Open from nine AM until five PM. Then we rest."),
    # abbreviations
    ("Dr. Smith is here.", "Doctor Smith is here."),
    ("He lives on Main St. near St. Louis.", "He lives on Main Street near Saint Louis."),
    ("Mr. and Mrs. Lee met Ms. Kim and Prof. Xu.", "Mister and Missus Lee met Miz Kim and Professor Xu."),
    # St. and Dr.: a title before a name, a road after one
    ("St. James St.", "Saint James Street."),
    ("The church of St. James stands on St. James St. near the river.",
     "The church of Saint James stands on Saint James Street near the river."),
    ("We met at Main St. Then we left.", "We met at Main Street. Then we left."),
    ("Visit Mount St. Helens.", "Visit Mount Saint Helens."),
    ("Visit Mt. St. Helens and Port St. Lucie.", "Visit Mount Saint Helens and Port Saint Lucie."),
    ("She moved to north St. Louis.", "She moved to north Saint Louis."),
    ("Turn onto 5th St. and stop.", "Turn onto fifth Street and stop."),
    ("It is on 42nd St. Then turn left.", "It is on forty-second Street. Then turn left."),
    ("Ask Dr. Lee at 12 Elm Dr. tomorrow.", "Ask Doctor Lee at twelve Elm Drive tomorrow."),
    ("Turn onto Mulholland Dr., then stop.", "Turn onto Mulholland Drive, then stop."),
    ("Dr. St. John called.", "Doctor Saint John called."),
    ("He lives at 221 Baker St. London is far.", "He lives at two hundred twenty-one Baker Street. London is far."),
    ("St. Paul's Cathedral, St. Mark's Square", "Saint Paul's Cathedral, Saint Mark's Square"),
    ("Fruit, e.g. apples, i.e. red ones.", "Fruit, for example apples, that is red ones."),
    ("Cats vs. dogs", "Cats versus dogs"),
    ("Pens, pencils, etc. Then paper.", "Pens, pencils, et cetera. Then paper."),
    ("It is No. 5.", "It is number five."),
    ("Made in the U.S.A. today", "Made in the U S A today"),
    # units
    ("Run 5 km or 1 km.", "Run five kilometers or one kilometer."),
    ("It weighs 70 kg and is 180 cm tall.", "It weighs seventy kilograms and is one hundred eighty centimeters tall."),
    ("A 5 mm gap", "A five millimeters gap"),
    ("Wind at 3 m/s, car at 100 km/h.", "Wind at three meters per second, car at one hundred kilometers per hour."),
    ("It is 25°C or -3 °C.", "It is twenty-five degrees Celsius or minus three degrees Celsius."),
    ("16 GB of RAM, 512 MB of cache", "sixteen gigabytes of RAM, five hundred twelve megabytes of cache"),
    ("It took 20 ms.", "It took twenty milliseconds."),
    ("A 5m rope", "A five meters rope"),
    # addresses
    ("See example.com for more.", "See example dot com for more."),
    ("Go to https://www.example.org/docs/intro.", "Go to w w w dot example dot org slash docs slash intro."),
    ("Write to john.doe@example.com!", "Write to john dot doe at example dot com!"),
    # symbols
    ("Tom & Jerry", "Tom and Jerry"),
    ("1+1=2", "one plus one equals two"),
    ("Meet @home #1 and #python", "Meet at home number one and hashtag python"),
    ("yes and/or no", "yes and or no"),
    # other shapes
    ("Call (555) 123-4567.", "Call five five five one two three four five six seven."),
    ("Version 3.11.2 is out.", "Version three dot eleven dot two is out."),
    ("Add 1/2 cup, 3/4 cup, 2/3 cup.", "Add one half cup, three quarters cup, two thirds cup."),
    ("Open 24/7.", "Open twenty-four seven."),
    ("COVID-19 cases", "COVID-nineteen cases"),
]

ZH_CASES = [
    ("我有3个苹果。", "我有三个苹果。"),
    ("我有2个苹果和2本书。", "我有两个苹果和两本书。"),
    ("共123456人", "共十二万三千四百五十六人"),
    ("共1,000人", "共一千人"),
    ("圆周率是3.14。", "圆周率是三点一四。"),
    ("温度是-5度。", "温度是负五度。"),
    ("今天是2024年3月5日。", "今天是二零二四年三月五日。"),
    ("日期：2024-03-05。", "日期：二零二四年三月五日。"),
    ("日期2024/3/5", "日期二零二四年三月五日"),
    ("1990-1995年间", "一九九零到一九九五年间"),
    ("现在是3:30。", "现在是三点三十分。"),
    ("下午2:05:09见", "下午两点零五分九秒见"),
    ("九点整是9:00", "九点整是九点"),
    ("时间:10:30,地点:北京", "时间：十点三十分，地点：北京"),
    ("3.5亿人，第1章，20世纪90年代", "三点五亿人，第一章，二十世纪九十年代"),
    ("增长了50%。", "增长了百分之五十。"),
    ("利润率3.5%", "利润率百分之三点五"),
    ("区间5%-10%", "区间百分之五到百分之十"),
    ("价格是¥3.50。", "价格是三元五角。"),
    ("价格是￥100元。", "价格是一百元。"),
    ("花了$5和€2.5万", "花了五美元和二点五万欧元"),
    ("跑了5km，体重70kg。", "跑了五公里，体重七十公斤。"),
    ("时速120km/h", "时速一百二十公里每小时"),
    ("气温-5°C，明天25℃。", "气温零下五摄氏度，明天二十五摄氏度。"),
    ("内存16GB", "内存十六GB"),
    ("1/2的人", "二分之一的人"),
    ("电话13812345678", "电话一三八一二三四五六七八"),
    ("编号007", "编号零零七"),
    ("共2000本", "共两千本"),
    ("第3名", "第三名"),
    ("5-10个", "五到十个"),
    # full-width and ASCII punctuation take the Chinese form
    ("你好,世界!", "你好，世界！"),
    ("他说:好的.再见?", "他说：好的。再见？"),
    ("等等...好的", "等等……好的"),
    ("是的--没错", "是的——没错"),
    ("Ｈｅｌｌｏ，１２３个", "Hello，一百二十三个"),
]

MIXED_CASES = [
    ("我用iPhone 15拍了3张照片。", "我用iPhone fifteen拍了三张照片。"),
    ("今天跑了5km，Dr. Smith说 it was great.", "今天跑了五公里，Doctor Smith说 it was great."),
    ("他的邮箱是john@example.com。", "他的邮箱是john at example dot com。"),
    ("会议定在3:30，please be on time.", "会议定在三点三十分，please be on time."),
    ("价格是$20, which is cheap.", "价格是twenty dollars, which is cheap."),
]


@pytest.mark.parametrize("text, expected", EN_CASES)
def test_english(text: str, expected: str) -> None:
    assert normalize(text, "en") == expected
    assert normalize(text) == expected  # auto detects English


@pytest.mark.parametrize("text, expected", ZH_CASES)
def test_chinese(text: str, expected: str) -> None:
    assert normalize(text, "zh") == expected


@pytest.mark.parametrize("text, expected", MIXED_CASES)
def test_mixed_keeps_both(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_english_words_in_chinese_stay() -> None:
    out = normalize("我喜欢Python和Rust。")
    assert out == "我喜欢Python和Rust。"


def _bench_zh() -> list[str]:
    rows = (BENCH / "texts_zh.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in rows if line and not line.startswith("#")]


@pytest.mark.parametrize("text", _bench_zh())
def test_bench_chinese_texts_keep_their_words(text: str) -> None:
    # Plain Chinese prose with no numbers: normalization must leave it as it is.
    assert detect(text) == "zh"
    assert normalize(text) == text


def test_english_punctuation_from_fullwidth() -> None:
    assert normalize("Hello，world！How are you？") == "Hello, world! How are you?"


def test_clean_whitespace_and_invisibles() -> None:
    assert clean("a\u200bb\u00a0 c\r\n\r\n\r\nd\te") == "ab c\n\nd e"
    assert normalize("  One.\n\n\n\nTwo.  ") == "One.\n\nTwo."


def test_unknown_language() -> None:
    with pytest.raises(ValueError):
        normalize("hi", "fr")


def test_english_only_mode_leaves_chinese() -> None:
    assert normalize("3 个 apples", "en") == "three 个 apples"


def test_empty() -> None:
    assert normalize("") == ""
    assert normalize("   \n ") == ""


# ---------------------------------------------------------------- properties

_AMOUNTS = st.one_of(
    st.integers(-10**9, 10**12).map(str),
    st.integers(0, 10**6).map(lambda n: f"{n:,}"),
    st.tuples(st.integers(0, 9999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]}"),
    st.tuples(st.sampled_from("$€£¥"), st.integers(0, 10**6), st.integers(0, 99)).map(lambda t: f"{t[0]}{t[1]}.{t[2]:02d}"),
    st.tuples(st.integers(0, 999), st.sampled_from(["%", " km", "kg", " °C", " GB", " ms", "st", "th"])).map(
        lambda t: f"{t[0]}{t[1]}"),
    st.tuples(st.integers(1, 12), st.integers(1, 28), st.integers(1900, 2099)).map(lambda t: f"{t[0]}/{t[1]}/{t[2]}"),
    st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda t: f"{t[0]}:{t[1]:02d}"),
)


@settings(max_examples=150, deadline=None)
@given(_AMOUNTS)
def test_english_numbers_become_words(amount: str) -> None:
    out = normalize_en(f"It is {amount} today.")
    assert not re.search(r"\d", out), out


@settings(max_examples=150, deadline=None)
@given(_AMOUNTS)
def test_chinese_numbers_become_words(amount: str) -> None:
    out = normalize_zh(f"今天是{amount}。")
    assert not re.search(r"\d", out), out


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 1.,-:/%$@#&+ 你好。，\n'\"!?")), max_size=40))
def test_normalize_never_fails(text: str) -> None:
    for lang in ("en", "zh", "auto"):
        assert isinstance(normalize(text, lang), str)
