import threading
import time
import uuid

import numpy as np
import pytest

from voxpipe.ipc.shm import (PoolFull, PoolSpec, PoolTooSmall, PoolWaitTimeout, ShmPool, StaleHandle, pool_path,
                             remove_stale_pools)


@pytest.fixture
def spec():
    name = f"test-{uuid.uuid4().hex[:8]}"
    spec = PoolSpec("w0", str(pool_path(name, "w0")), 4096, 16)
    owner = ShmPool.create(spec)
    yield spec
    owner.unlink()
    owner.close()


def test_put_and_read_across_attachments(spec):
    producer, consumer = ShmPool.attach(spec, producer=True), ShmPool.attach(spec)
    data = np.random.default_rng(0).standard_normal(3000).astype(np.float32)  # spans 3 slots
    handle = producer.put(data, time.monotonic() + 10)
    assert np.array_equal(consumer.read(handle), data)
    assert consumer.usage()["free"] == 16


def test_stale_handle_is_detected_after_recycling(spec):
    producer, consumer = ShmPool.attach(spec, producer=True), ShmPool.attach(spec)
    first = producer.put(np.ones(10, np.float32), time.monotonic() + 10)
    consumer.release(first)
    second = None
    for _ in range(16):  # the allocator moves round the pool; go round until the slot comes back
        second = producer.put(np.zeros(10, np.float32), time.monotonic() + 10)
        if second.slot == first.slot:
            break
        consumer.release(second)
    assert second.slot == first.slot and second.generation == first.generation + 1
    with pytest.raises(StaleHandle):
        consumer.read(first)  # same slot, older generation
    assert consumer.read(second).sum() == 0


def test_full_pool_raises_and_recovers(spec):
    producer, consumer = ShmPool.attach(spec, producer=True), ShmPool.attach(spec)
    handles = [producer.put(np.zeros(1024, np.float32), time.monotonic() + 10) for _ in range(16)]
    with pytest.raises(PoolFull):
        producer.put(np.zeros(1024, np.float32), time.monotonic() + 10)
    consumer.release(handles[5])
    assert producer.put(np.zeros(1024, np.float32), time.monotonic() + 10).slot == 5


def test_put_waiting_waits_for_the_consumer_to_free_a_slot(spec):
    producer, consumer = ShmPool.attach(spec, producer=True), ShmPool.attach(spec)
    handles = [producer.put(np.zeros(1024, np.float32), time.monotonic() + 60) for _ in range(16)]
    released = threading.Event()

    def consume_later() -> None:
        time.sleep(0.5)  # long enough that the producer finds the pool full and waits
        consumer.release(handles[7])
        released.set()

    reader = threading.Thread(target=consume_later)
    reader.start()
    try:
        handle = producer.put_waiting(np.full(1024, 2.0, np.float32), time.monotonic() + 30)
    finally:
        reader.join()
    assert released.is_set() and handle.slot == 7
    assert consumer.read(handle)[0] == 2.0


def test_put_waiting_gives_up_at_the_deadline(spec):
    producer = ShmPool.attach(spec, producer=True)
    for _ in range(16):
        producer.put(np.zeros(1024, np.float32), time.monotonic() + 60)
    deadline = time.monotonic() + 0.6
    with pytest.raises(PoolWaitTimeout) as info:
        producer.put_waiting(np.zeros(1024, np.float32), deadline)
    assert time.monotonic() >= deadline and isinstance(info.value, PoolFull)


def test_put_waiting_refuses_at_once_what_can_never_fit(spec):
    producer = ShmPool.attach(spec, producer=True)
    with pytest.raises(PoolTooSmall):  # 17 slots' worth in a 16-slot pool: no waiting
        producer.put_waiting(np.zeros(17 * 1024, np.float32), time.monotonic() + 3600)
    assert producer.usage()["free"] == 16


def test_new_producer_reclaims_slots_its_dead_predecessor_was_writing(spec):
    dead = ShmPool.attach(spec, producer=True)
    dead.allocate(4096 * 4, "<f4", [4096], time.monotonic() + 10)  # never published
    assert dead.usage()["free"] == 12
    assert ShmPool.attach(spec, producer=True).usage()["free"] == 16


def test_expired_unread_slots_are_reclaimed_when_full(spec):
    producer, consumer = ShmPool.attach(spec, producer=True), ShmPool.attach(spec)
    expired = [producer.put(np.full(1024, i, np.float32), time.monotonic() - 3600)  # long expired, never read
               for i in range(16)]
    assert producer.usage()["free"] == 0
    fresh = producer.put(np.full(1024, 99, np.float32), time.monotonic() + 10)  # reclaims instead of failing
    assert producer.usage()["free"] == 15  # every expired slot freed, one taken by the new array
    assert np.array_equal(consumer.read(fresh), np.full(1024, 99, np.float32))
    for handle in expired:  # what the expired handles pointed at is gone: refused, never torn data
        with pytest.raises(StaleHandle):
            consumer.read(handle)


def test_stale_pools_of_dead_daemons_are_removed_live_ones_kept(spec, tmp_path):
    # `spec`'s owner holds the lock: it is live and must survive a sweep.
    assert pool_path(spec.path.split("voxpipe-")[1].rsplit("-", 1)[0], "w0").name not in remove_stale_pools()
    orphan = PoolSpec("w1", str(pool_path(f"dead-{uuid.uuid4().hex[:6]}", "w1")), 4096, 2)
    pool = ShmPool.create(orphan)
    pool.close()  # lock released: as after a SIGKILL
    assert pool_path(orphan.path.split("voxpipe-")[1].rsplit("-", 1)[0], "w1").name in remove_stale_pools()
