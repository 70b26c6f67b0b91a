"""Inputs the models need, computed with libraries: audio reading and resampling
(soundfile, soxr), the linear spectrogram, HuBERT content features and BERT phone
features (transformers' own model classes, from the pretrained directories)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

HUBERT_DIR = "chinese-hubert-base"
BERT_DIR = "chinese-roberta-wwm-ext-large"
HUBERT_RATE = 16000
MIN_REFERENCE_S, MAX_REFERENCE_S = 3.0, 10.0


class FeatureError(Exception):
    """A pretrained model or the reference clip cannot be used."""


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own error types and RuntimeError
        raise FeatureError(f"cannot read reference clip {path.name}: {exc}") from None
    return np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]), int(rate)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio.astype(np.float32, copy=False), rate, target, quality="HQ").astype(np.float32)


def linear_spectrogram(audio: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """[1, samples] -> magnitude [1, n_fft/2+1, frames]; reflect-padded by (n_fft-hop)/2."""
    pad = int((n_fft - hop) / 2)
    y = torch.nn.functional.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win, device=y.device),
                      center=False,
                      normalized=False, onesided=True, return_complex=True)
    spec = torch.view_as_real(spec)
    return torch.sqrt(spec.pow(2).sum(-1) + 1e-8)


def require_dir(root: Path, name: str) -> Path:
    path = root / name
    if not (path / "config.json").is_file():
        raise FeatureError(f"pretrained model {name!r} not found: expected {path}/config.json (the Hugging Face "
                           f"layout, as in GPT-SoVITS's pretrained_models/)")
    return path


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _from_pretrained(cls, path: Path, dtype: torch.dtype):
    """`cls.from_pretrained` in `dtype`, whatever the folder's config.json declares:
    upstream's configs say `"torch_dtype": "float16"`, which recent transformers honour,
    and a half-precision model then fails on every float32 input. The keyword is
    `dtype` in transformers 5 and `torch_dtype` before."""
    import transformers

    keyword = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = cls.from_pretrained(str(path), local_files_only=True, **{keyword: dtype}).eval()
    return model.to(dtype)  # buffers and anything the loader left in another precision


def load_hubert(root: Path, dtype: torch.dtype = torch.float32):
    from transformers import HubertModel

    _quiet_transformers()
    path = require_dir(root, HUBERT_DIR)
    try:
        return _from_pretrained(HubertModel, path, dtype)
    except Exception as exc:  # transformers raises OSError/ValueError/... for broken dirs
        raise FeatureError(f"pretrained model {HUBERT_DIR!r} in {root}: cannot load ({exc})") from None


def load_bert(root: Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    _quiet_transformers()
    path = require_dir(root, BERT_DIR)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = _from_pretrained(AutoModelForMaskedLM, path, dtype)
    except Exception as exc:
        raise FeatureError(f"pretrained model {BERT_DIR!r} in {root}: cannot load ({exc})") from None
    return tokenizer, model


@torch.no_grad()
def hubert_features(model, wave16k: Tensor) -> Tensor:
    """[samples] -> float32 [1, 768, frames]; the raw waveform, not normalized (as GPT-SoVITS feeds it)."""
    dtype = next(model.parameters()).dtype
    return model(wave16k.unsqueeze(0).to(dtype)).last_hidden_state.transpose(1, 2).float()


@torch.no_grad()
def bert_features(tokenizer, model, text: str, word2ph: Sequence[int]) -> Tensor:
    """Character-aligned BERT features repeated per phone: [1024, sum(word2ph)], from the
    third-to-last hidden layer."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in tokenizer(text, return_tensors="pt").items()}
    hidden = model(**inputs, output_hidden_states=True).hidden_states[-3][0][1:-1].float()
    if hidden.shape[0] != len(word2ph):
        raise FeatureError(f"BERT tokenized {text!r} into {hidden.shape[0]} tokens for {len(word2ph)} characters")
    return torch.repeat_interleave(hidden, torch.tensor(list(word2ph), dtype=torch.long, device=device), dim=0).T


@torch.no_grad()
def bert_features_batch(tokenizer, model, texts: Sequence[str],
                        word2phs: Sequence[Sequence[int]]) -> list[Tensor | FeatureError]:
    """`bert_features` of several texts in one padded pass (the attention mask keeps each
    text to its own tokens); a text the tokenizer does not split one token per character
    gets its FeatureError in its place."""
    if not texts:
        return []
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in tokenizer(list(texts), return_tensors="pt", padding=True).items()}
    hidden = model(**inputs, output_hidden_states=True).hidden_states[-3].float()
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    out: list[Tensor | FeatureError] = []
    for row, (text, word2ph, length) in enumerate(zip(texts, word2phs, lengths)):
        chars = hidden[row, 1:int(length) - 1]
        if chars.shape[0] != len(word2ph):
            out.append(FeatureError(f"BERT tokenized {text!r} into {chars.shape[0]} tokens for "
                                    f"{len(word2ph)} characters"))
            continue
        repeats = torch.tensor(list(word2ph), dtype=torch.long, device=device)
        out.append(torch.repeat_interleave(chars, repeats, dim=0).T)
    return out
