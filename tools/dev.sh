#!/usr/bin/env bash
# Set-up on a fresh machine plus the two everyday jobs:
#   bash tools/dev.sh demo   start the daemon on the bundled voice, write sample.wav, stop
#   bash tools/dev.sh test   run the whole test suite
# Both create ./.venv and install voxpipe into it (editable) when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VOXPIPE_VENV:-.venv}"
python="$venv/bin/python"

system_packages() {
    # Tools some tests use (systemd-analyze for the unit file, Chromium for the HTTP
    # page's browser test, tcmalloc for the workers' allocator). Installed where we may
    # (root with apt, as in CI); elsewhere those tests skip and say why.
    local missing=()
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    command -v chromium >/dev/null || missing+=(chromium)
    # tcmalloc: a workers' malloc to choose (worker.allocator), tested where installed.
    ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 || missing+=(libtcmalloc-minimal4)
    if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}") >/dev/null 2>&1 || echo "note: could not install ${missing[*]}" >&2
    fi
}

setup() {
    if [ ! -x "$python" ]; then
        python3 -m venv "$venv"
    fi
    # Reinstall only when the dependency declarations change.
    stamp="$venv/.voxpipe-deps"
    want="$(cat pyproject.toml tools/constraints.txt tools/dev.sh | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        # -qq: pip's notes about this machine's package sources are noise to a newcomer;
        # errors still print, and a short line says what is happening instead.
        echo "voxpipe: installing into $venv (first run: about a minute) ..." >&2
        "$python" -m pip install -qq --upgrade pip
        "$python" -m pip install -qq -c tools/constraints.txt -e ".[test,torch,http,bench,gpt-sovits,gsv-languages,cluster]"
        # NVIDIA's BigVGAN, the live oracle of the v3 vocoder (tests/test_bigvgan_oracle.py).
        # --no-deps: its requirements are its training stack (tensorboard, pesq, auraloss);
        # importing it needs only librosa (the test extra) and huggingface_hub (transformers').
        "$python" -m pip install -qq -c tools/constraints.txt --no-deps bigvgan==2.4.1
        # The GPT-SoVITS reference the exactness tests compare against. It goes in its own
        # folder, run in a subprocess: its top-level modules (tools, text, module, AR)
        # would shadow ours inside the venv. --no-deps: its full requirements pull a CUDA
        # torch and gradio.
        "$python" -m pip install -qq --no-deps --upgrade --target .cache/gsv-reference \
            gpt-sovits-cpufast==0.1.0 torchmetrics lightning-utilities einops
        echo "$want" >"$stamp"
        echo "voxpipe: installed" >&2
    fi
}

case "${1:-}" in
    demo)
        shift
        setup
        exec "$python" tools/demo.py "$@"
        ;;
    test)
        shift
        system_packages
        setup
        # Two test files at a time (one per core of a small CI machine): most tests wait on
        # daemons starting, heartbeats and sockets, which another file's work can fill.
        # A file's tests stay in one process, so its module-scoped daemon is started once.
        exec "$python" -m pytest -q -n "${VOXPIPE_TEST_PROCESSES:-2}" --dist loadfile "$@"
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: bash tools/dev.sh demo|test|setup [args]" >&2
        exit 2
        ;;
esac
