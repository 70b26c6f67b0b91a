"""The systemd unit passes `systemd-analyze verify`, and the daemon speaks the notify
protocol the unit relies on: READY=1 after the preload, WATCHDOG=1 only while every
stage is healthy, STATUS= lines, STOPPING=1 on SIGTERM; SIGHUP (ExecReload) rescans the
voices; the client socket gets `socket_group` and mode 0660."""
from __future__ import annotations

import grp
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from voxpipe.stages.families.piper.spec import bundled_voice
from tests.daemon_proc import ROOT, Daemon

UNIT = ROOT / "systemd" / "voxpipe.service"
INSTALLED_EXECUTABLE = "/opt/voxpipe/bin/voxpipe"
WATCHDOG_USEC = 600_000  # pings every 0.3 s


# ---- the unit file ------------------------------------------------------------------------------

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, val = line.partition("=")
            current.setdefault(key.strip(), []).append(val.strip())
    return sections


def seconds(value: str) -> float:
    total, units = 0.0, {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 1e-3}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install -y systemd)")
    return path


def verify(analyze: str, unit_text: str, directory: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` on a copy whose ExecStart names an executable that exists
    here (verify checks that it does); everything else is the file as shipped."""
    executable = shutil.which("voxpipe") or str(Path(sys.executable).with_name("voxpipe"))
    if not os.access(executable, os.X_OK):
        executable = sys.executable
    copy = directory / "voxpipe.service"
    copy.write_text(unit_text.replace(INSTALLED_EXECUTABLE, executable))
    return subprocess.run([analyze, "verify", "--man=no", str(copy)], cwd=directory, capture_output=True,
                          text=True, timeout=120)


def test_unit_passes_systemd_analyze_verify(analyze, tmp_path):
    text = UNIT.read_text()
    assert INSTALLED_EXECUTABLE in text
    result = verify(analyze, text, tmp_path)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "voxpipe.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_verify_would_catch_a_bad_unit(analyze, tmp_path):
    broken = UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs=")
    result = verify(analyze, broken, tmp_path)
    assert "WatchdogSecs" in result.stderr


def test_unit_hardening_exposure(analyze, tmp_path):
    verify(analyze, UNIT.read_text(), tmp_path)  # writes the runnable copy
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(tmp_path / "voxpipe.service")],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for voxpipe\.service: ([\d.]+)", result.stdout + result.stderr)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot score a unit offline: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 3.0


def test_unit_settings():
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]

    def one(key: str) -> str:
        assert len(service.get(key, [])) == 1, f"{key}= should be set once"
        return service[key][0]

    assert one("Type") == "notify"
    assert seconds(one("WatchdogSec")) >= 30
    assert one("Restart") == "on-failure"
    assert one("KillMode") == "mixed"
    assert one("KillSignal") == "SIGTERM"
    assert seconds(one("TimeoutStopSec")) > 30  # the default drain timeout, plus stopping the stages
    assert one("RuntimeDirectory") == "voxpipe" and one("StateDirectory") == "voxpipe"
    assert re.search(r"--endpoint ipc://%t/voxpipe/\S+\.sock", one("ExecStart"))  # inside RuntimeDirectory
    assert re.fullmatch(r"\S*kill -HUP \$MAINPID", one("ExecReload"))
    for key, expected in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                          ("PrivateTmp", "yes"), ("DevicePolicy", "closed")]:
        assert one(key) == expected, key
    assert any("nvidia" in entry for entry in service.get("DeviceAllow", []))
    assert "DynamicUser" not in service  # it implies RemoveIPC=yes
    assert service.get("RemoveIPC", ["no"]) == ["no"] and service.get("PrivateDevices", ["no"]) == ["no"]
    assert one("User") and one("Group")
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


# ---- the notify protocol ----------------------------------------------------------------------------

class NotifyListener:
    """A datagram socket standing in for systemd's: records every message in order."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="vpn-")  # AF_UNIX paths are short
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            with self._lock:
                self.messages.extend(data.decode().split("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate, timeout: float, what: str) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            time.sleep(0.05)
        raise AssertionError(f"no {what} in {timeout} s; got {self.snapshot()[-20:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def other_group() -> grp.struct_group | None:
    """A group that is not the test user's own, to see the socket handed over to it."""
    return next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), None)


@pytest.fixture(scope="module")
def notified(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("notify")
    (workdir / "voices").mkdir()
    group = other_group()
    listener = NotifyListener()
    config: dict[str, object] = dict(voices_dir=str(workdir / "voices"))
    if group is not None:
        config["socket_group"] = group.gr_name
    daemon = Daemon(workdir, workers=1, **config)
    daemon.group = group
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOTIFY_SOCKET", listener.path)
        mp.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
        mp.delenv("WATCHDOG_PID", raising=False)
        daemon.start()
    try:
        yield daemon, listener
    finally:
        daemon.stop()
        listener.close()


@pytest.mark.e2e
@pytest.mark.slow
def test_ready_after_preload_then_watchdog_pings(notified):
    daemon, listener = notified
    messages = listener.wait_for(lambda m: m.count("WATCHDOG=1") >= 3, 30, "watchdog pings")
    assert messages.count("READY=1") == 1
    ready_at = messages.index("READY=1")
    assert "WATCHDOG=1" not in messages[:ready_at]  # the watchdog starts once start-up is done
    assert any(m.startswith("STATUS=starting") for m in messages[:ready_at])
    assert messages[ready_at + 1].startswith("STATUS=serving on ")
    with daemon.client() as client:
        status = client.status()
    workers = [p for p in status["processes"] if p["role"] == "worker"]
    # READY means preloaded: every worker holds the preload voice it loaded (a miss) before it.
    assert workers and all(w["ready"] and "joe" in w["stats"]["voices"] and w["stats"]["cache"]["misses"] >= 1
                           for w in workers)


@pytest.mark.e2e
@pytest.mark.slow
def test_client_socket_belongs_to_the_socket_group(notified):
    daemon, _ = notified
    if daemon.group is None:
        pytest.skip("no second group on this machine to hand the socket to")
    info = os.stat(daemon.endpoint[len("ipc://"):])
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == daemon.group.gr_gid


@pytest.mark.e2e
@pytest.mark.slow
def test_sighup_rescans_voices(notified):
    daemon, _ = notified
    model, config = bundled_voice().files
    extra = daemon.workdir / "voices" / "joe2"
    extra.mkdir()
    (extra / "joe2.onnx").symlink_to(model)
    (extra / "joe2.onnx.json").symlink_to(config)
    with daemon.client() as client:
        assert "joe2" not in client.status()["voices"]
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "joe2" not in client.status()["voices"]:
            assert time.monotonic() < deadline, "SIGHUP did not rescan the voices"
            time.sleep(0.2)
        assert client.synthesize("A new voice.", "joe2").duration > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_watchdog_stops_while_a_stage_is_wedged(notified):
    daemon, listener = notified
    with daemon.client() as client:
        worker = next(p for p in client.status()["processes"] if p["name"] == "w0")
    start = len(listener.snapshot())
    os.kill(worker["pid"], signal.SIGSTOP)  # heartbeats stop; the supervisor must notice and replace it
    try:
        listener.wait_for(lambda m: any(x.startswith("STATUS=restarting w0") for x in m[start:]), 30,
                          "restart status")
        messages = listener.wait_for(
            lambda m: (r := next(i for i in range(start, len(m)) if m[i].startswith("STATUS=restarting w0")))
            and any(x.startswith("STATUS=serving") for x in m[r:]) and m[r:].count("WATCHDOG=1") >= 2,
            90, "recovery and pings after it")
    finally:
        try:
            os.kill(worker["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass  # replaced (SIGKILLed) as it should be
    restarting = next(i for i in range(start, len(messages)) if messages[i].startswith("STATUS=restarting w0"))
    serving = next(i for i in range(restarting, len(messages)) if messages[i].startswith("STATUS=serving"))
    assert "WATCHDOG=1" in messages[start:restarting]  # it was pinging before the wedge was noticed
    assert "WATCHDOG=1" not in messages[restarting:serving]  # and not while the worker was down
    assert "WATCHDOG=1" in messages[serving:]
    with daemon.client() as client:
        assert client.synthesize("Back again.", "joe").duration > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_reports_stopping(notified):
    daemon, listener = notified
    assert daemon.stop() == 0
    messages = listener.snapshot()
    stopping = messages.index("STOPPING=1")
    assert messages[stopping + 1] == "STATUS=draining"
