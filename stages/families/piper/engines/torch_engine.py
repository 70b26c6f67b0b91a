"""PyTorch engine: runs Piper voices through our own VITS implementation.

Unlike the onnxruntime graph it batches items of different lengths (each item's output is
the same as when it runs alone), seeds noise per item, can stream audio within a sentence,
and runs the vocoder in fp16/bf16 on a GPU, there replaying it from CUDA graphs captured
per bucketed shape (vits/cuda_graphs.py; option cuda_graphs, default on).
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, NoReturn, Sequence

import numpy as np

# Set before torch (and with it OpenMP and oneDNN) first loads; the daemon can also set
# them in the worker's environment, which wins. OpenMP threads that spin while idle steal
# the cores of the other workers on a busy host, sleeping ones cost a little latency. The
# oneDNN cache needs room for the kernels of every padded shape (see bucket_length).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "4096")

import torch  # noqa: E402

from voxpipe.stages.engines.base import (Engine, EngineError, EngineSettings, LoadedVoice, StreamPiece,  # noqa: E402
                                         is_out_of_memory)
from voxpipe.stages.families.piper.item import SynthesisItem  # noqa: E402
from voxpipe.stages.families.piper.noise import concrete_seed  # noqa: E402
from voxpipe.stages.families.piper.spec import piper_settings  # noqa: E402
from voxpipe.stages.families.piper.vits.cuda_graphs import GraphedVocoder, Replay, StaticInputs, VocodeFn  # noqa: E402
from voxpipe.stages.families.piper.vits.load import load_piper_onnx  # noqa: E402
from voxpipe.stages.families.piper.vits.model import VitsModel, bucket_length  # noqa: E402
from voxpipe.stages.families.piper.engines.windows import stream_windows  # noqa: E402
from voxpipe.stages.families.piper.vits.stream import decode_windows  # noqa: E402
from voxpipe.stages.voices import VoiceSpec  # noqa: E402

_LOG = logging.getLogger(__name__)
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_BYTES_PER_PHONEME = 1.0e6


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of returning them to the kernel.

    Every layer of the vocoder allocates tens of MB; handing those back and faulting them
    in again costs more than some convolutions. Linux/glibc only; False elsewhere.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    big = ctypes.c_int(2**31 - 1)
    if not mallopt(m_mmap_threshold, ctypes.c_int(1 << 30)):
        mallopt(m_mmap_threshold, ctypes.c_int(32 << 20))  # older glibc caps the threshold
    return bool(mallopt(m_trim_threshold, big))


def system_memory(meminfo: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """Available and total RAM in bytes from /proc/meminfo; empty if unreadable."""
    try:
        fields = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                fields[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
        return {"free": fields["MemAvailable"], "total": fields["MemTotal"]}
    except (OSError, KeyError, ValueError, IndexError):
        return {}


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        if settings.precision not in _DTYPES:
            raise EngineError(f"torch engine: unsupported precision {settings.precision!r} "
                              f"(choose {', '.join(_DTYPES)})")
        if settings.device == "cuda" and torch.cuda.is_available():
            self.device = torch.device("cuda")
            self.decoder_dtype = _DTYPES[settings.precision]
            # The supervisor's per-worker share of the card (gpu.memory_fraction), applied
            # before the first allocation so the caching allocator never grows past it.
            fraction = os.environ.get("VOXPIPE_GPU_MEMORY_FRACTION")
            if fraction:
                torch.cuda.set_per_process_memory_fraction(float(fraction))
        else:
            if settings.device == "cuda":
                _LOG.warning("torch engine: CUDA requested but not available; using the CPU")
            self.device = torch.device("cpu")
            # Reduced precision buys nothing for these convolutions on most CPUs.
            self.decoder_dtype = torch.float32
        torch.set_num_threads(max(1, int(settings.threads)))
        # Batches decode exactly as their items alone; they pay off on a GPU, while on a CPU
        # the padding costs more than batching saves, so there items run one by one.
        cuda = self.device.type == "cuda"
        self.max_batch = int(settings.options.get("max_batch", 16 if cuda else 1))  # type: ignore[misc]
        # Peak working memory per padded phoneme (vocoder activations dominate), measured
        # on a medium voice at length_scale 1 with headroom for slower speech.
        self.bytes_per_phoneme = _BYTES_PER_PHONEME * (0.5 if self.decoder_dtype != torch.float32 else 1.0)
        if self.device.type == "cpu" and settings.options.get("keep_freed_memory", True):
            keep_freed_memory()
        steps = int(settings.options.get("shape_buckets", 8))
        self._bucket = functools.partial(bucket_length, steps_per_octave=steps) if steps > 0 else None
        # CUDA graphs replay the vocoder per bucketed shape; there is nothing to gain on a CPU.
        self.cuda_graphs = cuda and bool(settings.options.get("cuda_graphs", True))
        self.graph_capture: Callable[[VocodeFn, StaticInputs], Replay] | None = None  # None: CUDA graphs
        self._graphed: dict[int, GraphedVocoder] = {}  # id(model) -> its graphs

    # ------------------------------------------------------------------ voices

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        return self._place(spec, load_piper_onnx(spec.model_path, spec.name, piper_settings(spec).num_speakers))

    def _place(self, spec: VoiceSpec, model: VitsModel) -> LoadedVoice:
        """Move a freshly loaded (CPU, fp32) model to this engine's device and precision."""
        try:
            model = model.to(self.device)
            model.dec.to(self.decoder_dtype)
        except RuntimeError as exc:  # e.g. CUDA out of memory
            raise EngineError(f"voice {spec.name!r}: cannot place model on {self.device}: {exc}") from exc
        nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
        return LoadedVoice(spec=spec, model=model, nbytes=nbytes)

    def unload_voice(self, voice: LoadedVoice) -> None:
        self._graphed.pop(id(voice.model), None)
        voice.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ synthesis

    def _model(self, voice: LoadedVoice) -> VitsModel:
        if not isinstance(voice.model, VitsModel):
            raise EngineError(f"voice {voice.spec.name!r} is not loaded")
        return voice.model

    def _check(self, voice: LoadedVoice, model: VitsModel, item: SynthesisItem) -> np.ndarray:
        ids = np.asarray(item.phoneme_ids)
        name = voice.spec.name
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise EngineError(f"voice {name!r}: phoneme ids must be a non-empty 1-D integer array")
        if ids.min() < 0 or ids.max() >= model.cfg.n_vocab:
            raise EngineError(f"voice {name!r}: phoneme id out of range 0..{model.cfg.n_vocab - 1}")
        if model.cfg.n_speakers > 1 and not 0 <= item.speaker_id < model.cfg.n_speakers:
            raise EngineError(f"voice {name!r}: speaker id {item.speaker_id} out of range "
                              f"0..{model.cfg.n_speakers - 1}")
        return ids.astype(np.int64, copy=False)

    def _inputs(self, voice: LoadedVoice, model: VitsModel, items: Sequence[SynthesisItem]) -> dict:
        rows = [self._check(voice, model, item) for item in items]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        width = int(lengths.max())
        ids = torch.zeros(len(rows), self._bucket(width) if self._bucket else width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.from_numpy(row)

        def per_item(field: str) -> torch.Tensor:
            return torch.tensor([float(getattr(item, field)) for item in items], device=self.device)

        # Noise from each item's seed (drawn on the host: the same on every device and engine).
        seeds = [concrete_seed(item.seed) for item in items]
        sid = torch.tensor([int(item.speaker_id) for item in items], device=self.device)
        return dict(ids=ids.to(self.device), lengths=lengths.to(self.device),
                    noise_scale=per_item("noise_scale"), length_scale=per_item("length_scale"),
                    noise_w=per_item("noise_w"), sid=sid if model.cfg.n_speakers > 1 else None,
                    seeds=seeds, pad_frames=self._bucket)

    def synthesize(self, voice: LoadedVoice, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        return [audio for audio, _ in self.synthesize_timed(voice, items)]

    def synthesize_timed(self, voice: LoadedVoice,
                         items: Sequence[SynthesisItem]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if not items:
            return []
        model = self._model(voice)
        inputs = self._inputs(voice, model, items)
        try:
            with torch.inference_mode():
                z, frames, durations = model.acoustic_timed(**inputs)
                audio = self._vocode(voice, model, z, frames, inputs["sid"])
        except RuntimeError as exc:
            self._fail(voice, exc)
        hop = model.hop_length
        per_id = durations.float().cpu().numpy().astype(np.float64) * hop
        return [(np.ascontiguousarray(audio[i, :int(n) * hop], dtype=np.float32), per_id[i, :len(item.phoneme_ids)])
                for i, (n, item) in enumerate(zip(frames.cpu().tolist(), items))]

    def _vocode(self, voice: LoadedVoice, model: VitsModel, z: torch.Tensor, frames: torch.Tensor,
                sid: torch.Tensor | None) -> np.ndarray:
        """Latents -> float32 audio [B, samples] on the host (subclasses swap the vocoder)."""
        if self.cuda_graphs:
            return self._graphs_for(model)(z, frames, sid).float().cpu().numpy()
        return model.vocode(z, frames, sid=sid).float().cpu().numpy()

    def _graphs_for(self, model: VitsModel) -> GraphedVocoder:
        graphed = self._graphed.get(id(model))
        if graphed is None:
            options = self.settings.options
            graphed = self._graphed[id(model)] = GraphedVocoder(
                model, max_batch=self.max_batch,
                max_frames=int(options.get("cuda_graph_max_frames", 1024)),
                steps_per_octave=int(options.get("cuda_graph_steps", 4)),
                max_graphs=int(options.get("cuda_graph_max_cached", 16)), capture=self.graph_capture)
        return graphed

    def synthesize_stream_timed(self, voice: LoadedVoice, item: SynthesisItem,
                                window_frames: int = 64) -> Iterator[StreamPiece]:
        """`synthesize_stream`'s pieces, the first with the samples per phoneme id, the last marked."""
        model = self._model(voice)
        inputs = self._inputs(voice, model, [item])
        try:
            # Inference mode is entered per step: held across a yield it would leak into
            # the caller's code.
            with torch.inference_mode():
                z, frames, durations = model.acoustic_timed(**inputs)
                per_id: np.ndarray | None = (durations[0, :len(item.phoneme_ids)].float().cpu().numpy()
                                             .astype(np.float64) * model.hop_length)
                pieces = decode_windows(model, z[:, :, :int(frames[0])], window_frames, sid=inputs["sid"])
            count = len(stream_windows(int(frames[0]), window_frames))
            for index in range(count):
                with torch.inference_mode():
                    out = next(pieces).float().cpu().numpy()
                yield StreamPiece(np.ascontiguousarray(out, dtype=np.float32), per_id, last=index == count - 1)
                per_id = None
        except RuntimeError as exc:
            self._fail(voice, exc)

    def _fail(self, voice: LoadedVoice, exc: RuntimeError) -> NoReturn:
        """Out-of-memory errors pass through untouched (the worker halves its batch and
        retries); anything else becomes an EngineError naming the voice."""
        if is_out_of_memory(exc):
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise exc
        raise EngineError(f"voice {voice.spec.name!r}: inference failed: {exc}") from exc

    # ------------------------------------------------------------------ resources

    def memory_info(self) -> dict[str, int]:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            return {"free": int(free), "total": int(total)}
        return system_memory()
