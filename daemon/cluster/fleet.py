"""The ingress's gateway: the HTTP routes' interface (stages/http/gateway.py) over a
fleet of replicas instead of one daemon.

Each request goes to a replica through Serve's handle, routed by voice (the voice as
the multiplexed model id) or, for comparison, at random. If the replica or its daemon
dies mid-stream, the request is sent again, to whichever replica Serve picks next, with
the number of samples already delivered: the new daemon skips them, and since the
request's seed is fixed when it first starts, the samples that follow are the ones the
first daemon would have made. Nothing is lost and nothing is repeated."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator

from voxpipe.ipc.client import AudioFragment
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.messages import Result
from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import GatewayBase, Limits, SpeechRequest
from voxpipe.daemon.cluster.replica import AUDIO, ERROR, LOST, RESULT

log = logging.getLogger("ray.serve")  # Serve keeps this logger's lines in the replica's log

ROUTINGS = ("voice", "random")
STATUS_MAX_AGE_S = 0.25


class ReplicaLost(Exception):
    """The replica serving a request, or its daemon, went away mid-request."""


@dataclass
class FleetCounts:
    """What the ingress saw of the fleet (GET /fleet/stats)."""

    attempts: int = 0  # requests sent to a replica (a resumed request counts again)
    hits: int = 0  # attempts whose replica already held the voice
    resumed: int = 0  # attempts that continued a request another replica began
    failed: int = 0  # requests given up after max_attempts
    by_replica: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        rate = self.hits / self.attempts if self.attempts else None
        return {"attempts": self.attempts, "hits": self.hits, "hit_rate": rate, "resumed": self.resumed,
                "failed": self.failed, "by_replica": dict(self.by_replica)}


def request_seed(request_id: str) -> int:
    """A seed fixed by the request id, so every replica makes the same audio for it."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=4).digest(), "little") & 0x7FFFFFFF


class FleetGateway(GatewayBase):
    def __init__(self, replicas: Any, limits: Limits, routing: str = "voice", max_attempts: int = 8,
                 retry_backoff_s: float = 0.25) -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"routing: {routing!r} is not one of {', '.join(ROUTINGS)}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts: {max_attempts!r} must be at least 1")
        super().__init__(limits)
        self.replicas = replicas  # a DeploymentHandle to the VoiceReplica deployment
        self.routing = routing
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.fleet = FleetCounts()
        self._status: dict[str, Any] | None = None
        self._status_at = 0.0
        self._status_lock = asyncio.Lock()
        self._voices: list[str] = []  # the last non-empty voice list a replica gave

    async def status(self, tries: int = 3) -> dict[str, Any]:
        """A live replica's status (every replica serves the same voices), refreshed at
        most every STATUS_MAX_AGE_S. A replica whose daemon just died refuses: ask again,
        Serve picks a replica each time."""
        async with self._status_lock:
            if self._status is None or time.monotonic() - self._status_at > STATUS_MAX_AGE_S:
                failure = "no replica"
                for _ in range(tries):
                    try:
                        self._status = await asyncio.wait_for(self.replicas.status.remote(), 5.0)
                    except Exception as exc:  # noqa: BLE001 (a dead or unreachable replica: try another)
                        failure = type(exc).__name__
                        continue
                    self._status_at = time.monotonic()
                    if self._status.get("voices"):
                        self._voices = list(self._status["voices"])
                    break
                else:
                    raise HttpError("unavailable", f"no replica answered a status query ({failure})")
            return self._status

    async def voices(self) -> list[str]:
        """The voices the fleet serves; the last list known if the replica asked has none
        to tell (a daemon restarting)."""
        try:
            voices = list((await self.status()).get("voices", []))
        except HttpError:
            if not self._voices:
                raise
            return list(self._voices)
        return voices or list(self._voices)

    def _handle(self, voice: str) -> Any:
        model_id = voice if self.routing == "voice" else ""
        return self.replicas.options(stream=True, multiplexed_model_id=model_id)

    def _record(self, info: dict[str, Any], resumed: bool) -> None:
        self.fleet.attempts += 1
        self.fleet.hits += bool(info.get("hit"))
        self.fleet.resumed += resumed
        replica = str(info.get("replica", "?"))
        self.fleet.by_replica[replica] = self.fleet.by_replica.get(replica, 0) + 1

    async def _stream(self, request: SpeechRequest) -> AsyncGenerator[AudioFragment | Result, None]:
        rid = uuid.uuid4().hex
        options = dict(request.options)
        if options.get("seed") is None:
            options["seed"] = request_seed(rid)
        delivered = index = 0
        for attempt in range(self.max_attempts):
            responses = self._handle(request.voice).synthesize.remote(
                request.text, request.voice, options, f"{rid}-{attempt}", delivered)
            try:
                async for item in responses:
                    kind = item[0]
                    if kind == AUDIO:
                        samples = item[1]
                        delivered += len(samples)
                        yield AudioFragment(index, samples, item[2], time.monotonic())
                        index += 1
                    elif kind == RESULT:
                        info = item[1]
                        self._record(info, resumed=attempt > 0)
                        yield Result(rid, info["sample_rate"], delivered, index, info["chunks"], info["timings"],
                                     seed=options["seed"])
                        return
                    elif kind == ERROR:
                        raise VoxpipeError(item[1], item[2], rid)
                    elif kind == LOST:
                        raise ReplicaLost(item[1])
                raise ReplicaLost("the replica's stream ended without a result")
            except (VoxpipeError, GeneratorExit, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 (a dead actor, an unreachable replica, ReplicaLost)
                log.warning("request %s: attempt %d lost after %d samples (%s: %s); resuming",
                            rid, attempt + 1, delivered, type(exc).__name__, exc,
                            exc_info=not isinstance(exc, ReplicaLost))
                await asyncio.sleep(self.retry_backoff_s * (attempt + 1))
            finally:
                responses.cancel()
        self.fleet.failed += 1
        raise VoxpipeError("unavailable", f"no replica could finish the request in {self.max_attempts} attempts", rid)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "routing": self.routing, "fleet": self.fleet.as_dict()}
