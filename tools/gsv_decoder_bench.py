"""Semantic decoder speed of the continuous batch: the per-sequence path against the
static-cache path (slots; CUDA graphs on CUDA), on a random-weight v2 voice.

    python tools/gsv_decoder_bench.py [--batch 4 16] [--device cpu] [--threads 2] [--repeats 3]
                                      [--seconds 2.0] [--capacity 2524] [--dtype float16]

For each batch size N, N requests (texts of different lengths, seed i for request i) join
a `ContinuousDecoder` together and are stepped until all are done. Timed: the decoding
steps (prefills included) and sampling. Not timed: text features (BERT), voice loading,
one warm-up run per mode (it captures the CUDA graphs). A random decoder rarely says EOS,
so a request decodes about 50 * --seconds tokens. Shows the fastest of --repeats runs per
mode. `--dtype` adds a static run in that precision (CUDA).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from voxpipe.stages.families.gpt_sovits.decoder.continuous import ContinuousDecoder, Sequence, sequence_for
from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice
from voxpipe.stages.families.gpt_sovits.decoder.static_decoder import DEFAULT_CAPACITY
from voxpipe.stages.families.gpt_sovits.decoder.t2s import Sampling
from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel, TextSegment, VoiceFiles
from voxpipe.stages.families.gpt_sovits.text import segments

TEXTS = ["你好。", "今天天气真不错。", "我们出去走走吧，好吗？", "Hello there, how are you today?",
         "这是一个比较长的句子，用来测试第一段音频的时间。",
         "Speech synthesis should start quickly, even for long sentences."]
PROMPT_TEXT = "你好，这是一段参考音频。"
SAMPLING = Sampling(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35)


@dataclass(frozen=True)
class Mode:
    name: str
    static: bool
    dtype: torch.dtype | None = None


def decode_all(seqs: list[Sequence], mode: Mode, capacity: int) -> tuple[float, int]:
    """Decode `seqs` together from scratch -> (seconds, tokens generated)."""
    decoder = ContinuousDecoder(len(seqs), static=mode.static, static_capacity=capacity, static_dtype=mode.dtype)
    for seq in seqs:
        decoder.add(seq)
    device = seqs[0].phones.device
    start = time.perf_counter()
    while decoder.running:
        decoder.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, sum(len(s.tokens) for s in seqs)


def model_segments(text: str, lang: str = "auto") -> list[TextSegment]:
    return [TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph)) for s in segments(text, lang)]


def load_voice(work: Path, seconds: float, device: str) -> GsvModel:
    voice = write_random_gsv_voice(work, "bench", "v2", seed=0, max_sec=seconds)
    model = GsvModel(VoiceFiles(next(voice.glob("*.ckpt")), next(voice.glob("*.pth")), work / ".gsv-pretrained",
                                voice / "reference.wav"), device)
    model.build_prompt(model_segments(PROMPT_TEXT, "zh"))
    return model


def requests(model: GsvModel, n: int) -> list[Sequence]:
    """One sequence per request, BERT run once per text; `fresh` copies them per run."""
    by_text = {t: sequence_for(model, t, "", model_segments(t), SAMPLING, 0) for t in TEXTS}
    return [replace(by_text[TEXTS[i % len(TEXTS)]], key=i, request_id=f"r{i}") for i in range(n)]


def fresh(seqs: list[Sequence]) -> list[Sequence]:
    return [replace(s, generator=torch.Generator(s.phones.device).manual_seed(s.key), tokens=[]) for s in seqs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="max_sec of the random GPT (tokens = 50 * this)")
    parser.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY, help="static cache columns per slot")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; the fastest is shown")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], help="also run the static path in this dtype")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    modes = [Mode("per-sequence", False), Mode("static", True)]
    if args.dtype:
        modes.append(Mode(f"static {args.dtype}", True, getattr(torch, args.dtype)))
    with tempfile.TemporaryDirectory() as work:
        model = load_voice(Path(work), args.seconds, args.device)
        print(f"device {args.device}, {args.threads} threads, static capacity {args.capacity}")
        for n in args.batch:
            seqs = requests(model, n)
            for mode in modes:
                decode_all(fresh(seqs), mode, args.capacity)  # warm-up
            best: dict[str, tuple[float, int]] = {}
            for _ in range(args.repeats):  # modes interleaved, so load from elsewhere hits all alike
                for mode in modes:
                    seconds, tokens = decode_all(fresh(seqs), mode, args.capacity)
                    best[mode.name] = min(best.get(mode.name, (seconds, tokens)), (seconds, tokens))
            for name, (seconds, tokens) in best.items():
                print(f"batch {n:3d}  {name:18s} {tokens:6d} tokens in {seconds:7.2f} s: "
                      f"{tokens / seconds:8.1f} tokens/s (best of {args.repeats})", flush=True)


if __name__ == "__main__":
    main()
