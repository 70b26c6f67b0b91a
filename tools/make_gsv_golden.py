"""Golden arrays for the GPT-SoVITS v3/v4 exactness test (tests/test_gsv_v3_exact.py),
made by upstream GPT-SoVITS's own code:

    python tools/make_gsv_golden.py SNAPSHOT [--deps .cache/gsv-oracle] [--out tests/data/gsv_v3]

SNAPSHOT is a checkout of RVC-Boss/GPT-SoVITS (the folder holding GPT_SoVITS/); its
extra dependencies go to their own folder first:

    pip install --no-deps --target .cache/gsv-oracle x-transformers einx einops loguru \
        'peft<0.18' accelerate psutil librosa==0.10.2 numba llvmlite scipy scikit-learn \
        joblib threadpoolctl audioread lazy_loader decorator pooch platformdirs msgpack frozendict \
        cloudpickle torch-einops-utils 'transformers>=4.51,<5' tokenizers==0.22.1 'huggingface_hub<1.0' \
        requests urllib3 idna certifi charset-normalizer regex narwhals

For each case (v3 and v4, a full model and a LoRA file over its base) the tool writes
tiny random-weight files with voxpipe's writer (random_voice_v3, fixed seeds), runs
upstream on them in a subprocess (tools/gsv_v3_oracle.py) and keeps its CFM mel and
vocoder audio with the case's inputs. The test writes the same files again and compares.
The full-model cases are long enough for two CFM chunks; audio of the long cases is kept
at every AUDIO_STRIDE-th sample to keep the test data small.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AUDIO_STRIDE = 3
CLIP_SECONDS = 6.0  # long enough that the prompt is cut to T_ref frames


@dataclass(frozen=True)
class Case:
    name: str
    version: str
    lora: bool
    seed: int
    target_tokens: int
    steps: int
    speed: float = 1.0

    @property
    def mel_rate(self) -> int:
        return 24000 if self.version == "v3" else 32000


CASES = (Case("v3_full", "v3", False, 11, 130, 4), Case("v3_lora", "v3", True, 12, 30, 8),
         Case("v4_full", "v4", False, 13, 130, 4), Case("v4_lora", "v4", True, 14, 30, 8, 1.25))


def write_case_files(case: Case, root: Path) -> tuple[Path, Path]:
    """The case's SoVITS file and pretrained folder (vocoder; the base for LoRA) under root."""
    import torch

    from voxpipe.stages.families.gpt_sovits import random_voice_v3 as v3

    pretrained = root / case.name / ".gsv-pretrained"
    pretrained.mkdir(parents=True, exist_ok=True)
    v3.write_vocoder(pretrained, case.version, "tiny", case.seed)
    sovits = root / case.name / "voice.pth"
    generator = torch.Generator().manual_seed(case.seed)
    if case.lora:
        v3.write_base(pretrained, case.version, "tiny", case.seed)
        v3.write_lora(sovits, case.version, "tiny", generator)
    else:
        v3.write_full(sovits, case.version, "tiny", generator)
    return sovits, pretrained


def case_inputs(case: Case) -> dict[str, np.ndarray]:
    """Tokens, phones and the reference clip at 32 kHz (timbre) and at the mel rate."""
    from voxpipe.stages.families.gpt_sovits.random_voice import reference_clip

    rng = np.random.default_rng(case.seed)
    return {"prompt_tokens": rng.integers(0, 1024, 130).astype(np.int64),
            "prompt_phones": rng.integers(1, 700, 40).astype(np.int64),
            "tokens": rng.integers(0, 1024, case.target_tokens).astype(np.int64),
            "phones": rng.integers(1, 700, max(8, case.target_tokens // 3)).astype(np.int64),
            "seed": np.array(case.seed), "steps": np.array(case.steps), "speed": np.array(case.speed),
            "spec_audio": reference_clip(CLIP_SECONDS, 32000, case.seed),
            "mel_audio": reference_clip(CLIP_SECONDS, case.mel_rate, case.seed)}


def dit_sizes(sovits: Path, version: str, pretrained: Path) -> dict[str, int]:
    from voxpipe.stages.families.gpt_sovits.models.sovits_v3 import load_v3_weights, v3_config

    config, weights = load_v3_weights(sovits, version, pretrained)
    cfg = v3_config(config, weights, version)
    return {"dim": cfg.dit.dim, "depth": cfg.dit.depth, "heads": cfg.dit.heads, "ff_mult": cfg.dit.ff_mult,
            "conv_layers": cfg.dit.conv_layers, "wn_layers": cfg.wn_layers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", help="a checkout of RVC-Boss/GPT-SoVITS (holding GPT_SoVITS/)")
    parser.add_argument("--deps", default=str(ROOT / ".cache" / "gsv-oracle"))
    parser.add_argument("--out", default=str(ROOT / "tests" / "data" / "gsv_v3"))
    args = parser.parse_args(argv)
    if not (Path(args.snapshot) / "GPT_SoVITS" / "module" / "models.py").is_file():
        parser.error(f"{args.snapshot} does not hold GPT_SoVITS/module/models.py")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root, jobs = Path(tmp), []
        for case in CASES:
            sovits, pretrained = write_case_files(case, root)
            inputs = case_inputs(case)
            np.savez(root / f"{case.name}-inputs.npz", **inputs)
            jobs.append({"name": case.name, "version": case.version, "lora": case.lora, "sovits": str(sovits),
                         "base": str(pretrained / ("s2Gv3.pth" if case.version == "v3" else "gsv-v4-pretrained/s2Gv4.pth")),
                         "pretrained": str(pretrained), "dit": dit_sizes(sovits, case.version, pretrained),
                         "inputs": str(root / f"{case.name}-inputs.npz"), "output": str(root / f"{case.name}.npz")})
        (root / "cases.json").write_text(json.dumps(jobs), encoding="utf-8")
        run = subprocess.run([sys.executable, str(ROOT / "tools" / "gsv_v3_oracle.py"), args.snapshot, args.deps,
                              str(root / "cases.json")], cwd=root)
        if run.returncode:
            return run.returncode
        for case in CASES:
            ref = np.load(root / f"{case.name}.npz")
            stride = AUDIO_STRIDE if case.target_tokens > 60 else 1
            np.savez_compressed(out / f"{case.name}.npz", mel=ref["mel"].astype(np.float32),
                                audio=ref["audio"][::stride].astype(np.float32), audio_len=np.array(len(ref["audio"])),
                                audio_stride=np.array(stride), ge=ref["ge"].astype(np.float32), chunks=ref["chunks"])
            print(f"{case.name}: mel {ref['mel'].shape}, audio {ref['audio'].shape}, {int(ref['chunks'])} CFM chunk(s), "
                  f"audio peak {np.abs(ref['audio']).max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
