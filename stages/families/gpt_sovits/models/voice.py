"""A GPT-SoVITS voice in memory: its two models, the shared pretrained feature models,
and its reference prompt, computed once at load.

The prompt is what every request of the voice reuses: the reference clip's semantic
tokens (HuBERT -> codebook), its timbre vectors (spectrogram [+ speaker embedding] ->
style encoder), and the reference transcript's phones with their BERT features.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from voxpipe.stages.families.gpt_sovits.models import checkpoints, features, speaker
from voxpipe.stages.families.gpt_sovits.models.sovits import SovitsConfig, Synthesizer, load_synthesizer
from voxpipe.stages.families.gpt_sovits.decoder.t2s import BERT_DIM, DecodeResult, Sampling, T2SConfig, Text2Semantic, load_t2s

PROMPT_SILENCE_S = 0.3  # GPT-SoVITS appends sampling_rate * 0.3 zero samples to the 16 kHz clip


@dataclass(frozen=True)
class TextSegment:
    """One language run of a text: its phone ids and, for Chinese, what BERT needs."""

    lang: str  # "zh" | "en"
    norm_text: str
    phone_ids: tuple[int, ...]
    word2ph: tuple[int, ...] = ()  # phones per character of norm_text (zh only)


@dataclass(frozen=True)
class VoiceFiles:
    gpt: Path
    sovits: Path
    pretrained: Path
    ref_audio: Path


@dataclass
class Prompt:
    tokens: Tensor  # [1, T]
    phone_ids: list[int]
    bert: Tensor  # [1024, len(phone_ids)]
    ge: Tensor
    ge_text: Tensor
    mel: Tensor | None = None  # v3/v4: the mel decoder's prompt, normalized log-mel [1, 100, n]
    mel_fea: Tensor | None = None  # v3/v4: the CFM features aligned with `mel` [1, C, n]

    def nbytes(self) -> int:
        tensors = (self.tokens, self.bert, self.ge, self.ge_text, self.mel, self.mel_fea)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None) + 8 * len(self.phone_ids)


@dataclass
class Shared:
    """Pretrained feature models of one directory, shared by the voices that use it."""

    root: Path
    device: str = "cpu"
    dtype: torch.dtype = torch.float32  # the daemon's choice, never a config.json's
    hubert: object | None = None
    bert: tuple | None = None
    sv: speaker.ERes2NetV2 | None = None

    def get_hubert(self):
        if self.hubert is None:
            self.hubert = features.load_hubert(self.root, self.dtype).to(self.device)
        return self.hubert

    def get_bert(self):
        if self.bert is None:
            tokenizer, model = features.load_bert(self.root, self.dtype)
            self.bert = tokenizer, model.to(self.device)
        return self.bert

    def get_sv(self) -> speaker.ERes2NetV2:
        if self.sv is None:
            path = self.root / speaker.SV_FILE
            if not path.is_file():
                raise features.FeatureError(f"pretrained speaker-verification model not found: expected {path}")
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
                model = speaker.load_speaker_model(state)
            except Exception as exc:  # a truncated file, another network's weights, ...
                raise features.FeatureError(f"pretrained speaker-verification model {path}: cannot load "
                                            f"({type(exc).__name__}: {exc})") from None
            self.sv = model.to(self.device, self.dtype)
        return self.sv


_SHARED: dict[tuple[Path, str, torch.dtype], Shared] = {}


def shared_models(root: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Shared:
    """One set per pretrained directory, device and precision, whatever the number of voices."""
    key = (root.resolve(), device, dtype)
    if key not in _SHARED:
        _SHARED[key] = Shared(*key)
    return _SHARED[key]


class GsvModel:
    """Both models of a voice plus its prompt: `semantic_tokens` then `render` speak a text."""

    def __init__(self, files: VoiceFiles, device: str = "cpu", feature_dtype: torch.dtype = torch.float32) -> None:
        """`feature_dtype`: the precision of the shared HuBERT, BERT and speaker models
        (float32 on a CPU); the voice's own models run in float32."""
        gpt_config, gpt_weights = checkpoints.load_gpt(files.gpt)
        self.version, sovits_config, sovits_weights = checkpoints.load_sovits(files.sovits)
        n_symbols = int(sovits_weights["enc_p.text_embedding.weight"].shape[0])
        try:
            self.t2s: Text2Semantic = load_t2s(T2SConfig.from_checkpoint_config(gpt_config), gpt_weights)
            self.cfg = SovitsConfig.from_hparams(sovits_config, self.version, n_symbols)
            self.synth: Synthesizer = load_synthesizer(self.cfg, sovits_weights)
        except (KeyError, TypeError, ValueError) as exc:
            raise checkpoints.CheckpointError(f"{files.gpt.name} / {files.sovits.name}: {exc}") from None
        self.device = torch.device(device)
        self.t2s.to(self.device)
        self.synth.to(self.device)
        self.shared = shared_models(files.pretrained, str(self.device), feature_dtype)
        self.files = files
        self.prompt: Prompt | None = None

    @property
    def sample_rate(self) -> int:
        return self.cfg.sampling_rate

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in (self.t2s, self.synth) for p in m.parameters())

    def reference_audio(self) -> tuple[np.ndarray, int]:
        """The voice's own clip: mono samples and their rate."""
        return features.read_audio(self.files.ref_audio)

    def clip_tensors(self, audio: np.ndarray, rate: int, name: str = "reference clip") -> tuple[Tensor, Tensor]:
        """A clip at 16 kHz (for HuBERT) and at the model's rate (for the spectrogram)."""
        wav16k = features.resample(audio, rate, features.HUBERT_RATE)
        seconds = wav16k.shape[0] / features.HUBERT_RATE
        if not features.MIN_REFERENCE_S <= seconds <= features.MAX_REFERENCE_S:
            raise features.FeatureError(f"{name} is {seconds:.1f} s long; "
                                        f"it must last {features.MIN_REFERENCE_S:g} to {features.MAX_REFERENCE_S:g} s")
        wav = features.resample(audio, rate, self.cfg.sampling_rate)
        return torch.from_numpy(wav16k).to(self.device), torch.from_numpy(wav).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def build_prompt(self, segments: Sequence[TextSegment]) -> Prompt:
        """The voice's own prompt, from its clip and transcript (what requests without a
        clip of their own use)."""
        audio, rate = self.reference_audio()
        self.prompt = self.compute_prompt(audio, rate, segments, name=f"reference clip {self.files.ref_audio.name}")
        return self.prompt

    @torch.no_grad()
    def compute_prompt(self, audio: np.ndarray, rate: int, segments: Sequence[TextSegment],
                       aux: Sequence[tuple[np.ndarray, int]] = (), name: str = "reference clip") -> Prompt:
        """A prompt from a clip and its transcript's runs. `aux` clips lend their timbre:
        the style vector is the mean over every clip's (speaker embedding included, for
        v2Pro/v2ProPlus), as GPT-SoVITS fuses several references."""
        wav16k, wav = self.clip_tensors(audio, rate, name)
        silence = torch.zeros(int(self.cfg.sampling_rate * PROMPT_SILENCE_S), dtype=wav16k.dtype, device=self.device)
        content = features.hubert_features(self.shared.get_hubert(), torch.cat([wav16k, silence]))
        tokens = self.synth.extract_tokens(content)
        timbres = [self._timbre(wav)]
        for clip, clip_rate in aux:
            timbres.append(self._timbre(torch.from_numpy(
                features.resample(clip, clip_rate, self.cfg.sampling_rate)).unsqueeze(0).to(self.device)))
        ge, ge_text = self.synth.condition_many(timbres)
        phone_ids, bert = self.text_inputs(segments)
        return Prompt(tokens, phone_ids, bert, ge, ge_text)

    def _timbre(self, wav: Tensor) -> tuple[Tensor, Tensor | None]:
        """A clip at the model's rate [1, T] -> its spectrogram (+ speaker embedding)."""
        peak = wav.abs().max()
        if peak > 1:
            wav = wav / min(2, float(peak))
        spec = features.linear_spectrogram(wav, self.cfg.filter_length, self.cfg.hop_length, self.cfg.win_length)
        sv = None
        if self.cfg.is_pro:
            wav_sv = torch.from_numpy(features.resample(wav[0].cpu().numpy(), self.cfg.sampling_rate,
                                                        speaker.SAMPLE_RATE)).to(self.device)
            sv = speaker.speaker_embedding(self.shared.get_sv(), wav_sv)
        return spec, sv

    def with_prompt(self, prompt: Prompt) -> "GsvModel":
        """This voice speaking from another prompt: the same models (shared, not copied)."""
        view = copy.copy(self)
        view.prompt = prompt
        return view

    def text_inputs(self, segments: Sequence[TextSegment],
                    bert_of: dict[TextSegment, Tensor] | None = None) -> tuple[list[int], Tensor]:
        """Phone ids and BERT features [1024, phones] of a text's runs; `bert_of` holds
        features computed beforehand (`batch_text_inputs`)."""
        ids: list[int] = []
        parts: list[Tensor] = []
        for seg in segments:
            ids.extend(seg.phone_ids)
            if bert_of is not None and seg in bert_of:
                parts.append(bert_of[seg])
            elif seg.lang == "zh":
                tokenizer, model = self.shared.get_bert()
                try:
                    parts.append(features.bert_features(tokenizer, model, seg.norm_text, seg.word2ph))
                except features.FeatureError:
                    # The tokenizer did not split the text one token per character (a
                    # character outside its vocabulary rules): speak it without BERT.
                    parts.append(torch.zeros(BERT_DIM, len(seg.phone_ids), device=self.device))
            else:
                parts.append(torch.zeros(BERT_DIM, len(seg.phone_ids), device=self.device))
        bert = torch.cat(parts, dim=1) if parts else torch.zeros(BERT_DIM, 0, device=self.device)
        return ids, bert

    @torch.no_grad()
    def semantic_tokens(self, segments: Sequence[TextSegment], sampling: Sampling, seed: int | None,
                        early_stop: int | None = None) -> DecodeResult:
        prompt = self._prompt()
        ids, bert = self.text_inputs(segments)
        phones = torch.tensor([prompt.phone_ids + ids], dtype=torch.long, device=self.device)
        generator = torch.Generator(self.device).manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
        return self.t2s.decode(phones, torch.cat([prompt.bert, bert], dim=1), prompt.tokens, sampling, generator,
                               early_stop)

    @torch.no_grad()
    def render(self, tokens: Sequence[int], phone_ids: Sequence[int], noise_scale: float, speed: float = 1.0,
               seed: int | None = None) -> np.ndarray:
        """Semantic tokens + the target's phone ids -> float32 audio at sample_rate."""
        prompt = self._prompt()
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        z = self.synth.latent(torch.tensor([list(tokens)], dtype=torch.long, device=self.device),
                              torch.tensor([list(phone_ids)], dtype=torch.long, device=self.device),
                              prompt.ge, prompt.ge_text, noise_scale, speed, generator)
        return self.synth.vocode(z, prompt.ge).cpu().numpy().astype(np.float32, copy=False)

    def _prompt(self) -> Prompt:
        if self.prompt is None:
            raise RuntimeError("build_prompt() first")
        return self.prompt


def batch_text_inputs(texts: Sequence[tuple[GsvModel, Sequence[TextSegment]]]) -> list[tuple[list[int], Tensor]]:
    """`text_inputs` of several texts, with the BERT features of all their Mandarin runs
    computed in one pass per BERT model (texts arriving together share it)."""
    groups: dict[int, tuple[Shared, list[TextSegment]]] = {}
    for model, segments in texts:
        for seg in segments:
            if seg.lang == "zh":
                group = groups.setdefault(id(model.shared), (model.shared, []))
                if seg not in group[1]:
                    group[1].append(seg)
    bert_of: dict[tuple[int, TextSegment], Tensor] = {}
    for key, (shared, segs) in groups.items():
        tokenizer, bert = shared.get_bert()
        results = features.bert_features_batch(tokenizer, bert, [s.norm_text for s in segs], [s.word2ph for s in segs])
        for seg, result in zip(segs, results):
            if isinstance(result, Tensor):
                bert_of[(key, seg)] = result
            # else: text_inputs speaks the run without BERT, as for a lone text
    return [model.text_inputs(segments, {seg: f for (key, seg), f in bert_of.items() if key == id(model.shared)})
            for model, segments in texts]
