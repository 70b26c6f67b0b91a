"""onnxruntime engine: runs Piper voices. The default on CPU.

A voice runs as its graph split in three (stages/families/piper/engines/onnx_parts.py):
the prior, the flow and the vocoder. A streamed sentence's first window goes through
the flow and the vocoder alone, so a long sentence's first audio is ready after one
window; the flow then runs once over the rest, and the vocoder over ever wider windows
(stages/families/piper/engines/windows.py). Where the split graphs cannot be made (no
torch to export them) or for precision "int8", the voice's own one-piece graph runs and a
stream is one piece.

Threads: each graph has a session per thread count; a call runs with the cores that the
other busy engine processes leave free (stages/engines/busy_board.py), so a lone request
uses the whole machine and a loaded one keeps one core per worker. A multi-thread session
is there twice: its threads sleep between operators, or they spin (and stop at the end of
each call). Spinning saves a thread's wake-up at each of the prior's and flow's ~1,000
small operators (a one-chunk request 10-15% faster on 2 cores), but a spinning thread
takes the core of a worker that starts meanwhile, as a request's other chunks do: only a
request that is one chunk (SynthesisItem.whole_request) spins. The vocoder's graph is
2-D (onnxruntime's blocked convolutions) with its last stage on two half-rows, so a call
shares all of its work among threads; a wide window on several threads is cut into
rows that run side by side instead, one call per thread (windows.py, row_count).

Noise: every graph takes its noise as inputs, drawn from the chunk's seed, so a chunk
renders the same audio every time, and the same on the split graphs, the one-piece graph
(no torch to split it, or precision "int8") and the torch engine. The one-piece graph is
the voice's own with its random ops rewritten into inputs (onnx_seeded.py, needs the onnx
package); where that cannot be done it runs as shipped, drawing its own noise (logged).

The engine returns the model's own level: the voice's gain is the pipeline's
(stages/families/piper/loudness.py), the same on every engine.

settings.options: "max_threads" (0: the usable cores), "split" (bool),
"parts_cache_dir" (also the seeded one-piece graphs), "busy_dir", "int8_method",
"int8_cache_dir".
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from voxpipe.stages.families.piper import noise
from voxpipe.stages.families.piper.engines import onnx_parts, onnx_seeded, vocoder_precision
from voxpipe.stages.families.piper.engines.vocoder_precision import TorchVocoder, VocoderChoice
from voxpipe.stages.families.piper.engines.windows import row_count, stream_windows, vocoder_rows
from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice, StreamPiece
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.piper.noise import concrete_seed
from voxpipe.stages.engines.busy_board import CoreShare
from voxpipe.stages.engines.signal_quality import snr_db
from voxpipe.stages.families.piper.phonemize import PhonemizeError
from voxpipe.stages.families.piper.spec import piper_settings
from voxpipe.stages.voices import VoiceSpec

_LOG = logging.getLogger(__name__)


def _noise_frames(phonemes: int, length_scale: float) -> int:
    """How many frames of prior noise to draw before the durations are known: more than
    speech takes (a few frames per phoneme id), so the prior runs once."""
    return int(8 * phonemes * max(1.0, length_scale)) + 64


@dataclass
class Graph:
    """One ONNX graph with a session per thread count, and for several threads one
    whose threads spin between operators."""

    sessions: dict[int, object]  # threads -> onnxruntime.InferenceSession
    inputs: frozenset[str]
    spinning: dict[int, object] = field(default_factory=dict)  # threads (> 1) -> session

    @property
    def seeded(self) -> bool:
        """Whether the graph takes its noise as inputs (else it draws its own)."""
        return onnx_seeded.LATENT_INPUT in self.inputs

    def run(self, threads: int, feeds: dict[str, np.ndarray], spin: bool = False) -> list[np.ndarray]:
        fitting = [n for n in self.sessions if n <= threads]
        count = max(fitting) if fitting else min(self.sessions)
        session = (self.spinning.get(count) if spin else None) or self.sessions[count]
        return session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})  # type: ignore[attr-defined]

    def input_dim(self, name: str, axis: int) -> int:
        """A fixed dimension of one of the graph's inputs."""
        session = next(iter(self.sessions.values()))
        shape = next(i.shape for i in session.get_inputs() if i.name == name)  # type: ignore[attr-defined]
        return int(shape[axis])


@dataclass
class OnnxVoice:
    """A loaded voice: its one-piece graph or its three parts."""

    whole: Graph | None = None
    prior: Graph | None = None
    flow: Graph | None = None
    vocoder: Graph | None = None  # 2-D convolutions, any number of rows
    radius: int = 0  # vocoder context frames either side of a window
    flow_radius: int = 0  # flow context frames either side of the vocoder's input
    hop: int = 256
    channels: int = 0  # latent channels: the prior noise's height
    extra_bytes: int = field(default=0, repr=False)
    torch_vocoder: TorchVocoder | None = None  # the vocoder in a reduced precision (vocoder_precision.py)

    @property
    def split(self) -> bool:
        return self.prior is not None and self.flow is not None and self.vocoder is not None


class OnnxEngine(Engine):
    name = "onnx"

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        import onnxruntime

        self._ort = onnxruntime
        options = settings.options
        self.use_split = bool(options.get("split", True))
        self.cores = CoreShare(settings, "onnx engine")
        self._lanes: ThreadPoolExecutor | None = None  # one-thread calls beside the caller's (_lane_pool)

    # ------------------------------------------------------------------ loading

    def _providers(self) -> list[str]:
        if self.settings.device == "cuda" and "CUDAExecutionProvider" in self._ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _session(self, spec: VoiceSpec, path: Path, threads: int,
                 spin: bool = False):  # -> onnxruntime.InferenceSession
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        if threads > 1 and spin:
            # Spin between operators, not after the call: the next call may be another worker's.
            options.add_session_config_entry("session.force_spinning_stop", "1")
        elif threads > 1:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return self._ort.InferenceSession(str(path), sess_options=options, providers=self._providers())
        except Exception as exc:  # onnxruntime raises its own exception hierarchy
            raise EngineError(f"voice {spec.name!r}: cannot load {path.name}: {exc}") from exc

    def _graph(self, spec: VoiceSpec, path: Path, needed: set[str], counts: Sequence[int] | None = None) -> Graph:
        counts = counts or self.cores.counts()
        sessions = {n: self._session(spec, path, n) for n in counts}
        inputs = frozenset(i.name for i in next(iter(sessions.values())).get_inputs())
        if not needed <= inputs:
            raise EngineError(f"voice {spec.name!r}: {path.name} is not a Piper VITS model "
                              f"(inputs {sorted(inputs)})")
        spinning = {n: self._session(spec, path, n, spin=True) for n in counts if n > 1}
        return Graph(sessions, inputs, spinning)

    def _vocoder_counts(self) -> tuple[int, ...]:
        """The vocoder's thread counts: the cores' and 1, for rows side by side."""
        return tuple(sorted({1, *self.cores.counts()}))

    def _sessions_per_graph(self) -> int:
        """Each holds its own copy of the weights: one per thread count, two for several."""
        return sum(1 if n == 1 else 2 for n in self.cores.counts())

    def _whole(self, spec: VoiceSpec, path: Path) -> OnnxVoice:
        whole = self._graph(spec, path, {"input", "input_lengths", "scales"})
        channels = whole.input_dim(onnx_seeded.LATENT_INPUT, 1) if whole.seeded else 0
        return OnnxVoice(whole=whole, channels=channels)

    def _seeded_path(self, spec: VoiceSpec) -> Path:
        """The voice's one-piece graph with noise inputs, or as shipped (logged) where the
        rewrite cannot be made: then its noise is its own and seeds do not hold."""
        cache = self.settings.options.get("parts_cache_dir")
        try:
            return onnx_seeded.seeded_graph(spec.model_path, spec.name, Path(cache) if cache else None)
        except onnx_seeded.SeedingError as exc:
            _LOG.warning("%s; voice %r draws its own noise (a seed does not replay it)", exc, spec.name)
            return spec.model_path

    def _parts(self, spec: VoiceSpec) -> OnnxVoice | None:
        """The voice as prior, flow and vocoder, or None (logged) where they cannot be made."""
        cache = self.settings.options.get("parts_cache_dir")
        try:
            parts = onnx_parts.voice_parts(spec.model_path, spec.name, piper_settings(spec).num_speakers,
                                           Path(cache) if cache else None)
        except onnx_parts.PartsError as exc:
            _LOG.warning("%s; voice %r runs as one graph (no streaming within a sentence)", exc, spec.name)
            return None
        prior = self._graph(spec, parts.prior, {"input", "input_lengths", "scales", "dp_noise", "z_noise"})
        return OnnxVoice(prior=prior, flow=self._graph(spec, parts.flow, {"z_p"}),
                         vocoder=self._graph(spec, parts.vocoder, {"z"}, counts=self._vocoder_counts()),
                         radius=parts.radius, flow_radius=parts.flow_radius, hop=parts.hop,
                         channels=prior.input_dim("z_noise", 1),
                         extra_bytes=sum(f.stat().st_size for f in parts.files))

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        if self.settings.precision == "int8":
            return self._load_int8(spec)
        model = (self._parts(spec) if self.use_split else None) or self._whole(spec, self._seeded_path(spec))
        nbytes = (model.extra_bytes or spec.model_path.stat().st_size) * self._sessions_per_graph()
        voice = LoadedVoice(spec=spec, model=model, nbytes=nbytes)
        self._probe(voice)
        if model.split:
            self._choose_vocoder(voice)
        return voice

    def _choose_vocoder(self, voice: LoadedVoice) -> None:
        """The vocoder's precision on this machine (vocoder_precision.py), applied to `voice`."""
        spec, model, options = voice.spec, self._model(voice), self.settings.options
        wanted = str(options.get("vocoder_precision", vocoder_precision.AUTO))
        built: dict[str, TorchVocoder] = {}

        def torch_vocoder(precision: str) -> TorchVocoder:
            if precision not in built:
                built[precision] = TorchVocoder(spec.model_path, spec.name, piper_settings(spec).num_speakers, precision)
            return built[precision]

        def renderer(precision: str) -> vocoder_precision.Render:
            # The probe sentence's latent, noise off; the vocoder as a lone request runs it.
            from voxpipe.stages.families.piper.phonemize import Phonemizer

            threads = max(self.cores.counts())
            item = SynthesisItem(Phonemizer(spec).text_to_ids(vocoder_precision.PROBE_TEXT), 0.0,
                                 piper_settings(spec).length_scale, 0.0, whole_request=True)
            z_p, total, _ = self._prior(voice, item, threads)
            z = self._flow(voice, z_p, 0, total, item, threads)
            if precision == "fp32":
                return lambda: self._vocode_graphs(voice, z, 0, total, 0, total, item, threads)
            vocoder = torch_vocoder(precision)
            return lambda: vocoder.render(z, item.speaker_id, threads)

        cache = options.get("vocoder_precision_cache_dir")
        try:
            choice = vocoder_precision.choose(
                wanted, renderer, lambda: vocoder_precision.cache_key(onnx_parts.cache_key(spec.model_path), wanted),
                Path(str(cache)) if cache else None, bool(options.get("bf16_anywhere", False)))
        except vocoder_precision.VocoderPrecisionError as exc:
            raise EngineError(f"voice {spec.name!r}: {exc}") from None
        if choice.precision != "fp32":
            try:
                model.torch_vocoder = torch_vocoder(choice.precision)
            except Exception as exc:  # torch missing, or weights it cannot read
                choice = VocoderChoice(notes=[*choice.notes, f"vocoder {choice.precision} cannot be built here "
                                              f"({type(exc).__name__}: {exc}): fp32"])
            else:
                voice.nbytes += model.torch_vocoder.nbytes
        _LOG.info("voice %r: vocoder %s (%s)%s", spec.name, choice.precision, choice.how,
                  "".join(f"; {note}" for note in choice.notes))
        voice.details.update(choice.details())

    def _load_int8(self, spec: VoiceSpec) -> LoadedVoice:
        """The voice's int8 model, built on first use. A warm load opens that file alone; the
        first one also checks the voice in float32 and measures the int8 error against it.
        It is quantized from the seeded one-piece graph, so a seed replays it too."""
        from voxpipe.stages.families.piper.engines import quantize

        method = str(self.settings.options.get("int8_method", quantize.DEFAULT_METHOD))
        cache_dir = self.settings.options.get("int8_cache_dir")
        try:
            target = quantize.cached_path(spec.model_path, method, Path(cache_dir) if cache_dir else None)
        except (quantize.QuantizeError, OSError) as exc:
            raise EngineError(f"voice {spec.name!r}: no int8 model: {exc}") from exc
        snr = quantize.read_measured_snr(target) if target.is_file() else None
        float_voice = None
        if snr is None:
            source = self._seeded_path(spec)
            float_voice = LoadedVoice(spec=spec, model=self._whole(spec, source), nbytes=0)
            self._probe(float_voice)
            try:
                calibration = quantize.voice_calibration(spec) if method == "static" else None
                quantize.int8_model(source, method, calibration, target=target)
            except (quantize.QuantizeError, PhonemizeError, OSError) as exc:
                raise EngineError(f"voice {spec.name!r}: no int8 model: {exc}") from exc
        voice = LoadedVoice(spec=spec, model=self._whole(spec, target),
                            nbytes=target.stat().st_size * self._sessions_per_graph())
        self._probe(voice)
        if float_voice is not None:
            try:
                snr = self.probe_snr(float_voice, voice)
            except PhonemizeError as exc:
                raise EngineError(f"voice {spec.name!r}: cannot measure the int8 error: {exc}") from exc
            quantize.write_measured_snr(target, snr)
        if snr is not None and snr < quantize.INAUDIBLE_SNR_DB:
            _LOG.warning("voice %r: int8 audio is %.1f dB SNR against float32 (audible below %.0f dB); "
                         "precision fp32 gives full quality", spec.name, snr, quantize.INAUDIBLE_SNR_DB)
        return voice

    def probe_snr(self, float_voice: LoadedVoice, voice: LoadedVoice) -> float:
        """SNR in dB of `voice` against `float_voice` on the probe sentence; -inf if lengths differ."""
        from voxpipe.stages.families.piper.engines import quantize
        from voxpipe.stages.families.piper.phonemize import Phonemizer

        ids = Phonemizer(voice.spec).text_to_ids(quantize.PROBE_TEXT)
        item = SynthesisItem(ids, 0.0, piper_settings(voice.spec).length_scale, 0.0)
        reference, test = self._raw(float_voice, item), self._raw(voice, item)
        return snr_db(reference, test) if len(reference) == len(test) else float("-inf")

    def warm_up(self, voice: LoadedVoice) -> None:
        """Run every session once (a call gets the one for the cores free then, and each
        has its own first-run allocations)."""
        model = self._model(voice)
        for threads in self.cores.counts():
            for item in (SynthesisItem(_probe_ids(voice.spec), 0.667, 1.0, 0.8, whole_request=spin)
                         for spin in ((False, True) if threads > 1 else (False,))):
                self._warm_call(voice, model, item, threads)

    def _warm_call(self, voice: LoadedVoice, model: OnnxVoice, item: SynthesisItem, threads: int) -> None:
        if not model.split:
            self._whole_audio(voice, item, threads)
            return
        z_p, total, _ = self._prior(voice, item, threads)
        z = self._flow(voice, z_p, 0, total, item, threads)
        self._vocode(voice, z, 0, total, 0, total, item, threads)
        if 1 not in self.cores.counts():  # the vocoder's one-thread session: rows side by side
            self._vocode_rows(voice, model.vocoder, z, 0, [(0, 0, total)], total, item, 1)  # type: ignore[arg-type]

    def _probe(self, voice: LoadedVoice) -> None:
        """One tiny inference with the config's largest phoneme id: a config that does not
        match its model fails here, at load, with the voice's name, not mid-request."""
        spec = voice.spec
        try:
            audio = self._raw(voice, SynthesisItem(_probe_ids(spec), 0.0, 1.0, 0.0))
        except EngineError as exc:
            raise EngineError(f"voice {spec.name!r}: its config does not match its model "
                              f"({spec.files[1].name} vs {spec.model_path.name}): {exc}") from None
        if not len(audio) or not np.isfinite(audio).all():
            raise EngineError(f"voice {spec.name!r}: the model produced no usable audio")

    # ------------------------------------------------------------------ synthesis

    def synthesize(self, voice: LoadedVoice, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        return [audio for audio, _ in self.synthesize_timed(voice, items)]

    def synthesize_timed(self, voice: LoadedVoice,
                         items: Sequence[SynthesisItem]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        # Items run one by one: batching buys nothing on onnxruntime's CPU path. Durations
        # come from the split graph's acoustic part; the one-piece graph has none.
        return [self._raw_timed(voice, item) for item in items]

    def synthesize_stream_timed(self, voice: LoadedVoice, item: SynthesisItem,
                                window_frames: int = 64) -> Iterator[StreamPiece]:
        """Audio of one item in pieces: the first after one window of `window_frames` latent
        frames (the flow over that window and its context only), then wider windows
        (stages/families/piper/engines/windows.py) from one flow call over the rest.
        Joined, the pieces equal the whole decode. The first piece comes with the item's
        samples per phoneme id where known; the last is marked.

        With several threads to hand, the first window (flow and vocoder) renders on one
        thread while the rest's flow runs on another: the first window's flow is then no
        longer paid on top of the rest's (a medium sentence 7-15% sooner done, its first
        audio 8-17 ms later; 2 cores). The first of several chunks keeps the sooner first
        audio instead: its first audio is the request's, and its siblings take the other
        core anyway."""
        if window_frames < 1:
            raise EngineError(f"voice {voice.spec.name!r}: window_frames must be positive")
        model = self._model(voice)
        if not model.split:
            audio, durations = self.synthesize_timed(voice, [item])[0]
            yield StreamPiece(audio, durations, last=True)
            return
        with self.cores.call() as threads:
            z_p, total, durations = self._prior(voice, item, threads)
        windows = stream_windows(total, window_frames)
        first_end = windows[0][1]
        # The flow over what the first window's vocoder call reads: z on [0, first_end + radius).
        reach = min(total, first_end + model.radius)
        rest: Future[np.ndarray] | None = None  # z on [reach, total), flowed beside the first window
        with self.cores.call() as threads:
            if threads > 1 and first_end < total and not item.leads_siblings:
                rest = self._lane_pool().submit(self._flow, voice, z_p, reach, total, item, 1)
                threads = 1
            z = self._flow(voice, z_p, 0, reach, item, threads)
            piece = self._vocode(voice, z, 0, reach, 0, first_end, item, threads)
        yield StreamPiece(piece, durations, last=first_end == total)
        if first_end == total:
            return
        start = max(0, first_end - model.radius)  # z from here on: the rest's first window reads this far back
        if rest is not None:
            z = np.concatenate([z[:, :, start:reach], rest.result()], axis=2)
        else:
            with self.cores.call() as threads:
                z = self._flow(voice, z_p, start, total, item, threads)
        for lo, hi in windows[1:]:
            with self.cores.call() as threads:
                piece = self._vocode(voice, z, start, total, lo, hi, item, threads)
            yield StreamPiece(piece, last=hi == total)

    def _lane_pool(self) -> ThreadPoolExecutor:
        """Threads beside the caller's own for one-thread calls side by side: a vocoder
        call's rows, a streamed item's flow."""
        if self._lanes is None:
            self._lanes = ThreadPoolExecutor(max(1, max(self.cores.counts()) - 1), thread_name_prefix="engine-lane")
        return self._lanes

    # ------------------------------------------------------------------ the graphs

    def _model(self, voice: LoadedVoice) -> OnnxVoice:
        if not isinstance(voice.model, OnnxVoice):
            raise EngineError(f"voice {voice.spec.name!r} is not loaded")
        return voice.model

    @staticmethod
    def _feeds(item: SynthesisItem) -> dict[str, np.ndarray]:
        ids = np.asarray(item.phoneme_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise EngineError("phoneme ids must be a non-empty 1-D integer array")
        return {"input": ids[None, :], "input_lengths": np.array([ids.size], dtype=np.int64),
                "scales": np.array([item.noise_scale, item.length_scale, item.noise_w], dtype=np.float32),
                "sid": np.array([item.speaker_id], dtype=np.int64)}

    def _run(self, voice: LoadedVoice, graph: Graph, threads: int, feeds: dict[str, np.ndarray],
             item: SynthesisItem) -> list[np.ndarray]:
        try:
            return graph.run(threads, feeds, spin=item.whole_request)
        except Exception as exc:
            raise EngineError(f"voice {voice.spec.name!r}: inference failed: {exc}") from exc

    def _raw(self, voice: LoadedVoice, item: SynthesisItem) -> np.ndarray:
        """The model's audio of one item."""
        return self._raw_timed(voice, item)[0]

    def _raw_timed(self, voice: LoadedVoice, item: SynthesisItem) -> tuple[np.ndarray, np.ndarray | None]:
        """The model's audio of one item and its samples per phoneme id (None from the
        one-piece graph)."""
        model = self._model(voice)
        durations = None
        with self.cores.call() as threads:
            if not model.split:
                audio = self._whole_audio(voice, item, threads)
            else:
                z_p, total, durations = self._prior(voice, item, threads)
                z = self._flow(voice, z_p, 0, total, item, threads)
                audio = self._vocode(voice, z, 0, total, 0, total, item, threads)
        return np.ascontiguousarray(audio.reshape(-1), dtype=np.float32), durations

    def _run_seeded(self, voice: LoadedVoice, graph: Graph, item: SynthesisItem, threads: int) -> list[np.ndarray]:
        """Run a graph whose second output is the frame count on noise from the item's seed
        (stages/families/piper/noise.py), as in the torch engine. The prior's noise is drawn
        before the frame count is known: wide enough for nearly every sentence, and drawn
        again to the right width when it was not."""
        model = self._model(voice)
        seed = concrete_seed(item.seed)
        feeds = self._feeds(item)
        phonemes = feeds["input"].shape[1]
        feeds["dp_noise"] = noise.duration_noise(seed, phonemes)[None]
        width = _noise_frames(phonemes, item.length_scale)
        while True:
            feeds["z_noise"] = noise.latent_noise(seed, model.channels, width)[None]
            out = self._run(voice, graph, threads, feeds, item)
            if int(out[1][0]) <= width:
                return out
            width = int(out[1][0])

    def _whole_audio(self, voice: LoadedVoice, item: SynthesisItem, threads: int) -> np.ndarray:
        """The one-piece graph's audio of one item."""
        graph: Graph = self._model(voice).whole  # type: ignore[assignment]
        if not graph.seeded:
            return self._run(voice, graph, threads, self._feeds(item), item)[0]
        return self._run_seeded(voice, graph, item, threads)[0]

    def _prior(self, voice: LoadedVoice, item: SynthesisItem,
               threads: int) -> tuple[np.ndarray, int, np.ndarray | None]:
        """(z_p, frames, samples per phoneme id or None where the graph predates durations)."""
        model = self._model(voice)
        out = self._run_seeded(voice, model.prior, item, threads)  # type: ignore[arg-type]
        durations = (np.asarray(out[2][0], dtype=np.float64) * model.hop) if len(out) > 2 else None
        return out[0], int(out[1][0]), durations

    def _flow(self, voice: LoadedVoice, z_p: np.ndarray, lo: int, hi: int, item: SynthesisItem,
              threads: int) -> np.ndarray:
        """z on frames [lo, hi) of the item's `z_p` (its frames are z_p's width): the flow
        given `flow_radius` frames of context either side, cut back to [lo, hi), so that it
        equals the same stretch of the flow over the whole item."""
        model = self._model(voice)
        total = z_p.shape[2]
        flow_lo, flow_hi = max(0, lo - model.flow_radius), min(total, hi + model.flow_radius)
        feeds = {"z_p": np.ascontiguousarray(z_p[:, :, flow_lo:flow_hi]),
                 "sid": np.array([item.speaker_id], dtype=np.int64)}
        z = self._run(voice, model.flow, threads, feeds, item)[0]  # type: ignore[arg-type]
        return z[:, :, lo - flow_lo:hi - flow_lo]

    def _vocode(self, voice: LoadedVoice, z: np.ndarray, z_lo: int, total: int, start: int, end: int,
                item: SynthesisItem, threads: int) -> np.ndarray:
        """Audio of latent frames [start, end) from `z`, which holds frames [z_lo, z_lo + width)
        of the item's `total`: the vocoder given `radius` frames of context either side (as
        far as the item reaches), so that it equals the same stretch of a whole decode: in
        fp32 on the onnx graphs, in a reduced precision on the voice's torch generator
        (vocoder_precision.py)."""
        model = self._model(voice)
        if model.torch_vocoder is None:
            return self._vocode_graphs(voice, z, z_lo, total, start, end, item, threads)
        lo, hi = self._vocoder_span(voice, z, z_lo, total, start, end)
        try:
            audio = model.torch_vocoder.render(z[:, :, lo - z_lo:hi - z_lo], item.speaker_id, threads)
        except Exception as exc:  # torch raises its own errors
            raise EngineError(f"voice {voice.spec.name!r}: inference failed: {exc}") from exc
        return audio[(start - lo) * model.hop:(end - lo) * model.hop]

    def _vocoder_span(self, voice: LoadedVoice, z: np.ndarray, z_lo: int, total: int, start: int,
                      end: int) -> tuple[int, int]:
        """The latent frames [lo, hi) a vocoder call for frames [start, end) reads."""
        model = self._model(voice)
        lo, hi = max(0, start - model.radius), min(total, end + model.radius)
        if lo < z_lo or hi > z_lo + z.shape[2]:
            raise EngineError(f"voice {voice.spec.name!r}: window [{start}, {end}) reads z outside what was flowed")
        return lo, hi

    def _vocode_graphs(self, voice: LoadedVoice, z: np.ndarray, z_lo: int, total: int, start: int, end: int,
                       item: SynthesisItem, threads: int) -> np.ndarray:
        """_vocode on the fp32 onnx graph: one call on all `threads`, or a wide window as
        rows side by side, one call per thread (windows.py, row_count)."""
        model = self._model(voice)
        lo, hi = self._vocoder_span(voice, z, z_lo, total, start, end)
        rows = row_count(end - start, threads)
        if rows == 1:
            return self._vocode_rows(voice, model.vocoder, z, z_lo, [(lo, start, end)], hi - lo, item, threads)  # type: ignore[arg-type]
        width, plan = vocoder_rows(start, end, lo, hi, model.radius, rows)
        return self._vocode_rows(voice, model.vocoder, z, z_lo, plan, width, item, 1)  # type: ignore[arg-type]

    def _vocode_rows(self, voice: LoadedVoice, graph: Graph, z: np.ndarray, z_lo: int,
                     plan: list[tuple[int, int, int]], width: int, item: SynthesisItem, threads: int) -> np.ndarray:
        """Each row of `plan` (read_from, own_start, own_end) as a call of its own, the rows
        side by side on threads of this process (each call on `threads` threads), joined."""
        hop, sid = self._model(voice).hop, np.array([item.speaker_id], dtype=np.int64)

        def render(row: tuple[int, int, int]) -> np.ndarray:
            read_from, own_start, own_end = row
            feeds = {"z": np.ascontiguousarray(z[:, :, read_from - z_lo:read_from - z_lo + width]), "sid": sid}
            audio = self._run(voice, graph, threads, feeds, item)[0].reshape(-1)
            return audio[(own_start - read_from) * hop:(own_end - read_from) * hop]

        others = [self._lane_pool().submit(render, row) for row in plan[1:]] if len(plan) > 1 else []
        pieces = [render(plan[0])] + [f.result() for f in others]
        return np.ascontiguousarray(np.concatenate(pieces) if len(pieces) > 1 else pieces[0], dtype=np.float32)


def _probe_ids(spec: VoiceSpec) -> np.ndarray:
    """A tiny input with the config's largest phoneme id."""
    largest = max((i for ids in piper_settings(spec).phoneme_id_map.values() for i in ids), default=0)
    return np.array([1, 0, largest, 0, largest, 0, 2], dtype=np.int64)
