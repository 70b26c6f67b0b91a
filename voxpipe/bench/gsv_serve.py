"""GPT-SoVITS serving speed: the reference package one request at a time (as its api_v2
serves), voxpipe one request at a time, and voxpipe's continuous batching + windowed
audio, in one run, on one random-weight v2 voice and the same requests.

    voxpipe bench gsv [--size tiny|full] [--concurrency 1 4 16] [--threads 2] [--repeat 1]
                      [--reference DIR] [--out gsv-serve] [--json FILE]

It needs the gpt-sovits extra (torch, transformers, ...), matplotlib for its plot (the
bench extra), and the reference package installed in a folder of its own (its top-level
modules `tools`, `text`, `module`, `AR` would shadow others inside an environment):

    pip install --no-deps --target .cache/gsv-reference gpt-sovits-cpufast==0.1.0 \
        torchmetrics lightning-utilities einops

(`bash tools/dev.sh setup` does this in a source checkout.) --reference defaults to
$VOXPIPE_GSV_REFERENCE, else .cache/gsv-reference in the current directory.

For each concurrency N, N requests of different lengths (same sampling settings, seed i
for request i) arrive together at time 0, and each mode serves them:

- "reference": the gpt-sovits-cpufast 0.1.0 package in a long-lived process of its own
  (voxpipe.bench.gsv_reference_runner --serve; it loads the voice once), one request after
  another like api_v2's single worker: a request's audio comes whole, so its first audio
  is when it is done. Time 0 is read inside that process when the batch reaches it.
- "sequential": voxpipe's plain decoder and renderer, one request after another.
- "batched": voxpipe's GsvRunner (the worker's path): all N join the running batch,
  audio comes in windows while tokens are decoded; first audio is a request's first piece.

Timed, for every mode: the target text's BERT features (api_v2 computes them per request
in its TextPreprocessor; voxpipe when a chunk joins the batch), semantic decoding and the
SoVITS rendering. Not timed: G2P (text to phone ids; voxpipe's frontend does it once and
both sides get the same ids), the voice's prompt features (HuBERT tokens, reference
spectrogram, prompt BERT; cached per voice on both sides as api_v2 caches them), model
loading, one warm-up request per side, and output packing (api_v2's WAV encoding,
voxpipe's shared memory and merger). Same torch thread count (--threads) and
flush-denormal setting on both sides; at each N the three modes run one after another,
never at the same time.

Lengths as a trained voice makes them: a random voice never says EOS (random_voice.py
pins its logit far down), and every request decodes TOKENS_PER_PHONE semantic tokens per
phone of its text (25 tokens a second: about 8 phones a second of speech), the same on
every side; the reference gets that number as its stop limit (`early_stop_num`).
Wall times move with
other load on the machine: --repeat R runs everything R times (rounds of all N and
modes) and reports, per N and mode, the round with the median total time.

Prints progress and per-mode results; writes OUT.md (table and ratios) and OUT.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import IO

import numpy as np

from voxpipe.bench.stats import pearson, percentile, ratio

DEFAULT_REFERENCE = os.environ.get("VOXPIPE_GSV_REFERENCE", str(Path(".cache") / "gsv-reference"))
TEXTS = ["你好。", "今天天气真不错。", "我们出去走走吧，好吗？", "Hello there, how are you today?",
         "这是一个比较长的句子，用来测试第一段音频的时间。", "Speech synthesis should start quickly, even for long sentences."]
PROMPT_TEXT = "你好，这是一段参考音频。"
TOKENS_PER_PHONE = 3  # semantic tokens per phone of the request's text, on every side
SAMPLING = {"top_k": 15, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.35}
NOISE_SCALE = 0.5
MODES = ("reference", "sequential", "batched")


@dataclass(frozen=True)
class Request:
    text: str
    segments: list  # [TextSegment], the G2P output both sides receive
    seed: int

    @property
    def max_tokens(self) -> int:
        """The request's semantic tokens: TOKENS_PER_PHONE per phone of its text."""
        return TOKENS_PER_PHONE * sum(len(s.phone_ids) for s in self.segments)


@dataclass(frozen=True)
class Run:
    """One mode serving one batch of requests; times from the batch's arrival."""
    total_s: float
    first_s: list[float]
    audio_s: list[float]


@dataclass(frozen=True)
class Row:
    concurrency: int
    mode: str
    requests_per_s: float
    mean_first_s: float
    p50_first_s: float
    corr: float  # first-audio time against text length (characters); NaN below 3 requests
    audio_s: float  # mean audio per request, to show every mode did the same work

    def json(self) -> dict:
        return {"concurrency": self.concurrency, "mode": self.mode, "requests_per_s": self.requests_per_s,
                "first_audio_mean_s": self.mean_first_s, "first_audio_p50_s": self.p50_first_s,
                "first_audio_length_corr": None if math.isnan(self.corr) else self.corr,
                "audio_per_request_s": self.audio_s}

    @classmethod
    def of(cls, mode: str, run: Run, lengths: list[int]) -> "Row":
        n = len(lengths)
        corr = pearson([float(x) for x in lengths], run.first_s) if n > 2 else math.nan
        return cls(n, mode, n / run.total_s, float(np.mean(run.first_s)), percentile(run.first_s, 50), corr,
                   float(np.mean(run.audio_s)))


def segment_json(seg) -> dict:
    return {"lang": seg.lang, "norm_text": seg.norm_text, "phone_ids": list(seg.phone_ids),
            "word2ph": list(seg.word2ph)}


def model_segments(text: str, lang: str = "auto") -> list:
    from voxpipe.stages.families.gpt_sovits.models.voice import TextSegment
    from voxpipe.stages.families.gpt_sovits.text import segments

    return [TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph)) for s in segments(text, lang)]


def make_requests(n: int) -> list[Request]:
    return [Request(TEXTS[i % len(TEXTS)], model_segments(TEXTS[i % len(TEXTS)]), i) for i in range(n)]


def write_voice(work: Path, size: str):
    """A random v2 voice's files. -> VoiceFiles."""
    from voxpipe.stages.families.gpt_sovits.random_voice import pretrained_dirname, write_random_gsv_voice
    from voxpipe.stages.families.gpt_sovits.models.voice import VoiceFiles

    # max_sec: no limit of its own below the requests' (30 s = 1500 tokens, upstream's ceiling).
    voice = write_random_gsv_voice(work, "bench", "v2", seed=0, max_sec=30.0, size=size)
    return VoiceFiles(next(voice.glob("*.ckpt")), next(voice.glob("*.pth")), work / pretrained_dirname(size),
                      voice / "reference.wav")


def load_model(files, device: str = "cpu"):
    """Our model of the voice with its prompt built. -> GsvModel."""
    from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel

    model = GsvModel(files, device)
    model.build_prompt(model_segments(PROMPT_TEXT, "zh"))
    return model


def run_sequential(model, reqs: list[Request]) -> Run:
    from voxpipe.stages.families.gpt_sovits.decoder.t2s import Sampling

    sampling = Sampling(**SAMPLING)
    start, first, audio_s = time.perf_counter(), [], []
    for req in reqs:
        # includes the target's BERT; early_stop tokens when no EOS comes, as the reference
        decoded = model.semantic_tokens(req.segments, sampling, seed=req.seed, early_stop=req.max_tokens)
        ids = [p for s in req.segments for p in s.phone_ids]
        audio = model.render(decoded.tokens, ids, NOISE_SCALE, 1.0, req.seed)
        first.append(time.perf_counter() - start)  # one piece: first audio = all of it
        audio_s.append(len(audio) / model.sample_rate)
    return Run(time.perf_counter() - start, first, audio_s)


def _item(req: Request):
    from voxpipe.stages.families.gpt_sovits.item import GsvItem

    ids = np.asarray([p for s in req.segments for p in s.phone_ids], dtype=np.int64)
    runs = tuple((s.lang, s.norm_text, len(s.phone_ids), s.word2ph) for s in req.segments)
    return GsvItem(ids, NOISE_SCALE, 1.0, req.seed, text_segments=runs, **SAMPLING)  # length_scale 1: speed 1


def run_batched(model, reqs: list[Request]) -> Run:
    from voxpipe.stages.families.gpt_sovits.item import item_chunk
    from voxpipe.stages.families.gpt_sovits.runner import GsvRunner

    voice = SimpleNamespace(model=model, spec=SimpleNamespace(name="bench", sample_rate=model.sample_rate))
    runner = GsvRunner(max_sequences=len(reqs))
    start, first, samples = time.perf_counter(), {}, {}
    for i, req in enumerate(reqs):  # BERT runs at the first step, for all of them at once
        runner.admit(voice, item_chunk(_item(req), f"r{i}"), max_tokens=req.max_tokens)
    while len(runner):
        for piece in runner.step().pieces:
            key = piece.chunk.request_id
            first.setdefault(key, time.perf_counter() - start)
            samples[key] = samples.get(key, 0) + len(piece.audio)
    total = time.perf_counter() - start
    keys = [f"r{i}" for i in range(len(reqs))]
    return Run(total, [first[k] for k in keys], [samples[k] / model.sample_rate for k in keys])


class ReferenceServer:
    """The reference package in its own process, loaded once, serving batches on request."""

    def __init__(self, reference: Path, files, threads: int, work: Path) -> None:
        prompt = [segment_json(s) for s in model_segments(PROMPT_TEXT, "zh")]
        spec = {"gpt": str(files.gpt), "sovits": str(files.sovits), "pretrained": str(files.pretrained),
                "ref_audio": str(files.ref_audio), "prompt": prompt, "sampling": SAMPLING,
                "noise_scale": NOISE_SCALE, "threads": threads,
                "warmup": [self._request_json(r) for r in make_requests(1)]}
        (work / "reference-voice.json").write_text(json.dumps(spec), encoding="utf-8")
        self.log_path = work / "reference.log"
        self.log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxpipe.bench.gsv_reference_runner", str(reference.resolve()),
             str(work / "reference-voice.json"), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=work)

    def wait_ready(self) -> None:
        """Block until the process has loaded and warmed up its voice."""
        if self._line() != "ready":
            raise RuntimeError(f"reference runner did not start:\n{self.tail()}")

    @staticmethod
    def _request_json(req: Request) -> dict:
        # The reference returns early_stop_num tokens when no EOS comes, as voxpipe does.
        return {"target": [segment_json(s) for s in req.segments], "seed": req.seed, "early_stop": req.max_tokens}

    def _line(self) -> str:
        stdout: IO[str] = self.proc.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"reference runner exited ({self.proc.wait()}):\n{self.tail()}")
        return line.strip()

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]

    def serve(self, reqs: list[Request]) -> Run:
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        stdin.write(json.dumps([self._request_json(r) for r in reqs]) + "\n")
        stdin.flush()
        first, audio_s = [], []
        while True:
            msg = json.loads(self._line())
            if "total_s" in msg:
                return Run(msg["total_s"], first, audio_s)
            first.append(msg["done_s"])
            audio_s.append(msg["audio_s"])

    def close(self) -> None:
        """Closing its input ends the process; one still busy (we stopped mid-batch) is killed."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def table(rows: list[Row]) -> list[str]:
    def corr(c: float) -> str:
        return "n/a" if math.isnan(c) else f"{c:+.3f}"

    lines = ["| concurrency | mode | requests/s | mean first audio (s) | p50 first audio (s) "
             "| corr(first audio, text length) | audio/request (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.concurrency} | {r.mode} | {r.requests_per_s:.2f} | {r.mean_first_s:.2f} | {r.p50_first_s:.2f} "
              f"| {corr(r.corr)} | {r.audio_s:.2f} |" for r in rows]
    return lines


def ratio_lines(rows: list[Row]) -> list[str]:
    """Batched against each one-at-a-time mode: >1 means batched is better."""
    out = []
    for n in sorted({r.concurrency for r in rows}):
        by_mode = {r.mode: r for r in rows if r.concurrency == n}
        bat = by_mode["batched"]
        parts = [f"vs {m}: {ratio(bat.requests_per_s, by_mode[m].requests_per_s):.2f}x requests/s, first audio "
                 f"{ratio(by_mode[m].mean_first_s, bat.mean_first_s):.2f}x sooner (mean), "
                 f"{ratio(by_mode[m].p50_first_s, bat.p50_first_s):.2f}x (p50)" for m in ("reference", "sequential")]
        out.append(f"N={n} batched " + "; ".join(parts))
    return out


def plot(rows: list[Row], path: Path) -> None:
    from voxpipe.bench.plots import plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in MODES:
        sel = [r for r in rows if r.mode == mode]
        axes[0].plot([r.concurrency for r in sel], [r.requests_per_s for r in sel], marker="o", label=mode)
        axes[1].plot([r.concurrency for r in sel], [r.mean_first_s for r in sel], marker="o", label=mode)
    axes[0].set(xlabel="concurrent requests", ylabel="requests/s")
    axes[1].set(xlabel="concurrent requests", ylabel="mean time to first audio (s)")
    ns = sorted({r.concurrency for r in rows})
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def serve_once(mode: str, model, server: ReferenceServer, reqs: list[Request]) -> Run:
    if mode == "reference":
        return server.serve(reqs)
    return run_sequential(model, reqs) if mode == "sequential" else run_batched(model, reqs)


def measure(model, server: ReferenceServer, concurrency: list[int], repeat: int) -> list[Row]:
    """Rounds of every N, and at each N the three modes one after another (so that they
    share the machine's load); per N and mode, the round with the median total time."""
    runs: dict[tuple[int, str], list[Run]] = {}
    for round_no in range(repeat):
        for n in concurrency:
            reqs = make_requests(n)
            for mode in MODES:
                print(f"[{round_no + 1}/{repeat}] N={n:3d} {mode:10} ", end="", flush=True)
                run = serve_once(mode, model, server, reqs)
                runs.setdefault((n, mode), []).append(run)
                print(f"{n / run.total_s:7.2f} req/s  first audio mean {np.mean(run.first_s):6.2f} s "
                      f"({run.total_s:.1f} s in all)", flush=True)
    rows = []
    for (n, mode), mode_runs in runs.items():
        median = sorted(mode_runs, key=lambda r: r.total_s)[(len(mode_runs) - 1) // 2]
        rows.append(Row.of(mode, median, [len(r.text) for r in make_requests(n)]))
    return rows


def run_all(args: argparse.Namespace, work: Path) -> list[Row]:
    """Write the voice, load both sides, warm up, measure."""
    started = time.perf_counter()
    print(f"writing a random {args.size} v2 voice ({TOKENS_PER_PHONE} tokens per phone) ...", flush=True)
    files = write_voice(work, args.size)
    # The reference loads while ours does (nothing is timed yet): a shorter run.
    print(f"loading the reference package and ours ({args.threads} thread(s) each) ...", flush=True)
    server = ReferenceServer(Path(args.reference), files, args.threads, work)
    try:
        model = load_model(files, args.device)
        run_sequential(model, make_requests(1))  # warm-up, both paths
        run_batched(model, make_requests(2))
        server.wait_ready()
        print(f"loaded and warmed up ({time.perf_counter() - started:.0f} s so far)", flush=True)
        return measure(model, server, args.concurrency, max(1, args.repeat))
    finally:
        server.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny",
                        help="the random voice: tiny (seconds) or full, the released models' dimensions (minutes)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu",
                        help="voxpipe's side: cpu or cuda (the reference package runs on the CPU either way)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="where gpt-sovits-cpufast 0.1.0 is installed (pip install --no-deps --target DIR; "
                             "default: $VOXPIPE_GSV_REFERENCE, else .cache/gsv-reference here)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median round is reported")
    parser.add_argument("--out", default="gsv-serve", help="OUT.md and OUT.png are written")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")


def run(args: argparse.Namespace) -> int:
    if not (Path(args.reference) / "GPT_SoVITS").is_dir():
        print(f"voxpipe bench gsv: the reference GPT-SoVITS is not installed at {args.reference}: pip install "
              f"--no-deps --target {args.reference} gpt-sovits-cpufast==0.1.0 torchmetrics lightning-utilities "
              f"einops (in a source checkout: bash tools/dev.sh setup)", file=sys.stderr)
        return 2
    try:
        from voxpipe.bench import plots  # noqa: F401  (before minutes of work, not after)
    except ImportError as exc:
        print(f"voxpipe bench gsv: {exc}", file=sys.stderr)
        return 2

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gsv-serve-") as tmp:  # a full voice takes ~1.3 GB
        rows = run_all(args, Path(tmp))
    header = (f"Random-weight {args.size} v2 voice (voxpipe on {args.device}), {TOKENS_PER_PHONE} semantic tokens per phone of each text, "
              f"{args.threads} torch thread(s) on every side, sampling {SAMPLING}, noise_scale {NOISE_SCALE}, "
              f"median of {max(1, args.repeat)} round(s).")
    lines = [header, "", *table(rows), "", *[f"- {r}" for r in ratio_lines(rows)]]
    print("\n".join(lines[2:]))
    Path(args.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(rows, Path(args.out + ".png"))
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "threads": args.threads,
                                         "tokens_per_phone": TOKENS_PER_PHONE,
                                         "rows": [r.json() for r in rows]}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}.md and {args.out}.png{' and ' + str(args.json) if args.json else ''} "
          f"({time.perf_counter() - started:.0f} s in all)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe bench gsv", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
