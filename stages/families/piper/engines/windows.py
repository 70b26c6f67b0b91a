"""Which latent frames of a sentence each decode call renders.

A split Piper voice renders a sentence's latent in windows (flow and vocoder, each with
the context either side that reaches the window, so the windows join exactly). The first
window is small, so the first audio comes early; each later round is twice as wide, and
on free cores a round is cut into lanes that run side by side: one-thread calls on their
own slices scale better on a CPU than one call's intra-op threads do, which is what makes
a lone sentence finish sooner than in one graph call.
"""
from __future__ import annotations

MIN_LANE_FRAMES = 64  # narrower, a lane's context costs more than its second core saves


def round_windows(start: int, total: int, size: int, lanes: int,
                  min_lane: int | None = None) -> list[tuple[int, int]]:
    """The windows [(start, end), ...] of the round that begins at `start`: up to `lanes`
    windows of about `size` frames each, contiguous. A round that would leave less than
    half a window behind takes the rest too (a last window that short would cost its
    context more than its frames)."""
    if not 0 <= start < total:
        raise ValueError(f"round start {start} outside [0, {total})")
    if size < 1 or lanes < 1:
        raise ValueError("window size and lanes must be positive")
    remaining = total - start
    span = min(remaining, size * lanes)
    if remaining - span < size // 2:
        span = remaining
    count = max(1, min(lanes, span // max(1, min_lane or MIN_LANE_FRAMES)))
    edges = [start + span * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))
