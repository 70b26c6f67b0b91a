"""The windows a split Piper voice streams a sentence in
(stages/families/piper/engines/windows.py)."""
from __future__ import annotations

import pytest

from voxpipe.stages.families.piper.engines.windows import MIN_ROW_FRAMES, row_count, stream_windows, vocoder_rows


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


@pytest.mark.parametrize("start,end,total", [(0, 644, 644), (32, 644, 644), (0, 32, 644), (5, 400, 700),
                                             (288, 1090, 1090), (0, 97, 97), (600, 1301, 2000)])
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
def test_rows_cover_the_window_each_with_its_context(start, end, total, rows):
    radius = 13
    span_lo, span_hi = max(0, start - radius), min(total, end + radius)
    width, plan = vocoder_rows(start, end, span_lo, span_hi, radius, rows)
    assert 1 <= len(plan) <= rows
    assert plan[0][1] == start and plan[-1][2] == end
    assert all(a[2] == b[1] for a, b in zip(plan, plan[1:]))  # each frame kept once, in order
    for read_from, own_start, own_end in plan:
        assert span_lo <= read_from and read_from + width <= span_hi  # only what the call may read
        assert own_start - read_from >= radius or read_from == 0  # context on the left, or the item's edge
        assert read_from + width - own_end >= radius or read_from + width == total  # and on the right


def test_rows_one_per_thread_when_wide_enough():
    assert row_count(MIN_ROW_FRAMES - 1, 2) == 1
    assert row_count(2 * MIN_ROW_FRAMES, 2) == 2
    assert row_count(2 * MIN_ROW_FRAMES, 8) == 2
    assert row_count(10_000, 1) == 1


def test_a_row_plan_needs_frames():
    with pytest.raises(ValueError):
        vocoder_rows(10, 10, 0, 20, 13, 2)
