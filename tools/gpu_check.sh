#!/usr/bin/env bash
# The checks that skip without CUDA, in one run, and the GPT-SoVITS serving benchmark at
# full size with voxpipe on the GPU; prints one table at the end.
#
#   bash tools/gpu_check.sh            (VOXPIPE_VENV=DIR to use another venv than .venv)
#
# Without a CUDA device it says so and exits 0 having run nothing. TensorRT tests run only
# where tensorrt and pycuda are installed (they skip otherwise, and the table says so).
# Set GPU_CHECK_NO_BENCH=1 to skip the benchmark (several minutes: it writes a 1.3 GB voice).
set -uo pipefail
cd "$(dirname "$0")/.."

venv="${VOXPIPE_VENV:-.venv}"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
    echo "gpu_check: no venv at $venv (run: VOXPIPE_VENV=$venv bash tools/dev.sh setup)" >&2
    exit 2
fi
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch here; nothing to check (every GPU test skips on this machine)."
    exit 0
fi

out="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$out"' EXIT
"$python" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'

# name|test file|pytest -k expression ("" = the whole file)
checks=(
    "VITS CUDA graphs|tests/test_vits_cuda_graphs.py|"
    "VITS torch fp32/fp16/bf16 on CUDA|tests/test_torch_vits.py|engine_on_gpu"
    "TensorRT engine|tests/test_tensorrt_engine.py|"
    "GPT-SoVITS static decoder, graphs, fp16|tests/test_gsv_static_decoder.py|"
    "GPT-SoVITS batched = lone decode|tests/test_gsv_batched_equality.py|"
    "GPT-SoVITS windows batched on CUDA|tests/test_gsv_windowed.py|cuda"
)
status=0
for i in "${!checks[@]}"; do
    IFS='|' read -r name file expr <<<"${checks[$i]}"
    args=(-q -p no:cacheprovider -rs "$file" --junitxml "$out/check$i.xml")
    [ -n "$expr" ] && args+=(-k "$expr")
    echo "== $name ($file)"
    "$python" -m pytest "${args[@]}" 2>&1 | tail -n 15
    rc="${PIPESTATUS[0]}"
    [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || status=1  # 5: nothing selected
done

bench_rc="not run"
if [ "${GPU_CHECK_NO_BENCH:-0}" != "1" ]; then
    echo "== GPT-SoVITS serving benchmark, full size, voxpipe on cuda"
    if "$python" -m voxpipe.daemon.cli bench gsv --size full --device cuda --concurrency 1 4 16 \
            --out "$out/gsv-serve" --json "$out/gsv-serve.json"; then
        bench_rc="ok"
    else
        bench_rc="failed"
        status=1
    fi
fi

echo
echo "== GPU check summary"
"$python" - "$out" "$bench_rc" "${checks[@]}" <<'EOF'
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, bench, checks = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
print("| check | passed | failed | skipped |")
print("| --- | --- | --- | --- |")
for i, check in enumerate(checks):
    name = check.split("|")[0]
    xml = out / f"check{i}.xml"
    if not xml.is_file():
        print(f"| {name} | - | - | - (no report) |")
        continue
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    print(f"| {name} | {total - failed - skipped} | {failed} | {skipped} |")
print()
print(f"benchmark: {bench}")
report = out / "gsv-serve.json"
if report.is_file():
    rows = json.loads(report.read_text())["rows"]
    print("| concurrency | mode | requests/s | mean first audio (s) | p50 first audio (s) | corr |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        corr = "n/a" if r["first_audio_length_corr"] is None else f"{r['first_audio_length_corr']:+.3f}"
        print(f"| {r['concurrency']} | {r['mode']} | {r['requests_per_s']:.2f} | {r['first_audio_mean_s']:.3f} "
              f"| {r['first_audio_p50_s']:.3f} | {corr} |")
EOF
exit $status
