"""A GPT-SoVITS v3/v4 voice in memory: the same semantic decoder and prompt as v2
(voice.py), then the CFM mel decoder and a vocoder instead of SoVITS's flow and HiFi-GAN.

Its prompt adds what the mel decoder is conditioned on: the reference clip's normalized
log-mel at the mel rate (24 kHz for v3, 32 kHz for v4) and the CFM features of the
reference tokens and transcript, both cut to a common length and then to their last
`T_ref` frames. A text's features are decoded in chunks of `T_chunk - T_ref` frames,
each with the previous chunk's last frames (mel and features) as its prompt.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.models import bigvgan, checkpoints, features, mel, vocoder_v4
from voxpipe.stages.families.gpt_sovits.models.sovits_v3 import SynthesizerV3, load_synthesizer_v3
from voxpipe.stages.families.gpt_sovits.decoder.t2s import T2SConfig, Text2Semantic, load_t2s
from voxpipe.stages.families.gpt_sovits.models.voice import PROMPT_SILENCE_S, GsvModel, Prompt, TextSegment, VoiceFiles, shared_models

VERSIONS = ("v3", "v4")
DEFAULT_STEPS = {"v3": 32, "v4": 8}


@dataclass(frozen=True)
class VocoderPlan:
    sample_rate: int
    hop: int  # audio samples per mel frame
    t_ref: int  # prompt frames, at most
    t_chunk: int  # prompt + new frames per CFM call
    mel: mel.MelConfig


PLANS = {"v3": VocoderPlan(24000, 256, 468, 934, mel.V3_MEL), "v4": VocoderPlan(48000, 480, 500, 1000, mel.V4_MEL)}


def load_vocoder(version: str, pretrained) -> torch.nn.Module:
    if version == "v3":
        return bigvgan.load_bigvgan(pretrained / bigvgan.FOLDER)
    return vocoder_v4.load_v4_vocoder(pretrained)


@dataclass
class MelJob:
    """One text's mel decoding in progress: its features, where the next chunk starts,
    and the prompt that chunk continues."""

    fea: Tensor  # [1, C, frames] the whole text's features
    prompt_mel: Tensor
    prompt_fea: Tensor
    steps: int
    generator: torch.Generator
    pos: int = 0

    def done(self) -> bool:
        return self.pos >= self.fea.shape[2]


class MelDecoder:
    """The SoVITS v3/v4 synthesizer, its vocoder and the reference prompt: features ->
    mel chunk by chunk (`start`, `next_mels`) -> audio (`vocode`)."""

    def __init__(self, sovits: Path, version: str, pretrained: Path, device: str = "cpu") -> None:
        if version not in VERSIONS:
            raise checkpoints.CheckpointError(f"{sovits.name}: the mel decoder serves v3 and v4, not {version}")
        self.version = version
        self.device = torch.device(device)
        self.synth: SynthesizerV3 = load_synthesizer_v3(sovits, version, pretrained).to(self.device)
        self.vocoder = load_vocoder(version, pretrained).to(self.device)
        self.plan = PLANS[version]
        self.ge: Tensor | None = None
        self.prompt_mel: Tensor | None = None  # [1, 100, n] normalized, the reference's last frames
        self.prompt_fea: Tensor | None = None  # [1, C, n] aligned with prompt_mel

    @classmethod
    def from_modules(cls, synth: SynthesizerV3, vocoder: torch.nn.Module, version: str) -> "MelDecoder":
        """A decoder around models already built (benchmarks with random weights)."""
        decoder = cls.__new__(cls)
        decoder.version, decoder.device, decoder.plan = version, next(synth.parameters()).device, PLANS[version]
        decoder.synth, decoder.vocoder = synth.eval(), vocoder.eval()
        decoder.ge = decoder.prompt_mel = decoder.prompt_fea = None
        return decoder

    @property
    def default_steps(self) -> int:
        return DEFAULT_STEPS[self.version]

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in (self.synth, self.vocoder) for p in m.parameters())

    @torch.no_grad()
    def set_prompt(self, tokens: Tensor, phone_ids: Sequence[int], refer_spec: Tensor, mel_audio: Tensor) -> None:
        """Reference tokens [1, T], transcript phones, linear spectrogram [1, F, T'] (for the
        timbre) and the clip at the mel rate [T''] (for the mel prompt)."""
        self.ge, self.prompt_mel, self.prompt_fea = self.mel_prompt(tokens, phone_ids, refer_spec, mel_audio)

    @torch.no_grad()
    def mel_prompt(self, tokens: Tensor, phone_ids: Sequence[int], refer_spec: Tensor,
                   mel_audio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`set_prompt`'s (timbre, mel prompt, features prompt), without setting them."""
        ge = self.synth.timbre(refer_spec)
        ref_mel = mel.normalize(mel.log_mel(mel_audio.unsqueeze(0), self.plan.mel))
        phones = torch.tensor([list(phone_ids)], dtype=torch.long, device=self.device)
        fea = self.synth.features(tokens, phones, ge)
        n = min(ref_mel.shape[2], fea.shape[2])  # align the two, then keep the last t_ref frames
        ref_mel, fea = ref_mel[:, :, :n], fea[:, :, :n]
        n = min(n, self.plan.t_ref)
        return ge, ref_mel[:, :, -n:], fea[:, :, -n:]

    def with_prompt(self, ge: Tensor, prompt_mel: Tensor, prompt_fea: Tensor) -> "MelDecoder":
        """This decoder with another prompt: the same models (shared, not copied)."""
        view = copy.copy(self)
        view.ge, view.prompt_mel, view.prompt_fea = ge, prompt_mel, prompt_fea
        return view

    @property
    def chunk_frames(self) -> int:
        """New frames per CFM call: t_chunk minus the prompt's."""
        if self.prompt_mel is None:
            raise RuntimeError("set_prompt() first")
        return self.plan.t_chunk - self.prompt_mel.shape[2]

    @torch.no_grad()
    def start(self, tokens: Sequence[int], phone_ids: Sequence[int], speed: float = 1.0, steps: int | None = None,
              seed: int | None = None) -> MelJob:
        if self.ge is None:
            raise RuntimeError("set_prompt() first")
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        phones = torch.tensor([list(phone_ids)], dtype=torch.long, device=self.device)
        fea = self.synth.features(ids, phones, self.ge, speed)
        generator = torch.Generator(self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return MelJob(fea, self.prompt_mel, self.prompt_fea, steps or self.default_steps, generator)

    @torch.no_grad()
    def next_mels(self, jobs: Sequence[MelJob]) -> list[Tensor]:
        """One CFM chunk for each job (all with the same step count) in one batched call
        -> each chunk's denormalized mel [1, 100, n]; the jobs advance. Each job draws its
        noise from its own generator, so batching does not change what it gets."""
        size = self.chunk_frames
        feats, prompts, noises = [], [], []
        for job in jobs:
            feats.append(torch.cat([job.prompt_fea, job.fea[:, :, job.pos:job.pos + size]], 2))
            prompts.append(job.prompt_mel)
            noises.append(torch.randn([1, self.plan.mel.n_mels, feats[-1].shape[2]], generator=job.generator,
                                      device=self.device))
        lengths = [f.shape[2] for f in feats]
        prompt_lens = [p.shape[2] for p in prompts]
        pad = lambda t, n: F.pad(t, (0, n - t.shape[2]))  # noqa: E731
        out = self.synth.cfm.sample(torch.cat([pad(f, max(lengths)) for f in feats]).transpose(1, 2),
                                    torch.cat([pad(p, max(prompt_lens)) for p in prompts]), prompt_lens,
                                    jobs[0].steps, torch.cat([pad(n, max(lengths)) for n in noises]), lengths)
        mels = []
        for i, job in enumerate(jobs):
            chunk = out[i:i + 1, :, prompt_lens[i]:lengths[i]]
            new = chunk.shape[2]
            keep = min(prompt_lens[i], new)  # the next chunk's prompt: this one's last frames
            job.prompt_mel = chunk[:, :, new - keep:]
            job.prompt_fea = job.fea[:, :, job.pos + new - keep:job.pos + new]
            job.pos += new
            mels.append(mel.denormalize(chunk))
        return mels

    def mel_chunks(self, job: MelJob) -> Iterator[Tensor]:
        while not job.done():
            yield self.next_mels([job])[0]

    @torch.no_grad()
    def vocode(self, mel_frames: Tensor) -> np.ndarray:
        """Denormalized mel [1, 100, n] -> float32 audio [n * hop]."""
        return self.vocoder(mel_frames)[0, 0].cpu().numpy().astype(np.float32, copy=False)

    @torch.no_grad()
    def render_mel(self, tokens: Sequence[int], phone_ids: Sequence[int], speed: float = 1.0,
                   steps: int | None = None, seed: int | None = None) -> Tensor:
        return torch.cat(list(self.mel_chunks(self.start(tokens, phone_ids, speed, steps, seed))), 2)


class GsvModelV3(GsvModel):
    """`semantic_tokens` as v2 (the same decoder and prompt); `render` through the mel
    decoder and vocoder."""

    def __init__(self, files: VoiceFiles, version: str, device: str = "cpu") -> None:  # noqa: super() not called
        gpt_config, gpt_weights = checkpoints.load_gpt(files.gpt)
        self.version = version
        try:
            self.t2s: Text2Semantic = load_t2s(T2SConfig.from_checkpoint_config(gpt_config), gpt_weights)
        except (KeyError, TypeError, ValueError) as exc:
            raise checkpoints.CheckpointError(f"{files.gpt.name}: {exc}") from None
        self.decoder = MelDecoder(files.sovits, version, files.pretrained, device)
        self.synth = self.decoder.synth
        self.cfg = self.synth.cfg.sovits
        self.device = torch.device(device)
        self.t2s.to(self.device)
        self.shared = shared_models(files.pretrained, str(self.device))
        self.files = files
        self.prompt: Prompt | None = None

    @property
    def sample_rate(self) -> int:
        return self.decoder.plan.sample_rate

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.t2s.parameters()) + self.decoder.nbytes()

    @torch.no_grad()
    def build_prompt(self, segments: Sequence[TextSegment]) -> Prompt:
        audio, rate = self.reference_audio()
        prompt = self.compute_prompt(audio, rate, segments, name=f"reference clip {self.files.ref_audio.name}")
        self.decoder.ge, self.decoder.prompt_mel, self.decoder.prompt_fea = prompt.ge, prompt.mel, prompt.mel_fea
        self.prompt = prompt
        return prompt

    @torch.no_grad()
    def compute_prompt(self, audio: np.ndarray, rate: int, segments: Sequence[TextSegment],
                       aux: Sequence[tuple[np.ndarray, int]] = (), name: str = "reference clip") -> Prompt:
        """As v2's, plus the mel decoder's prompt. `aux` clips are not used: v3/v4 take
        their timbre from the main clip alone, as GPT-SoVITS does."""
        wav16k, wav = self.clip_tensors(audio, rate, name)
        silence = torch.zeros(int(self.cfg.sampling_rate * PROMPT_SILENCE_S), dtype=wav16k.dtype, device=self.device)
        tokens = self.synth.extract_tokens(features.hubert_features(self.shared.get_hubert(),
                                                                    torch.cat([wav16k, silence])))
        peak = wav.abs().max()
        if peak > 1:
            wav = wav / min(2, float(peak))
        spec = features.linear_spectrogram(wav, self.cfg.filter_length, self.cfg.hop_length, self.cfg.win_length)
        phone_ids, bert = self.text_inputs(segments)
        # The mel prompt is taken from the clip as read (no peak normalization), at the mel rate.
        mel_audio = features.resample(audio, rate, self.decoder.plan.mel.sampling_rate)
        ge, prompt_mel, prompt_fea = self.decoder.mel_prompt(tokens, phone_ids, spec,
                                                             torch.from_numpy(mel_audio).to(self.device))
        return Prompt(tokens, phone_ids, bert, ge, ge, prompt_mel, prompt_fea)

    def with_prompt(self, prompt: Prompt) -> "GsvModelV3":
        view = copy.copy(self)
        view.prompt = prompt
        view.decoder = self.decoder.with_prompt(prompt.ge, prompt.mel, prompt.mel_fea)
        return view

    @torch.no_grad()
    def render(self, tokens: Sequence[int], phone_ids: Sequence[int], noise_scale: float = 0.0, speed: float = 1.0,
               seed: int | None = None, steps: int | None = None) -> np.ndarray:
        """Semantic tokens + the target's phone ids -> float32 audio at sample_rate
        (noise_scale has no part in v3/v4; the CFM's noise comes from the seed)."""
        self._prompt()
        return self.decoder.vocode(self.decoder.render_mel(tokens, phone_ids, speed, steps, seed))


class MelStreamRenderer:
    """The serving runner's renderer for v3/v4 voices (serving.py): nothing while tokens
    come (the text encoder needs them all); when they end, a mel job starts, and the
    runner renders it one CFM chunk per step (`job`, then `take` with each chunk's mel),
    batching the chunks of several requests of one voice in one call. One piece of audio
    per chunk.

    The vocoder sees `context` mel frames on both sides of each piece (the last frames of
    a chunk wait for the next), so the pieces join closely (tests/test_gsv_v3_stream.py)."""

    context = 32  # mel frames

    def __init__(self, model: GsvModelV3, phone_ids: Sequence[int], speed: float, steps: int | None,
                 seed: int | None) -> None:
        self.model, self.phone_ids, self.speed, self.steps, self.seed = model, list(phone_ids), speed, steps, seed
        self.job: MelJob | None = None
        self._vocoder: ChunkVocoder | None = None

    @property
    def decoder(self) -> MelDecoder:
        return self.model.decoder

    @property
    def rendering(self) -> bool:
        """Whether mel chunks are still to come."""
        return self.job is not None and not self.job.done()

    def push(self, tokens: Sequence[int], final: bool) -> list[np.ndarray]:
        if final and self.job is None:
            self.job = self.decoder.start(tokens, self.phone_ids, self.speed, self.steps, self.seed)
            self._vocoder = ChunkVocoder(self.decoder, self.context)
        return []

    def take(self, mel_chunk: Tensor) -> list[np.ndarray]:
        """The audio a freshly decoded mel chunk of `job` makes ready."""
        assert self.job is not None and self._vocoder is not None, "push(tokens, final=True) first"
        piece = self._vocoder.add(mel_chunk, last=self.job.done())
        return [] if piece is None else [piece]


class ChunkVocoder:
    """One text's audio from its mel chunks as they come. Each piece is vocoded with
    `context` frames of mel on both sides of it where they exist: the last `context`
    frames of a chunk wait for the next one, and the frames before a piece are rendered
    then cut away."""

    def __init__(self, decoder: MelDecoder, context: int) -> None:
        self.decoder, self.context = decoder, context
        self.mel: Tensor | None = None  # frames from `offset` on: what later pieces may still need
        self.offset = 0
        self.emitted = 0  # frames whose audio has gone out

    def add(self, chunk: Tensor, last: bool) -> np.ndarray | None:
        self.mel = chunk if self.mel is None else torch.cat([self.mel, chunk], 2)
        total = self.offset + self.mel.shape[2]
        end = total if last else max(self.emitted, total - self.context)
        if end == self.emitted:
            return None
        lead = min(self.context, self.emitted - self.offset)
        first = self.emitted - lead - self.offset
        audio = self.decoder.vocode(self.mel[:, :, first:min(total, end + self.context) - self.offset])
        hop = self.decoder.plan.hop
        piece = audio[lead * hop:(lead + end - self.emitted) * hop]
        self.emitted = end
        keep_from = max(0, end - self.context - self.offset)  # the next piece's lead at most
        self.mel, self.offset = self.mel[:, :, keep_from:], self.offset + keep_from
        return piece


def vocode_chunks(decoder: MelDecoder, chunks: Iterator[Tensor], context: int) -> Iterator[np.ndarray]:
    """Audio of mel chunks as they come (`ChunkVocoder`), the last one known by looking
    one chunk ahead."""
    vocoder = ChunkVocoder(decoder, context)
    pending = next(chunks, None)
    while pending is not None:
        current, pending = pending, next(chunks, None)
        piece = vocoder.add(current, last=pending is None)
        if piece is not None:
            yield piece
