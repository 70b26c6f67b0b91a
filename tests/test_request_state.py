"""The frontend's per-request recovery state: its transitions and its invariants."""
from __future__ import annotations

import time

import pytest

from voxpipe.config import Config
from voxpipe.ipc.messages import Chunk, SynthesisOptions, SynthesisRequest
from voxpipe.stages.frontend.planner import Planner
from voxpipe.stages.frontend.request_state import ProgressError, Relay, RequestProgress
from voxpipe.stages.voices import VoiceCatalog
from tests.daemon_proc import longform


@pytest.fixture
def plan() -> list[Chunk]:
    """A real plan of several chunks, from the planner and the bundled voice."""
    config = Config()
    planner = Planner(config, VoiceCatalog(config.voices_path()))
    text = longform().split("\n\n")[0]
    chunks = planner.plan(SynthesisRequest("r1", text, "joe", True, SynthesisOptions()),
                          time.monotonic() + 600).chunks
    assert len(chunks) >= 3
    return chunks


def check_invariants(p: RequestProgress) -> None:
    assert 0 <= p.merger_pos <= p.client_has
    assert 0 <= p.merged <= p.chunks
    assert p.resumed_from + p.fragments_sent <= p.client_has
    assert set(p.done_by()) <= set(range(p.chunks))


def test_fragments_are_relayed_in_full_and_numbered(plan):
    p = RequestProgress(plan)
    assert p.take_fragment(100, 1) == Relay(0, 0)
    assert p.take_fragment(50, 2) == Relay(0, 1)
    assert (p.client_has, p.merger_pos, p.merged, p.fragments_sent) == (150, 150, 2, 2)
    check_invariants(p)


def test_a_resent_request_relays_only_past_what_the_client_has(plan):
    p = RequestProgress(plan, resume_samples=120)
    assert p.take_fragment(100, 1) is None  # the client has all of it
    assert p.take_fragment(50, 2) == Relay(20, 0)  # samples 120..150 of 100..150
    assert (p.client_has, p.merger_pos, p.fragments_sent) == (150, 150, 1)
    check_invariants(p)


def test_merger_restart_reruns_the_done_chunks_and_skips_audio_the_client_has(plan):
    p = RequestProgress(plan)
    p.chunk_done(0, "w0")
    p.chunk_done(1, "w1")
    p.take_fragment(100, 1)
    rerun = p.merger_restarted()
    assert [c.seq for c in rerun] == [0, 1] and p.done_by() == {}
    assert (p.merger_pos, p.merged, p.client_has) == (0, 0, 100)
    check_invariants(p)
    # The new merger replays chunk 0 (the client has it), then goes further.
    assert p.take_fragment(100, 1) is None
    assert p.take_fragment(40, 2) == Relay(0, 1)
    assert p.client_has == 140 and p.merger_pos == 140


def test_a_dead_workers_unmerged_chunks_run_again_and_merged_ones_do_not(plan):
    p = RequestProgress(plan)
    for seq, worker in ((0, "w0"), (1, "w1"), (2, "w0")):
        p.chunk_done(seq, worker)
    p.take_fragment(80, 1)  # the merger took chunk 0 in
    assert [c.seq for c in p.rerun_unmerged_of("w0")] == [2]  # 0 is merged: its audio arrived
    assert p.done_by() == {0: "w0", 1: "w1"}
    assert p.rerun_unmerged_of("w0") == []


def test_failed_attempts_are_counted_per_chunk_and_carried_by_the_chunk(plan):
    p = RequestProgress(plan)
    assert p.chunk_failed(1) == 1 and p.chunk_failed(1) == 2 and p.chunk_failed(0) == 1
    assert p.attempts(1) == 2 and plan[1].attempt == 2 and p.attempts(2) == 0


@pytest.mark.parametrize("transition", [
    lambda p: p.take_fragment(10, 99),  # more chunks merged than the plan has
    lambda p: p.take_fragment(-1, 0),  # negative audio
    lambda p: p.chunk_done(99, "w0"),  # a chunk not in the plan
    lambda p: p.chunk_done(-1, "w0"),
    lambda p: p.chunk_failed(99),
])
def test_a_transition_that_would_break_an_invariant_raises_and_changes_nothing(plan, transition):
    p = RequestProgress(plan)
    p.chunk_done(0, "w0")
    p.take_fragment(100, 1)
    before = (p.client_has, p.merger_pos, p.merged, p.fragments_sent, p.done_by())
    with pytest.raises(ProgressError):
        transition(p)
    assert (p.client_has, p.merger_pos, p.merged, p.fragments_sent, p.done_by()) == before


def test_bad_starts_raise(plan):
    with pytest.raises(ProgressError, match="resume_samples"):
        RequestProgress(plan, resume_samples=-5)
    with pytest.raises(ProgressError, match="numbered"):
        RequestProgress(list(reversed(plan)))
