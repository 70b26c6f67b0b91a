"""api_v2's text language names, per model version (a module of its own so that reading
voice.toml needs none of the text frontend)."""
from __future__ import annotations

LANGS = ("zh", "en", "ja", "ko", "yue", "auto", "auto_yue", "all_zh", "all_ja", "all_yue", "all_ko")
V1_LANGS = ("zh", "en", "ja", "auto", "all_zh", "all_ja")


def languages_for(version: str | None) -> tuple[str, ...]:
    """The names a voice of `version` reads (None: not known before it loads: all)."""
    return V1_LANGS if version == "v1" else LANGS
