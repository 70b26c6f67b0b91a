"""The fleet on a real local Ray cluster (a head and two more nodes on this machine):
three replicas, each owning a null-engine daemon, tiny random Piper voices.

A replica's daemon SIGKILLed while requests stream through it: every request still
gets exactly its audio (checked sample for sample against a reference), the ingress
reports resumes, and Serve replaces the replica. Routing by voice keeps a voice on the
replica that holds it, and spreads a busy one to a second replica; /ready and
/fleet/stats tell of every replica. A second application with autoscaling scales up under load.
Every Ray process is stopped at the end, whatever happened."""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a local Ray cluster, Serve and a daemon per replica

from ray import serve  # noqa: E402

from voxpipe.daemon.cluster.app import FleetArgs, build_from  # noqa: E402
from voxpipe.daemon.cluster.local import LocalCluster, free_port, run_app, start_serve  # noqa: E402
from voxpipe.daemon.cluster.node_daemon import daemon_pids  # noqa: E402
from voxpipe.daemon.cluster.voices import write_fleet_voices  # noqa: E402
from tests.daemon_proc import same_audio  # noqa: E402
from voxpipe.ipc.client import Client  # noqa: E402
from voxpipe.ipc.errors import VoxpipeError  # noqa: E402

LONG = ("This sentence opens a long request. It goes on for a while, clause after clause, so that it "
        "streams for a good second or two. Then another sentence follows it. And a last one ends it.")
GPU_MS = "120"  # emulated GPU time per chunk: requests stay in flight long enough to be cut


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.voices = write_fleet_voices(root / "voices", 3)
        self.cluster = LocalCluster(nodes=3)  # in the system temp dir: Ray's socket paths must stay short
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def daemon(self, work: str) -> dict[str, Any]:
        return {"engine": "null", "workers": 1, "voices_dir": str(self.root / "voices"),
                "work_root": str(self.root / work), "env": {"VOXPIPE_NULL_EMULATED_GPU_MS": GPU_MS}}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        fleet.cluster.start()
        start_serve(fleet.port)
        args = FleetArgs.parse({"daemon": fleet.daemon("main"), "replicas": 3, "voices_per_replica": 2,
                                "replica_resources": {"num_cpus": 0.5}, "max_ongoing_requests": 16,
                                "affinity_slack": 2})
        run_app(build_from(args), "voxpipe", "/", fleet.port)
        yield fleet
    finally:
        fleet.cluster.stop()
        assert fleet.cluster.pids() == [], "a Ray process outlived the cluster"
        assert daemon_pids(fleet.root / "main") == [], "a replica's daemon outlived the cluster"


def tts(url: str, voice: str, text: str = LONG, stream: bool = True, seed: int = 11,
        timeout: float = 120.0) -> tuple[int, bytes]:
    status, body, _ = tts_seeded(url, voice, text, stream, seed, timeout)
    return status, body


def tts_seeded(url: str, voice: str, text: str = LONG, stream: bool = True, seed: int = 11,
               timeout: float = 120.0) -> tuple[int, bytes, int | None]:
    """/tts's (status, body, the seed its X-Voxpipe-Seed header names); seed -1: none given."""
    query = urllib.parse.urlencode({"text": text, "text_lang": "en", "ref_audio_path": voice, "media_type": "raw",
                                    "streaming_mode": int(stream), "seed": seed})
    try:
        with urllib.request.urlopen(f"{url}/tts?{query}", timeout=timeout) as reply:
            named = reply.headers.get("X-Voxpipe-Seed")
            return reply.status, reply.read(), None if named is None else int(named)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), None


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def fleet_stats(fleet: Fleet) -> dict[str, Any]:
    return get_json(f"{fleet.url}/fleet/stats")[1]["fleet"]


def busiest_daemon(work_root: Path) -> tuple[int, int]:
    """(pid, active requests) of the replica daemon with the most requests in flight."""
    best = (0, -1)
    for pid_file in work_root.glob("vpr-*/daemon.pid"):
        try:
            with Client(f"ipc://{pid_file.parent / 'vp.sock'}", connect_timeout=2.0) as client:
                active = int(client.status(timeout=2.0).get("active_requests", 0))
        except (VoxpipeError, OSError):
            continue
        if active > best[1]:
            best = (int(pid_file.read_text()), active)
    return best


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_probes_and_both_route_families(fleet: Fleet) -> None:
    assert get_json(f"{fleet.url}/health") == (200, {"status": "ok"})
    status, ready = get_json(f"{fleet.url}/ready")
    assert status == 200 and ready["ready"] and set(fleet.voices) <= set(ready["voices"])
    body = json.dumps({"model": "tts-1", "voice": fleet.voices[0], "input": "Hello there.",
                       "response_format": "wav"}).encode()
    request = urllib.request.Request(f"{fleet.url}/v1/audio/speech", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        audio = reply.read()
    assert reply.status == 200 and audio[:4] == b"RIFF" and len(audio) > 1000
    status, error = tts(fleet.url, "nobody-has-this-voice", "Hello.")
    assert status == 400 and b"ref_audio_path" in error


def test_routing_by_voice_keeps_a_voice_where_it_is_held(fleet: Fleet) -> None:
    voice = fleet.voices[1]
    assert tts(fleet.url, voice, "Warm.")[0] == 200
    before = fleet_stats(fleet)
    for _ in range(6):
        assert tts(fleet.url, voice, "Again and again.")[0] == 200
    after = fleet_stats(fleet)
    assert after["attempts"] - before["attempts"] == 6
    assert after["hits"] - before["hits"] == 6, "every request should reach the replica holding its voice"


def test_ready_and_stats_tell_of_every_replica(fleet: Fleet) -> None:
    def all_ready() -> dict[str, Any] | None:
        status, body = get_json(f"{fleet.url}/ready")
        return body if status == 200 and body.get("ready_replicas") == 3 else None

    ready = wait_for(all_ready, 60, "/ready to count three ready replicas")
    assert ready["replicas"] == 3 and len(ready["by_replica"]) == 3
    assert set(fleet.voices) <= set(ready["voices"])
    for voice in fleet.voices:
        assert tts(fleet.url, voice, "Counted.")[0] == 200
    stats = get_json(f"{fleet.url}/fleet/stats")[1]
    assert len(stats["replicas"]) == 3
    counts = stats["fleet"]["replica_counts"]
    assert counts and all({"requests", "loads", "busy_s"} <= set(c) for c in counts.values())
    assert sum(c["requests"] for c in counts.values()) >= len(fleet.voices)
    assert all(c["busy_s"] > 0 for c in counts.values() if c["requests"])


def test_a_busy_voice_spreads_to_a_second_replica(fleet: Fleet) -> None:
    voice = fleet.voices[2]
    assert tts(fleet.url, voice, "Warm.")[0] == 200
    before = get_json(f"{fleet.url}/fleet/stats")[1]["decisions"]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:  # far past the fleet's affinity slack (2)
        answers = list(pool.map(lambda seed: tts(fleet.url, voice, LONG, True, seed), range(12)))
    assert all(status == 200 for status, _ in answers)
    after = get_json(f"{fleet.url}/fleet/stats")[1]["decisions"]
    assert after["spilled"] > before["spilled"], f"no request passed over the loaded holder: {after}"

    def holders() -> int:
        replicas = get_json(f"{fleet.url}/fleet/stats")[1]["replicas"] or []
        return sum(voice in r["held_voices"] for r in replicas)

    wait_for(lambda: holders() >= 2, 30, f"{voice} to be held by two replicas")


def test_killed_daemon_mid_request_loses_and_repeats_nothing(fleet: Fleet) -> None:
    work = fleet.root / "main"
    # Noise on; every other request names no seed (-1) and is checked by the one it reports.
    jobs = [(fleet.voices[i % 3], 100 + i if i % 2 else -1) for i in range(9)]
    before = fleet_stats(fleet)
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        running = [pool.submit(tts_seeded, fleet.url, voice, LONG, True, seed) for voice, seed in jobs]
        pid, active = wait_for(lambda: (lambda b: b if b[1] > 0 else None)(busiest_daemon(work)), 60,
                               "a replica daemon with requests in flight")
        os.kill(pid, signal.SIGKILL)
        answers = [job.result(timeout=180) for job in running]
    for (voice, asked), (status, audio, seed) in zip(jobs, answers):
        assert status == 200 and seed is not None and (asked < 0 or seed == asked)
        ref_status, reference = tts(fleet.url, voice, LONG, stream=False, seed=seed)
        assert ref_status == 200 and len(reference) > 0
        assert len(audio) == len(reference), f"{voice}/{seed}: {len(audio) - len(reference):+d} bytes"
        assert audio == reference, f"{voice}/{seed}: same length, different samples"
    after = fleet_stats(fleet)
    assert after["resumed"] - before["resumed"] >= 1, f"the kill (of {active} requests in flight) resumed nothing"
    assert after["failed"] == before["failed"]
    # Serve replaces the replica whose daemon died: three live daemons again.
    wait_for(lambda: len(daemon_pids(work)) == 3 and pid not in daemon_pids(work), 120,
             "Serve to replace the replica")


PIPER_TEXT = ("The committee met on a grey and windy morning by the harbour to decide at last what should be done "
              "about the old lighthouse that had stood empty on the rocks for as long as anyone could remember.")


def stream_killing_mid_chunk(url: str, work: Path, text: str) -> tuple[bytes, int, int]:
    """Stream /tts (joe, noise on, no seed) and SIGKILL the daemon of the replica serving it
    once the first audio arrives: the sentence is one chunk, decoded in windows, so the
    rest of it is still to come. (the audio, the seed the response names, the killed pid)."""
    query = urllib.parse.urlencode({"text": text, "text_lang": "en", "ref_audio_path": "joe", "media_type": "raw",
                                    "streaming_mode": 1, "first_chunk": "false"})
    connection = http.client.HTTPConnection(urllib.parse.urlparse(url).netloc, timeout=180)
    try:
        connection.request("GET", f"{urllib.parse.urlparse(url).path}/tts?{query}")
        reply = connection.getresponse()
        assert reply.status == 200, reply.read()
        seed = int(reply.headers["X-Voxpipe-Seed"])
        audio, killed = bytearray(), 0
        while part := reply.read1(1 << 16):
            audio += part
            if not killed:
                killed, active = busiest_daemon(work)
                assert active > 0, "the request finished before the kill: the test needs a longer sentence"
                os.kill(killed, signal.SIGKILL)
        return bytes(audio), seed, killed
    finally:
        connection.close()


def test_a_replica_killed_mid_chunk_with_noise_on_resumes_seamlessly(fleet: Fleet) -> None:
    """The real onnx engine and the bundled voice, noise on, no seed: the client's audio
    equals an undisturbed render with the seed the response names, within 4 int16 steps."""
    work = fleet.root / "piper"
    args = FleetArgs.parse({"daemon": {"engine": "onnx", "workers": 1, "work_root": str(work)}, "replicas": 2,
                            "replica_resources": {"num_cpus": 0.5}, "max_ongoing_requests": 4})
    try:
        run_app(build_from(args), "piper", "/piper", fleet.port)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}\n{serve_log_tail(fleet)}") from None
    try:
        url = f"{fleet.url}/piper"
        audio, seed, killed = stream_killing_mid_chunk(url, work, PIPER_TEXT)
        stats = get_json(f"{url}/fleet/stats")[1]["fleet"]
        assert stats["resumed"] >= 1 and stats["failed"] == 0, stats
        status, reference = tts(url, "joe", PIPER_TEXT, stream=True, seed=seed)
        assert status == 200
        got, want = np.frombuffer(audio, dtype=np.int16), np.frombuffer(reference, dtype=np.int16)
        assert len(got) == len(want), f"{len(got) - len(want):+d} samples"
        assert same_audio(got, want), f"differs by up to {int(np.abs(got.astype(np.int32) - want).max())} steps"
        assert killed not in daemon_pids(work)
    finally:
        serve.delete("piper")
    wait_for(lambda: not daemon_pids(work), 60, "the piper replicas' daemons to stop")


def serve_log_tail(fleet: Fleet, lines: int = 40) -> str:
    """The Serve controller's last log lines (why a deployment failed)."""
    logs = sorted(fleet.cluster.temp_dir.glob("session_*/logs/serve/controller_*.log"))
    if not logs:
        return "(no Serve controller log)"
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:])


def _running_replicas(app: str) -> int:
    deployment = serve.status().applications[app].deployments["VoiceReplica"]
    return int(deployment.replica_states.get("RUNNING", 0))


def _replicas_wanted(app: str) -> int:
    """Replicas starting or running: the autoscaler's decision shows here first."""
    deployment = serve.status().applications[app].deployments["VoiceReplica"]
    return sum(int(n) for state, n in deployment.replica_states.items() if state != "STOPPING")


def test_autoscaling_adds_a_replica_under_load(fleet: Fleet) -> None:
    args = FleetArgs.parse({"daemon": fleet.daemon("scaling"), "replica_resources": {"num_cpus": 0.5},
                            "max_ongoing_requests": 4,
                            "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                                            "upscale_delay_s": 1, "downscale_delay_s": 600}})
    try:
        run_app(build_from(args), "scaling", "/scaling", fleet.port)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}\n{serve_log_tail(fleet)}") from None
    try:
        assert _running_replicas("scaling") == 1
        url = f"{fleet.url}/scaling"
        stop = time.monotonic() + 300

        def keep_busy(voice: str) -> int:
            done = 0
            while time.monotonic() < stop and _running_replicas("scaling") < 2:
                assert tts(url, voice, LONG)[0] == 200
                done += 1
            return done

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            loads = [pool.submit(keep_busy, fleet.voices[i % 3]) for i in range(4)]
            wait_for(lambda: _replicas_wanted("scaling") >= 2, 90, "the autoscaler to add a replica")
            # Then its daemon starts: slow on a busy two-core machine, so a long limit.
            wait_for(lambda: _running_replicas("scaling") >= 2, 300, "the second replica to run")
            assert all(load.result(timeout=180) >= 1 for load in loads)
    finally:
        serve.delete("scaling")
