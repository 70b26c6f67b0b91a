"""Chinese text normalization: Arabic numerals, dates, times, percentages, money and units
read out in Chinese (numbers through cn2an), and punctuation in its full-width Chinese form.

Latin words inside Chinese text are left as they are; `normalize.py` routes English runs
to the English normalizer.
"""
from __future__ import annotations

import re
from functools import lru_cache

import cn2an

# Han ideographs (basic, extension A, compatibility) and kana: the characters read one syllable each.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK = HAN + "\u3040-\u30ff"
HAN_RE = re.compile(f"[{HAN}]")

# ---------------------------------------------------------------- punctuation

_TO_FULLWIDTH = {",": "，", "!": "！", "?": "？", ";": "；", ":": "："}
_ASCII_PUNCT_AFTER_HAN = re.compile(rf"(?<=[{CJK}])([,!?;:])|(?<=[{CJK}])\.(?![\d.])")
_ASCII_PUNCT_BEFORE_HAN = re.compile(rf"(?<=\S)([,!?;:])(?=[{CJK}])")
_ELLIPSIS = re.compile(rf"(?<=[{CJK}])(?:\.{{3,}}|…)+")
_DASHES = re.compile(r"[—―]{2,}|--+")


def _fullwidth(m: re.Match[str]) -> str:
    return _TO_FULLWIDTH.get(m.group(), "。")


def normalize_punctuation(text: str) -> str:
    """ASCII clause punctuation next to Chinese characters becomes the Chinese mark, ellipses
    become "……" and dashes "——", so the splitter and the voice see one form."""
    text = _ASCII_PUNCT_AFTER_HAN.sub(_fullwidth, text)
    text = _ASCII_PUNCT_BEFORE_HAN.sub(_fullwidth, text)
    text = _ELLIPSIS.sub("……", text)
    return _DASHES.sub("——", text)


# ---------------------------------------------------------------- numbers

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_MEASURE_WORDS = "个位只件本张条次天岁名台辆架棵头匹双对块片杯碗份种项门节层间家所场队人点倍句遍"


@lru_cache(maxsize=4096)
def cardinal(s: str) -> str:
    """"2024" -> 二千零二十四, "3.14" -> 三点一四, "-5" -> 负五."""
    s = s.replace(",", "")
    whole = s.lstrip("-").split(".")[0]
    if len(whole) >= 11 or (len(whole) > 1 and whole.startswith("0")):
        return digits(s)  # phone numbers, codes and ids are read digit by digit
    words = cn2an.an2cn(s, "low")
    # a leading 二 before 千/万/亿 is said 两 ("两千").
    return re.sub(r"^(负?)二(?=[千万亿])", r"\1两", words)


def digits(s: str) -> str:
    sign = "负" if s.startswith("-") else ""
    body = s.lstrip("-").replace(".", "")
    return sign + cn2an.an2cn(body, "direct") if body else s


def _count(s: str, following: str) -> str:
    """A number before a measure word: 2 is 两 (两个, 两点)."""
    if s == "2" and following[:1] in _MEASURE_WORDS:
        return "两"
    return cardinal(s)


# ---------------------------------------------------------------- shapes

_DATE = re.compile(r"(?<!\d)(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})(?![\d.])日?")
_YEAR = re.compile(r"(?<![\d.])(\d{4})(?:\s?[-~～—–到至]\s?(\d{4}))?(?=年)")
_CLOCK = re.compile(r"(?<![\d:.])(\d{1,2})[:：](\d{2})(?:[:：](\d{2}))?(?![\d:])")
_PERCENT = re.compile(rf"(?<![\d.])(-?{_NUM})\s?[%％](?:\s?[-~～—–到至]\s?(-?{_NUM})\s?[%％])?")
_PERCENT_RANGE = re.compile(rf"(?<![\d.])({_NUM})\s?[-~～—–]\s?({_NUM})\s?[%％]")
_FRACTION = re.compile(r"(?<![\d/.])(\d+)/(\d+)(?![\d/])")
_CURRENCY_SIGNS = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}
_MONEY = re.compile(rf"(-?)([¥￥$€£])\s?({_NUM})([万亿])?(元)?")
_UNITS = {
    "km/h": "公里每小时", "m/s": "米每秒", "km": "公里", "cm": "厘米", "mm": "毫米", "m": "米",
    "kg": "公斤", "mg": "毫克", "g": "克", "ml": "毫升", "mL": "毫升", "L": "升", "l": "升",
    "°C": "摄氏度", "℃": "摄氏度", "°F": "华氏度", "℉": "华氏度", "°": "度",
    "ms": "毫秒", "s": "秒", "min": "分钟", "h": "小时",
    "TB": "TB", "GB": "GB", "MB": "MB", "KB": "KB",
    "GHz": "吉赫兹", "MHz": "兆赫兹", "kHz": "千赫兹", "Hz": "赫兹", "kW": "千瓦", "W": "瓦", "V": "伏", "mAh": "毫安时",
}
_UNIT_RE = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_QUANTITY = re.compile(
    rf"(?<![\d.A-Za-z])(-?{_NUM})(?:\s?[-~～—–]\s?(-?{_NUM}))?(?:\s?({_UNIT_RE})(?![A-Za-z]))?")


def _date(m: re.Match[str]) -> str:
    month, day = int(m[2]), int(m[3])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group()
    return f"{digits(m[1])}年{cardinal(str(month))}月{cardinal(str(day))}日"


def _year(m: re.Match[str]) -> str:
    return digits(m[1]) if m[2] is None else f"{digits(m[1])}到{digits(m[2])}"


def _clock(m: re.Match[str]) -> str:
    hour, minute = int(m[1]), int(m[2])
    second = int(m[3]) if m[3] else 0
    if hour > 24 or minute > 59 or second > 59:
        return m.group()
    words = ("两" if hour == 2 else cardinal(str(hour))) + "点"
    if minute or second:
        words += ("零" if minute < 10 else "") + cardinal(str(minute)) + "分"
    if second:
        words += cardinal(str(second)) + "秒"
    return words


def _percent(m: re.Match[str]) -> str:
    words = _percent_of(m[1])
    return words if m[2] is None else f"{words}到{_percent_of(m[2])}"


def _percent_of(s: str) -> str:
    sign = "负" if s.startswith("-") else ""
    return f"{sign}百分之{cardinal(s.lstrip('-'))}"


def _percent_range(m: re.Match[str]) -> str:
    return f"{_percent_of(m[1])}到{_percent_of(m[2])}"


def _fraction(m: re.Match[str]) -> str:
    return f"{cardinal(m[2])}分之{cardinal(m[1])}" if int(m[2]) else m.group()


def _money(m: re.Match[str]) -> str:
    sign, unit, amount, scale = "负" if m[1] else "", _CURRENCY_SIGNS[m[2]], m[3].replace(",", ""), m[4] or ""
    whole, _, frac = amount.partition(".")
    if unit != "元" or scale or len(frac) > 2:
        return f"{sign}{cardinal(amount)}{scale}{unit}" + ("" if unit == "元" else m[5] or "")
    words = cardinal(whole) + "元" if int(whole) or not frac else ""
    jiao, fen = int((frac + "00")[0]), int((frac + "00")[1])
    if jiao:
        words += cardinal(str(jiao)) + "角"
    elif fen and words:
        words += "零"
    if fen:
        words += cardinal(str(fen)) + "分"
    return sign + (words or "零元")


def _number(s: str) -> str:
    return "负" + cardinal(s[1:]) if s.startswith("-") else cardinal(s)


def _quantity(m: re.Match[str]) -> str:
    a, b, unit = m[1], m[2], m[3]
    following = m.string[m.end():m.end() + 1]
    if unit in ("°C", "℃", "°F", "℉") and a.startswith("-"):
        first = "零下" + cardinal(a[1:])  # below zero is 零下, not 负
    else:
        first = _count(a, following) if b is None and unit is None else _number(a)
    if b is not None:
        second = _count(b, following) if unit is None else _number(b)
        first = f"{first}到{second}"
    return first + (_UNITS[unit] if unit else "")


_SYMBOLS = [(re.compile(r"\s*&\s*"), "和"), (re.compile(r"\s*\+\s*"), "加"), (re.compile(r"\s*=\s*"), "等于"),
            (re.compile(r"[%％]"), "百分号"), (re.compile(r"\s*[~～]\s*"), "到")]


def normalize_zh(text: str) -> str:
    """Chinese text with every number, date, time, amount and unit written out in Chinese."""
    text = normalize_punctuation(text)
    if any(ch.isdigit() for ch in text):
        text = _DATE.sub(_date, text)
        text = _YEAR.sub(_year, text)
        text = _CLOCK.sub(_clock, text)
        text = _PERCENT_RANGE.sub(_percent_range, text)
        text = _PERCENT.sub(_percent, text)
        text = _MONEY.sub(_money, text)
        text = _FRACTION.sub(_fraction, text)
        text = _QUANTITY.sub(_quantity, text)
    for pattern, words in _SYMBOLS:
        text = pattern.sub(words, text)
    return text
