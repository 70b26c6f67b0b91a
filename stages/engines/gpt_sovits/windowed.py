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

from voxpipe.stages.engines.gpt_sovits.t2s import MAX_DECODE_STEPS
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
        pieces: list[np.ndarray] = []
        if not self.windowed:
            if final:
                self.emitted = len(tokens)
                pieces.append(self.model.render(tokens, self.phones[0].tolist(), self.noise_scale, self.speed, self.seed))
            return pieces
        plan, n = self.plan, len(tokens)
        while n - self.emitted >= (size := plan.window_at(self.pieces)) + plan.lookahead + (size if final else 0):
            pieces.append(self.render_range(tokens, self.emitted, self.emitted + size))
            self.emitted += size
            self.pieces += 1
        if final and n > self.emitted:
            pieces.append(self.render_range(tokens, self.emitted, n))
            self.emitted = n
        elif final and not pieces and self.emitted == 0:
            pieces.append(np.zeros(0, np.float32))
        return pieces

    def render_range(self, tokens: Sequence[int], a: int, b: int) -> np.ndarray:
        """Audio of tokens [a, b), rendered with context on both sides."""
        start, end = max(0, a - self.plan.context), min(len(tokens), b + self.plan.lookahead)
        vocoded = (max(start, a - self.vocoder_margin), min(end, b + self.vocoder_margin))
        audio = self.render_slice(tokens, start, end, vocoded)
        per_token = FRAMES_PER_TOKEN * self.model.cfg.upsample_factor
        return audio[(a - vocoded[0]) * per_token:(b - vocoded[0]) * per_token]

    @torch.no_grad()
    def render_slice(self, tokens: Sequence[int], start: int, end: int,
                     vocoded: tuple[int, int] | None = None) -> np.ndarray:
        """Render tokens [start, end): the text encoder sees every token up to `end` (its
        attention is global), the flow (local convolutions) only the slice, and the
        vocoder the tokens `vocoded` of it (default: all) -> their audio."""
        model = self.model
        synth, prompt = model.synth, model._prompt()
        ids = torch.tensor([list(tokens[:end])], dtype=torch.long, device=model.device)
        content = F.interpolate(synth.codebook.decode(ids), size=FRAMES_PER_TOKEN * end, mode="nearest")
        y_lengths = torch.tensor([content.size(2)], device=content.device)
        phone_lengths = torch.tensor([self.phones.size(1)], device=content.device)
        m, logs, y_mask = synth.enc_p(content, y_lengths, self.phones, phone_lengths, prompt.ge_text, 1.0)
        lo, hi = FRAMES_PER_TOKEN * start, FRAMES_PER_TOKEN * end
        m, logs, y_mask = m[:, :, lo:hi], logs[:, :, lo:hi], y_mask[:, :, lo:hi]
        z_p = m
        if self.noise is not None:
            z_p = m + self.noise[:, :, lo:hi] * torch.exp(logs) * self.noise_scale
        z = synth.flow.reverse(z_p, y_mask, prompt.ge) * y_mask
        if vocoded is not None:
            z = z[:, :, FRAMES_PER_TOKEN * (vocoded[0] - start):FRAMES_PER_TOKEN * (vocoded[1] - start)]
        return synth.vocode(z, prompt.ge).cpu().numpy().astype(np.float32, copy=False)


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
