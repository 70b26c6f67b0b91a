from voxpipe.ipc.messages import Chunk, FamilyInputs
from voxpipe.stages.frontend.scheduler import Scheduler


def chunk(rid: str, seq: int, t: float, voice: str = "joe") -> Chunk:
    return Chunk(rid, seq, 3, voice, "piper", "x", FamilyInputs([1, 2], {}), None, False, 1e9, 0, t)


def test_first_chunks_go_before_later_ones_and_credits_bound_each_worker():
    s = Scheduler(100)
    s.worker_state("w0", 1, [], True)
    s.worker_state("w1", 1, [], True)
    s.submit([chunk("a", 0, 1.0), chunk("a", 1, 1.0), chunk("a", 2, 1.0)])
    s.submit([chunk("b", 0, 2.0)])
    sent = s.dispatch()
    assert [(c.request_id, c.seq) for _, c in sent] == [("a", 0), ("b", 0)]
    assert s.dispatch() == []  # both workers full
    s.done(sent[0][0], "a", 0)
    assert [(c.request_id, c.seq) for _, c in s.dispatch()] == [("a", 1)]


def test_voice_affinity_and_lost_worker_chunks_come_back():
    s = Scheduler(100)
    s.worker_state("w0", 2, ["amy"], True)
    s.worker_state("w1", 2, ["joe"], True)
    s.submit([chunk("a", 0, 1.0, "joe")])
    (worker, _), = s.dispatch()
    assert worker == "w1"
    lost = s.worker_lost("w1")
    assert [(c.request_id, c.seq) for c in lost] == [("a", 0)]


def test_queue_bound_and_drop():
    s = Scheduler(2)
    assert s.has_room(2) and not s.has_room(3)
    s.submit([chunk("a", 0, 1.0), chunk("a", 1, 1.0)])
    s.drop("a")
    assert len(s.queue) == 0
