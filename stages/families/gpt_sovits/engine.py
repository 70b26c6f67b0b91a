"""The `gpt-sovits` engine: loads GPT-SoVITS voices from users' own checkpoints.

It loads a voice's models and builds its prompt once; chunks run through the family's
serving runner (runner.py), which decodes the semantic tokens of many requests in one
batch and renders their audio in windows. A chunk arrives as GPT-SoVITS phone ids cut
into language runs (the frontend's G2P); BERT features are added for the Mandarin runs
(Japanese, Korean, Cantonese and English runs get zeros, as in GPT-SoVITS).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import torch

from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice, is_out_of_memory
from voxpipe.stages.engines.busy_board import CoreShare
from voxpipe.stages.families.gpt_sovits import precision
from voxpipe.stages.families.gpt_sovits.conditioning import ConditioningCache
from voxpipe.stages.families.gpt_sovits.item import GsvItem
from voxpipe.stages.families.gpt_sovits.models import checkpoints, features
from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel, TextSegment, VoiceFiles
from voxpipe.stages.families.gpt_sovits.spec import gsv_config
from voxpipe.stages.families.gpt_sovits.voice_config import MEL_VERSIONS
from voxpipe.stages.voices import VoiceSpec

log = logging.getLogger(__name__)


def item_segments(item: GsvItem) -> list[TextSegment]:
    """The item's language runs; without any, the whole chunk is one run without BERT."""
    ids = [int(i) for i in item.phoneme_ids]
    if not item.text_segments:
        return [TextSegment("en", "", tuple(ids))]
    out, pos = [], 0
    for lang, norm_text, n_phones, word2ph in item.text_segments:
        out.append(TextSegment(lang, norm_text, tuple(ids[pos:pos + n_phones]), tuple(word2ph)))
        pos += n_phones
    if pos != len(ids):
        raise EngineError(f"chunk has {len(ids)} phone ids but its language runs cover {pos}")
    return out


def fit_to_version(segments: list[TextSegment], version: str | None) -> list[TextSegment]:
    """A v1 model's runs: its table has no Korean, Cantonese or pitch-mark phones (the
    frontend, not knowing the version of a voice.toml that leaves it out, may send them):
    Korean or Cantonese is an error, a pitch mark becomes UNK, as GPT-SoVITS reads v1."""
    if version != "v1":
        return segments
    from voxpipe.stages.families.gpt_sovits.text.symbols import SYMBOL_TO_ID, V1_SYMBOLS

    unread = sorted({s.lang for s in segments} & {"ko", "yue"})
    if unread:
        raise EngineError(f"a v1 voice cannot read {' or '.join(unread)} text; v1 reads zh, en and ja")
    unk, size = SYMBOL_TO_ID["UNK"], len(V1_SYMBOLS)
    return [TextSegment(s.lang, s.norm_text, tuple(i if i < size else unk for i in s.phone_ids), s.word2ph)
            for s in segments]


class GptSovitsEngine(Engine):
    name = "gpt-sovits"
    # The family serves this engine's chunks through its GsvRunner (runner.py):
    # continuous batching of the decoder, audio in windows as tokens come.
    max_batch = 16  # sequences in the running batch, at most

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.max_batch = int(settings.options.get("max_batch", self.max_batch))  # worker.max_batch
        self.device = settings.device if settings.device.startswith("cuda") else "cpu"
        # Prompts of requests' own reference clips (worker.gsv_conditioning_mib), used by the runner.
        self.conditioning = ConditioningCache(int(float(settings.options.get("gsv_conditioning_mib", 256.0)) * 2**20))
        self.cores: CoreShare | None = None
        if self.device == "cpu":
            # A lone request runs on every core; under load each worker keeps to its share.
            self.cores = CoreShare(settings, "gpt-sovits engine")
            self._threads = self.cores.base
            torch.set_num_threads(self._threads)
            torch.set_flush_denormal(True)  # denormals make random/quiet signals crawl on CPU

    @contextlib.contextmanager
    def compute(self) -> Iterator[None]:
        """One unit of model work (a serving step). On a CPU its torch threads follow how
        many other engine processes are busy (stages/engines/busy_board.py); the parts
        that decide tokens keep a fixed count inside it (`deciding`)."""
        if self.cores is None:
            yield
            return
        with self.cores.call() as threads:
            if threads != self._threads:
                torch.set_num_threads(threads)
                self._threads = threads
            yield

    @contextlib.contextmanager
    def deciding(self) -> Iterator[None]:
        """Work whose numbers decide tokens (BERT, a reference clip's prompt, the semantic
        decoder): on a CPU always at the configured `worker.threads`, whatever the call
        got. Sums split across another number of threads come out in another order, and a
        last-bit difference flips a sampled token where candidates are nearly tied, so a
        chunk's tokens must not follow the machine's load (docs/gpt-sovits-serving.md)."""
        if self.cores is None or self._threads == self.cores.base:
            yield
            return
        elastic = self._threads
        torch.set_num_threads(self.cores.base)
        try:
            yield
        finally:
            torch.set_num_threads(elastic)

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        """The voice's models and prompt. Every failure is an EngineError naming the voice
        and the reason, except running out of memory, which propagates as it is."""
        from voxpipe.stages.families.gpt_sovits.text import segments

        cfg = gsv_config(spec)
        try:
            files = VoiceFiles(cfg.gpt, cfg.sovits, cfg.pretrained_dir, cfg.reference.audio)
            wanted = cfg.version  # None: whatever the checkpoint is
            if wanted in MEL_VERSIONS:
                from voxpipe.stages.families.gpt_sovits.models.voice_v3 import GsvModelV3

                model = GsvModelV3(files, wanted, self.device)
            else:
                model = GsvModel(files, self.device, _feature_dtype(self.device, self.settings.precision))
            if wanted is not None and model.version != wanted and {model.version, wanted} != {"v2Pro", "v2ProPlus"}:
                raise EngineError(f"voice {spec.name!r}: voice.toml says {wanted} but "
                                  f"{files.sovits.name} is a {model.version} model")
            reference = cfg.reference
            model.build_prompt([_to_model_segment(s) for s in
                                segments(reference.text, reference.language, version=model.version)])
            choice = self._choose_precision(model, cfg.precision)
        except EngineError:
            raise
        except (checkpoints.CheckpointError, features.FeatureError) as exc:
            raise EngineError(f"voice {spec.name!r}: {exc}") from None
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            # Anything else (a model that does not fit its config, a text the G2P refuses,
            # a library's own error) must not take the worker down: say what it was.
            raise EngineError(f"voice {spec.name!r}: cannot load ({type(exc).__name__}: {exc})") from exc
        log.info("voice %r: %s%s", spec.name, choice.summary(), "".join(f"; {n}" for n in choice.notes))
        return LoadedVoice(spec, model, model.nbytes(), {"precision": choice.summary(), "precision_notes": choice.notes})

    def _choose_precision(self, model, voice_wants: dict[str, str]) -> precision.PrecisionChoice:
        """The voice's own [precision] table over the daemon's defaults (auto: probed once
        per machine, precision.py)."""
        options = self.settings.options
        wanted = {"decoder": str(options.get("gsv_decoder_precision", precision.AUTO)),
                  "renderer": str(options.get("gsv_renderer_precision", precision.AUTO)),
                  "prefill": str(options.get("gsv_prefill_precision", precision.AUTO)), **voice_wants}
        cache = options.get("gsv_precision_cache_dir")
        return precision.choose(model, wanted, Path(cache) if cache else None)

    def unload_voice(self, voice: LoadedVoice) -> None:
        self.conditioning.forget(voice.spec.name)
        voice.model = None
        if self.device != "cpu":
            torch.cuda.empty_cache()

    def memory_info(self) -> dict[str, int]:
        if self.device == "cpu":
            return {}
        free, total = torch.cuda.mem_get_info(torch.device(self.device))
        return {"free": int(free), "total": int(total)}


_FEATURE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _feature_dtype(device: str, precision: str) -> torch.dtype:
    """The shared feature models' precision: float32 on a CPU, the configured one on a GPU."""
    return _FEATURE_DTYPES.get(precision, torch.float32) if device != "cpu" else torch.float32


def _to_model_segment(seg) -> TextSegment:
    return TextSegment(seg.lang, seg.norm_text, tuple(seg.ids), tuple(seg.word2ph))
