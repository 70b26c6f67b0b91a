"""The layering the code is organised by, checked: a model family is one folder that
nothing but the registry reaches into, and the frontend process never loads torch."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ROOT / "stages" / "families"
REGISTRY = FAMILIES / "__init__.py"
# The serving code: what the daemon, its stages and its client are made of. Tests, the
# benchmarks and developer tools may look inside a family; the pipeline may not.
SERVING = [ROOT / "stages", ROOT / "daemon", ROOT / "ipc", ROOT / "voxpipe"]
NOT_SERVING = [ROOT / "voxpipe" / "bench"]


def family_folders() -> list[Path]:
    return sorted(p.parent for p in FAMILIES.glob("*/__init__.py"))


def serving_files() -> list[Path]:
    files = [f for root in SERVING for f in root.rglob("*.py")]
    return sorted(f for f in files if not any(f.is_relative_to(n) for n in NOT_SERVING))


def reaches(source: str, folder: Path) -> list[str]:
    """Lines of `source` that name a module of the family in `folder`: an import anywhere
    (lazy ones in functions too) or a dotted module path in a string."""
    module = "voxpipe.stages.families." + folder.name
    pattern = re.compile(rf"{re.escape(module)}\b|from voxpipe\.stages\.families import [^\n]*\b{folder.name}\b")
    return [line.strip() for line in source.splitlines() if pattern.search(line)]


def test_there_are_families_to_check():
    assert {f.name for f in family_folders()} >= {"piper", "gpt_sovits"}
    assert len(serving_files()) > 50


@pytest.mark.parametrize("folder", family_folders(), ids=lambda f: f.name)
def test_only_the_registry_reaches_into_a_family(folder: Path):
    offenders = {}
    for path in serving_files():
        if path.is_relative_to(folder) or path == REGISTRY:
            continue
        lines = reaches(path.read_text(encoding="utf-8"), folder)
        if lines:
            offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}, f"reach into stages/families/{folder.name}/ from outside it"


def test_the_check_sees_a_reach_when_there_is_one():
    folder = FAMILIES / "gpt_sovits"
    assert reaches("    from voxpipe.stages.families.gpt_sovits.runner import GsvRunner\n", folder)
    assert reaches('X = "voxpipe.stages.families.gpt_sovits:GptSovitsFamily"\n', folder)
    assert reaches("from voxpipe.stages.families import base, gpt_sovits\n", folder)
    assert not reaches("from voxpipe.stages.families.base import Family\n", folder)


def test_the_registry_names_every_family_folder():
    from voxpipe.stages import families

    targets = {target.split(":")[0] for target in families.BUILTIN.values()}
    assert targets == {f"voxpipe.stages.families.{f.name}" for f in family_folders()}


# What the frontend process does: import its stage module, read the voices, warm up and
# plan requests (normalize, split, G2P, resolve options) for a GPT-SoVITS voice of each
# kind and for joe. It then lists the heavy modules it has loaded.
FRONTEND_PROBE = """
import json, sys, time
from pathlib import Path

import voxpipe.stages.frontend.stage  # noqa: F401  the process's own imports
from voxpipe.config import Config
from voxpipe.ipc.messages import SynthesisOptions, SynthesisRequest
from voxpipe.stages.frontend.planner import Planner, PlanError
from voxpipe.stages.voices import VoiceCatalog

catalog = VoiceCatalog(Path(sys.argv[1]))
planner = Planner(Config(), catalog)
planner.warm_up(["joe", "gv2", "gv4"])
planned = []
for voice, text, params in (("gv2", "你好，世界。Hello there.", {"top_k": 5}), ("gv4", "今天天气很好。", {"sample_steps": 8}),
                            ("joe", "Hello there, how are you?", {})):
    plan = planner.plan(SynthesisRequest(voice, text, voice, True, SynthesisOptions(params=params)), time.monotonic() + 60)
    planned.append(len(plan.chunks))
import importlib.util
for lang, text in (("ja", "今日はいい天気ですね。"), ("ko", "안녕하세요."), ("yue", "你食咗飯未呀？")):
    needs = {"ja": "pyopenjtalk", "ko": "mecab", "yue": "ToJyutping"}[lang]
    if importlib.util.find_spec(needs) is not None:  # the gsv-languages extra's readers stay torch-free too
        planner.plan(SynthesisRequest(lang, text, "gv2", True, SynthesisOptions(params={"text_lang": lang})), 1e9)
try:  # a v3/v4-only option on a v2 voice is refused by the frontend itself
    planner.plan(SynthesisRequest("bad", "你好。", "gv2", True, SynthesisOptions(params={"sample_steps": 8})), 1e9)
except PlanError as exc:
    planned.append(exc.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"planned": planned, "heavy": heavy}))
"""


@pytest.mark.slow
def test_the_frontend_process_never_imports_torch(tmp_path):
    pytest.importorskip("torch")
    from voxpipe.stages import families

    voices = tmp_path / "voices"
    gsv = families.get("gpt-sovits")
    gsv.write_random_voice(voices, "gv2", version="v2", seed=1)
    gsv.write_random_voice(voices, "gv4", version="v4", seed=1)
    out = subprocess.run([sys.executable, "-c", FRONTEND_PROBE, str(voices)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(n >= 1 for n in report["planned"][:3]) and report["planned"][3] == "bad_option"
    assert report["heavy"] == []
