"""GPT-SoVITS's v2 phone symbols and their ids (the ids index the models' phone embeddings).

The table is the sorted set of every phone GPT-SoVITS v2 knows (pad, Mandarin initials and
toned finals, Japanese kana phones, punctuation and pause marks, ARPAbet), then the two
Japanese pitch marks, then Korean and Cantonese phones. Only the first part holds the
Mandarin and English phones produced here; the rest only counts toward the table size.
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

V2_TABLE_SIZE = 732  # with the 29 Korean and 379 Cantonese phones that follow

BASE_SYMBOLS: tuple[str, ...] = tuple(sorted(set(
    (PAD,) + INITIALS + tuple(f + t for f in FINALS for t in TONES) + JAPANESE + PUNCTUATION + PAUSES + ARPA)))
SYMBOLS: tuple[str, ...] = BASE_SYMBOLS + ("[", "]")
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}


def phone_ids(phones: list[str]) -> list[int]:
    """Ids of phones; unknown phones become UNK (as GPT-SoVITS does)."""
    unk = SYMBOL_TO_ID["UNK"]
    return [SYMBOL_TO_ID.get(p, unk) for p in phones]
