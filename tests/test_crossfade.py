import numpy as np

from voxpipe.stages.merger.crossfade import CrossfadeJoiner


def max_step(signal: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(signal))))


def join(pieces: list[np.ndarray], fade: int, chunk_starts: list[bool] | None = None) -> np.ndarray:
    joiner = CrossfadeJoiner(fade)
    starts = chunk_starts or [True] * len(pieces)
    out = [joiner.push(p, crossfade=s, final=i == len(pieces) - 1) for i, (p, s) in enumerate(zip(pieces, starts))]
    return np.concatenate(out)


def speech_like(seed: int, n: int, offset: float) -> np.ndarray:
    """Band-limited noise (uncorrelated between seeds, like two chunks' audio) plus an offset."""
    noise = np.random.default_rng(seed).standard_normal(n + 64)
    smooth = np.convolve(noise, np.hanning(64) / np.hanning(64).sum(), mode="valid")[:n]
    return (0.5 * smooth / np.abs(smooth).max() + offset).astype(np.float32)


def test_no_step_at_a_join_larger_than_the_signals_own():
    a, b = speech_like(1, 11025, 0.3), speech_like(2, 11025, -0.3)
    joined = join([a, b], fade=661)  # 30 ms at 22.05 kHz
    own = max(max_step(a), max_step(b))
    assert max_step(joined) <= own
    assert abs(float(b[0] - a[-1])) > 3 * own  # a hard cut would have clicked


def test_equal_power_keeps_loudness_of_uncorrelated_signals():
    a, b = speech_like(3, 22050, 0.0), speech_like(4, 22050, 0.0)
    a, b = a / a.std(), b / b.std()
    fade = 4000
    joined = join([a, b], fade=fade)
    overlap = joined[len(a) - fade:len(a)]
    assert 0.8 < float(overlap.std()) < 1.2


def test_length_loses_exactly_one_overlap_per_join():
    pieces = [np.ones(1000, np.float32), np.ones(800, np.float32), np.ones(900, np.float32)]
    assert len(join(pieces, fade=100)) == 2700 - 2 * 100


def test_continuation_windows_join_exactly():
    audio = np.random.default_rng(1).standard_normal(3000).astype(np.float32)
    joined = join([audio[:1000], audio[1000:2000], audio[2000:]], fade=100, chunk_starts=[True, False, False])
    assert np.array_equal(joined, audio)


def test_streaming_pieces_equal_one_shot_join():
    rng = np.random.default_rng(2)
    pieces = [rng.standard_normal(n).astype(np.float32) for n in (500, 50, 700)]  # one shorter than the fade
    joiner = CrossfadeJoiner(120)
    streamed = [joiner.push(p, True, i == 2) for i, p in enumerate(pieces)]
    assert np.allclose(np.concatenate(streamed), join(pieces, 120))
