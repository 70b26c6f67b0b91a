"""GPT-SoVITS v3/v4 against upstream: golden arrays made by upstream's own code
(tools/make_gsv_golden.py, tiny random weights, fixed seeds) for a full model and a LoRA
file of each version. The CFM mel and the vocoder audio must agree within 1e-3.

The voices' files are written again here with the same writer and seeds; if that writer
changes, the goldens must be made again (the timbre vector `ge` is checked first and
says so)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.reference]  # against golden arrays made by upstream's code

from tests.dev_scripts import from_script  # noqa: E402
CASES, case_inputs, write_case_files = from_script("make_gsv_golden", "CASES", "case_inputs", "write_case_files")
from voxpipe.stages.families.gpt_sovits.models import features  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice_v3 import MelDecoder  # noqa: E402

DATA = Path(__file__).parent / "data" / "gsv_v3"
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    root = tmp_path_factory.mktemp("gsv-v3")
    out = {}
    for case in CASES:
        sovits, pretrained = write_case_files(case, root)
        inputs = case_inputs(case)
        decoder = MelDecoder(sovits, case.version, pretrained)
        spec = features.linear_spectrogram(torch.from_numpy(inputs["spec_audio"]).unsqueeze(0), 2048, 640, 2048)
        decoder.set_prompt(torch.from_numpy(inputs["prompt_tokens"]).unsqueeze(0), inputs["prompt_phones"].tolist(),
                           spec, torch.from_numpy(inputs["mel_audio"]))
        job = decoder.start(inputs["tokens"].tolist(), inputs["phones"].tolist(), float(inputs["speed"]),
                            int(inputs["steps"]), int(inputs["seed"]))
        chunks = list(decoder.mel_chunks(job))
        mel = torch.cat(chunks, 2)
        out[case.name] = (decoder, mel, decoder.vocode(mel), len(chunks))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_mel_and_audio_match_upstream(rendered, case):
    golden = np.load(DATA / f"{case.name}.npz")
    decoder, mel, audio, n_chunks = rendered[case.name]
    assert np.abs(decoder.ge[0, :, 0].numpy() - golden["ge"]).max() < 1e-4, \
        "timbre differs: the random-voice writer changed? run tools/make_gsv_golden.py again"
    assert n_chunks == int(golden["chunks"])
    assert mel[0].shape == golden["mel"].shape
    assert np.abs(mel[0].numpy() - golden["mel"]).max() < TOLERANCE
    assert len(audio) == int(golden["audio_len"])
    kept = audio[::int(golden["audio_stride"])]
    assert np.abs(kept).max() > 0.05 and np.mean(np.abs(kept) < 0.999) > 0.5  # a real signal, mostly unclipped
    assert np.abs(kept - golden["audio"]).max() < TOLERANCE


def test_long_cases_take_two_chunks(rendered):
    """The full-model cases cross a CFM chunk boundary, where the prompt is handed on."""
    assert rendered["v3_full"][3] == 2 and rendered["v4_full"][3] == 2
