"""GPT-SoVITS serving speed: continuous batching + windowed audio against one request at
a time (as GPT-SoVITS's api_v2 serves), in one run, on a random-weight v2 voice.

    python -m tools.gsv_serve_bench [--concurrency 1 4 16] [--threads 2] [--out gsv-serve]

For each concurrency N, N requests of different lengths arrive together. "batched" runs
them through StreamRunner (the worker's GPT-SoVITS path); "sequential" decodes and renders
them one after another with the plain decoder (what the reference package does per
request). Prints requests/s, mean time to first audio, the correlation of first-audio
time with text length, and the ratios; writes OUT.md (table) and OUT.png (plot).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

TEXTS = ["你好。", "今天天气真不错。", "我们出去走走吧，好吗？", "Hello there, how are you today?",
         "这是一个比较长的句子，用来测试第一段音频的时间。", "Speech synthesis should start quickly, even for long sentences."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="max_sec of the random GPT (tokens = 50 * this)")
    parser.add_argument("--out", default="gsv-serve")
    args = parser.parse_args(argv)

    import torch

    from stages.engines.base import SynthesisItem
    from stages.engines.gpt_sovits.serving import StreamRunner
    from stages.engines.gpt_sovits.t2s import Sampling
    from tests.test_gsv_continuous import load_random_voice, model_segments

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    model = load_random_voice(Path(tempfile.mkdtemp(prefix="gsv-serve-")), "bench", 0, args.seconds)
    voice = SimpleNamespace(model=model, spec=SimpleNamespace(name="bench"))
    sampling = Sampling(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35)

    def requests(n: int) -> list[tuple[str, list]]:
        return [(TEXTS[i % len(TEXTS)], model_segments(TEXTS[i % len(TEXTS)])) for i in range(n)]

    def sequential(reqs) -> tuple[float, list[float]]:
        start, first = time.perf_counter(), []
        for i, (_, segs) in enumerate(reqs):
            decoded = model.semantic_tokens(segs, sampling, seed=i)
            model.render(decoded.tokens, [p for s in segs for p in s.phone_ids], 0.5, 1.0, i)
            first.append(time.perf_counter() - start)  # one piece: first audio = all of it
        return time.perf_counter() - start, first

    def batched(reqs) -> tuple[float, list[float]]:
        runner = StreamRunner(max_sequences=len(reqs))
        start, first = time.perf_counter(), {}
        for i, (_, segs) in enumerate(reqs):
            chunk = SimpleNamespace(request_id=f"r{i}", seq=0, deadline=float("inf"), submitted_at=0.0)
            ids = np.asarray([p for s in segs for p in s.phone_ids], dtype=np.int64)
            item = SynthesisItem(ids, 0.5, 1.0, 0.8, 0, i, text_segments=tuple(
                (s.lang, s.norm_text, len(s.phone_ids), s.word2ph) for s in segs), top_k=sampling.top_k,
                top_p=sampling.top_p, temperature=sampling.temperature, repetition_penalty=sampling.repetition_penalty)
            runner.admit(voice, chunk, item)
        while len(runner):
            for piece in runner.step().pieces:
                first.setdefault(piece.chunk.request_id, time.perf_counter() - start)
        return time.perf_counter() - start, [first[f"r{i}"] for i in range(len(reqs))]

    batched(requests(2))  # warm up
    rows, corr_rows = [], []
    for n in args.concurrency:
        reqs = requests(n)
        lengths = [len(t) for t, _ in reqs]
        for name, fn in (("sequential", sequential), ("batched", batched)):
            total, firsts = fn(reqs)
            corr = float(np.corrcoef(lengths, firsts)[0, 1]) if n > 2 and np.std(firsts) > 0 else float("nan")
            rows.append((n, name, n / total, float(np.mean(firsts)), corr))
            print(f"N={n:3d} {name:10} {n / total:7.2f} req/s  first audio {np.mean(firsts):6.2f} s  corr {corr:+.3f}",
                  flush=True)
    lines = ["| concurrency | mode | requests/s | mean first audio (s) | corr(first audio, text length) |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {m} | {r:.2f} | {f:.2f} | {c:+.3f} |" for n, m, r, f, c in rows]
    for n in args.concurrency:
        seq_row = next(r for r in rows if r[0] == n and r[1] == "sequential")
        bat_row = next(r for r in rows if r[0] == n and r[1] == "batched")
        ratio = f"N={n}: {bat_row[2] / seq_row[2]:.2f}x requests/s, first audio {seq_row[3] / bat_row[3]:.2f}x sooner"
        print(ratio)
        lines.append(f"\n{ratio}")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in ("sequential", "batched"):
        sel = [r for r in rows if r[1] == mode]
        axes[0].plot([r[0] for r in sel], [r[2] for r in sel], marker="o", label=mode)
        axes[1].plot([r[0] for r in sel], [r[3] for r in sel], marker="o", label=mode)
    axes[0].set(xlabel="concurrent requests", ylabel="requests/s", xscale="log")
    axes[1].set(xlabel="concurrent requests", ylabel="mean time to first audio (s)", xscale="log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=100)
    print(f"wrote {args.out}.md and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
