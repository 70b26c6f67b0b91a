"""A worker's conditioning cache: what a request's own reference clip costs (the clip's
semantic tokens from HuBERT, its transcript's phones and BERT features, its spectrogram
and speaker embedding, and for v3/v4 the mel prompt) is computed once per (voice, clip
content hash, transcript, language, auxiliary clips) and kept, bounded by bytes, least
recently used out first. An entry is the voice's model speaking from that prompt
(`GsvModel.with_prompt`: the models are shared, only the prompt is the entry's own).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from voxpipe.ipc.messages import ChunkReference
from voxpipe.stages.engines.base import LoadedVoice
from voxpipe.stages.families.gpt_sovits.models import features
from voxpipe.stages.families.gpt_sovits.models.voice import TextSegment


class ConditioningCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()  # key -> (model view, bytes)
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def model_for(self, voice: LoadedVoice, reference: ChunkReference) -> Any:
        """The voice's model speaking from `reference`'s prompt; computed on a miss
        (FeatureError if the clip or its transcript cannot be used)."""
        # A voice loaded again is another model: its old entries can never hit again.
        key = (voice.spec.name, id(voice.model), *reference.key())
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]
        self.misses += 1
        model = voice.model
        audio, rate = _read(reference.clip, "reference clip")
        aux = [_read(path, f"auxiliary reference clip {i + 1}") for i, path in enumerate(reference.aux)]
        prompt = model.compute_prompt(audio, rate, _segments(reference.text, reference.language), aux)
        view = model.with_prompt(prompt)
        self._forget_other_loads(voice)
        size = prompt.nbytes()
        if size <= self.max_bytes:
            self._entries[key] = (view, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, old) = self._entries.popitem(last=False)
                self.bytes -= old
                self.evictions += 1
        return view

    def forget(self, voice_name: str) -> None:
        """Drop a voice's entries (it was unloaded)."""
        for key in [k for k in self._entries if k[0] == voice_name]:
            self.bytes -= self._entries.pop(key)[1]

    def _forget_other_loads(self, voice: LoadedVoice) -> None:
        for key in [k for k in self._entries if k[0] == voice.spec.name and k[1] != id(voice.model)]:
            self.bytes -= self._entries.pop(key)[1]

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "entries": len(self._entries), "bytes": self.bytes}


def _read(path: str, what: str):
    if not Path(path).is_file():
        raise features.FeatureError(f"the {what} is no longer stored by the daemon; send the request again")
    return features.read_audio(Path(path))


def _segments(text: str, language: str) -> list[TextSegment]:
    from voxpipe.stages.families.gpt_sovits.text import segments

    try:
        runs = segments(text, language)
    except ValueError as exc:
        raise features.FeatureError(f"reference transcript: {exc}") from None
    return [TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph)) for s in runs]
