"""Requests' own reference clips, on the frontend's side: each clip is decoded once, its
length checked, and kept as a content-addressed float32 WAV in the daemon's run
directory, where the workers read it (the supervisor removes that directory at any exit,
and a stale one at the next start). Chunks carry the file's path and the transcript, never
the audio, so a clip crosses the daemon's sockets once however many chunks use it.

The directory is bounded: past `max_bytes` the least recently used clips go. A worker
that still needs one it has not cached yet fails that chunk with a clear message (the
bound is far above what a worker's conditioning cache holds).
"""
from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from voxpipe.ipc.messages import ChunkReference, Reference

HASH_CHARS = 32  # of the SHA-256 hex digest: file names and cache keys
AUX_MIN_S = 0.5  # an auxiliary clip only lends its timbre: any length up to the main rule's


class ReferenceError(ValueError):
    """A reference clip that cannot be used; the message says why (`bad_reference`)."""


def clip_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def decode_clip(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate, from a file's bytes in any format soundfile
    (WAV, FLAC, OGG, ...) or PyAV (MP3, AAC, M4A, ...) reads."""
    import soundfile

    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return np.ascontiguousarray(audio.mean(axis=1)), int(rate)
    except Exception:  # soundfile raises its own types and RuntimeError: try PyAV next
        pass
    try:
        import av
    except ImportError:
        raise ReferenceError("the reference clip is not in a format soundfile reads (WAV, FLAC, OGG), and "
                             "PyAV, which reads the others, is not installed") from None
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise ReferenceError("the reference clip has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono")
            parts: list[np.ndarray] = []
            rate = 0
            for frame in container.decode(stream):
                rate = frame.sample_rate
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except ReferenceError:
        raise
    except Exception as exc:
        raise ReferenceError(f"the reference clip cannot be decoded ({type(exc).__name__}: {exc})") from None
    if not parts or rate <= 0:
        raise ReferenceError("the reference clip holds no audio")
    return np.concatenate(parts).astype(np.float32, copy=False), int(rate)


class ReferenceStore:
    """Decoded clips by content hash, as files in `directory` (see the module docstring)."""

    def __init__(self, directory: Path, max_clip_bytes: int, max_bytes: int = 256 * 2**20) -> None:
        self.directory = directory
        self.max_clip_bytes = max_clip_bytes  # http.max_reference_kib: the encoded clip's size
        self.max_bytes = max_bytes
        self._clips: OrderedDict[str, tuple[Path, int, float]] = OrderedDict()  # hash -> (file, bytes, seconds)
        self.bytes = 0

    def put(self, data: bytes, seconds: tuple[float, float], what: str = "reference clip") -> Path:
        """The decoded clip's file; ReferenceError if it is too large, unreadable, or not
        within `seconds` (low, high) long."""
        if len(data) > self.max_clip_bytes:
            raise ReferenceError(f"the {what} is {len(data) / 1024:.0f} KiB; the limit is "
                                 f"{self.max_clip_bytes // 1024} KiB (http.max_reference_kib)")
        key = clip_hash(data)
        known = self._clips.get(key)
        if known is not None and known[0].is_file():
            self._clips.move_to_end(key)
            path, _, length = known
        else:
            try:
                audio, rate = decode_clip(data)
            except ReferenceError as exc:
                raise ReferenceError(str(exc).replace("the reference clip", f"the {what}", 1)) from None
            length = len(audio) / rate
            path = self._write(key, audio, rate)
        low, high = seconds
        if not low <= length <= high:
            raise ReferenceError(f"the {what} lasts {length:.1f} s; it must last {low:g} to {high:g} s")
        return path

    def _write(self, key: str, audio: np.ndarray, rate: int) -> Path:
        import soundfile

        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{key}.wav"
        partial = path.with_suffix(f".{os.getpid()}.part")
        soundfile.write(str(partial), audio, rate, subtype="FLOAT", format="WAV")
        os.replace(partial, path)  # a worker never sees half a file
        size = path.stat().st_size
        self._clips[key] = (path, size, len(audio) / rate)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._clips) > 1:
            _, (old, old_size, _) = self._clips.popitem(last=False)
            old.unlink(missing_ok=True)
            self.bytes -= old_size
        return path

    def chunk_reference(self, reference: Reference, seconds: tuple[float, float]) -> ChunkReference:
        clip = self.put(reference.audio, seconds)
        aux = [self.put(data, (AUX_MIN_S, seconds[1]), f"auxiliary reference clip {i + 1}")
               for i, data in enumerate(reference.aux)]
        return ChunkReference(str(clip), reference.text, reference.language, [str(p) for p in aux])
