"""Windowed SoVITS rendering: pieces rendered while tokens arrive, joined end to end,
match rendering the whole sequence at once within the measured bound, and the first
piece is ready after one window plus its lookahead."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow]  # SoVITS renders, whole and by window

from voxpipe.stages.families.gpt_sovits.models.windowed import WindowedRenderer, WindowPlan, render_windows  # noqa: E402
from voxpipe.stages.engines.receptive_field import receptive_radius  # noqa: E402
from tests.test_gsv_continuous import GREEDY, load_random_voice, model_segments  # noqa: E402

# Measured on random-weight voices, whose attention is nearly uniform over the whole
# sequence (the worst case for windows): ~33 dB; the bound leaves room for other seeds.
MIN_SNR_DB = 25.0
TEXT = "今天天气真不错，我们出去走走吧。Hello there."


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    torch.set_num_threads(1)
    model = load_random_voice(tmp_path_factory.mktemp("gsv-win"), "w", 3, max_sec=2.0)
    segs = model_segments(TEXT)
    return model, [i for s in segs for i in s.phone_ids], model.semantic_tokens(segs, GREEDY, 0).tokens


def _stream(renderer: WindowedRenderer, tokens: list[int]) -> list[tuple[int, np.ndarray]]:
    out = []
    for n in range(1, len(tokens) + 1):
        out += [(n, p) for p in renderer.push(tokens[:n], n == len(tokens))]
    return out


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(ref ** 2) / max(np.mean((ref - got) ** 2), 1e-20)))


def test_windows_joined_match_whole_rendering(voice):
    model, ids, tokens = voice
    plan = WindowPlan(window=16, context=16, lookahead=8)
    pieces = _stream(WindowedRenderer(model, ids, 0.0, plan=plan), tokens)
    whole = model.render(tokens, ids, 0.0)
    joined = np.concatenate([p for _, p in pieces])
    assert len(tokens) > 3 * plan.first_audio_tokens and len(pieces) >= 3
    assert pieces[0][0] == plan.first_audio_tokens  # first audio after one window + lookahead
    assert len(joined) == len(whole)
    assert _snr_db(whole, joined) > MIN_SNR_DB
    # The last piece has the whole rest as context: rendering a short sequence in one
    # piece is exactly the whole rendering.
    short = tokens[:plan.first_audio_tokens - 1]
    [(_, one)] = _stream(WindowedRenderer(model, ids, 0.0, plan=plan), short)
    np.testing.assert_array_equal(one, model.render(short, ids, 0.0))


def test_windows_grow_after_the_first_and_still_join(voice):
    model, ids, tokens = voice
    plan = WindowPlan(window=8, context=16, lookahead=8, max_window=32, growth=2)
    assert [plan.window_at(i) for i in range(5)] == [8, 16, 32, 32, 32]
    pieces = _stream(WindowedRenderer(model, ids, 0.0, plan=plan), tokens)
    per_token = len(model.render(tokens[:1], ids, 0.0))
    sizes = [len(p) // per_token for _, p in pieces]
    assert pieces[0][0] == plan.first_audio_tokens and sizes[:3] == [8, 16, 32]
    # Each piece is ready once its window and lookahead exist, never later.
    ends = np.cumsum(sizes)
    assert all(n == end + plan.lookahead for (n, _), end in zip(pieces[:-1], ends[:-1]) if n < len(tokens))
    joined = np.concatenate([p for _, p in pieces])
    whole = model.render(tokens, ids, 0.0)
    assert len(joined) == len(whole) and _snr_db(whole, joined) > MIN_SNR_DB


def test_the_default_plan_grows_fourfold_and_joins(voice):
    model, ids, tokens = voice
    plan = WindowPlan()
    assert [plan.window_at(i) for i in range(4)] == [12, 48, 96, 96]
    pieces = _stream(WindowedRenderer(model, ids, 0.0), tokens)
    assert pieces[0][0] == plan.first_audio_tokens == 18
    joined = np.concatenate([p for _, p in pieces])
    whole = model.render(tokens, ids, 0.0)
    assert len(joined) == len(whole) and _snr_db(whole, joined) > MIN_SNR_DB


def test_seeded_noise_is_drawn_per_frame(voice):
    model, ids, tokens = voice
    plan = WindowPlan(window=16, context=16, lookahead=8)
    a = WindowedRenderer(model, ids, 0.5, seed=11, plan=plan)
    joined = np.concatenate([p for _, p in _stream(a, tokens)])
    whole = WindowedRenderer(model, ids, 0.5, seed=11, plan=plan).render_slice(tokens, 0, len(tokens))
    assert _snr_db(whole, joined) > MIN_SNR_DB
    again = np.concatenate([p for _, p in _stream(WindowedRenderer(model, ids, 0.5, seed=11, plan=plan), tokens)])
    np.testing.assert_array_equal(joined, again)
    other = np.concatenate([p for _, p in _stream(WindowedRenderer(model, ids, 0.5, seed=12, plan=plan), tokens)])
    assert not np.array_equal(joined, other)


def test_other_speeds_render_whole_at_the_end(voice):
    model, ids, tokens = voice
    pieces = _stream(WindowedRenderer(model, ids, 0.0, speed=1.25), tokens)
    assert [n for n, _ in pieces] == [len(tokens)]
    np.testing.assert_array_equal(pieces[0][1], model.render(tokens, ids, 0.0, 1.25))


def test_vocoder_radius_covers_the_sovits_decoders_reach(voice):
    model = voice[0]
    dec, hop = model.synth.dec, model.cfg.upsample_factor
    frames, probe = 64, 32
    z = torch.randn(1, model.cfg.inter_channels, frames, generator=torch.Generator().manual_seed(1))
    bumped = z.clone()
    bumped[:, :, probe] += 1.0
    with torch.inference_mode():
        changed = torch.nonzero(dec(bumped)[0, 0] != dec(z)[0, 0]).flatten()
    reach = max(probe - int(changed.min()) // hop, int(changed.max()) // hop - probe)
    assert 0 < reach <= receptive_radius(dec) <= reach + 4  # safe, and not wastefully wide


@pytest.mark.parametrize("noise_scale", [0.0, 0.5])
def test_vocoding_the_window_alone_keeps_its_samples(voice, noise_scale):
    """The vocoder renders a window plus its receptive radius, not the whole slice that the
    flow saw: the pieces are those of vocoding the whole slice."""
    model, ids, tokens = voice
    plan = WindowPlan(window=8, context=16, lookahead=12, max_window=32, growth=2)
    cut = WindowedRenderer(model, ids, noise_scale, seed=3, plan=plan)
    assert 0 < cut.vocoder_margin < min(plan.context, plan.lookahead)  # the cut saves work here
    whole_slice = WindowedRenderer(model, ids, noise_scale, seed=3, plan=plan)
    whole_slice.vocoder_margin = len(tokens)  # vocode every token the flow rendered
    got, expected = _stream(cut, tokens), _stream(whole_slice, tokens)
    assert [n for n, _ in got] == [n for n, _ in expected] and len(got) >= 4
    for (_, a), (_, b) in zip(got, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_windows_of_several_requests_render_together_as_alone(voice):
    """Windows of different texts, lengths and noise in one SoVITS pass (text encoder and
    flow padded and masked, the vocoder over equally long slices) equal each alone."""
    model, _, tokens = voice
    texts = ["你好。", TEXT, "Hello there, how are you today?"]
    renderers = []
    for i, text in enumerate(texts):
        ids = [p for s in model_segments(text) for p in s.phone_ids]
        renderers.append(WindowedRenderer(model, ids, 0.5 * (i % 2), seed=i))
    windows = [renderers[0].window(tokens[:18], 0, 12), renderers[1].window(tokens[:18], 0, 12),  # equal slices
               renderers[2].window(tokens[:66], 12, 60), renderers[1].window(tokens, 60, len(tokens)),
               renderers[0].window(tokens[:5], 0, 5)]
    assert len({w.vocoded[1] - w.vocoded[0] for w in windows}) == 4  # one vocoder call holds two rows
    alone = render_windows(windows, batch=1)
    together = render_windows(windows, batch=len(windows))
    for w, a, b in zip(windows, alone, together):
        assert len(a) == len(b) == (w.b - w.a) * 2 * model.cfg.upsample_factor
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    assert render_windows(windows[:1], batch=1)[0].tobytes() == alone[0].tobytes()


def _burst(model, max_tokens: list[int], **options):
    """A `GsvRunner` (its `options`) with the bench's first texts admitted at once, greedy,
    text i ending at max_tokens[i] tokens."""
    import dataclasses
    from types import SimpleNamespace

    from voxpipe.bench.gsv_serve import _item, make_requests
    from voxpipe.stages.families.gpt_sovits.item import item_chunk
    from voxpipe.stages.families.gpt_sovits.runner import GsvRunner

    runner = GsvRunner(max_sequences=len(max_tokens), **options)
    spec = SimpleNamespace(model=model, spec=SimpleNamespace(name="w", sample_rate=model.sample_rate))
    for i, (r, limit) in enumerate(zip(make_requests(len(max_tokens)), max_tokens)):
        item = dataclasses.replace(_item(r), top_k=1, repetition_penalty=1.0)
        runner.admit(spec, item_chunk(item, f"r{i}"), max_tokens=limit)
    return runner


def test_the_runner_renders_due_windows_together_as_one_at_a_time(voice):
    from voxpipe.stages.families.gpt_sovits.models import windowed

    model = voice[0]
    calls: list[int] = []
    real = windowed._render_rows

    def counting(windows):
        calls.append(len(windows))
        return real(windows)

    def serve(window_batch: int) -> dict[str, list[np.ndarray]]:
        # Every text prefilled in the first step (as on a GPU), so their windows fall due together.
        runner = _burst(model, [40] * 4, window_batch=window_batch, prefills_per_step=None)
        pieces: dict[str, list[np.ndarray]] = {}
        while len(runner):
            for piece in runner.step().pieces:
                pieces.setdefault(piece.chunk.request_id, []).append(piece.audio)
        return pieces

    windowed._render_rows = counting
    try:
        one_at_a_time = serve(1)
        assert set(calls) == {1}
        calls.clear()
        together = serve(4)
    finally:
        windowed._render_rows = real
    assert max(calls) > 1  # windows of several requests went in one call
    assert one_at_a_time.keys() == together.keys() == {"r0", "r1", "r2", "r3"}
    for key, pieces in one_at_a_time.items():
        assert len(together[key]) == len(pieces) >= 1
        for a, b in zip(pieces, together[key]):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_a_burst_is_prefilled_one_a_step_and_first_windows_go_first(voice):
    """On a CPU a burst of texts joins one prefill per step, each step renders one window,
    and no text's later window is rendered while another's first one waits; the pieces are
    the ones the all-at-once schedule renders."""
    model = voice[0]

    def serve(prefills_per_step: int | None, window_batch: int) -> tuple[dict[str, list[np.ndarray]], list[int]]:
        runner = _burst(model, [30, 40, 50, 60], window_batch=window_batch, prefills_per_step=prefills_per_step)
        pieces: dict[str, list[np.ndarray]] = {}
        started: list[int] = []  # sequences past their prefill, after each step
        while len(runner):
            result = runner.step()
            started.append(sum(1 for s in runner.decoder.running.values() if s.steps > 0)
                           + sum(1 for p in result.pieces if p.last))
            rendered = [p for p in result.pieces if len(p.audio) > 1]
            assert len(rendered) <= window_batch
            if any(p.part > 0 for p in rendered):  # a later window went: no first one was waiting
                assert not [k for k, s in runner.streams.items() if s.parts_sent == 0 and s.pending]
            for piece in result.pieces:
                assert piece.part == len(pieces.get(piece.chunk.request_id, []))  # in order
                pieces.setdefault(piece.chunk.request_id, []).append(piece.audio)
        return pieces, started

    scheduled, started = serve(1, 1)
    assert started[:3] == [1, 2, 3]  # one prefill a step
    at_once, _ = serve(None, 4)
    assert scheduled.keys() == at_once.keys() == {"r0", "r1", "r2", "r3"}
    for key, pieces in at_once.items():
        assert len(scheduled[key]) == len(pieces) >= 2
        for a, b in zip(pieces, scheduled[key]):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_texts_waiting_to_render_hold_their_places(voice):
    """A text whose tokens are all decoded but whose windows still wait holds its place
    in the runner: no new text is admitted until its last piece is out, so new first
    windows cannot keep going ahead of its later ones."""
    # One prefill a step: the first text's last window falls due with a later text's first
    # window, which goes first; the first text then waits to render, done decoding.
    runner = _burst(voice[0], [19, 30, 60], window_batch=1, prefills_per_step=1)
    waited = False
    while len(runner):
        runner.step()
        if len(runner) == 3 and any(s.decoded and s.pending for s in runner.streams.values()):
            waited = True
            assert len(runner.decoder) < 3  # the decoder alone would take another text
        assert runner.has_room() == (len(runner) < 3)
    assert waited and runner.has_room()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_windows_of_several_requests_render_together_as_alone(tmp_path):
    """The GPU default (several windows per SoVITS call) against one at a time, on CUDA."""
    from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice
    from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel, VoiceFiles
    from voxpipe.stages.families.gpt_sovits.runner import default_batch

    assert default_batch() > 1
    directory = write_random_gsv_voice(tmp_path, "cuda", "v2", seed=4, max_sec=2.0)
    files = VoiceFiles(next(directory.glob("*.ckpt")), next(directory.glob("*.pth")), tmp_path / ".gsv-pretrained",
                       directory / "reference.wav")
    model = GsvModel(files, "cuda")
    model.build_prompt(model_segments("你好，这是一段参考音频。", "zh"))
    tokens = model.semantic_tokens(model_segments(TEXT), GREEDY, 0).tokens
    renderers = [WindowedRenderer(model, [p for s in model_segments(t) for p in s.phone_ids], 0.5, seed=i)
                 for i, t in enumerate(["你好。", TEXT, "Hello there, how are you today?"])]
    windows = [r.window(tokens[:18], 0, 12) for r in renderers] + [renderers[1].window(tokens, 12, len(tokens))]
    alone = render_windows(windows, batch=1)
    together = render_windows(windows, batch=len(windows))
    for a, b in zip(alone, together):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)  # GPU kernels may sum in another order
