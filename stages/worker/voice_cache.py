"""A worker's LRU cache of loaded voices, bounded in bytes (models differ 100x in size)."""
from __future__ import annotations

from collections import OrderedDict

from voxpipe.stages.engines.base import Engine, LoadedVoice
from voxpipe.stages.voices import VoiceSpec


class VoiceCache:
    def __init__(self, engine: Engine, capacity_bytes: int) -> None:
        self.engine = engine
        self.capacity = capacity_bytes
        self._voices: OrderedDict[str, LoadedVoice] = OrderedDict()
        self.hits = self.misses = self.loads = self.evictions = 0

    def get(self, spec: VoiceSpec) -> LoadedVoice:
        voice = self._voices.get(spec.name)
        if voice is not None and voice.spec == spec:
            self.hits += 1
            self._voices.move_to_end(spec.name)
            return voice
        self.misses += 1
        if voice is not None:  # the files changed under the same name
            self._evict(spec.name)
        voice = self.engine.load_voice(spec)
        self.loads += 1
        self._voices[spec.name] = voice
        while self.used_bytes() > self.capacity and len(self._voices) > 1:
            self._evict(next(iter(self._voices)))
        return voice

    def _evict(self, name: str) -> None:
        voice = self._voices.pop(name)
        self.engine.unload_voice(voice)
        self.evictions += 1

    def names(self) -> list[str]:
        return list(self._voices)

    def details(self) -> dict[str, dict]:
        """What the engine chose for each loaded voice (e.g. its precisions), for status."""
        return {name: voice.details for name, voice in self._voices.items() if voice.details}

    def used_bytes(self) -> int:
        return sum(v.nbytes for v in self._voices.values())

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "loads": self.loads,
                "evictions": self.evictions, "bytes": self.used_bytes()}
