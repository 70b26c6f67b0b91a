"""GPT-SoVITS's text-to-semantic decoder: an autoregressive transformer over
[phones (+BERT) | semantic tokens], run with a KV cache.

The prompt (reference phones, their BERT features and the reference clip's semantic
tokens) and the target phones form one sequence; phone positions see all phones, token
positions see all phones and the tokens before them. Each step appends one token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.models.checkpoints import load_exact

if TYPE_CHECKING:
    from voxpipe.stages.families.gpt_sovits.decoder.int8 import Int8Block, Int8Decoder

BERT_DIM = 1024
MAX_DECODE_STEPS = 1500  # a hard ceiling, as in GPT-SoVITS
MIN_TOKENS_BEFORE_EOS = 11  # EOS is not allowed in the first steps
TOKENS_PER_SECOND = 50  # early_stop_num = TOKENS_PER_SECOND * max_sec, as GPT-SoVITS counts


def token_limit(early_stop: int) -> int:
    """The most semantic tokens a sequence keeps when EOS never comes. GPT-SoVITS's
    default decode (api_v2's `parallel_infer`, `infer_panel_batch_infer`) generates
    early_stop_num + 1 tokens and returns the first early_stop_num; at its 1500-step
    ceiling it returns 1499. Stopping at the limit gives the same tokens a step sooner."""
    return max(1, min(early_stop, MAX_DECODE_STEPS - 1))


@dataclass(frozen=True)
class T2SConfig:
    embedding_dim: int
    hidden_dim: int
    n_heads: int
    n_layers: int
    vocab_size: int
    phoneme_vocab_size: int
    eos: int
    max_sec: float

    @classmethod
    def from_checkpoint_config(cls, config: Any) -> "T2SConfig":
        model = config["model"]
        return cls(int(model["embedding_dim"]), int(model["hidden_dim"]), int(model["head"]), int(model["n_layer"]),
                   int(model["vocab_size"]), int(model["phoneme_vocab_size"]), int(model["EOS"]),
                   float(config["data"]["max_sec"]))

    @property
    def early_stop(self) -> int:
        return int(TOKENS_PER_SECOND * self.max_sec)


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling settings; top_k <= 0 means no top-k cut."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35


def sine_positions(length: int, dim: int) -> Tensor:
    """[1, length, dim] sinusoidal table: sin on even channels, cos on odd ones."""
    pe = torch.zeros(length, dim)
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe.unsqueeze(0)


class _Embedding(nn.Module):
    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(n, dim)


class _Position(nn.Module):
    """Sinusoidal positions scaled by a learned `alpha`."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))


class Block(nn.Module):
    """A post-norm transformer layer (names as torch's TransformerEncoderLayer)."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.self_attn = nn.Module()
        self.self_attn.in_proj_weight = nn.Parameter(torch.zeros(3 * dim, dim))
        self.self_attn.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.self_attn.out_proj = nn.Linear(dim, dim)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor, cache: "LayerCache", mask: Tensor | None, int8: "Int8Block | None" = None) -> Tensor:
        """`int8`: the layer's four products with int8 weights (decoder/int8.py), the rest as is."""
        b, t, d = x.shape
        if int8 is None:
            qkv = F.linear(x, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias)
            out, ff1, ff2 = self.self_attn.out_proj, self.linear1, self.linear2
        else:
            qkv, out, ff1, ff2 = int8.qkv(x), int8.out, int8.ff1, int8.ff2
        q, k, v = qkv.chunk(3, dim=-1)
        k, v = cache.append(k, v)
        n = self.n_heads
        attn = F.scaled_dot_product_attention(q.view(b, t, n, -1).transpose(1, 2), k.view(b, -1, n, d // n).transpose(1, 2),
                                              v.view(b, -1, n, d // n).transpose(1, 2), mask)
        x = self.norm1(x + out(attn.transpose(1, 2).reshape(b, t, d)))
        return self.norm2(x + ff2(F.relu(ff1(x))))


@dataclass
class LayerCache:
    """Keys and values of one layer, preallocated for the whole decode."""

    k: Tensor
    v: Tensor
    length: int = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[1]
        self.k[:, self.length:end] = k
        self.v[:, self.length:end] = v
        self.length = end
        return self.k[:, :end], self.v[:, :end]


@dataclass
class DecodeResult:
    tokens: list[int]  # generated semantic tokens, EOS excluded
    stopped_by_eos: bool
    steps: int


class Text2Semantic(nn.Module):
    def __init__(self, cfg: T2SConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert_proj = nn.Linear(BERT_DIM, cfg.embedding_dim)
        self.ar_text_embedding = _Embedding(cfg.phoneme_vocab_size, cfg.embedding_dim)
        self.ar_text_position = _Position()
        self.ar_audio_embedding = _Embedding(cfg.vocab_size, cfg.embedding_dim)
        self.ar_audio_position = _Position()
        self.h = nn.Module()
        self.h.layers = nn.ModuleList(Block(cfg.hidden_dim, cfg.n_heads) for _ in range(cfg.n_layers))
        self.ar_predict_layer = nn.Linear(cfg.hidden_dim, cfg.vocab_size, bias=False)
        self.register_buffer("pe", sine_positions(4000, cfg.embedding_dim), persistent=False)
        # The precision its batched serving steps run in (fp32, bf16, fp16, int8), and its
        # serving prefills (fp32, int8): the engine's choice for the voice (precision.py).
        # The model itself stays as loaded.
        self.precision = "fp32"
        self.prefill_precision = "fp32"

    def _positions(self, length: int) -> Tensor:
        if length > self.pe.shape[1]:
            self.pe = sine_positions(length, self.cfg.embedding_dim).to(self.pe)
        return self.pe[:, :length]

    def prefill_state(self, phones: Tensor, bert: Tensor, prompt: Tensor | None,
                      room_after_prefill: int = MAX_DECODE_STEPS) -> "PrefillState":
        """What every decode sets up before its first step: phones [1, P] (prompt phones +
        target phones), bert [1024, P], prompt tokens [1, T0] or None. The caches hold the
        prefill plus `room_after_prefill` tokens (0 where the keys move elsewhere after it)."""
        cfg = self.cfg
        bert = bert.to(self.bert_proj.weight.dtype)  # a no-op unless the weights are half precision
        x = self.ar_text_embedding.word_embeddings(phones) + self.bert_proj(bert.unsqueeze(0).transpose(1, 2))
        x = x + self.ar_text_position.alpha * self._positions(x.shape[1])
        x_len = x.shape[1]
        device = phones.device
        history = prompt if prompt is not None else torch.zeros(1, 0, dtype=torch.long, device=device)
        y_len = history.shape[1]
        if y_len:
            y = self.ar_audio_embedding.word_embeddings(history)
            xy = torch.cat([x, y + self.ar_audio_position.alpha * self._positions(y_len)], dim=1)
        else:
            xy = x
        total = x_len + y_len
        # True = may attend: phones see phones; tokens see phones and earlier tokens.
        allowed = torch.zeros(total, total, dtype=torch.bool, device=device)
        allowed[:, :x_len] = True
        allowed[x_len:, x_len:] = torch.ones(y_len, y_len, dtype=torch.bool, device=device).tril()
        capacity = total + room_after_prefill
        caches = [LayerCache(x.new_empty(1, capacity, cfg.hidden_dim), x.new_empty(1, capacity, cfg.hidden_dim))
                  for _ in self.h.layers]
        tokens = torch.empty(1, y_len + MAX_DECODE_STEPS + 1, dtype=torch.long, device=device)
        tokens[:, :y_len] = history
        positions = self.ar_audio_position.alpha * self._positions(y_len + MAX_DECODE_STEPS)[:, y_len:]
        return PrefillState(xy, allowed.view(1, 1, total, total), caches, tokens, y_len, positions, x_len, total)

    def run_layers(self, h: Tensor, caches: list[LayerCache], mask: Tensor | None,
                   int8: "Int8Decoder | None" = None) -> Tensor:
        """The transformer over h [1, t, d], appending its keys/values to `caches`;
        `int8`: every layer's products with int8 weights."""
        for i, (layer, cache) in enumerate(zip(self.h.layers, caches)):
            h = layer(h, cache, mask, int8.blocks[i] if int8 is not None else None)
        return h

    @torch.inference_mode()
    def decode(self, phones: Tensor, bert: Tensor, prompt: Tensor | None, sampling: Sampling,
               generator: torch.Generator | None = None, early_stop: int | None = None) -> DecodeResult:
        """phones [1, P] (prompt phones + target phones), bert [1024, P], prompt tokens
        [1, T0] or None -> the generated tokens."""
        cfg = self.cfg
        limit = token_limit(cfg.early_stop if early_stop is None else early_stop)
        state = self.prefill_state(phones, bert, prompt)
        greedy_only = sampling.top_k == 1 and sampling.repetition_penalty == 1.0
        generated: list[int] = []
        mask: Tensor | None = state.mask
        h = state.xy
        stopped_by_eos = False
        step = 0
        token_in = torch.zeros(1, 1, dtype=torch.long, device=phones.device)
        for step in range(MAX_DECODE_STEPS):
            h = self.run_layers(h, state.caches, mask)
            mask = None
            logits = self.ar_predict_layer(h[:, -1])
            if step < MIN_TOKENS_BEFORE_EOS:
                logits = logits[:, :-1]
            greedy = int(torch.argmax(logits, dim=-1)[0])
            token = greedy if greedy_only else sample(logits, state.previous_tokens(), sampling, generator)
            if greedy == cfg.eos or token == cfg.eos:
                stopped_by_eos = True
                break
            generated.append(token)
            state.record(token)
            if len(generated) >= limit:
                break
            token_in[0, 0] = token
            h = self.ar_audio_embedding.word_embeddings(token_in) + state.positions[:, step:step + 1]
        return DecodeResult(generated, stopped_by_eos, step + 1)


@dataclass
class PrefillState:
    """A sequence's decoding state before its first step (see `Text2Semantic.prefill_state`)."""

    xy: Tensor  # [1, total, d]: phones (+BERT) then prompt tokens, with their positions
    mask: Tensor  # [1, 1, total, total] bool, True = may attend
    caches: list[LayerCache]  # one per layer, empty until the prefill runs
    history: Tensor  # [1, T0 + MAX_DECODE_STEPS + 1]: every token so far, prompt first (repetition penalty)
    n_history: int  # how many of `history` are set
    positions: Tensor  # [1, MAX_DECODE_STEPS, d]: alpha-scaled audio positions of the generated tokens
    x_len: int  # phones
    total: int  # phones + prompt tokens: the prefill's length

    @property
    def y_len(self) -> int:
        return self.total - self.x_len

    def previous_tokens(self) -> Tensor:
        return self.history[:, :self.n_history]

    def record(self, token: int) -> None:
        self.history[0, self.n_history] = token
        self.n_history += 1


def sample(logits: Tensor, previous: Tensor, s: Sampling, generator: torch.Generator | None) -> int:
    """One token from logits [1, V]: repetition penalty on every earlier token (prompt
    included), then top-p, temperature, top-k, and a draw seeded by `generator`."""
    if previous.numel() and s.repetition_penalty != 1.0:
        logits = logits.clone()
        index = previous
        score = torch.gather(logits, 1, index)
        score = torch.where(score < 0, score * s.repetition_penalty, score / s.repetition_penalty)
        logits.scatter_(1, index, score)
    if s.top_k == 1:  # greedy: top-p keeps the best token and temperature keeps the order
        return int(torch.argmax(logits, dim=-1)[0])
    if s.top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > s.top_p
        remove[:, 0] = False
        logits = logits.masked_fill(remove.scatter(1, sorted_index, remove), -float("inf"))
    logits = logits / max(s.temperature, 1e-5)
    if s.top_k > 0:
        pivot = torch.topk(logits, min(s.top_k, logits.size(-1))).values[:, -1:]
        logits = torch.where(logits < pivot, -float("inf"), logits)
    probs = F.softmax(logits, dim=-1)
    # Exponential race: argmax(p / q), q ~ Exp(1), draws index i with probability p_i.
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return int(torch.argmax(probs / q, dim=-1)[0])


def load_t2s(cfg: T2SConfig, weights: dict[str, Tensor]) -> Text2Semantic:
    """`model.`-prefixed fp32 weights -> the decoder; KeyError names what is missing."""
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    return load_exact(Text2Semantic(cfg), state, "GPT checkpoint")
