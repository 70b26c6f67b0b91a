"""Audio while semantic tokens are still coming: the SoVITS synthesizer renders a
sequence's tokens window by window as the decoder produces them.

The synthesizer is not causal (its text encoder attends over the whole token sequence;
flow and vocoder convolutions see neighbours on both sides), so a window [a, b) is
rendered from tokens [a - context, b + lookahead) with all of the text's phones, and only
the samples of [a, b) are kept. A window is therefore ready once `lookahead` tokens past
it exist; the last window is rendered when the sequence ends. The kept pieces joined end
to end differ from rendering the whole sequence at once by a small, measured amount
(docs/gpt-sovits-serving.md); noise, when asked for, is drawn per latent frame from the
request's seed, so a window sees the same noise the whole rendering would.

The context and lookahead serve the text encoder and the flow; the vocoder (a HiFi-GAN
stack of convolutions) sees only a few frames either side, so it renders the window plus
its receptive radius (receptive_field.py), not the whole slice: the kept samples are the
same, and each window costs less (about a quarter less vocoder work at the default plan).

Windows due at the same step, across requests of one voice, can go through the
synthesizer together (`render_windows`): text encoder and flow padded and masked, the
vocoder over rows whose slices are equally long (it has no mask), equal to rendering each
alone up to float rounding. The serving runner does so on a GPU; on a CPU the renders are
compute-bound at one window already and batching them measured no faster.

Windows need speed 1 (a speed change resamples the whole latent); other speeds are
rendered in one piece when the sequence ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.models.layers import sequence_mask
from voxpipe.stages.families.gpt_sovits.decoder.t2s import MAX_DECODE_STEPS
from voxpipe.stages.engines.receptive_field import receptive_radius

FRAMES_PER_TOKEN = 2  # 25 Hz tokens -> 50 Hz latent frames


@dataclass(frozen=True)
class WindowPlan:
    # Measured at full size, 16 requests at once on 2 CPU cores (docs/gpt-sovits-serving.md):
    # a first window of 12 with 6 of lookahead gives first audio 1.3x sooner than 24 and 12,
    # at the same requests/s, when later windows grow 4x (12, 48, 96, ...): few windows,
    # so little rendering of context and lookahead that is thrown away.
    window: int = 12  # tokens of audio in the first piece (~0.5 s)
    context: int = 24  # tokens rendered before a window (text encoder and flow), then cut away
    lookahead: int = 6  # tokens rendered after a window, then cut away; the wait before a piece
    max_window: int = 96  # the largest window
    growth: int = 4  # each window this many times the one before, up to max_window

    @property
    def first_audio_tokens(self) -> int:
        return self.window + self.lookahead

    def window_at(self, index: int) -> int:
        """Tokens of audio in piece `index` (0-based)."""
        return max(self.window, min(self.max_window, self.window * self.growth ** min(index, 16)))


class WindowedRenderer:
    """Renders one sequence's tokens in windows. Call `push` as tokens arrive."""

    rendering = False  # every piece comes from `push`: no work waits after the last one

    def __init__(self, model, phone_ids: Sequence[int], noise_scale: float, speed: float = 1.0,
                 seed: int | None = None, plan: WindowPlan = WindowPlan()) -> None:
        self.model, self.plan = model, plan
        self.phones = torch.tensor([list(phone_ids)], dtype=torch.long, device=model.device)
        self.noise_scale, self.speed, self.seed = noise_scale, speed, seed
        self.windowed = speed == 1.0
        self.emitted = 0  # tokens whose audio has been returned
        self.pieces = 0  # windows returned
        self.noise: Tensor | None = None
        # Tokens either side of a window that the vocoder needs to render it exactly.
        self.vocoder_margin = -(-receptive_radius(model.synth.dec) // FRAMES_PER_TOKEN)
        if noise_scale and self.windowed:
            self.noise = frame_noise(model.cfg.inter_channels, seed, model.device)

    def push(self, tokens: Sequence[int], final: bool) -> list[np.ndarray]:
        """The pieces of audio that `tokens` (all produced so far) make ready."""
        if not self.windowed:
            return self.render_whole(tokens) if final else []
        return render_windows(self.due(tokens, final), batch=1)

    def render_whole(self, tokens: Sequence[int]) -> list[np.ndarray]:
        """The one piece of a sequence rendered at another speed, when it ends."""
        self.emitted = len(tokens)
        return [self.model.render(tokens, self.phones[0].tolist(), self.noise_scale, self.speed, self.seed)]

    def due(self, tokens: Sequence[int], final: bool) -> list["Window"]:
        """The windows that `tokens` (all produced so far) make ready, in order; they count
        as returned from now on. An empty sequence's end is one empty window."""
        plan, n = self.plan, len(tokens)
        windows = []
        while n - self.emitted >= (size := plan.window_at(self.pieces)) + plan.lookahead + (size if final else 0):
            windows.append(self.window(tokens, self.emitted, self.emitted + size))
            self.emitted += size
            self.pieces += 1
        if final and (n > self.emitted or (not windows and self.emitted == 0)):
            windows.append(self.window(tokens, self.emitted, n))
            self.emitted = n
        return windows

    def window(self, tokens: Sequence[int], a: int, b: int) -> "Window":
        """The rendering of tokens [a, b): context on both sides for the text encoder and
        flow, the receptive radius for the vocoder."""
        start, end = max(0, a - self.plan.context), min(len(tokens), b + self.plan.lookahead)
        vocoded = (max(start, a - self.vocoder_margin), min(end, b + self.vocoder_margin))
        return Window(self, list(tokens[:end]), a, b, start, vocoded)

    def render_slice(self, tokens: Sequence[int], start: int, end: int) -> np.ndarray:
        """Audio of tokens [start, end), every one of them rendered and kept."""
        return render_windows([Window(self, list(tokens[:end]), start, end, start, (start, end))], batch=1)[0]


@dataclass(frozen=True)
class Window:
    """One piece to render: keep tokens [a, b); the text encoder sees all of `tokens`
    (those up to the slice's end), the flow tokens [start, len(tokens)), the vocoder
    tokens `vocoded`."""

    renderer: WindowedRenderer
    tokens: list[int]
    a: int
    b: int
    start: int
    vocoded: tuple[int, int]

    @property
    def end(self) -> int:
        return len(self.tokens)


@torch.no_grad()
def render_windows(windows: Sequence[Window], batch: int) -> list[np.ndarray]:
    """The audio of each window, in order. Windows of one voice go through the SoVITS
    synthesizer up to `batch` at a time: text encoder and flow padded and masked (their
    masks make a padded row compute what it would alone), the vocoder, which has no mask,
    over the rows whose vocoded slices are equally long."""
    out: list[np.ndarray | None] = [None] * len(windows)
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        if w.b == w.a:
            out[i] = np.zeros(0, np.float32)
        else:
            groups.setdefault(id(w.renderer.model), []).append(i)
    for members in groups.values():
        for first in range(0, len(members), batch):
            rows = members[first:first + batch]
            for i, audio in zip(rows, _render_rows([windows[i] for i in rows])):
                out[i] = audio
    return out  # type: ignore[return-value]


def _render_rows(windows: list[Window]) -> list[np.ndarray]:
    """Windows of one voice in one pass through text encoder and flow."""
    model = windows[0].renderer.model
    synth, prompt, device = model.synth, model._prompt(), model.device
    n, ends = len(windows), [w.end for w in windows]
    ids = torch.zeros(n, max(ends), dtype=torch.long, device=device)
    for row, w in enumerate(windows):
        ids[row, :w.end] = torch.tensor(w.tokens, dtype=torch.long, device=device)
    frames = FRAMES_PER_TOKEN * max(ends)
    content = F.interpolate(synth.codebook.decode(ids), size=frames, mode="nearest")
    phone_lengths = [w.renderer.phones.size(1) for w in windows]
    phones = torch.zeros(n, max(phone_lengths), dtype=torch.long, device=device)
    for row, w in enumerate(windows):
        phones[row, :phone_lengths[row]] = w.renderer.phones[0]
    y_lengths = torch.tensor([FRAMES_PER_TOKEN * e for e in ends], device=device)
    m, logs, _ = synth.enc_p(content, y_lengths, phones, torch.tensor(phone_lengths, device=device),
                             prompt.ge_text.expand(n, -1, -1), 1.0)
    # Each row's flow slice [start, end), moved to the left of the batch and masked.
    spans = [(FRAMES_PER_TOKEN * w.start, FRAMES_PER_TOKEN * w.end) for w in windows]
    width = max(hi - lo for lo, hi in spans)
    z_p = torch.zeros(n, m.size(1), width, dtype=m.dtype, device=device)
    for row, (w, (lo, hi)) in enumerate(zip(windows, spans)):
        z_p[row, :, :hi - lo] = m[row, :, lo:hi]
        noise = w.renderer.noise
        if noise is not None:
            z_p[row, :, :hi - lo] += noise[0, :, lo:hi] * torch.exp(logs[row, :, lo:hi]) * w.renderer.noise_scale
    mask = sequence_mask(torch.tensor([hi - lo for lo, hi in spans], device=device), width).unsqueeze(1).to(m.dtype)
    z = synth.flow.reverse(z_p, mask, prompt.ge.expand(n, -1, -1)) * mask
    # The vocoder has no mask: rows go together only when their slices are equally long.
    per_token = FRAMES_PER_TOKEN * model.cfg.upsample_factor
    by_length: dict[int, list[int]] = {}
    for row, w in enumerate(windows):
        by_length.setdefault(w.vocoded[1] - w.vocoded[0], []).append(row)
    audio: list[np.ndarray | None] = [None] * n
    for length, rows in by_length.items():
        offsets = [FRAMES_PER_TOKEN * (windows[row].vocoded[0] - windows[row].start) for row in rows]
        zs = torch.stack([z[row, :, lo:lo + FRAMES_PER_TOKEN * length] for row, lo in zip(rows, offsets)])
        wav = synth.run_vocoder(zs, prompt.ge.expand(len(rows), -1, -1))[:, 0].cpu().numpy().astype(np.float32, copy=False)
        for k, row in enumerate(rows):
            w = windows[row]
            audio[row] = wav[k, (w.a - w.vocoded[0]) * per_token:(w.b - w.vocoded[0]) * per_token]
    return audio  # type: ignore[return-value]


def frame_noise(channels: int, seed: int | None, device) -> Tensor:
    """[1, channels, frames] standard normal noise laid out frame by frame, so that frame
    t's noise does not depend on how many frames a rendering covers."""
    generator = torch.Generator(device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    frames = FRAMES_PER_TOKEN * (MAX_DECODE_STEPS + 2)
    return torch.randn(1, frames, channels, generator=generator, device=device).transpose(1, 2)
