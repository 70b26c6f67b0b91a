"""`voxpipe split`: show the chunks the text frontend would make for a text, without synthesizing.

    voxpipe split [--voice NAME] [--policy NAME] [--budget N] [--no-first-chunk]
                  [--lang en|zh|auto] [--json] TEXT        (TEXT "-" reads standard input)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from voxpipe.config import FrontendConfig
from voxpipe.stages import families
from voxpipe.stages.families.base import TextError
from voxpipe.stages.text.normalize import LANGS, normalize
from voxpipe.stages.text.split import CUT_POLICIES, resolve_policy, split_text
from voxpipe.stages.text.policies import POLICY_ALIASES
from voxpipe.stages.voices import VoiceCatalog, VoiceError

USAGE_ERROR = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = FrontendConfig()
    parser.add_argument("--voice", default=None,
                        help="voice whose phonemes are counted (default: the bundled voice, joe)")
    parser.add_argument("--policy", default=defaults.policy,
                        help=f"cut policy: {', '.join(CUT_POLICIES)} or {', '.join(POLICY_ALIASES)} "
                             f"(default {defaults.policy})")
    parser.add_argument("--budget", type=int, default=defaults.chunk_budget,
                        help=f"most phonemes in a chunk (default {defaults.chunk_budget})")
    parser.add_argument("--no-first-chunk", dest="first_chunk", action="store_false",
                        help="do not cut the first chunk short")
    parser.add_argument("--first-chunk-words", type=int, default=defaults.first_chunk_words,
                        help=f"fewest words before a clause mark may end the first chunk (default {defaults.first_chunk_words})")
    parser.add_argument("--lang", choices=LANGS, default="auto", help="text language (default auto)")
    parser.add_argument("--voices-dir", default=None, help="directory of extra voices (NAME/*.onnx + .onnx.json)")
    parser.add_argument("--json", action="store_true", help='print {"chunks": [{"text", "phonemes", "oversize"}]}')
    parser.add_argument("text", help='the text, or "-" to read it from standard input')


def _fail(message: str) -> int:
    print(f"voxpipe split: {message}", file=sys.stderr)
    return USAGE_ERROR


def run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    try:
        policy = resolve_policy(args.policy)
    except ValueError as exc:
        return _fail(str(exc))
    if args.budget < 1 or args.first_chunk_words < 1:
        return _fail("--budget and --first-chunk-words must be at least 1")
    normalized = normalize(text, args.lang)
    if not any(ch.isalnum() for ch in normalized):
        return _fail("nothing to say: the text is empty or only whitespace and punctuation")
    try:
        catalog = VoiceCatalog(Path(args.voices_dir) if args.voices_dir else None)
        spec = catalog.get(args.voice or catalog.default_voice)
        frontend = families.get(spec.family).frontend(spec)
        chunks = split_text(normalized, budget=args.budget, count=frontend.count, policy=policy,
                            first_chunk=args.first_chunk, first_chunk_words=args.first_chunk_words)
    except (VoiceError, TextError, families.FamilyError) as exc:
        return _fail(str(exc))
    if args.json:
        payload = {"chunks": [{"text": c.text, "phonemes": c.units, "oversize": c.oversize} for c in chunks]}
        print(json.dumps(payload, ensure_ascii=False))
        return 0
    for index, chunk in enumerate(chunks, 1):
        flag = "  [oversize]" if chunk.oversize else ""
        print(f"{index:>3} {chunk.units:>5} ph  {chunk.text.replace(chr(10), ' / ')}{flag}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe split", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
