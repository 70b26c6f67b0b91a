"""The packages that read Japanese, Korean and Cantonese: an optional extra, imported when
a text first needs one, with a clear error naming the extra when it is not installed."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRA = "gsv-languages"
LANGUAGE_NAMES = {"ja": "Japanese", "ko": "Korean", "yue": "Cantonese"}
# What each language imports, and the distribution that provides it.
PACKAGES = {"ja": {"pyopenjtalk": "pyopenjtalk-plus"},
            "ko": {"g2pk2": "g2pk2", "jamo": "jamo", "mecab": "python-mecab-ko"},
            "yue": {"ToJyutping": "ToJyutping", "hanziconv": "hanziconv"}}


class LanguageUnavailable(ValueError):
    """A text language whose packages are not installed; the message names the extra."""


def _missing(lang: str, module: str) -> LanguageUnavailable:
    return LanguageUnavailable(
        f"{LANGUAGE_NAMES[lang]} text ({lang}) needs the {PACKAGES[lang][module]} package, which is not "
        f"installed: pip install 'voxpipe[{EXTRA}]'")


def require(lang: str, module: str) -> ModuleType:
    """Import one of `lang`'s packages, or raise LanguageUnavailable naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing(lang, module) from None


def check(lang: str) -> None:
    """Raise LanguageUnavailable unless all of `lang`'s packages are installed (found, not
    imported: importing is left to the first text that needs them)."""
    for module in PACKAGES.get(lang, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise _missing(lang, module)
