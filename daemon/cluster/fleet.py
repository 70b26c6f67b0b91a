"""The ingress's gateway: the HTTP routes' interface (stages/http/gateway.py) over a
fleet of replicas instead of one daemon.

Each request goes to a replica through Serve's handle, routed by voice (the voice as
the multiplexed model id, weighed against load by router.VoiceAffinityRouter) or, for
comparison, at random. If the replica or its daemon dies mid-stream, the request is
sent again, to whichever replica Serve picks next, with the number of samples already
delivered: the new daemon skips them, and since the request's seed is fixed when it
first starts, the samples that follow are the ones the first daemon would have made.
Nothing is lost and nothing is repeated."""
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
# Serve builds the request router (router.VoiceAffinityRouter) inside each process that
# holds a handle to the replicas, the ingress; it registers here, (app, deployment) -> router,
# and the gateway reads the fleet's state through it.
LIVE_ROUTERS: dict[tuple[str, str], Any] = {}
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
    # each replica's own counts (requests, hits, loads, lost, busy_s), as of its last answer
    replica_counts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        rate = self.hits / self.attempts if self.attempts else None
        return {"attempts": self.attempts, "hits": self.hits, "hit_rate": rate, "resumed": self.resumed,
                "failed": self.failed, "by_replica": dict(self.by_replica),
                "replica_counts": {k: dict(v) for k, v in self.replica_counts.items()}}


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
        if info.get("replica_counts"):
            self.fleet.replica_counts[replica] = dict(info["replica_counts"])

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

    def _router(self) -> Any:
        """The request router Serve built in this process for the replicas' handle (it
        exists once the handle has sent something)."""
        deployment = getattr(self.replicas, "deployment_id", None)
        return LIVE_ROUTERS.get((deployment.app_name, deployment.name)) if deployment is not None else None

    def replicas_view(self) -> list[dict[str, Any]] | None:
        """Every live replica as Serve's router sees it, or None before the router exists."""
        router = self._router()
        return router.fleet() if router is not None else None

    async def readiness(self) -> dict[str, Any]:
        """GET /ready for the whole fleet: ready while at least one replica is, with how
        many are, and the requests in flight and voices over all of them."""
        view = self.replicas_view()
        if not view or not any("ready" in r for r in view):
            await self.status()  # no replica has reported yet: ask one (this also builds the router)
            view = self.replicas_view() or []
        try:
            voices = await self.voices()
        except HttpError as err:
            return {"ready": False, "reason": err.message, "replicas": len(view), "ready_replicas": 0}
        reported = [r for r in view if "ready" in r]
        ready_replicas = sum(bool(r["ready"]) for r in reported) if reported else int(bool(self._status
                                                                                          and self._status.get("ready")))
        is_ready = ready_replicas > 0 and not self.draining
        reason = "" if is_ready else "draining" if self.draining else "no replica is ready"
        return {"ready": is_ready, "reason": reason, "replicas": len(view), "ready_replicas": ready_replicas,
                "active_requests": sum(int(r["ongoing"]) for r in view), "voices": voices,
                "by_replica": {r["replica"]: {"ready": r.get("ready"), "active_requests": r["ongoing"],
                                              "held_voices": r["held_voices"]} for r in view}}

    def stats(self) -> dict[str, Any]:
        router = self._router()
        return {**super().stats(), "routing": self.routing, "fleet": self.fleet.as_dict(),
                "replicas": self.replicas_view(), "decisions": dict(router.decisions) if router else None}
