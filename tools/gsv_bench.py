"""GPT-SoVITS speed, ours beside the reference implementation, in one run.

    python tools/gsv_bench.py [--reference .cache/gsv-reference] [--seconds 4] [--threads 1] [--repeat 3]

Writes a small random-weight v2 voice, then for ours and for the reference package
(gpt-sovits-cpufast 0.1.0, driven by voxpipe.bench.gsv_reference_runner in its own process)
times the semantic decoder (tokens/s; greedy decoding runs to early_stop_num tokens on a
random model) and the whole synthesis (real-time factor: compute seconds per second of
audio). Median of --repeat runs each, same thread count on both sides.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET_TEXT = "你好，这是一个语音合成的速度测试。Hello, this is a speed test."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=str(ROOT / ".cache" / "gsv-reference"))
    parser.add_argument("--seconds", type=float, default=4.0, help="max_sec of the random GPT (tokens = 50 * this)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice
    from voxpipe.stages.families.gpt_sovits.decoder.t2s import Sampling
    from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel, TextSegment, VoiceFiles
    from voxpipe.stages.families.gpt_sovits.text import segments

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    work = Path(tempfile.mkdtemp(prefix="gsv-bench-"))
    voice = write_random_gsv_voice(work, "bench", "v2", seed=0, max_sec=args.seconds)
    files = VoiceFiles(next(voice.glob("*.ckpt")), next(voice.glob("*.pth")), work / ".gsv-pretrained",
                       voice / "reference.wav")
    model = GsvModel(files)
    as_model = [TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph))
                for s in segments("你好，这是一段参考音频。", "zh")]
    target = [TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph)) for s in segments(TARGET_TEXT)]
    model.build_prompt(as_model)
    greedy = Sampling(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
    ids = [i for s in target for i in s.phone_ids]

    def seg_json(s: TextSegment) -> dict:
        return {"lang": s.lang, "norm_text": s.norm_text, "phone_ids": list(s.phone_ids), "word2ph": list(s.word2ph)}

    case = {"gpt": str(files.gpt), "sovits": str(files.sovits), "pretrained": str(files.pretrained),
            "ref_audio": str(files.ref_audio), "prompt": [seg_json(s) for s in as_model],
            "target": [seg_json(s) for s in target], "noise_scale": 0.0, "threads": args.threads,
            "sampling": {"top_k": 1, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0}}

    # Runs alternate between ours and the reference so that both see the same machine load;
    # the first run of each warms up and is not counted.
    ours_t2s, ours_total, ref_t2s, ref_total = [], [], [], []
    for i in range(args.repeat + 1):
        started = time.perf_counter()
        decoded = model.semantic_tokens(target, greedy, seed=0)
        t2s_s = time.perf_counter() - started
        audio = model.render(decoded.tokens, ids, noise_scale=0.0)
        ours_t2s.append(t2s_s)
        ours_total.append(time.perf_counter() - started)
        (work / "cases.json").write_text(json.dumps([{**case, "output": str(work / "ref.npz")}]), encoding="utf-8")
        run = subprocess.run([sys.executable, "-m", "voxpipe.bench.gsv_reference_runner", args.reference,
                              str(work / "cases.json")], capture_output=True, text=True, cwd=work)
        if run.returncode != 0:
            print(f"reference failed (is it installed at {args.reference}?):\n{run.stderr[-2000:]}", file=sys.stderr)
            return 1
        ref = np.load(work / "ref.npz")
        ref_t2s.append(float(ref["t2s_s"]))
        ref_total.append(float(ref["t2s_s"]) + float(ref["decode_s"]))
    ours_t2s, ours_total, ref_t2s, ref_total = ours_t2s[1:], ours_total[1:], ref_t2s[1:], ref_total[1:]
    tokens, seconds = len(decoded.tokens), len(audio) / model.sample_rate
    # Both decode the same number of steps; the reference returns one token fewer (it
    # drops its first token when EOS never comes), so count its steps, not its output.
    ref_tokens = len(ref["tokens"]) + (0 if decoded.stopped_by_eos else 1)

    rows = [("ours", tokens / statistics.median(ours_t2s), statistics.median(ours_total) / seconds),
            ("reference", ref_tokens / statistics.median(ref_t2s), statistics.median(ref_total) / seconds)]
    print(f"random v2 voice, {tokens} semantic tokens -> {seconds:.2f} s of 32 kHz audio, {args.threads} thread(s), "
          f"median of {args.repeat}")
    print(f"{'':10} {'T2S tokens/s':>13} {'RTF':>8}")
    for name, tps, rtf in rows:
        print(f"{name:10} {tps:13.1f} {rtf:8.3f}")
    print(f"{'ratio':10} {rows[0][1] / rows[1][1]:12.2f}x {rows[1][2] / rows[0][2]:7.2f}x  (ours vs reference; >1 = ours faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
