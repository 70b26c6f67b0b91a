"""`voxpipe say`: synthesize text through the daemon to a file or to stdout.

Only argparse is imported at the top: numpy, soundfile and the client library load when
the command runs, so `--help` and argument errors answer at once."""
from __future__ import annotations

import argparse
import sys
import time

from voxpipe.daemon.commands.audio_out import FORMATS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="text to say, or - for stdin")
    parser.add_argument("-f", "--file", help="read the text from a file")
    parser.add_argument("-o", "--output", default=None,
                        help="output file (.wav, .flac, .ogg, .pcm), a device such as /dev/null, or - for "
                             "stdout (default: voxpipe.wav on a terminal, else stdout)")
    parser.add_argument("--format", choices=FORMATS,
                        help="audio format (default: from the file's extension, else wav; raw 16-bit PCM on stdout)")
    parser.add_argument("--voice", default="joe")
    parser.add_argument("--endpoint")
    parser.add_argument("--stream", action="store_true", help="write audio as it arrives")
    parser.add_argument("--engine", help="runtime for the voice (onnx, torch, tensorrt)")
    parser.add_argument("--noise-scale", type=float)
    parser.add_argument("--noise-w", type=float)
    parser.add_argument("--length-scale", type=float)
    parser.add_argument("--speaker", type=int, default=None, help="speaker of a multi-speaker voice (default 0)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--top-k", type=int, help="GPT-SoVITS voices: sample among the k likeliest tokens (1: greedy)")
    parser.add_argument("--top-p", type=float, help="GPT-SoVITS voices: nucleus sampling threshold")
    parser.add_argument("--temperature", type=float, help="GPT-SoVITS voices: sampling temperature")
    parser.add_argument("--repetition-penalty", type=float, help="GPT-SoVITS voices: penalty on repeated tokens")
    parser.add_argument("--policy", help="text cut policy (punctuation, sentences, length, none, cut0..cut5)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--timeline", action="store_true",
                        help="debug: print where the request's time went (frontend plan, queue, engine windows, "
                             "merger, hand-offs, socket)")
    parser.add_argument("--words", metavar="FILE.json",
                        help='also write each word\'s timing: [{"word", "start", "end"}, ...] in seconds')


def read_text(args: argparse.Namespace) -> str:
    from voxpipe.daemon.commands.textin import read_stdin, read_text_file

    if args.file:
        return read_text_file(args.file)
    if args.text in (None, "-"):
        return read_stdin()
    return args.text


def options(args: argparse.Namespace) -> dict:
    """Options as given; those left out (None) take the voice's defaults, and each voice's
    family checks the ones it takes (a Piper option sent to a GPT-SoVITS voice: bad_option)."""
    return {"noise_scale": args.noise_scale, "noise_w": args.noise_w, "length_scale": args.length_scale,
            "speaker_id": args.speaker, "seed": args.seed, "policy": args.policy, "engine": args.engine,
            "top_k": args.top_k, "top_p": args.top_p, "temperature": args.temperature,
            "repetition_penalty": args.repetition_penalty, "timeline": args.timeline}


def _fail(message: str, code: int = 1) -> int:
    print(f"voxpipe say: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from voxpipe.daemon.commands.audio_out import OutputError, check_output, pick_format
    from voxpipe.daemon.commands.textin import InputError

    output = args.output or ("-" if not sys.stdout.isatty() else "voxpipe.wav")
    try:
        text = read_text(args)
        fmt = pick_format(output, args.format)
        check_output(output)
    except (InputError, OutputError) as exc:
        return _fail(str(exc), 2)
    from voxpipe.ipc.errors import VoxpipeError

    try:
        result, words, timeline, sent = _synthesize(args, text, output, fmt)
    except (VoxpipeError, OutputError) as exc:
        return _fail(str(exc))
    if args.words and result is not None:
        try:
            write_words(args.words, words)
        except OSError as exc:
            return _fail(f"cannot write {args.words}: {exc.strerror or exc}")
    if output != "-" and result is not None:
        timings = result.timings
        print(f"{output}: {result.samples / result.sample_rate:.2f} s of audio, first audio after "
              f"{timings.get('first_audio_s', 0):.3f} s, total {timings.get('total_s', 0):.3f} s", file=sys.stderr)
    if args.timeline:
        print(timeline_table(timeline, sent), file=sys.stderr)
    return 0


def timeline_table(events: list, sent: float) -> str:
    """One line a step, in order of its start: when it began and ended after the request
    was sent, how long it took, the stage, and what it did (for which chunk)."""
    lines = ["   start ms     end ms    took ms  stage     step"]
    for e in sorted(events, key=lambda e: (e.start, e.end)):
        chunk = f" (chunk {e.seq})" if e.seq >= 0 else ""
        lines.append(f"{(e.start - sent) * 1000:11.1f}{(e.end - sent) * 1000:11.1f}{(e.end - e.start) * 1000:11.1f}"
                     f"  {e.stage:<8}  {e.what}{chunk}")
    return "\n".join(lines)


def _synthesize(args: argparse.Namespace, text: str, output: str, fmt: str):
    """Stream the request into the output; the final Result (or None) and the word timings."""
    from voxpipe.daemon.commands.audio_out import AudioSink
    from voxpipe.daemon.commands.progress import Progress
    from voxpipe.ipc.client import Client

    sink = AudioSink(output, fmt)
    with Client(args.endpoint, timeout=args.timeout) as client:
        sent = time.monotonic()
        stream = client.stream(text, args.voice, **options(args))
        progress = Progress(1, "synthesizing", enabled=sys.stderr.isatty() and len(text) > 200)
        try:
            for fragment in stream:
                sink.write(fragment.samples, fragment.sample_rate, flush=args.stream)
                progress.total = max(progress.total, fragment.chunks)
                progress.update(fragment.chunks_done)
        finally:
            progress.close()
        sink.close()
    return stream.result, stream.words, stream.timeline, sent


def write_words(path: str, words: list) -> None:
    """The request's word timings as JSON, seconds of the audio, rounded to 0.1 ms."""
    import json

    from pathlib import Path

    rows = [{"word": w.text, "start": round(w.start, 4), "end": round(w.end, 4)} for w in words]
    Path(path).write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
