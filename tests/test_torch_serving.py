"""The torch engine through the daemon: the same audio as onnxruntime with noise off,
and within-sentence streaming (decoded windows sent as they are ready)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.daemon_proc import Daemon

pytest.importorskip("torch")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a daemon of its own: torch engine settings

NOISE_OFF = {"noise_scale": 0.0, "noise_w": 0.0}
SENTENCE = ("Every request that arrives at the service is split into sentences, turned into phonemes, "
            "synthesized, and stitched back together before it goes out again")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    # loudness off: the onnx engine's level gain is not the torch engine's business here
    config = {"worker": {"engine_stream_frames": 48, "loudness": False}, "frontend": {"first_chunk": False}}
    with Daemon(tmp_path_factory.mktemp("torch"), workers=1, **config) as d:
        yield d


def test_torch_engine_gives_onnxruntimes_audio(daemon):
    with daemon.client() as client:
        onnx = client.synthesize(SENTENCE, "joe", engine="onnx", **NOISE_OFF).samples.astype(np.int32)
        torch = client.synthesize(SENTENCE, "joe", engine="torch", **NOISE_OFF).samples.astype(np.int32)
    assert len(onnx) == len(torch)
    assert np.max(np.abs(onnx - torch)) <= 40  # 1.2e-3 of full scale, after int16 rounding


def test_within_sentence_streaming_sends_windows_that_join_to_the_whole(daemon):
    with daemon.client() as client:
        stream = client.stream(SENTENCE, "joe", engine="torch", **NOISE_OFF)
        fragments = list(stream)
        whole = client.synthesize(SENTENCE, "joe", engine="torch", **NOISE_OFF).samples
    assert stream.result is not None and stream.result.chunks == 1
    assert len(fragments) >= 3  # one sentence, several windows
    joined = np.concatenate([f.samples for f in fragments]).astype(np.int32)
    assert len(joined) == len(whole)
    assert np.max(np.abs(joined - whole.astype(np.int32))) <= 2
