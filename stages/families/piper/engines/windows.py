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
