import msgpack
import pytest

from voxpipe.ipc import codec
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import (Chunk, ChunkAudio, Fragment, Heartbeat, ShmHandle, SynthesisOptions, SynthesisRequest)


def test_round_trip_keeps_every_field():
    handle = ShmHandle("w0", 3, 7, 4096, 800, "<f4", [200])
    for message in [
        SynthesisRequest("r1", "Hello.", "joe", True, SynthesisOptions(noise_scale=0.0, seed=5), 12.5),
        Chunk("r1", 0, 2, "joe", "Hello.", [1, 0, 20, 2], 0.667, 1.0, 0.8, 0, None, False, 123.0),
        ChunkAudio("r1", 1, 2, 22050, handle, 0.1, 0.01),
        Fragment("r1", 0, 22050, 200),
        Heartbeat("worker", "w0", 42, True, {"queue": 3}),
    ]:
        assert codec.decode(codec.encode(message)) == message


@pytest.mark.parametrize("frame", [
    b"",  # nothing
    b"\xc1",  # a byte msgpack never uses
    b"not msgpack at all",
    msgpack.packb({"tag": 12}),  # a map, not an array
    msgpack.packb([]),
    msgpack.packb([9999, "x"]),  # unknown tag
    msgpack.packb([12, "r1"]),  # too few fields
    msgpack.packb([12, "r1", "text", "joe", 1, [2]]),  # wrong type for a bool
    msgpack.packb([12, "r1", "text", "joe", True, [1, "w0", 0, 0, 0, 0, "<f4", []]]),  # wrong nested message
    msgpack.packb([12, "r1", "text", "joe", True, [2], None, "extra", "fields"]),
    msgpack.packb([30, "r1", 0, 1, "joe", "t", [1, "two"], 0.1, 1.0, 0.1, 0, None, True, 1.0]),  # str in ids
])
def test_malformed_frames_raise_protocol_error(frame):
    with pytest.raises(ProtocolError):
        codec.decode(frame)


def test_huge_declared_lengths_are_refused_without_allocating():
    # An array header claiming 2**32-1 items, followed by nothing.
    with pytest.raises(ProtocolError):
        codec.decode(b"\xdd\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        codec.decode(b"\x00" * (codec.MAX_FRAME_BYTES + 1))


def test_expect_filters_message_types():
    frame = codec.encode(Fragment("r1", 0, 22050, 0))
    with pytest.raises(ProtocolError):
        codec.decode(frame, expect=(SynthesisRequest,))
