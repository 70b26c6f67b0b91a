"""The `gpt-sovits` engine: runs GPT-SoVITS voices from users' own checkpoints.

A chunk arrives as GPT-SoVITS phone ids cut into language runs (the frontend's G2P);
the engine adds BERT features for the Mandarin runs, decodes semantic tokens after the
voice's cached prompt (seeded per request), and renders them with the SoVITS synthesizer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice
from voxpipe.stages.engines.gpt_sovits.item import GsvItem
from voxpipe.stages.engines.gpt_sovits import checkpoints, features
from voxpipe.stages.engines.gpt_sovits.t2s import Sampling
from voxpipe.stages.engines.gpt_sovits.voice import GsvModel, TextSegment, VoiceFiles
from voxpipe.stages.engines.gpt_sovits.voice_config import MEL_VERSIONS
from voxpipe.stages.voices import VoiceSpec


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


class GptSovitsEngine(Engine):
    name = "gpt-sovits"
    # The family serves this engine's chunks through a StreamRunner (serving.py):
    # continuous batching of the decoder, audio in windows as tokens come.
    max_batch = 16  # sequences in the running batch, at most

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.max_batch = int(settings.options.get("max_batch", self.max_batch))  # worker.max_batch
        self.device = settings.device if settings.device.startswith("cuda") else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(max(1, settings.threads))
            torch.set_flush_denormal(True)  # denormals make random/quiet signals crawl on CPU

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        from voxpipe.stages.text.gsv import segments

        cfg = spec.config
        files = VoiceFiles(Path(cfg["gpt"]), Path(cfg["sovits"]), Path(cfg["pretrained_dir"]),
                           Path(cfg["reference"]["audio"]))
        try:
            if cfg["version"] in MEL_VERSIONS:
                from voxpipe.stages.engines.gpt_sovits.voice_v3 import GsvModelV3

                model = GsvModelV3(files, cfg["version"], self.device)
            else:
                model = GsvModel(files, self.device)
            if model.version != cfg["version"] and {model.version, cfg["version"]} != {"v2Pro", "v2ProPlus"}:
                raise EngineError(f"voice {spec.name!r}: voice.toml says {cfg['version']} but "
                                  f"{files.sovits.name} is a {model.version} model")
            reference = cfg["reference"]
            model.build_prompt([_to_model_segment(s) for s in segments(reference["text"], reference["language"])])
        except (checkpoints.CheckpointError, features.FeatureError) as exc:
            raise EngineError(f"voice {spec.name!r}: {exc}") from None
        return LoadedVoice(spec, model, model.nbytes())

    def unload_voice(self, voice: LoadedVoice) -> None:
        voice.model = None
        if self.device != "cpu":
            torch.cuda.empty_cache()

    def memory_info(self) -> dict[str, int]:
        if self.device == "cpu":
            return {}
        free, total = torch.cuda.mem_get_info(torch.device(self.device))
        return {"free": int(free), "total": int(total)}

    def synthesize(self, voice: LoadedVoice, items: Sequence[GsvItem]) -> list[np.ndarray]:
        model: GsvModel = voice.model
        out = []
        for item in items:
            segs = item_segments(item)
            sampling = Sampling(item.top_k, item.top_p, item.temperature, item.repetition_penalty)
            try:
                decoded = model.semantic_tokens(segs, sampling, item.seed)
                ids = [i for s in segs for i in s.phone_ids]
                steps = {"steps": item.sample_steps} if model.version in MEL_VERSIONS else {}
                out.append(model.render(decoded.tokens, ids, item.noise_scale, 1.0 / item.length_scale, item.seed,
                                        **steps))
            except features.FeatureError as exc:
                raise EngineError(f"voice {voice.spec.name!r}: {exc}") from None
        return out


def _to_model_segment(seg) -> TextSegment:
    return TextSegment(seg.lang, seg.norm_text, tuple(seg.ids), tuple(seg.word2ph))
