"""The windows a split Piper voice streams a sentence in
(stages/families/piper/engines/windows.py)."""
from __future__ import annotations

import pytest

from voxpipe.stages.families.piper.engines.windows import stream_windows


@pytest.mark.parametrize("total", [1, 40, 63, 64, 95, 96, 97, 300, 1090, 5000])
@pytest.mark.parametrize("first", [1, 16, 64])
def test_windows_cover_the_sentence_once_in_order(total, first):
    windows = stream_windows(total, first)
    assert windows[0][0] == 0 and windows[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(e > s for s, e in windows)


def test_first_window_is_small_then_they_grow():
    assert stream_windows(1090, 32) == [(0, 32), (32, 288), (288, 1090)]
    assert stream_windows(1090, 64, growth=2) == [(0, 64), (64, 192), (192, 448), (448, 1090)]


def test_a_short_leftover_joins_the_window_before():
    assert stream_windows(90, 64, whole_under=1) == [(0, 90)]  # 26 frames left: less than half a window
    assert stream_windows(96, 64, whole_under=1) == [(0, 64), (64, 96)]


def test_a_short_sentence_is_one_window():
    assert stream_windows(95, 32) == [(0, 95)]
    assert stream_windows(96, 32) == [(0, 32), (32, 96)]


def test_bad_plans_are_refused():
    for bad in [(0, 64), (10, 0), (10, 64, 0)]:
        with pytest.raises(ValueError):
            stream_windows(*bad)
