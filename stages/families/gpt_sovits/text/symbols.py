"""GPT-SoVITS's phone symbols and their ids (the ids index the models' phone embeddings).

The v1 table is the sorted set of pad, Mandarin initials and toned finals, Japanese
phones, punctuation and pause marks and ARPAbet (322 symbols). v2 and later append the two
Japanese pitch marks, the Korean jamo (sorted) and the Cantonese phones (sorted): 732.
"""
from __future__ import annotations

PAD = "_"
PUNCTUATION = ("!", "?", "…", ",", ".", "-")
PAUSES = ("SP", "SP2", "SP3", "UNK")
# Mandarin initials; AA/EE/OO stand for the glottal onset of a-, e-, o- syllables.
INITIALS = ("AA", "EE", "OO", "b", "c", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "q", "r", "s",
            "sh", "t", "w", "x", "y", "z", "zh")
# Mandarin finals (E: the -an of yan, En: of -ian; i0: after z/c/s; ir: after zh/ch/sh/r).
FINALS = ("E", "En", "a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "er", "i", "i0", "ia", "ian", "iang",
          "iao", "ie", "in", "ing", "iong", "ir", "iu", "o", "ong", "ou", "u", "ua", "uai", "uan", "uang", "ui",
          "un", "uo", "v", "van", "ve", "vn")
TONES = "12345"  # 5 = neutral
JAPANESE = ("I", "N", "U", "a", "b", "by", "ch", "cl", "d", "dy", "e", "f", "g", "gy", "h", "hy", "i", "j", "k",
            "ky", "m", "my", "n", "ny", "o", "p", "py", "r", "ry", "s", "sh", "t", "ts", "u", "v", "w", "y", "z")
ARPA_CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
                   "TH", "V", "W", "Y", "Z", "ZH")
ARPA_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
ARPA = ARPA_CONSONANTS + tuple(v + s for v in ARPA_VOWELS for s in "012") + ("ER", "IH")

PITCH_MARKS = ("[", "]")  # Japanese pitch rise and fall (v2 on)
# Korean: the compatibility jamo a syllable is split into, 空 for a space between words and
# 停 for anything else.
KOREAN = tuple("ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停")
# Cantonese: Jyutping initials and toned finals, prefixed with Y to stay apart from the
# Mandarin symbols. The toneless entries are the vowel-initial syllables' first halves.
_YUE_TONED = ("a aa aai aak aam aan aang aap aat aau ai ak am an ang ap at au e ei ek eng eoi eon eot g i ik im "
              "in ing ip it iu k m n o oe oek oeng oi ok on ong ot ou p t u ui uk un ung ut yu yun yut").split()
_YUE_PLAIN = "a aa ai ak au b c d e f g gw h j k kw l m n ng o oi ok on ou p s t uk w z".split()
CANTONESE = tuple("Y" + f + t for f in _YUE_TONED for t in "123456") + tuple("Y" + p for p in _YUE_PLAIN)

BASE_SYMBOLS: tuple[str, ...] = tuple(sorted(set(
    (PAD,) + INITIALS + tuple(f + t for f in FINALS for t in TONES) + JAPANESE + PUNCTUATION + PAUSES + ARPA)))
V1_SYMBOLS = BASE_SYMBOLS
SYMBOLS: tuple[str, ...] = BASE_SYMBOLS + PITCH_MARKS + tuple(sorted(KOREAN)) + tuple(sorted(CANTONESE))
V2_TABLE_SIZE = len(SYMBOLS)
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
_V1_SET = frozenset(V1_SYMBOLS)


def known_phones(phones: list[str], version: str | None) -> list[str]:
    """Phones a model of `version` has (v1: the first table only); others become UNK, as
    GPT-SoVITS does."""
    table = _V1_SET if version == "v1" else SYMBOL_TO_ID
    return [p if p in table else "UNK" for p in phones]


def phone_ids(phones: list[str]) -> list[int]:
    """Ids of phones; unknown phones become UNK (as GPT-SoVITS does)."""
    unk = SYMBOL_TO_ID["UNK"]
    return [SYMBOL_TO_ID.get(p, unk) for p in phones]
