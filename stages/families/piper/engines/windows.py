"""Which latent frames of a sentence each vocoder call renders when it is streamed.

A split Piper voice renders a streamed sentence's latent in windows, each with the
context either side that reaches it, so the windows join exactly. The first window is
small, so the first audio comes early; each later one is GROWTH times wider: the
listener is ahead by then (a window's audio plays for far longer than the next, wider
one takes to render even on one core), and every boundary costs its context twice, so
few wide windows waste least.
"""
from __future__ import annotations

GROWTH = 8  # even on one core, the next window renders before the audio so far has played
WHOLE_UNDER = 3  # a sentence under this many first windows is one window: its first audio is soon anyway


def stream_windows(total: int, first: int, growth: int = GROWTH, whole_under: int = WHOLE_UNDER) -> list[tuple[int, int]]:
    """The windows [(start, end), ...] covering frames [0, total) in order: the first
    `first` frames wide, each next `growth` times wider than the one before. A window that
    would leave less than half of itself behind takes the rest too (a last window that
    short would cost its context more than its frames), and a sentence shorter than
    `whole_under` first windows is one window."""
    if total < 1 or first < 1 or growth < 1:
        raise ValueError("frames, the first window and the growth must be positive")
    if total < whole_under * first:
        return [(0, total)]
    windows, start, size = [], 0, first
    while start < total:
        end = min(total, start + size)
        if total - end < size // 2:
            end = total
        windows.append((start, end))
        start, size = end, size * growth
    return windows


MIN_ROW_FRAMES = 160  # a row narrower than this costs its context more than its thread saves


def row_count(frames: int, threads: int, min_row: int = MIN_ROW_FRAMES) -> int:
    """How many rows a vocoder call over `frames` frames splits into on `threads` threads:
    one per thread, each at least `min_row` frames of its own. One call shares its work
    among threads less well than rows side by side do, but each row renders its context
    again: measured on 2 cores, one two-thread call against two one-thread rows, `joe`,
    median ms: 120 frames 59.7 / 65.5, 200 76.6 / 82.4, 300 121.6 / 119.8, 500 217.4 / 209.0."""
    return max(1, min(threads, frames // min_row))


def vocoder_rows(start: int, end: int, span_lo: int, span_hi: int, radius: int,
                 rows: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Split the vocoder's work on frames [start, end) into `rows` windows of one width
    (one width: the rows of a batch; rows side by side then take alike long).

    [span_lo, span_hi) is the latent the call may read: [start - radius, end + radius]
    cut at the item's edges. Returns (width, [(read_from, own_start, own_end), ...]): row i
    reads frames [read_from, read_from + width) and keeps the audio of [own_start, own_end).
    Every row has `radius` frames of context either side of what it keeps, or reaches the
    item's edge there, so the rows join exactly; a row at an edge reads further inward to
    keep the width (more context changes nothing)."""
    if end <= start or rows < 1:
        raise ValueError("a vocoder call needs frames and at least one row")
    per = -(-(end - start) // rows)
    width = min(span_hi - span_lo, per + 2 * radius)
    plan = []
    for own_start in range(start, end, per):
        own_end = min(end, own_start + per)
        read_from = min(max(span_lo, own_start - radius), span_hi - width)
        plan.append((read_from, own_start, own_end))
    return width, plan
