"""Serve's request router for the voice replicas (`RequestRouterConfig` of the replicas'
deployment): it keeps count of the requests it has in flight on each replica and asks
`affinity.rank_replicas` where the next one goes (docs/cluster.md, "Routing by voice")."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Sequence

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from voxpipe.daemon.cluster.affinity import DEFAULT_AFFINITY_SLACK, ReplicaLoad, power_of_two, rank_replicas

RECENT_ASSIGNMENT_S = 10.0  # trust our own recent choices until Serve's view of held voices catches up
MAX_PENDING_KINDS = 10_000



class VoiceAffinityRouter(RequestRouter):
    """Serve's request router for the voice replicas: `rank_replicas` over the requests
    this router has in flight per replica and the voices Serve says each one holds."""

    def initialize_state(self, affinity_slack: int = DEFAULT_AFFINITY_SLACK, **_: Any) -> None:
        if not isinstance(affinity_slack, int) or affinity_slack < 0:
            raise ValueError(f"affinity_slack: {affinity_slack!r} must be an integer >= 0")
        self.affinity_slack = affinity_slack
        self._ongoing: dict[Any, int] = defaultdict(int)
        self._recent: dict[str, dict[Any, float]] = defaultdict(dict)  # voice -> replica id -> when sent
        self.decisions = {"affinity": 0, "spilled": 0, "new_voice": 0, "no_voice": 0}  # per request routed
        self._kinds: dict[str, dict[Any, str]] = {}  # request -> replica -> which kind of choice it would be
        # Serve ships this class by value, so a registry here would be a copy: the real
        # module, imported now, is where the gateway in this process looks.
        from voxpipe.daemon.cluster import fleet

        fleet.LIVE_ROUTERS[(self._deployment_id.app_name, self._deployment_id.name)] = self

    def _holds(self, replica: RunningReplica, voice: str, now: float) -> bool:
        if voice in replica.multiplexed_model_ids:
            return True
        sent = self._recent.get(voice, {}).get(replica.replica_id)
        return sent is not None and now - sent < RECENT_ASSIGNMENT_S

    def loads(self, voice: str, replicas: Sequence[RunningReplica]) -> list[ReplicaLoad]:
        now = time.monotonic()
        return [ReplicaLoad(replica=r.replica_id.unique_id, ongoing=self._ongoing.get(r.replica_id, 0),
                            capacity=r.max_ongoing_requests, holds=bool(voice) and self._holds(r, voice, now),
                            voices=len(r.multiplexed_model_ids)) for r in replicas]

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        voice = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        states = self.loads(voice, candidate_replicas)
        if not voice:
            return [[by_id[i] for i in rank] for rank in power_of_two(states)]
        ranks = rank_replicas(voice, states, self.affinity_slack)
        if not ranks:
            return []
        held_somewhere = any(s.holds for s in states)
        if len(self._kinds) > MAX_PENDING_KINDS:  # requests cancelled before a replica took them
            self._kinds.clear()
        self._kinds[pending_request.metadata.internal_request_id] = {
            by_id[s.replica].replica_id: "affinity" if s.holds else "spilled" if held_somewhere else "new_voice"
            for s in states}
        # The first choice counts as holding the voice at once: requests racing this one follow it.
        self._recent[voice][by_id[ranks[0][0]].replica_id] = time.monotonic()
        return [[by_id[i] for i in rank] for rank in ranks]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        """A replica accepted a request: count what kind of choice it was, and remember
        that the replica now holds the voice (Serve's own report of it follows later)."""
        super().on_request_routed(pending_request, replica_id, result)
        voice = pending_request.metadata.multiplexed_model_id
        kinds = self._kinds.pop(pending_request.metadata.internal_request_id, {})
        if not voice:
            self.decisions["no_voice"] += 1
            return
        self.decisions[kinds.get(replica_id, "spilled")] += 1
        self._recent[voice][replica_id] = time.monotonic()

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)
        self._ongoing[replica_id] += 1

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        super().on_request_completed(replica_id, internal_request_id)
        if self._ongoing.get(replica_id, 0) > 0:
            self._ongoing[replica_id] -= 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._ongoing.pop(replica_id, None)
        for sent in self._recent.values():
            sent.pop(replica_id, None)

    def fleet(self) -> list[dict[str, Any]]:
        """Every live replica as this router sees it: in flight from here, the voices Serve
        says it holds, and what the replica last reported (`VoiceReplica.record_routing_stats`)."""
        return [{"replica": r.replica_id.unique_id, "ongoing": self._ongoing.get(r.replica_id, 0),
                 "held_voices": sorted(r.multiplexed_model_ids), **dict(r.routing_stats or {})}
                for r in self.curr_replicas.values()]
