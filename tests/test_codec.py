import msgpack
import pytest

from voxpipe.ipc import codec
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import (Chunk, ChunkAudio, FamilyInputs, Fragment, Heartbeat, ShmHandle, SynthesisOptions,
                                  SynthesisRequest, synthesis_options)


def test_round_trip_keeps_every_field():
    handle = ShmHandle("w0", 3, 7, 4096, 800, "<f4", [200])
    for message in [
        SynthesisRequest("r1", "Hello.", "joe", True, SynthesisOptions(seed=5, params={"noise_scale": 0.0}), 12.5),
        Chunk("r1", 0, 2, "joe", "piper", "Hello.", FamilyInputs([1, 0, 20, 2], {"noise_scale": 0.667}), None, False,
              123.0),
        Chunk("r1", 1, 2, "v", "gpt-sovits", "你好", FamilyInputs([5, 6], {"top_k": 5}, {"langs": ["zh"], "phones": [2]}),
              7, True, 9.0),
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
    msgpack.packb([30, "r1", 0, 1, "joe", "piper", "t", [36, [1, "two"], {}], None, True, 1.0]),  # str in ids
    msgpack.packb([30, "r1", 0, 1, "joe", "piper", "t", [2, None], None, True, 1.0]),  # options where inputs go
])
def test_malformed_frames_raise_protocol_error(frame):
    with pytest.raises(ProtocolError):
        codec.decode(frame)


def test_options_split_into_pipeline_fields_and_family_params():
    options = synthesis_options(seed=3, policy="sentences", noise_scale=0.5, top_k=None, speaker_id=1)
    assert (options.seed, options.policy) == (3, "sentences")
    assert options.params == {"noise_scale": 0.5, "speaker_id": 1}  # None: the voice's default


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
