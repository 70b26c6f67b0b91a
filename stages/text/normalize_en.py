"""English text normalization: what a reader says for numbers, money, dates, times, units,
abbreviations, web addresses and symbols, written out as words before phonemization.

Each rule is one regular-expression pass; the more specific shapes (addresses, dates, times,
phone numbers) run before the generic number pass so it never sees their digits.
Readings are American English, matching the bundled en-us voice ("one hundred five").
"""
from __future__ import annotations

import re
from functools import lru_cache

from num2words import num2words

# ---------------------------------------------------------------- number words

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def _american(words: str) -> str:
    # num2words writes British "one thousand, nine hundred and five"; the voice is en-us.
    return words.replace(",", "").replace(" and ", " ")


@lru_cache(maxsize=8192)
def cardinal(n: int) -> str:
    return _american(num2words(n))


@lru_cache(maxsize=4096)
def ordinal(n: int) -> str:
    return _american(num2words(n, to="ordinal"))


@lru_cache(maxsize=4096)
def year(n: int) -> str:
    """1999 -> nineteen ninety-nine, 2005 -> two thousand five, 1905 -> nineteen oh five."""
    if 2000 <= n <= 2009 or n % 1000 == 0 or n < 1000 or n > 9999:
        return cardinal(n)
    return _american(num2words(n, to="year")).replace("oh-", "oh ")


def digits(s: str) -> str:
    return " ".join(_DIGITS[int(c)] for c in s if c.isdigit())


def is_year(s: str) -> bool:
    return len(s) == 4 and s.isdigit() and 1100 <= int(s) <= 2099


def number(s: str) -> str:
    """A written number ("-1,234.56", "007", ".5") as words."""
    sign = "minus " if s[:1] in "-−" else ""
    body = s.lstrip("-−").replace(",", "")
    whole, _, frac = body.partition(".")
    if len(whole) > 15 or (len(whole) > 1 and whole.startswith("0")):
        words = digits(whole)  # codes and ids are read digit by digit
    elif whole:
        words = cardinal(int(whole))
    else:
        words = "zero"
    if frac:
        words += " point " + digits(frac)
    return sign + words


def _plural(words: str) -> str:
    # "nineteen ninety" -> "nineteen nineties"
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


# ---------------------------------------------------------------- addresses

_SEPARATOR_WORDS = {".": "dot", "/": "slash", "-": "dash", "_": "underscore", ":": "colon", "?": "question mark",
                    "=": "equals", "&": "and", "#": "hash", "@": "at", "~": "tilde", "%": "percent", "+": "plus"}
_TLDS = ("com|org|net|edu|gov|mil|int|io|dev|ai|app|co|uk|us|de|fr|es|it|nl|eu|ca|au|jp|cn|in|ru|ch|se|no|"
         "info|biz|me|tv|ly|gg|xyz|tech|site|online|cloud")
_TRAILING = ".,;:!?)]}'\"”’"
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][\w.+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_URL = re.compile(
    r"(?<![\w@])(?:(?:https?|ftp)://[^\s<>\"'”’]+|www\.[^\s<>\"'”’]+"
    rf"|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:{_TLDS})(?![\w-])(?:[/:?#][^\s<>\"'”’]*)?)",
    re.IGNORECASE)
_ADDRESS_PART = re.compile(r"[A-Za-z]+|\d+|.", re.DOTALL)


def _read_address(address: str) -> str:
    words = []
    for part in _ADDRESS_PART.findall(address):
        if part.isdigit():
            words.append(cardinal(int(part)) if len(part) <= 2 else digits(part))
        elif part.isalpha():
            words.append(" ".join(part) if part.lower() == "www" else part)
        elif part in _SEPARATOR_WORDS:
            words.append(_SEPARATOR_WORDS[part])
    return " ".join(words)


def _address(match: re.Match[str], *, strip_scheme: bool) -> str:
    found = match.group()
    tail = ""
    while found and found[-1] in _TRAILING:  # sentence punctuation after an address is not part of it
        tail = found[-1] + tail
        found = found[:-1]
    if strip_scheme:
        found = re.sub(r"^[A-Za-z]+://", "", found).rstrip("/")
    return _read_address(found) + tail


# ---------------------------------------------------------------- dates and times

_MONTH_NAMES = {m.lower(): i for i, m in enumerate(_MONTHS, 1)}
_MONTH_NAMES.update({m[:3].lower(): i for i, m in enumerate(_MONTHS, 1)})
_MONTH_NAMES["sept"] = 9
_MONTH_RE = "|".join(sorted({m.capitalize() for m in _MONTH_NAMES}, key=len, reverse=True))
_ISO_DATE = re.compile(r"(?<![\w-])(\d{4})-(\d{2})-(\d{2})(?![\w-])")
_SLASH_DATE = re.compile(r"(?<![\w/.])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?![\w/])")
_NAMED_DATE = re.compile(rf"\b({_MONTH_RE})\.? (\d{{1,2}})(?:st|nd|rd|th)?\b(?:,? (\d{{4}})\b)?")
_DAY_MONTH_DATE = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)? ({_MONTH_RE})\.?(?: (\d{{4}})\b)?")
_AMPM = r"(?P<ampm>[AaPp]\.?\s?[Mm]\b\.?)"
_CLOCK = re.compile(rf"(?<![\w:.])(\d{{1,2}}):(\d{{2}})(?::(\d{{2}}))?(?![\d:])(?:\s?{_AMPM})?")
_HOUR_AMPM = re.compile(rf"(?<![\w.:])(\d{{1,2}})\s?{_AMPM}")


def _date(month: int, day: int, year_text: str | None) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    words = f"{_MONTHS[month - 1]} {ordinal(day)}"
    return words if year_text is None else f"{words} {year(int(year_text))}"


def _iso_date(m: re.Match[str]) -> str:
    return _date(int(m[2]), int(m[3]), m[1]) or m.group()


def _slash_date(m: re.Match[str]) -> str:
    first, second, yr = int(m[1]), int(m[2]), m[3]
    if len(yr) == 2:
        yr = str((2000 if int(yr) < 50 else 1900) + int(yr))
    if first > 12 >= second:  # day/month/year
        first, second = second, first
    return _date(first, second, yr) or m.group()


def _named_date(m: re.Match[str]) -> str:
    return _date(_MONTH_NAMES[m[1].lower()], int(m[2]), m[3]) or m.group()


def _day_month_date(m: re.Match[str]) -> str:
    day = int(m[1])
    if not 1 <= day <= 31:
        return m.group()
    words = f"the {ordinal(day)} of {_MONTHS[_MONTH_NAMES[m[2].lower()] - 1]}"
    return words if m[3] is None else f"{words} {year(int(m[3]))}"


_NEXT_SENTENCE = re.compile(r"[\"'”’)\]]*(?:\s*$|\s*\n|\s+[\"“‘(]?[A-Z])")


def _sentence_ends_after(text: str, end: int) -> bool:
    """Whether a dot that closed an abbreviation at `end` also ends the sentence: what
    follows (past closing quotes) is the end, a line break or a capitalized word."""
    return _NEXT_SENTENCE.match(text, end) is not None


def _ampm(m: re.Match[str]) -> str:
    raw = m["ampm"]
    if raw is None:
        return ""
    words = " AM" if raw[0] in "Aa" else " PM"
    return words + "." if raw.endswith(".") and _sentence_ends_after(m.string, m.end()) else words


def _clock(m: re.Match[str]) -> str:
    hour, minute = int(m[1]), int(m[2])
    if hour > 24 or minute > 59 or (m[3] and int(m[3]) > 59):
        return m.group()
    if minute == 0:
        words = cardinal(hour) + ("" if m["ampm"] else " o'clock")
    elif minute < 10:
        words = f"{cardinal(hour)} oh {cardinal(minute)}"
    else:
        words = f"{cardinal(hour)} {cardinal(minute)}"
    if m[3] and int(m[3]):
        words += f" and {cardinal(int(m[3]))} seconds"
    return words + _ampm(m)


def _hour_ampm(m: re.Match[str]) -> str:
    hour = int(m[1])
    return cardinal(hour) + _ampm(m) if 1 <= hour <= 12 else m.group()


# ---------------------------------------------------------------- other numeric shapes

_PHONE = re.compile(r"(?<![\w-])(?:\+?1[ -])?(?:\(\d{3}\) ?|\d{3}[-.])\d{3}[-.]\d{4}(?![\w-])")
_VERSION = re.compile(r"(?<![\w.])\d+(?:\.\d+){2,}(?![\w.]\w)")
_DECADE = re.compile(r"(?<![\w.])(?:(\d\d)|['’])?(\d)0s\b")
_ORDINAL = re.compile(r"(?<![\w.])(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_FRACTION = re.compile(r"(?<![\w/.])(\d+)/(\d+)(?![\w/])")
_NUMBER_SIGN = re.compile(r"#(?=\d)")
_FRACTION_NAMES = {2: ("half", "halves"), 4: ("quarter", "quarters")}


def _phone(m: re.Match[str]) -> str:
    return digits(m.group())


def _version(m: re.Match[str]) -> str:
    return " dot ".join(number(part) for part in m.group().split("."))


def _decade(m: re.Match[str]) -> str:
    if m[1]:
        return _plural(year(int(m[1] + m[2] + "0")))
    return _plural(cardinal(int(m[2] + "0")))


def _ordinal(m: re.Match[str]) -> str:
    return ordinal(int(m[1]))


def _fraction(m: re.Match[str]) -> str:
    num, den = int(m[1]), int(m[2])
    if m.group() == "24/7":
        return "twenty-four seven"
    if not (0 < num < den <= 16):
        return f"{number(m[1])} slash {number(m[2])}"
    one, many = _FRACTION_NAMES.get(den, (ordinal(den), ordinal(den) + "s"))
    return f"{cardinal(num)} {one if num == 1 else many}"


# ---------------------------------------------------------------- quantities: numbers, money, units, ranges

_CURRENCIES = {  # symbol: (one, many, one hundredth, many hundredths)
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
}
_UNITS = {  # written with or without a space after the number
    "km/h": ("kilometer per hour", "kilometers per hour"), "m/s": ("meter per second", "meters per second"),
    "mph": ("mile per hour", "miles per hour"), "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"), "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"), "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"),
    "°C": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"), "%": ("percent", "percent"), "¢": ("cent", "cents"),
    "TB": ("terabyte", "terabytes"), "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"),
    "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"), "ms": ("millisecond", "milliseconds"),
    "GHz": ("gigahertz", "gigahertz"), "MHz": ("megahertz", "megahertz"), "kHz": ("kilohertz", "kilohertz"),
    "Hz": ("hertz", "hertz"), "kWh": ("kilowatt hour", "kilowatt hours"), "kW": ("kilowatt", "kilowatts"),
    "mAh": ("milliamp hour", "milliamp hours"), "ft": ("foot", "feet"), "lbs": ("pound", "pounds"),
    "lb": ("pound", "pounds"), "oz": ("ounce", "ounces"),
}
_GLUED_UNITS = {  # only right after the digits ("5m"): with a space they are too often words
    "m": ("meter", "meters"), "g": ("gram", "grams"), "h": ("hour", "hours"),
    "min": ("minute", "minutes"), "W": ("watt", "watts"), "V": ("volt", "volts"), "L": ("liter", "liters"),
}
_SCALES = "thousand|million|billion|trillion"
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"


def _unit_pattern(units: dict[str, tuple[str, str]]) -> str:
    return "|".join(re.escape(u).replace("°", "° ?") for u in sorted(units, key=len, reverse=True))


_QUANTITY = re.compile(
    rf"(?<![\w.,])(?P<sign>(?<![\w)])[-−](?=[$€£¥]?\d|\.\d))?(?P<cur>[$€£¥])?"
    rf"(?P<a>{_NUM})"
    rf"(?:(?:-|\s?–\s?)(?P<cur2>[$€£¥])?(?P<b>{_NUM}))?"
    rf"(?:\s(?P<scale>{_SCALES})\b)?"
    rf"(?:\s?(?P<unit>{_unit_pattern(_UNITS)})|(?P<gunit>{_unit_pattern(_GLUED_UNITS)}))?"
    rf"(?![\w])")


def _is_one(s: str) -> bool:
    return s.lstrip("-−") == "1"


def _money(amount: str, cur: str, scale: str | None) -> str:
    one, many, cent, cents = _CURRENCIES[cur]
    whole, _, frac = amount.replace(",", "").partition(".")
    if scale or not cent or len(frac) > 2:
        words = number(amount) + (f" {scale}" if scale else "")
        return f"{words} {one if _is_one(amount) and not scale else many}"
    frac = (frac + "0")[:2] if frac else ""
    parts = []
    if whole and (int(whole) or not frac or not int(frac)):
        parts.append(f"{number(whole)} {one if int(whole) == 1 else many}")
    if frac and int(frac):
        parts.append(f"{cardinal(int(frac))} {cent if int(frac) == 1 else cents}")
    return " and ".join(parts)


def _plain(amount: str, with_unit: bool) -> str:
    return year(int(amount)) if not with_unit and is_year(amount) else number(amount)


def _quantity(m: re.Match[str]) -> str:
    sign = "minus " if m["sign"] else ""
    a, b, scale = m["a"], m["b"], m["scale"]
    cur = m["cur"] or m["cur2"]
    unit_key = (m["unit"] or "").replace(" ", "") or m["gunit"]
    units = _UNITS.get(unit_key) or _GLUED_UNITS.get(unit_key)
    if cur:
        if b is None:
            return sign + _money(a, cur, scale)
        many = _CURRENCIES[cur][1]
        if "." in a or "." in b:  # cents on either side: read both amounts in full
            return f"{sign}{_money(a, cur, scale)} to {_money(b, cur, scale)}"
        return f"{sign}{number(a)} to {number(b)}{' ' + scale if scale else ''} {many}"
    years = b is not None and not units and is_year(a) and is_year(b)
    words = sign + (year(int(a)) if years else _plain(a, bool(units) or b is not None or bool(sign)))
    if b is not None:
        words += " to " + (year(int(b)) if years else number(b))
    if scale:
        words += " " + scale
    if units:
        one, many = units
        words += " " + (one if b is None and not scale and _is_one(a) else many)
    return words


# ---------------------------------------------------------------- abbreviations and symbols

_TITLES = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor", "Gen": "General",
           "Capt": "Captain", "Sgt": "Sergeant", "Rev": "Reverend", "Gov": "Governor", "Sen": "Senator",
           "Rep": "Representative", "Mt": "Mount", "Ft": "Fort"}
_ABBREVIATIONS = {  # these may also end a sentence: their dot is kept when they do
    "etc": "et cetera", "approx": "approximately", "Jr": "Junior", "Sr": "Senior", "Inc": "Incorporated",
    "Ltd": "Limited", "Corp": "Corporation", "Ave": "Avenue", "Blvd": "Boulevard", "Rd": "Road",
    "Dept": "Department", "Fig": "Figure", "Vol": "Volume",
}
_TITLE_RE = re.compile(rf"\b({'|'.join(_TITLES)})\.(?= )")
_ABBREV_RE = re.compile(rf"\b({'|'.join(_ABBREVIATIONS)})\.")
_LATIN_RE = re.compile(r"(?<![\w.])(e\.\s?g\.|i\.\s?e\.|vs\.?|cf\.|viz\.)(?!\w)", re.IGNORECASE)
_LATIN = {"eg": "for example", "ie": "that is", "vs": "versus", "cf": "compare", "viz": "namely"}
_SAINT_DOCTOR = re.compile(r"\b(St|Dr)\.(?=[ ,;:!?)\"'”’]|$)", re.MULTILINE)
_NUMBER_ABBREV = re.compile(r"\b(No|Nos|no|nos)\.\s?(?=\d|#)")
_ACRONYM = re.compile(r"(?<![\w.])((?:[A-Z]\.){2,})(?!\w)")
_LONE_AMPM = re.compile(r"(?<![\w.])([ap])\.m\.(?!\w)", re.IGNORECASE)
_SYMBOLS = [
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"\s*@\s*"), " at "),
    (re.compile(r"#(?=\w)"), "hashtag "),
    (re.compile(r"\s*\+\s*"), " plus "),
    (re.compile(r"\s*=\s*"), " equals "),
    (re.compile(r"\s*%"), " percent"),
    (re.compile(r"°"), " degrees"),
    (re.compile(r"~\s*(?=\w)"), "about "),
    (re.compile(r"\b(and)/(or)\b"), r"\1 \2"),
    (re.compile(r"(?<=[A-Za-z])/(?=[A-Za-z])"), " or "),
    (re.compile(r"\s+/\s+|/"), " slash "),
    (re.compile(r"[*_|^`]+"), " "),
]


def _title(m: re.Match[str]) -> str:
    return _TITLES[m[1]]


def _abbrev(m: re.Match[str]) -> str:
    words = _ABBREVIATIONS[m[1]]
    return words + "." if _sentence_ends_after(m.string, m.end()) else words


def _latin(m: re.Match[str]) -> str:
    return _LATIN[re.sub(r"[.\s]", "", m[1]).lower()]


# Words after which "St." names a saint, not a street: "Mount St. Helens", "Port St. Lucie".
_SAINT_PLACES = frozenset(("Mount", "Fort", "Port", "Lake", "Cape", "Point", "Isle", "Sainte", "Mont"))
# Abbreviations whose dot does not end a sentence (the text still holds some when St./Dr. are read).
_NON_FINAL = frozenset(("St.", "Dr.", "Mt.", "Ft.", "Mr.", "Mrs.", "Ms.", "Prof.", "Jr.", "Sr."))
_ORDINAL_WORD = re.compile(r"(?:[a-z]+-)?(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh"
                           r"|twelfth|[a-z]+teenth|[a-z]+ieth|hundredth|thousandth)|\d+(?:st|nd|rd|th)?")
_NEXT_WORD = re.compile(r"[\"'”’)\]]*\s+[\"“‘(]?(\S+)")


def _name_before(text: str, start: int) -> str | None:
    """The word right before `start` if it can be part of a street's name (a capitalized
    word that does not merely open its sentence, or a number or ordinal); else None."""
    prefix = text[:start].rstrip()
    if not prefix or prefix[-1] in ",;:!?\n" or (prefix[-1] == "." and prefix.rsplit(None, 1)[-1] not in _NON_FINAL):
        return None  # the text, a clause or a sentence starts here
    before = prefix.rsplit(None, 1)[-1]
    if _ORDINAL_WORD.fullmatch(before.lower()) and (before[0].isdigit() or before.islower()):
        return before  # "Fifth St.", "42nd St.", "forty-second St."
    if not before[:1].isupper():
        return None
    prior = prefix[:len(prefix) - len(before)].rstrip()
    opens_sentence = not prior or prior[-1] in "!?:\n" or (prior[-1] == "." and prior.rsplit(None, 1)[-1] not in _NON_FINAL)
    return None if opens_sentence else before


def _saint_doctor(m: re.Match[str]) -> str:
    """St. is Street or Saint, Dr. Drive or Doctor, by context: a title always precedes a
    capitalized name ("St. James", "met Dr. Watson"); a road's kind follows its name ("James
    St.", "Elm Dr.") and is followed by anything but a name, unless the next sentence starts
    there ("on Main St. Then ...")."""
    text, end = m.string, m.end()
    following = _NEXT_WORD.match(text, end)
    nxt = following[1] if following else ""
    name = _name_before(text, m.start())
    title = "Saint" if m[1] == "St" else "Doctor"
    road = "Street" if m[1] == "St" else "Drive"
    if nxt[:1].isupper() and (name is None or (m[1] == "St" and name in _SAINT_PLACES)):
        return title
    return road + "." if _sentence_ends_after(text, end) else road


def _acronym(m: re.Match[str]) -> str:
    words = " ".join(m[1].replace(".", ""))
    return words + "." if _sentence_ends_after(m.string, m.end()) else words


def _lone_ampm(m: re.Match[str]) -> str:
    words = "AM" if m[1] in "Aa" else "PM"
    return words + "." if _sentence_ends_after(m.string, m.end()) else words


# ---------------------------------------------------------------- the pipeline

_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +(?=[,.;:!?])")


def normalize_en(text: str) -> str:
    """English text as words a voice can read; whitespace collapsed, line breaks kept."""
    text = _EMAIL.sub(lambda m: _address(m, strip_scheme=False), text)
    text = _URL.sub(lambda m: _address(m, strip_scheme=True), text)
    if any(ch.isdigit() for ch in text):
        text = _ISO_DATE.sub(_iso_date, text)
        text = _SLASH_DATE.sub(_slash_date, text)
        text = _NAMED_DATE.sub(_named_date, text)
        text = _DAY_MONTH_DATE.sub(_day_month_date, text)
        text = _CLOCK.sub(_clock, text)
        text = _HOUR_AMPM.sub(_hour_ampm, text)
        text = _PHONE.sub(_phone, text)
        text = _VERSION.sub(_version, text)
        text = _DECADE.sub(_decade, text)
        text = _ORDINAL.sub(_ordinal, text)
        text = _FRACTION.sub(_fraction, text)
        text = _NUMBER_ABBREV.sub("number ", text)
        text = _NUMBER_SIGN.sub("number ", text)
        text = _QUANTITY.sub(_quantity, text)
    text = _LATIN_RE.sub(_latin, text)
    if "." in text:
        text = _LONE_AMPM.sub(_lone_ampm, text)
        text = _TITLE_RE.sub(_title, text)
        text = _SAINT_DOCTOR.sub(_saint_doctor, text)
        text = _ABBREV_RE.sub(_abbrev, text)
        text = _ACRONYM.sub(_acronym, text)
    for pattern, words in _SYMBOLS:
        text = pattern.sub(words, text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub("", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()
