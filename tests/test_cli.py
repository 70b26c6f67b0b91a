"""The `voxpipe` command as a user meets it, run as a real subprocess: every bad input is
one clear line on stderr and a non-zero exit (never a traceback), a reader that stops
reading ends the command quietly, and `say` writes each format to files, devices and
standard output."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.daemon_proc import ROOT, Daemon, longform, same_audio

SIGPIPE_EXIT = 128 + 13
SENTENCE = "The quick brown fox jumps over the lazy dog."
QUIET = ["--noise-scale", "0", "--noise-w", "0"]


def voxpipe(*args: str, stdin: bytes | None = None, stdout: int | None = subprocess.PIPE,
            timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", *args], cwd=ROOT, input=stdin,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=timeout)


def one_clear_line(result: subprocess.CompletedProcess) -> str:
    """The command failed with exactly one line on stderr and no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode != 0, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr.strip()


@pytest.fixture(scope="module")
def daemon(shared_daemon):
    return shared_daemon


@pytest.fixture
def files(tmp_path) -> Path:
    (tmp_path / "latin1.txt").write_bytes("Un café au lait, s'il vous plaît.\n".encode("latin-1"))
    (tmp_path / "ok.txt").write_text(SENTENCE + "\n", encoding="utf-8")
    return tmp_path


def wait_idle(daemon: Daemon, timeout: float = 30.0) -> None:
    with daemon.client() as client:
        deadline = time.monotonic() + timeout
        while (status := client.status())["active_requests"] or status["queues"]["queued"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.1)


# ---- bad input: one line, non-zero exit, before any daemon is needed -----------------------------------
@pytest.mark.parametrize("args, expected", [
    (["say", "-f", "{dir}/latin1.txt", "-o", "{dir}/x.wav"], "latin1.txt: not UTF-8 text (byte 0xe9 on line 1)"),
    (["submit", "{dir}/latin1.txt", "-d", "{dir}/out"], "latin1.txt: not UTF-8 text (byte 0xe9 on line 1)"),
    (["say", "-f", "{dir}/nosuch.txt", "-o", "{dir}/x.wav"], "nosuch.txt: no such file"),
    (["submit", "{dir}/nosuch.txt"], "nosuch.txt: no such file"),
    (["say", "-f", "{dir}", "-o", "{dir}/x.wav"], "is a directory"),
    (["say", "-o", "/nonexistent/dir/x.wav", "Hello."], "/nonexistent/dir/x.wav: no such directory"),
    (["say", "-o", "{dir}", "Hello."], "is a directory"),
    (["say", "-o", "{dir}/x.mp3", "Hello."], "cannot write .mp3 files"),
    (["submit", "{dir}/ok.txt", "-d", "{dir}/ok.txt/sub"], "cannot create the output directory"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(files, args, expected):
    line = one_clear_line(voxpipe(*(a.replace("{dir}", str(files)) for a in args)))
    assert line.startswith(f"voxpipe {args[0]}: ") and expected in line, line


def test_non_utf8_standard_input_is_one_line(files):
    line = one_clear_line(voxpipe("say", "-o", str(files / "x.wav"), stdin="café".encode("latin-1")))
    assert line.startswith("voxpipe say: standard input: not UTF-8 text")


def test_config_check_names_a_missing_file_once(tmp_path):
    line = one_clear_line(voxpipe("config", "check", str(tmp_path / "nosuch.toml")))
    assert line == f"{tmp_path / 'nosuch.toml'}: no such config file"


@pytest.mark.parametrize("text, key", [("[worker]\nthreds = 1\n", "threds"), (b"x = '\xe9'\n", "not UTF-8")])
def test_config_check_names_the_file_once_for_every_error(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = one_clear_line(voxpipe("config", "check", str(path)))
    assert line.startswith(f"{path}: ") and line.count(str(path)) == 1 and key in line, line


# ---- a reader that stops: quiet, like Unix tools --------------------------------------------------------
def closed_pipe() -> int:
    """The write end of a pipe whose read end is already closed: every write fails (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.e2e
@pytest.mark.parametrize("command", [["status"], ["status", "--json"]])
def test_status_into_a_closed_pipe_exits_quietly(daemon, command):
    write_end = closed_pipe()
    try:
        result = voxpipe(*command, "--endpoint", daemon.endpoint, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == SIGPIPE_EXIT and result.stderr == b""


@pytest.mark.e2e
def test_say_stream_into_head_exits_quietly_and_cancels(daemon, tmp_path):
    """`say --stream -o - | head -c 100`: the reader takes 100 bytes and leaves."""
    text = tmp_path / "long.txt"
    text.write_text(longform(), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "voxpipe.daemon.cli", "say", "-f", str(text), "--stream",
                             "-o", "-", "--endpoint", daemon.endpoint], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and len(proc.stdout.read(100)) == 100
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == SIGPIPE_EXIT and stderr == b"", stderr.decode()
    wait_idle(daemon)  # the request was cancelled, not left running


# ---- formats and outputs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(daemon, tmp_path_factory) -> np.ndarray:
    """The sentence as int16 samples, noise off, written as .wav by extension."""
    path = tmp_path_factory.mktemp("ref") / "ref.wav"
    result = voxpipe("say", *QUIET, "--endpoint", daemon.endpoint, "-o", str(path), SENTENCE)
    assert result.returncode == 0, result.stderr.decode()
    assert soundfile.info(str(path)).format == "WAV"
    return soundfile.read(str(path), dtype="int16")[0]


@pytest.mark.e2e
@pytest.mark.parametrize("name, fmt, major", [
    ("x.flac", None, "FLAC"), ("x.ogg", None, "OGG"), ("noextension", None, "WAV"),
    ("x.bin", "flac", "FLAC"), ("x.wav", "flac", "FLAC"),
])
def test_format_by_extension_or_flag(daemon, reference, tmp_path, name, fmt, major):
    path = tmp_path / name
    result = voxpipe("say", *QUIET, "--endpoint", daemon.endpoint, "-o", str(path),
                     *(["--format", fmt] if fmt else []), SENTENCE)
    assert result.returncode == 0, result.stderr.decode()
    info = soundfile.info(str(path))
    assert info.format == major and info.frames == pytest.approx(len(reference), abs=2048 if major == "OGG" else 0)


@pytest.mark.e2e
def test_pcm_file_holds_the_raw_samples(daemon, reference, tmp_path):
    path = tmp_path / "x.pcm"
    assert voxpipe("say", *QUIET, "--endpoint", daemon.endpoint, "-o", str(path), SENTENCE).returncode == 0
    assert same_audio(np.fromfile(path, "<i2"), reference)


@pytest.mark.e2e
def test_dev_null_is_accepted(daemon):
    result = voxpipe("say", "--endpoint", daemon.endpoint, "-o", os.devnull, SENTENCE)
    assert result.returncode == 0, result.stderr.decode()
    assert os.devnull in result.stderr.decode()  # the summary line


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_stdout_in_each_streamable_format(daemon, reference, fmt):
    result = voxpipe("say", *QUIET, "--endpoint", daemon.endpoint, "-o", "-", "--format", fmt, SENTENCE)
    assert result.returncode == 0, result.stderr.decode()
    data = result.stdout
    if fmt == "wav":
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
        data = data[44:]
    assert same_audio(np.frombuffer(data, "<i2"), reference)


# ---- start-up: heavy modules load only when a command runs -----------------------------------------------
def imported_modules(*args: str) -> set[str]:
    """The modules a `python -X importtime` run imports (its stderr lists every one)."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("command", ["say", "submit", "status"])
def test_help_and_argument_errors_import_no_heavy_module(command):
    for args in (["--help"], ["--no-such-option"]):
        loaded = imported_modules("-m", "voxpipe.daemon.cli", command, *args)
        assert "argparse" in loaded  # the listing worked
        assert not loaded & {"numpy", "soundfile", "zmq", "asyncio", "voxpipe.ipc.client"}, (args, loaded)


def test_the_sync_client_sends_before_numpy_or_asyncio_load():
    loaded = imported_modules("-c", "import voxpipe.ipc.client")
    assert "zmq" in loaded and not loaded & {"numpy", "asyncio", "zmq.asyncio", "zmq.auth"}
