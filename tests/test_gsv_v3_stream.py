"""v3/v4 audio per CFM chunk against rendering whole, and CFM chunks of several requests
in one call against one at a time (tiny random voices from the golden cases)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow]  # v3/v4 renders, whole and by chunk

from tests.dev_scripts import from_script  # noqa: E402
CASES, case_inputs, write_case_files = from_script("make_gsv_golden", "CASES", "case_inputs", "write_case_files")
from voxpipe.stages.families.gpt_sovits.models import features  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice_v3 import MelDecoder, MelStreamRenderer, vocode_chunks  # noqa: E402

JOIN_BOUND = 1e-3  # max abs difference from rendering whole (measured: about 1e-5)


def _decoder(tmp_path, name):
    case = next(c for c in CASES if c.name == name)
    sovits, pretrained = write_case_files(case, tmp_path)
    inputs = case_inputs(case)
    decoder = MelDecoder(sovits, case.version, pretrained)
    spec = features.linear_spectrogram(torch.from_numpy(inputs["spec_audio"]).unsqueeze(0), 2048, 640, 2048)
    decoder.set_prompt(torch.from_numpy(inputs["prompt_tokens"]).unsqueeze(0), inputs["prompt_phones"].tolist(), spec,
                       torch.from_numpy(inputs["mel_audio"]))
    return decoder, inputs


@pytest.mark.parametrize("name", ["v3_full", "v4_full"])
def test_audio_per_chunk_joins_closely(tmp_path, name):
    torch.set_flush_denormal(True)
    decoder, inputs = _decoder(tmp_path, name)
    chunks = list(decoder.mel_chunks(decoder.start(inputs["tokens"].tolist(), inputs["phones"].tolist(), 1.0, 4, 1)))
    assert len(chunks) == 2
    whole = decoder.vocode(torch.cat(chunks, 2))
    pieces = list(vocode_chunks(decoder, iter(chunks), MelStreamRenderer.context))
    streamed = np.concatenate(pieces)
    assert streamed.shape == whole.shape
    error = np.abs(streamed - whole)
    print(f"{name}: pieces vs whole: max {error.max():.2e}, mean {error.mean():.2e}")
    assert error.max() < JOIN_BOUND

def test_batched_cfm_chunks_equal_one_at_a_time(tmp_path):
    """Two requests of different lengths in one CFM call get what each gets alone."""
    decoder, inputs = _decoder(tmp_path, "v4_full")
    phones = inputs["phones"].tolist()
    texts = (inputs["tokens"][:40].tolist(), inputs["tokens"][:90].tolist())
    alone = [decoder.next_mels([decoder.start(t, phones, 1.0, 2, 9 + i)])[0] for i, t in enumerate(texts)]
    together = decoder.next_mels([decoder.start(t, phones, 1.0, 2, 9 + i) for i, t in enumerate(texts)])
    for a, b in zip(alone, together):
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-3
