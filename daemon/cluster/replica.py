"""The fleet's worker deployment: each replica owns one voxpipe daemon on its node and
streams requests through it with the client library.

Voices are Serve's multiplexed models: the replica "loads" a voice when Serve routes a
request for it here, and reports the voices it holds, so the router (router.py) sends
the next request for that voice to it while it is not too busy. The daemon itself loads
the voice's model on first use and keeps it in its workers' voice caches.

A replica whose daemon dies answers its streams with LOST (the ingress resumes them
elsewhere) and fails its health check, so Serve replaces it."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, AsyncIterator

from ray import serve

from voxpipe.daemon.cluster.node_daemon import DaemonSettings, NodeDaemon
from voxpipe.ipc.client import AsyncClient, AudioFragment
from voxpipe.ipc.errors import VoxpipeError

log = logging.getLogger("ray.serve")  # Serve keeps this logger's lines in the replica's log

# What a replica's synthesize() yields (plain tuples: cheap to serialize):
AUDIO = "audio"  # (AUDIO, int16 samples, sample_rate)
RESULT = "result"  # (RESULT, {sample_rate, samples, fragments, chunks, timings, replica, hit})
ERROR = "error"  # (ERROR, code, message): the daemon refused or failed the request
LOST = "lost"  # (LOST, reason): this replica's daemon is gone; resume elsewhere

DEFAULT_VOICES_PER_REPLICA = 16
STATUS_MAX_AGE_S = 1.0


class BusyClock:
    """Wall seconds with at least one request in flight."""

    def __init__(self) -> None:
        self.ongoing = 0
        self._total = 0.0
        self._since = 0.0

    def start(self) -> None:
        if self.ongoing == 0:
            self._since = time.monotonic()
        self.ongoing += 1

    def stop(self) -> None:
        self.ongoing -= 1
        if self.ongoing == 0:
            self._total += time.monotonic() - self._since

    def seconds(self) -> float:
        return self._total + (time.monotonic() - self._since if self.ongoing else 0.0)


class ReplicaDown(RuntimeError):
    """This replica's daemon has exited; Serve is about to replace the replica."""


class VoiceReplica:
    async def __init__(self, daemon: dict[str, Any] | None = None,
                       voices_per_replica: int = DEFAULT_VOICES_PER_REPLICA) -> None:
        if not isinstance(voices_per_replica, int) or voices_per_replica < 1:
            raise ValueError(f"voices_per_replica: {voices_per_replica!r} must be a positive integer")
        self.settings = DaemonSettings.from_dict(daemon)
        self.name = serve.get_replica_context().replica_id.unique_id
        self.capacity = voices_per_replica
        self.held: OrderedDict[str, None] = OrderedDict()  # the voices this replica holds, LRU first
        self.counts = {"requests": 0, "hits": 0, "loads": 0, "lost": 0}
        self.busy = BusyClock()
        self.daemon = NodeDaemon(self.settings, self.name)
        await self.daemon.start()
        self.client = AsyncClient(self.daemon.endpoint)
        await self.client.connect()
        self._status: dict[str, Any] = await self.client.status()
        self._status_at = asyncio.get_running_loop().time()
        self.gone = asyncio.create_task(self.daemon.wait_exit())
        # Serve's multiplexing with this deployment's capacity (the decorator takes it at
        # definition time, so the loader is wrapped per replica; Serve keeps its state on
        # the function object, so it must be a plain function, not a bound method).
        async def voice_slot(voice: str) -> str:
            return voice  # Serve's "model" for a voice is a token: the daemon holds the real one

        self.load_voice = serve.multiplexed(max_num_models_per_replica=voices_per_replica)(voice_slot)

    def _touch(self, voice: str) -> bool:
        """Mark `voice` held (evicting the least recently used past capacity); True if it was."""
        hit = voice in self.held
        self.held[voice] = None
        self.held.move_to_end(voice)
        while len(self.held) > self.capacity:
            self.held.popitem(last=False)
        return hit

    async def _daemon_status(self, max_age_s: float = STATUS_MAX_AGE_S) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        if now - self._status_at > max_age_s:
            self._status = await self.client.status(timeout=2.0)
            self._status_at = now
        return self._status

    async def _known(self, voice: str) -> bool:
        if voice in self._status.get("voices", []):
            return True
        return voice in (await self._daemon_status(max_age_s=0.0)).get("voices", [])  # a voice added since

    def _lost_reason(self) -> str:
        return f"replica {self.name}: its daemon exited with {self.daemon.proc.returncode if self.daemon.proc else '?'}"

    async def synthesize(self, text: str, voice: str, options: dict[str, Any], request_id: str,
                         resume_samples: int = 0) -> AsyncIterator[tuple]:
        """Stream one request through this replica's daemon, starting `resume_samples`
        into its audio (a request another replica began)."""
        if self.gone.done():
            self.counts["lost"] += 1
            yield (LOST, self._lost_reason())
            return
        try:
            known = await self._known(voice)
        except (VoxpipeError, asyncio.TimeoutError):
            known = True  # let the daemon answer for itself
        if not known:
            yield (ERROR, "unknown_voice", f"unknown voice {voice!r}")
            return
        self.counts["requests"] += 1
        hit = self._touch(voice)
        self.counts["hits"] += hit
        self.counts["loads"] += not hit  # the daemon loads a voice its workers do not hold
        if serve.get_multiplexed_model_id():
            await self.load_voice(voice)  # tells Serve this replica now holds the voice
        stream = self.client.stream(text, voice, request_id=request_id, resume_samples=resume_samples, **options)
        self.busy.start()
        try:
            while True:
                step = asyncio.ensure_future(stream.__anext__())
                await asyncio.wait({step, self.gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    self.counts["lost"] += 1
                    yield (LOST, self._lost_reason())
                    return
                try:
                    item = step.result()
                except StopAsyncIteration:
                    yield (LOST, f"replica {self.name}: the daemon's stream ended without a result")
                    return
                except VoxpipeError as exc:
                    yield (ERROR, exc.code, exc.message)
                    return
                except TypeError as exc:  # an option the client library does not know
                    yield (ERROR, "bad_option", str(exc))
                    return
                if isinstance(item, AudioFragment):
                    yield (AUDIO, item.samples, item.sample_rate)
                else:
                    yield (RESULT, {"sample_rate": item.sample_rate, "samples": item.samples,
                                    "fragments": item.fragments, "chunks": item.chunks,
                                    "timings": dict(item.timings), "replica": self.name, "hit": hit,
                                    "replica_counts": self.replica_counts()})
                    return
        finally:
            self.busy.stop()
            await stream.aclose()  # cancels the request in the daemon if it is still running

    def replica_counts(self) -> dict[str, Any]:
        """Requests, voice-cache hits and loads, requests lost to a dead daemon, and the
        seconds this replica had a request in flight."""
        return {**self.counts, "busy_s": round(self.busy.seconds(), 3)}

    async def record_routing_stats(self) -> dict[str, Any]:
        """Serve polls this (RequestRouterConfig.request_routing_stats_period_s) and hands it
        to the router in the ingress: the fleet's /ready and /fleet/stats read it there.
        Only what changes seldom: Serve rebroadcasts the replica set whenever it changes."""
        if self.gone.done():
            return {"ready": False}
        try:
            return {"ready": bool((await self._daemon_status()).get("ready"))}
        except (VoxpipeError, asyncio.TimeoutError):
            return {"ready": False}

    async def status(self) -> dict[str, Any]:
        """The daemon's status, with this replica's name, held voices and counts."""
        if self.gone.done():
            raise ReplicaDown(self._lost_reason())  # the ingress asks another replica
        status = dict(await self._daemon_status())
        status.update(replica=self.name, held_voices=list(self.held), replica_counts=self.replica_counts())
        return status

    async def check_health(self) -> None:
        """Serve's health probe: a replica without its daemon is replaced."""
        if self.gone.done():
            raise RuntimeError(self._lost_reason())

    async def __del__(self) -> None:
        self.gone.cancel()
        try:
            await self.client.close()
        finally:
            self.daemon.stop()
