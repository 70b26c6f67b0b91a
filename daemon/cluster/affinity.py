"""Which replica gets a request: voice affinity weighed against load.

The rule (docs/cluster.md, "Routing by voice") is a pure function over what the router
knows of each replica, `rank_replicas`; `router.VoiceAffinityRouter` is Serve's custom
request router (`RequestRouterConfig`) that feeds it. This module needs no Ray. A replica that already holds the voice is
chosen unless its requests in flight exceed the least-loaded replica's by more than
`affinity_slack`: then the least-loaded replica gets the request and, from then on,
holds the voice as well (a popular voice spreads over as many replicas as its load
needs). A voice nobody holds goes to the least-loaded replica, ties to the one holding
the fewest voices, then by rendezvous hash so the choice is stable.

Loading a voice stalls a replica's GPU for seconds (the benchmark emulates 2 s), while a
request in the queue waits for about one request's synthesis: the slack is about how many
queued requests one voice load is worth."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Sequence

DEFAULT_AFFINITY_SLACK = 6  # requests in flight past the least-loaded replica before affinity yields


@dataclass(frozen=True)
class ReplicaLoad:
    """What the router knows of one replica when it routes a request."""

    replica: str
    ongoing: int  # requests this router has in flight there
    capacity: int  # max_ongoing_requests: past it the replica refuses
    holds: bool  # holds the request's voice
    voices: int = 0  # voices it holds

    @property
    def available(self) -> bool:
        return self.ongoing < self.capacity


def _stable_order(voice: str, replica: str) -> int:
    """Rendezvous hash: the same voice prefers the same replica among equals."""
    return int.from_bytes(hashlib.blake2b(f"{voice}\0{replica}".encode(), digest_size=8).digest(), "little")


def rank_replicas(voice: str, replicas: Sequence[ReplicaLoad], affinity_slack: int) -> list[list[str]]:
    """Replica ids in the order to try them, one per rank (the first is the choice).

    A holder of `voice` comes first if its load is at most the least-loaded available
    replica's plus `affinity_slack`; otherwise the least-loaded replica does. Replicas at
    capacity come last (Serve retries with back-off while every one is full)."""
    if affinity_slack < 0:
        raise ValueError(f"affinity_slack: {affinity_slack!r} must be >= 0")
    if not replicas:
        return []

    def by_load(r: ReplicaLoad) -> tuple[int, int, int]:
        return (r.ongoing, r.voices, _stable_order(voice, r.replica))

    available = sorted((r for r in replicas if r.available), key=by_load)
    full = sorted((r for r in replicas if not r.available), key=by_load)
    if not available:
        return [[r.replica] for r in full]
    least = available[0].ongoing
    holders = sorted((r for r in available if r.holds),
                     key=lambda r: (r.ongoing, _stable_order(voice, r.replica)))
    if holders and holders[0].ongoing <= least + affinity_slack:
        first = holders[0]
    else:
        first = available[0]
    rest = [r for r in available if r.replica != first.replica] + full
    return [[first.replica]] + [[r.replica] for r in rest]


def power_of_two(replicas: Sequence[ReplicaLoad], rng: random.Random | None = None) -> list[list[str]]:
    """Without a voice (random routing): the less loaded of two replicas drawn at random."""
    available = [r for r in replicas if r.available] or list(replicas)
    if len(available) <= 1:
        return [[r.replica] for r in available]
    a, b = (rng or random).sample(available, 2)
    first, second = (a, b) if a.ongoing <= b.ongoing else (b, a)
    return [[first.replica], [second.replica]]
