"""The rounds of windows a split Piper voice decodes a sentence in
(stages/families/piper/engines/windows.py)."""
from __future__ import annotations

import pytest

from voxpipe.stages.families.piper.engines.windows import round_windows


def _rounds(total: int, first: int, lanes: int) -> list[list[tuple[int, int]]]:
    rounds, start, size, lanes_now = [], 0, first, 1
    while start < total:
        windows = round_windows(start, total, size, lanes_now)
        rounds.append(windows)
        start, size, lanes_now = windows[-1][1], size * 2, lanes
    return rounds


@pytest.mark.parametrize("total", [1, 40, 63, 64, 95, 96, 97, 300, 1090, 5000])
@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_rounds_cover_the_sentence_once_in_order(total, lanes):
    flat = [w for r in _rounds(total, 64, lanes) for w in r]
    assert flat[0][0] == 0 and flat[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(flat, flat[1:]))
    assert all(e > s for s, e in flat)


def test_first_window_is_small_and_alone():
    rounds = _rounds(1090, 64, 2)
    assert rounds[0] == [(0, 64)]
    assert len(rounds[1]) == 2  # later rounds run in lanes
    assert rounds[1] == [(64, 192), (192, 320)]


def test_a_short_leftover_joins_the_round():
    assert round_windows(0, 90, 64, 1) == [(0, 90)]  # 26 frames left: less than half a window
    assert round_windows(0, 96, 64, 1) == [(0, 64)]


def test_lanes_never_narrower_than_the_minimum():
    assert round_windows(0, 100, 100, 4, min_lane=64) == [(0, 100)]
    assert round_windows(0, 130, 130, 4, min_lane=64) == [(0, 65), (65, 130)]
    assert len(round_windows(0, 1000, 1000, 4, min_lane=64)) == 4


def test_bad_rounds_are_refused():
    with pytest.raises(ValueError):
        round_windows(10, 10, 64, 1)
    with pytest.raises(ValueError):
        round_windows(0, 10, 0, 1)
