"""`voxpipe voice random`: write a tiny random-weight voice in its family's own file
formats, so that every family can be served and tested with no download.

    voxpipe voice random NAME --family piper|gpt-sovits [--version v2|v2Pro|v2ProPlus|v3|v4]
        [--size tiny|full] [--lora] -d VOICES_DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voxpipe.stages import families
from voxpipe.stages.voices import VoiceError, check_voice_name


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="voice_command", required=True)
    random = sub.add_parser("random", help="write a tiny random-weight voice (for tests and trials)")
    random.add_argument("name", help="voice name (letters, digits, '-', '_')")
    random.add_argument("--family", default="piper", help=f"model family ({', '.join(families.names())}; default piper)")
    random.add_argument("--version", choices=["v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4"], default=None,
                        help="GPT-SoVITS model version (gpt-sovits only; default v2)")
    random.add_argument("--size", choices=["tiny", "full"], default=None,
                        help="gpt-sovits only: tiny (tests, the default) or full, the released models' dimensions "
                             "(slow to write; v2ProPlus about 1.3 GB on disk, 2.5 GB in memory)")
    random.add_argument("--lora", action="store_true", default=None,
                        help="v3/v4: write the SoVITS model as a LoRA file over a base in the pretrained folder")
    random.add_argument("-d", "--voices-dir", required=True, help="the voices directory to write into")
    random.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    try:
        name = check_voice_name(args.name)
        family = families.get(args.family)
    except (VoiceError, families.FamilyError) as exc:
        print(f"voxpipe voice: {exc}", file=sys.stderr)
        return 2
    voices = Path(args.voices_dir)
    voices.mkdir(parents=True, exist_ok=True)
    # Only what was given: each family checks the choices it takes.
    variant = {key: value for key in ("version", "size", "lora") if (value := getattr(args, key)) is not None}
    try:
        path = family.write_random_voice(voices, name, seed=args.seed, **variant)
    except (ValueError, NotImplementedError) as exc:
        print(f"voxpipe voice: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {family.name} voice {name!r}: {path}")
    return 0
