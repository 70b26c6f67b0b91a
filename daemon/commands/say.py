"""`voxpipe say`: synthesize text through the daemon to a file or to stdout."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import soundfile

from voxpipe.ipc.client import Client
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.daemon.commands.progress import Progress

FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="text to say, or - for stdin")
    parser.add_argument("-f", "--file", help="read the text from a file")
    parser.add_argument("-o", "--output", default=None,
                        help="output file (.wav, .flac, .ogg) or - for raw 16-bit PCM on stdout")
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
    parser.add_argument("--words", metavar="FILE.json",
                        help='also write each word\'s timing: [{"word", "start", "end"}, ...] in seconds')


def read_text(args: argparse.Namespace) -> str:
    if args.file:
        return Path(args.file).read_text(encoding="utf-8")
    if args.text in (None, "-"):
        return sys.stdin.read()
    return args.text


def options(args: argparse.Namespace) -> dict:
    """Options as given; those left out (None) take the voice's defaults, and each voice's
    family checks the ones it takes (a Piper option sent to a GPT-SoVITS voice: bad_option)."""
    return {"noise_scale": args.noise_scale, "noise_w": args.noise_w, "length_scale": args.length_scale,
            "speaker_id": args.speaker, "seed": args.seed, "policy": args.policy, "engine": args.engine,
            "top_k": args.top_k, "top_p": args.top_p, "temperature": args.temperature,
            "repetition_penalty": args.repetition_penalty}


def run(args: argparse.Namespace) -> int:
    text = read_text(args)
    output = args.output or ("-" if not sys.stdout.isatty() else "voxpipe.wav")
    if output != "-" and Path(output).suffix.lower() not in FORMATS:
        print(f"voxpipe say: unsupported output {output!r}; use .wav, .flac, .ogg or -", file=sys.stderr)
        return 2
    try:
        with Client(args.endpoint, timeout=args.timeout) as client:
            stream = client.stream(text, args.voice, **options(args))
            progress = Progress(1, "synthesizing", enabled=sys.stderr.isatty() and len(text) > 200)
            writer = None
            try:
                for fragment in stream:
                    if writer is None:
                        writer = _open(output, fragment.sample_rate)
                    _write(writer, fragment.samples, flush=args.stream)
                    progress.total = max(progress.total, fragment.chunks)
                    progress.update(fragment.chunks_done)
            finally:
                progress.close()
                if writer is not None and writer is not sys.stdout.buffer:
                    writer.close()
    except VoxpipeError as exc:
        print(f"voxpipe say: {exc}", file=sys.stderr)
        return 1
    result = stream.result
    if args.words and result is not None:
        try:
            write_words(args.words, stream.words)
        except OSError as exc:
            print(f"voxpipe say: cannot write {args.words}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if output != "-" and result is not None:
        timings = result.timings
        print(f"{output}: {result.samples / result.sample_rate:.2f} s of audio, first audio after "
              f"{timings.get('first_audio_s', 0):.3f} s, total {timings.get('total_s', 0):.3f} s", file=sys.stderr)
    return 0


def _open(output: str, sample_rate: int):
    if output == "-":
        return sys.stdout.buffer
    return soundfile.SoundFile(output, "w", samplerate=sample_rate, channels=1,
                               format=FORMATS[Path(output).suffix.lower()], subtype=None)


def _write(writer, samples, flush: bool) -> None:
    if writer is sys.stdout.buffer:
        writer.write(samples.tobytes())
        if flush:
            writer.flush()
    else:
        writer.write(samples)


def write_words(path: str, words: list) -> None:
    """The request's word timings as JSON, seconds of the audio, rounded to 0.1 ms."""
    import json

    rows = [{"word": w.text, "start": round(w.start, 4), "end": round(w.end, 4)} for w in words]
    Path(path).write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
