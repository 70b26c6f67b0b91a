"""GPT-SoVITS serving speed: the reference package one request at a time (as its api_v2
serves), voxpipe one request at a time, and voxpipe's continuous batching + windowed
audio, in one run, on one random-weight v2 voice and the same requests.

    voxpipe bench gsv [--size tiny|full] [--concurrency 1 4 16] [--threads 2] [--repeat 1]
                      [--precision auto|fp32|bf16|fp16|int8] [--modes ...]
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
- "reference-tuned": the same, with the malloc the daemon's workers get (`--allocator`,
  default the daemon's: system), so a ratio never credits voxpipe with what an allocator
  does; left out when the workers run with the system's.
- "sequential": voxpipe's plain decoder and renderer, one request after another.
- "batched": voxpipe's GsvRunner (the worker's path): all N join the running batch,
  audio comes in windows while tokens are decoded; first audio is a request's first piece.
- "daemon": the real daemon (`voxpipe serve`) with its defaults, the voice in its voices
  directory and preloaded: the N requests go through the client library, each in a thread
  of its own, streamed; first audio is a request's first fragment at the client, so G2P,
  the frontend, the sockets and the merger are timed too. --threads does not apply: the
  daemon uses the machine as it does for users. Its voice ends each text at the same
  length as the other modes by its own voice.toml (`max_tokens_per_phone`), so its
  request path is a user's.

`--precision` (default auto) sets the precision of voxpipe's decoder steps and vocoder
on its sides (precision.py: auto probes once and every side reuses the choice); each row
says what ran as "decoder/renderer". The reference runs fp32.

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
MODES = ("reference", "reference-tuned", "sequential", "batched", "daemon")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")
VOICE = "bench"


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
    precision: str = "fp32/fp32"  # decoder/renderer

    def json(self) -> dict:
        return {"concurrency": self.concurrency, "mode": self.mode, "requests_per_s": self.requests_per_s,
                "first_audio_mean_s": self.mean_first_s, "first_audio_p50_s": self.p50_first_s,
                "first_audio_length_corr": None if math.isnan(self.corr) else self.corr,
                "audio_per_request_s": self.audio_s, "precision": self.precision}

    @classmethod
    def of(cls, mode: str, run: Run, lengths: list[int], precision: str) -> "Row":
        n = len(lengths)
        corr = pearson([float(x) for x in lengths], run.first_s) if n > 2 else math.nan
        return cls(n, mode, n / run.total_s, float(np.mean(run.first_s)), percentile(run.first_s, 50), corr,
                   float(np.mean(run.audio_s)), precision)


def segment_json(seg) -> dict:
    return {"lang": seg.lang, "norm_text": seg.norm_text, "phone_ids": list(seg.phone_ids),
            "word2ph": list(seg.word2ph)}


def model_segments(text: str, lang: str = "auto") -> list:
    from voxpipe.stages.families.gpt_sovits.models.voice import TextSegment
    from voxpipe.stages.families.gpt_sovits.text import segments

    return [TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph)) for s in segments(text, lang)]


def make_requests(n: int) -> list[Request]:
    return [Request(TEXTS[i % len(TEXTS)], model_segments(TEXTS[i % len(TEXTS)]), i) for i in range(n)]


def write_voice(voices: Path, size: str):
    """A random v2 voice's files in a voices directory. -> VoiceFiles."""
    from voxpipe.stages.families.gpt_sovits.random_voice import pretrained_dirname, write_random_gsv_voice
    from voxpipe.stages.families.gpt_sovits.models.voice import VoiceFiles

    # max_sec: no limit of its own below the requests' (30 s = 1500 tokens, upstream's ceiling).
    voice = write_random_gsv_voice(voices, VOICE, "v2", seed=0, max_sec=30.0, size=size)
    # The daemon ends each text where the other modes do: a random voice never says EOS.
    toml = voice / "voice.toml"
    toml.write_text(f"max_tokens_per_phone = {TOKENS_PER_PHONE}\n" + toml.read_text(encoding="utf-8"), encoding="utf-8")
    return VoiceFiles(next(voice.glob("*.ckpt")), next(voice.glob("*.pth")), voices / pretrained_dirname(size),
                      voice / "reference.wav")


def wanted_precision(value: str) -> dict[str, str]:
    """--precision as the parts take it: int8 is the decoder's steps and prefills (its
    vocoder: auto); bf16 and fp16 are no prefill's (fp32)."""
    from voxpipe.stages.families.gpt_sovits.voice_config import PRECISIONS

    wanted = {part: value if value == "auto" or value in PRECISIONS[part] else "auto" for part in PRECISIONS}
    if value in ("bf16", "fp16"):
        wanted["prefill"] = "fp32"
    return wanted


def apply_precision(model, value: str, cache: Path) -> str:
    """Our model's parts set to --precision (auto: probed, cached in `cache` for the daemon
    to reuse); -> "decoder/renderer"."""
    from voxpipe.stages.families.gpt_sovits import precision

    choice = precision.choose(model, wanted_precision(value), cache)
    print(f"precision: {choice.summary()}{''.join('; ' + n for n in choice.notes)}", flush=True)
    return f"{choice.decoder}/{choice.renderer}"


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


class DaemonSide:
    """The real daemon, started with its defaults (workers, threads, precision as set),
    the bench voice in its voices directory and preloaded."""

    def __init__(self, voices: Path, work: Path, precision: str, cache: Path, malloc: str = "auto") -> None:
        from voxpipe.bench.daemon import BenchDaemon, DaemonSettings

        wanted = wanted_precision(precision)
        config = (f"voices_dir = {json.dumps(str(voices))}", f"preload = [{json.dumps(VOICE)}]",
                  f"worker.allocator = {json.dumps(malloc)}",
                  f"worker.gsv_decoder_precision = {json.dumps(wanted['decoder'])}",
                  f"worker.gsv_renderer_precision = {json.dumps(wanted['renderer'])}",
                  f"worker.gsv_prefill_precision = {json.dumps(wanted['prefill'])}",
                  f"worker.gsv_precision_cache_dir = {json.dumps(str(cache))}")
        # workers 0 and threads 1 are the daemon's defaults: cores / threads workers.
        self.daemon = BenchDaemon(work, DaemonSettings(engine="onnx", workers=0, threads=1, config=config))

    def start(self) -> None:
        self.daemon.start(wait_s=1800.0)  # a full-size voice loads (and is probed) before ready

    def precision(self) -> str:
        """What the workers run the voice in, as "decoder/renderer"."""
        seen = set()
        for proc in self.daemon.status().get("processes", []):
            chosen = ((proc.get("stats") or {}).get("voice_details") or {}).get(VOICE, {}).get("precision", "")
            if chosen.startswith("decoder "):
                parts = dict(item.split() for item in chosen.split(" (")[0].split(", "))
                seen.add(f"{parts['decoder']}/{parts['renderer']}")
        return "/".join(sorted(seen)) if len(seen) != 1 else seen.pop()

    def serve(self, reqs: list[Request]) -> Run:
        """The requests at once, one client and thread each, streamed; times at the client."""
        import threading

        n = len(reqs)
        first, end, samples = [0.0] * n, [0.0] * n, [0] * n
        rate = [0]
        errors: list[BaseException] = []
        gate = threading.Barrier(n + 1)
        start = [0.0]

        def one(i: int, req: Request) -> None:
            try:
                with self.daemon.client() as client:
                    gate.wait()
                    stream = client.stream(req.text, VOICE, seed=req.seed, noise_scale=NOISE_SCALE, **SAMPLING)
                    for fragment in stream:
                        if not samples[i]:
                            first[i] = time.perf_counter() - start[0]
                        samples[i] += len(fragment.samples)
                        rate[0] = fragment.sample_rate
                    end[i] = time.perf_counter() - start[0]
            except BaseException as exc:  # reported below, after every thread ends
                errors.append(exc)
                gate.abort()

        threads = [threading.Thread(target=one, args=(i, r), daemon=True) for i, r in enumerate(reqs)]
        for t in threads:
            t.start()
        start[0] = time.perf_counter()
        gate.wait()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"daemon request failed: {errors[0]!r}\n{self.daemon.log_tail()}")
        return Run(max(end), first, [s / rate[0] for s in samples])

    def close(self) -> None:
        self.daemon.stop()


class ReferenceServer:
    """The reference package in its own process, loaded once, serving batches on request."""

    def __init__(self, reference: Path, files, threads: int, work: Path, env: dict[str, str] | None = None,
                 name: str = "reference") -> None:
        """`env`: more environment for its process (the daemon's worker tuning, e.g. LD_PRELOAD)."""
        prompt = [segment_json(s) for s in model_segments(PROMPT_TEXT, "zh")]
        spec = {"gpt": str(files.gpt), "sovits": str(files.sovits), "pretrained": str(files.pretrained),
                "ref_audio": str(files.ref_audio), "prompt": prompt, "sampling": SAMPLING,
                "noise_scale": NOISE_SCALE, "threads": threads,
                "warmup": [self._request_json(r) for r in make_requests(1)]}
        (work / f"{name}-voice.json").write_text(json.dumps(spec), encoding="utf-8")
        self.log_path = work / f"{name}.log"
        self.log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxpipe.bench.gsv_reference_runner", str(reference.resolve()),
             str(work / f"{name}-voice.json"), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=work,
            env={**os.environ, **(env or {})})

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

    lines = ["| concurrency | mode | precision | requests/s | mean first audio (s) | p50 first audio (s) "
             "| corr(first audio, text length) | audio/request (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.concurrency} | {r.mode} | {r.precision} | {r.requests_per_s:.2f} | {r.mean_first_s:.2f} "
              f"| {r.p50_first_s:.2f} | {corr(r.corr)} | {r.audio_s:.2f} |" for r in rows]
    return lines


def ratio_lines(rows: list[Row]) -> list[str]:
    """Each of voxpipe's modes against the reference: requests/s (>1: voxpipe serves more)
    and first audio as a fraction of the reference's (<1: voxpipe's comes sooner)."""
    out = []
    for n in sorted({r.concurrency for r in rows}):
        by_mode = {r.mode: r for r in rows if r.concurrency == n}
        pairs = [(m, "reference") for m in ("daemon", "batched", "sequential")] + [("daemon", "reference-tuned")]
        for mode, against in pairs:
            ref = by_mode.get(against)
            if mode in by_mode and ref is not None:
                ours = by_mode[mode]
                out.append(f"N={n} {mode} ({ours.precision}) vs {against}: "
                           f"{ratio(ours.requests_per_s, ref.requests_per_s):.2f}x requests/s, first audio "
                           f"{ratio(ours.mean_first_s, ref.mean_first_s):.2f}x the reference's (mean), "
                           f"{ratio(ours.p50_first_s, ref.p50_first_s):.2f}x (p50)")
    return out


def plot(rows: list[Row], path: Path) -> None:
    from voxpipe.bench.plots import plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in [m for m in MODES if any(r.mode == m for r in rows)]:
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


@dataclass
class Sides:
    """What serves each mode: the reference process, our model in this process, the daemon."""

    server: ReferenceServer | None
    tuned: ReferenceServer | None  # the reference with the daemon's worker tuning (its allocator)
    model: object | None
    daemon: DaemonSide | None
    precision: dict[str, str]  # mode -> "decoder/renderer"

    def serve(self, mode: str, reqs: list[Request]) -> Run:
        if mode == "reference":
            return self.server.serve(reqs)  # type: ignore[union-attr]
        if mode == "reference-tuned":
            return self.tuned.serve(reqs)  # type: ignore[union-attr]
        if mode == "daemon":
            return self.daemon.serve(reqs)  # type: ignore[union-attr]
        return run_sequential(self.model, reqs) if mode == "sequential" else run_batched(self.model, reqs)


def measure(sides: Sides, modes: list[str], concurrency: list[int], repeat: int) -> list[Row]:
    """Rounds of every N, and at each N the modes one after another (so that they share
    the machine's load); per N and mode, the round with the median total time."""
    runs: dict[tuple[int, str], list[Run]] = {}
    for round_no in range(repeat):
        for n in concurrency:
            reqs = make_requests(n)
            for mode in modes:
                print(f"[{round_no + 1}/{repeat}] N={n:3d} {mode:10} ", end="", flush=True)
                run = sides.serve(mode, reqs)
                runs.setdefault((n, mode), []).append(run)
                print(f"{n / run.total_s:7.2f} req/s  first audio mean {np.mean(run.first_s):6.2f} s "
                      f"({run.total_s:.1f} s in all)", flush=True)
    rows = []
    for (n, mode), mode_runs in runs.items():
        median = sorted(mode_runs, key=lambda r: r.total_s)[(len(mode_runs) - 1) // 2]
        rows.append(Row.of(mode, median, [len(r.text) for r in make_requests(n)], sides.precision[mode]))
    return rows


def run_all(args: argparse.Namespace, work: Path) -> list[Row]:
    """Write the voice, load every side, warm up, measure."""
    started = time.perf_counter()
    modes = list(args.modes)
    print(f"writing a random {args.size} v2 voice ({TOKENS_PER_PHONE} tokens per phone) ...", flush=True)
    voices, cache = work / "voices", work / "precision"
    files = write_voice(voices, args.size)
    sides = Sides(None, None, None, None, {"reference": "fp32/fp32", "reference-tuned": "fp32/fp32"})
    from voxpipe.daemon import allocator

    tuning, words = allocator.worker_env(args.allocator)
    if "reference-tuned" in modes and not tuning:
        print(f"reference-tuned: the daemon's workers run with the {words} malloc, as the reference does: "
              "left out", flush=True)
        modes.remove("reference-tuned")
    try:
        if "reference" in modes:  # it loads while ours does (nothing is timed yet): a shorter run
            print(f"loading the reference package ({args.threads} thread(s)) ...", flush=True)
            sides.server = ReferenceServer(Path(args.reference), files, args.threads, work)
        if "reference-tuned" in modes:
            print(f"loading the reference package again, with the daemon's workers' malloc: {words} ...", flush=True)
            sides.tuned = ReferenceServer(Path(args.reference), files, args.threads, work, tuning, "reference-tuned")
        if {"sequential", "batched", "daemon"} & set(modes):
            # Loaded here for the daemon too: auto's probe runs once, and the daemon reads its choice.
            print(f"loading ours ({args.threads} thread(s) in this process) ...", flush=True)
            sides.model = load_model(files, args.device)
            ours = apply_precision(sides.model, args.precision, cache)
            # The one-at-a-time path decodes with the model's own lone decode (fp32).
            sides.precision.update(sequential=f"fp32/{ours.split('/')[1]}", batched=ours)
            run_sequential(sides.model, make_requests(1))  # warm-up, both paths
            run_batched(sides.model, make_requests(2))
        if "daemon" in modes:
            print("starting the daemon with its defaults ...", flush=True)
            sides.daemon = DaemonSide(voices, work / "daemon", args.precision, cache, args.allocator)
            sides.daemon.start()
            sides.daemon.serve(make_requests(2))  # warm-up: the first request's one-off costs
            sides.precision["daemon"] = sides.daemon.precision()
        for server in (sides.server, sides.tuned):
            if server is not None:
                server.wait_ready()
        print(f"loaded and warmed up ({time.perf_counter() - started:.0f} s so far)", flush=True)
        return measure(sides, modes, args.concurrency, max(1, args.repeat))
    finally:
        if sides.daemon is not None:
            sides.daemon.close()
        for server in (sides.server, sides.tuned):
            if server is not None:
                server.close()


def machine_words() -> str:
    """The CPU's model, cores and the flags that decide precisions (docs tables name them)."""
    from voxpipe.stages.engines.busy_board import usable_cores
    from voxpipe.stages.families.gpt_sovits.precision import cpu_flags, cpu_model

    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"})
    return f"{cpu_model() or 'unknown'}, {usable_cores()} cores, {' '.join(flags) or 'no AVX2'}"


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
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="voxpipe's decoder steps and vocoder (auto: the fastest within bounds on this machine, "
                             "probed once); int8 applies to the decoder alone")
    parser.add_argument("--allocator", choices=("auto", "system", "tcmalloc", "jemalloc"), default="system",
                        help="the daemon's worker.allocator (default: its default, system); 'reference-tuned' runs "
                             "the reference with the same malloc")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="which sides run (default: all); the ratios need the reference")


def run(args: argparse.Namespace) -> int:
    if "reference" in args.modes and not (Path(args.reference) / "GPT_SoVITS").is_dir():
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
    header = (f"Random-weight {args.size} v2 voice (voxpipe on {args.device}), {TOKENS_PER_PHONE} semantic tokens per "
              f"phone of each text, {args.threads} torch thread(s) for the reference and the in-process modes (the "
              f"daemon: its defaults), sampling {SAMPLING}, noise_scale {NOISE_SCALE}, median of "
              f"{max(1, args.repeat)} round(s). CPU: {machine_words()}.")
    lines = [header, "", *table(rows), "", *[f"- {r}" for r in ratio_lines(rows)]]
    print("\n".join(lines[2:]))
    Path(args.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(rows, Path(args.out + ".png"))
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "threads": args.threads, "precision": args.precision,
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
