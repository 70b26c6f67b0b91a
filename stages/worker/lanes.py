"""A worker's lanes: one per model family and engine it has met, each with its engine,
its LRU voice cache and its family's runner. The worker picks a chunk's lane from the
voice's family; nothing else in the worker knows about families or engines."""
from __future__ import annotations

from dataclasses import dataclass

from voxpipe.config import Config
from voxpipe.ipc.messages import Chunk
from voxpipe.stages import families
from voxpipe.stages.engines.base import EngineSettings, LoadedVoice
from voxpipe.stages.families.base import Family, Runner, runner_settings
from voxpipe.stages.voices import VoiceCatalog, VoiceSpec
from voxpipe.stages.worker.voice_cache import VoiceCache


@dataclass
class Lane:
    family: Family
    engine_name: str
    cache: VoiceCache
    runner: Runner


class Lanes:
    def __init__(self, config: Config, settings: EngineSettings, catalog: VoiceCatalog) -> None:
        self.config = config
        self.settings = settings
        self.catalog = catalog
        self.default_engine = config.worker.engine
        self._lanes: dict[tuple[str, str], Lane] = {}

    def __iter__(self):
        return iter(list(self._lanes.values()))

    def lane(self, family: Family, engine_name: str) -> Lane:
        """The lane of a family on an engine, created (engine and all) on first use."""
        key = (family.name, engine_name)
        lane = self._lanes.get(key)
        if lane is None:
            engine = family.create_engine(engine_name, self.settings)
            cache = VoiceCache(engine, int(self.config.worker.voice_cache_mib * 2**20))
            lane = self._lanes[key] = Lane(family, engine_name, cache, family.runner(engine, runner_settings(self.config)))
        return lane

    def resolve(self, voice: str, engine: str = "") -> tuple[VoiceSpec, Lane]:
        """A voice's spec and the lane that runs it. Raises VoiceError, FamilyError or EngineError."""
        spec = self.catalog.get(voice)
        family = families.get(spec.family)
        return spec, self.lane(family, family.engine_for(engine, self.default_engine))

    def load(self, chunk: Chunk) -> tuple[Lane, LoadedVoice]:
        spec, lane = self.resolve(chunk.voice, chunk.engine)
        return lane, self.loaded(lane, spec)

    @staticmethod
    def loaded(lane: Lane, spec: VoiceSpec) -> LoadedVoice:
        """The voice, loaded if it is not, and prepared for its first chunk."""
        voice = lane.cache.get(spec)
        lane.runner.prepare(voice)
        return voice

    def voice_names(self) -> list[str]:
        return [name for lane in self for name in lane.cache.names()]

    def voice_details(self) -> dict[str, dict]:
        return {name: details for lane in self for name, details in lane.cache.details().items()}

    def cache_stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for lane in self:
            for key, value in lane.cache.stats().items():
                total[key] = total.get(key, 0) + value
        return total or {"hits": 0, "misses": 0, "loads": 0, "evictions": 0, "bytes": 0}
