"""One request's progress as the frontend tracks it, kept so that it can recover.

A worker or the merger may die mid-request, and a client may resend a request after a
frontend restart. Either way the frontend must run again what was lost and relay to the
client each sample exactly once. What that takes lives here, in `RequestProgress`, and
changes only through its methods.

Positions (samples count from the start of the request's audio):

- `client_has`: samples the client holds. Starts at the request's `resume_samples`
  (0 unless it is a resend) and never decreases.
- `merger_pos`: samples the current merger has produced for the request. Back to 0
  when the merger restarts: the new one starts again from the first chunk.
- `merged`: chunks the current merger has taken in, in order (read off its fragments).
  Back to 0 with merger_pos.
- `fragments_sent`: fragments relayed to the client.

Invariants (each method checks them; breaking one raises ProgressError):

1. 0 <= merger_pos <= client_has. A merger's audio is relayed only where it passes
   what the client has, after which the two are equal; so no sample goes out twice,
   and merger_pos < client_has means a merger is replaying audio the client has.
2. 0 <= merged <= chunks, and within one merger run merged never decreases.
3. resumed_from + fragments_sent <= client_has: every relayed fragment carries at least
   one new sample.
4. The done record (seq -> worker that reported the chunk done, its audio sent to the
   merger) names only chunks of the plan. A record leaves it only when its chunk is to
   run again: its worker died before the merger took that chunk in, or the merger died.
5. Failed attempts per chunk only grow; how many are allowed is the frontend's policy.
"""
from __future__ import annotations

from dataclasses import dataclass

from voxpipe.ipc.messages import Chunk


class ProgressError(Exception):
    """A transition that would break one of RequestProgress's invariants."""


@dataclass(frozen=True)
class Relay:
    """What of a merger fragment goes to the client: its samples from `skip` on, as the
    client's fragment number `index`."""

    skip: int
    index: int


class RequestProgress:
    def __init__(self, plan: list[Chunk], resume_samples: int = 0) -> None:
        if [c.seq for c in plan] != list(range(len(plan))):
            raise ProgressError(f"a plan's chunks must be numbered 0..{len(plan) - 1}, got "
                                f"{[c.seq for c in plan]}")
        if resume_samples < 0:
            raise ProgressError(f"resume_samples must be >= 0, got {resume_samples}")
        self.plan = plan  # kept to run chunks again
        self.resumed_from = resume_samples
        self._client_has = resume_samples
        self._merger_pos = 0
        self._merged = 0
        self._fragments_sent = 0
        self._done_by: dict[int, str] = {}
        self._attempts: dict[int, int] = {}

    # ---- the plan --------------------------------------------------------------------------
    def extend(self, chunks: list[Chunk]) -> None:
        """More chunks of a plan that is made as the text is read (they follow on in order)."""
        if [c.seq for c in chunks] != list(range(len(self.plan), len(self.plan) + len(chunks))):
            raise ProgressError(f"chunks {[c.seq for c in chunks]} do not follow chunk {len(self.plan) - 1}")
        self.plan.extend(chunks)

    # ---- read-only views ------------------------------------------------------------------
    @property
    def chunks(self) -> int:
        return len(self.plan)

    @property
    def outstanding(self) -> int:
        """Chunks planned whose audio has not yet gone to the merger."""
        return len(self.plan) - len(self._done_by)

    @property
    def client_has(self) -> int:
        return self._client_has

    @property
    def merger_pos(self) -> int:
        return self._merger_pos

    @property
    def merged(self) -> int:
        return self._merged

    @property
    def fragments_sent(self) -> int:
        return self._fragments_sent

    def done_by(self) -> dict[int, str]:
        return dict(self._done_by)

    def attempts(self, seq: int) -> int:
        return self._attempts.get(seq, 0)

    # ---- workers ------------------------------------------------------------------------------
    def chunk_done(self, seq: int, worker: str) -> None:
        """A worker reports the chunk's audio sent to the merger."""
        self._chunk(seq)
        self._done_by[seq] = worker

    def chunk_failed(self, seq: int) -> int:
        """Count a failed attempt at a chunk (it is to run again, or the request fails);
        returns the chunk's failed attempts so far, which its Chunk message carries too."""
        chunk = self._chunk(seq)
        chunk.attempt = self._attempts[seq] = self._attempts.get(seq, 0) + 1
        return chunk.attempt

    def rerun_unmerged_of(self, worker: str) -> list[Chunk]:
        """A worker died: its done chunks the merger has not taken in may have lost their
        audio on the way. Forget they were done; returns them, to run again."""
        rerun = [s for s, w in self._done_by.items() if w == worker and s >= self._merged]
        for seq in rerun:
            del self._done_by[seq]
        return [self.plan[s] for s in sorted(rerun)]

    # ---- merger --------------------------------------------------------------------------------
    def take_fragment(self, samples: int, chunks_done: int) -> Relay | None:
        """The merger produced `samples` more samples, having taken in `chunks_done`
        chunks. Returns what of them to relay to the client, or None if it has them all."""
        if samples < 0 or not 0 <= chunks_done <= self.chunks:
            raise ProgressError(f"a fragment of {samples} samples after {chunks_done} chunks, "
                                f"in a request of {self.chunks} chunks")
        self._merged = max(self._merged, chunks_done)
        start = self._merger_pos
        self._merger_pos += samples
        if self._merger_pos <= self._client_has:
            self._check()
            return None
        relay = Relay(max(0, self._client_has - start), self._fragments_sent)
        self._client_has = self._merger_pos
        self._fragments_sent += 1
        self._check()
        return relay

    def merger_restarted(self) -> list[Chunk]:
        """The merger died with its state: its successor starts from the first chunk.
        Returns the done chunks, to run again (their audio comes back from the start and
        what the client has is skipped)."""
        rerun = [self.plan[s] for s in sorted(self._done_by)]
        self._done_by.clear()
        self._merger_pos = self._merged = 0
        self._check()
        return rerun

    # ---- checks ---------------------------------------------------------------------------------
    def _chunk(self, seq: int) -> Chunk:
        if not 0 <= seq < self.chunks:
            raise ProgressError(f"chunk {seq} is not in a plan of {self.chunks} chunks")
        return self.plan[seq]

    def _check(self) -> None:
        if not 0 <= self._merger_pos <= self._client_has:
            raise ProgressError(f"merger at {self._merger_pos} samples, client has {self._client_has}")
        if not 0 <= self._merged <= self.chunks:
            raise ProgressError(f"{self._merged} chunks merged of {self.chunks}")
        if self.resumed_from + self._fragments_sent > self._client_has:
            raise ProgressError(f"{self._fragments_sent} fragments relayed carry fewer samples than that")
