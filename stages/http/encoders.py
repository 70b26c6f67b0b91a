"""Audio encoders for HTTP responses: int16 mono PCM in, bytes of one container out.

Each encoder is fed fragment by fragment and returns whatever bytes are ready, so the
first bytes leave before the whole text is synthesized. Streams are written forward
only: a container's header that would normally be patched at the end (the WAV sizes,
FLAC's total-samples field) says "unknown length" instead, as streaming encoders do.

Backends, by what the installed libraries really produce (see `available()`):
- built in: wav, pcm (raw s16le)
- soundfile (libsndfile): flac, ogg (Vorbis)
- PyAV (FFmpeg): opus (in Ogg), mp3, aac (ADTS); also resampling for fixed-rate outputs.
  libsndfile can write MP3 too, but its Xing header needs a rewrite at the end, which a
  stream cannot do, and its Opus writer accepts only 8/12/16/24/48 kHz input.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np


class FormatUnavailable(Exception):
    """The format is known but the installed libraries cannot produce it."""


@dataclass(frozen=True)
class AudioFormat:
    name: str
    content_type: str
    backend: str  # "builtin" | "soundfile" | "av"
    container: str = ""  # soundfile major format, or FFmpeg muxer
    codec: str = ""  # soundfile subtype, or FFmpeg encoder
    rates: tuple[int, ...] = ()  # sample rates the codec accepts; () = any


_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

FORMATS: dict[str, AudioFormat] = {f.name: f for f in [
    AudioFormat("wav", "audio/wav", "builtin"),
    AudioFormat("pcm", "audio/pcm", "builtin"),
    AudioFormat("flac", "audio/flac", "soundfile", "FLAC", "PCM_16"),
    AudioFormat("ogg", "audio/ogg", "soundfile", "OGG", "VORBIS"),
    AudioFormat("opus", "audio/ogg; codecs=opus", "av", "ogg", "libopus", (8000, 12000, 16000, 24000, 48000)),
    AudioFormat("mp3", "audio/mpeg", "av", "mp3", "libmp3lame", _MP3_RATES),
    AudioFormat("aac", "audio/aac", "av", "adts", "aac", _AAC_RATES),
]}


class Encoder(Protocol):
    content_type: str
    sample_rate: int  # of the audio in the produced bytes

    def feed(self, samples: np.ndarray) -> bytes: ...

    def finish(self) -> bytes: ...


def pick_rate(rates: tuple[int, ...], rate: int) -> int:
    """`rate` if the codec takes it, else the nearest accepted rate above it (or the highest)."""
    if not rates or rate in rates:
        return rate
    above = [r for r in rates if r > rate]
    return min(above) if above else max(rates)


def make_encoder(name: str, sample_rate: int, *, out_rate: int | None = None,
                 total_samples: int | None = None) -> Encoder:
    """An encoder for format `name`. `out_rate` resamples pcm (needs PyAV); `total_samples`,
    when known up front, gives a WAV its exact sizes instead of "unknown"."""
    fmt = FORMATS.get(name)
    if fmt is None:
        raise FormatUnavailable(f"unknown audio format {name!r}")
    if fmt.name == "wav":
        return WavEncoder(sample_rate, total_samples)
    if fmt.name == "pcm":
        return PcmEncoder(sample_rate, out_rate or sample_rate)
    if fmt.backend == "soundfile":
        return SoundfileEncoder(fmt, sample_rate)
    return AvEncoder(fmt, sample_rate)


@functools.cache
def available() -> dict[str, str]:
    """Format name -> "" when it can be produced here, else why not. Found by encoding a
    moment of silence with each, once per process."""
    reasons = {}
    for name in FORMATS:
        try:
            encoder = make_encoder(name, 22050)
            encoder.feed(np.zeros(2205, np.int16))
            encoder.finish()
            reasons[name] = ""
        except Exception as exc:  # any failure means "not here": an import, a codec, a rate
            reasons[name] = f"{type(exc).__name__}: {exc}"
    return reasons


def supported(name: str) -> bool:
    return available().get(name) == ""


@functools.cache
def can_resample() -> bool:
    try:
        _Resampler(22050, 24000).flush()
        return True
    except Exception:  # PyAV missing or broken
        return False


# ---- built in --------------------------------------------------------------------------------------
class PcmEncoder:
    content_type = "audio/pcm"

    def __init__(self, sample_rate: int, out_rate: int) -> None:
        self.sample_rate = out_rate
        self._resampler = _Resampler(sample_rate, out_rate) if out_rate != sample_rate else None

    def feed(self, samples: np.ndarray) -> bytes:
        if self._resampler is None:
            return np.ascontiguousarray(samples, dtype="<i2").tobytes()
        return self._resampler.feed(samples).tobytes()

    def finish(self) -> bytes:
        return self._resampler.flush().tobytes() if self._resampler is not None else b""


UNKNOWN_SIZE = 0xFFFFFFFF  # what streaming WAV writers put in the RIFF and data sizes


class WavEncoder:
    content_type = "audio/wav"

    def __init__(self, sample_rate: int, total_samples: int | None = None) -> None:
        self.sample_rate = sample_rate
        data = UNKNOWN_SIZE if total_samples is None else 2 * total_samples
        riff = UNKNOWN_SIZE if total_samples is None else 36 + data
        self._header: bytes | None = (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
                                      + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
                                      + b"data" + struct.pack("<I", data))

    def _take_header(self) -> bytes:
        header, self._header = self._header or b"", None
        return header

    def feed(self, samples: np.ndarray) -> bytes:
        return self._take_header() + np.ascontiguousarray(samples, dtype="<i2").tobytes()

    def finish(self) -> bytes:
        return self._take_header()


# ---- soundfile -------------------------------------------------------------------------------------
class _ForwardSink:
    """A file-like object for libsndfile that hands out bytes as soon as they are written.
    Bytes already handed out are gone: a later write over them (a header patched at the
    end) is dropped, which leaves the header's "unknown" values in place."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # file offset of _buf[0]
        self._pos = 0

    def write(self, data: Any) -> int:
        data = bytes(data)
        n = len(data)
        if self._pos < self._base:
            skip = min(n, self._base - self._pos)
            data, self._pos = data[skip:], self._pos + skip
        start = self._pos - self._base
        end = start + len(data)
        if end > len(self._buf):
            self._buf.extend(bytes(end - len(self._buf)))
        self._buf[start:end] = data
        self._pos += len(data)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        end = self._base + len(self._buf)
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 else end + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        return b""  # write-only: libsndfile never needs to read back what it wrote for these formats

    def take(self) -> bytes:
        data = bytes(self._buf)
        self._base += len(data)
        self._buf.clear()
        return data


class SoundfileEncoder:
    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        import soundfile

        self.content_type = fmt.content_type
        self.sample_rate = sample_rate
        self._sink = _ForwardSink()
        self._file = soundfile.SoundFile(self._sink, "w", samplerate=sample_rate, channels=1,
                                         format=fmt.container, subtype=fmt.codec)

    def feed(self, samples: np.ndarray) -> bytes:
        self._file.write(np.asarray(samples, dtype=np.int16))
        return self._sink.take()

    def finish(self) -> bytes:
        self._file.close()
        return self._sink.take()


# ---- PyAV ------------------------------------------------------------------------------------------
class _AppendSink:
    """Not seekable on purpose: FFmpeg's muxers then write a streamable file and flush
    after every packet."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: Any) -> int:
        self._buf.extend(data)
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data


class _Resampler:
    """s16 mono at one rate to `out_format` mono at another, through FFmpeg's resampler."""

    def __init__(self, in_rate: int, out_rate: int, out_format: str = "s16") -> None:
        import av

        self._av = av
        self._in_rate = in_rate
        self._fed = 0
        self._resampler = av.AudioResampler(format=out_format, layout="mono", rate=out_rate)

    def frames(self, samples: np.ndarray) -> list[Any]:
        frame = self._av.AudioFrame.from_ndarray(np.asarray(samples, dtype=np.int16).reshape(1, -1),
                                                 format="s16", layout="mono")
        frame.sample_rate = self._in_rate
        frame.time_base = Fraction(1, self._in_rate)
        frame.pts = self._fed
        self._fed += len(samples)
        return self._resampler.resample(frame)

    def flush_frames(self) -> list[Any]:
        return self._resampler.resample(None)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        return _join(self.frames(samples))

    def flush(self) -> np.ndarray:
        return _join(self.flush_frames())


def _join(frames: list[Any]) -> np.ndarray:
    arrays = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(arrays).astype("<i2") if arrays else np.zeros(0, "<i2")


class AvEncoder:
    OGG_PAGE_US = 20_000  # close an Ogg page every 20 ms of audio, not every second

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        import av

        self.content_type = fmt.content_type
        self.sample_rate = rate = pick_rate(fmt.rates, sample_rate)
        self._sink = _AppendSink()
        options = {"page_duration": str(self.OGG_PAGE_US)} if fmt.container == "ogg" else {}
        self._out = av.open(self._sink, "w", format=fmt.container, options=options)
        self._stream = self._out.add_stream(fmt.codec, rate=rate, layout="mono")
        self._resampler = _Resampler(sample_rate, rate, self._stream.codec_context.format.name)

    def _encode(self, frames: list[Any]) -> None:
        for frame in frames:
            self._out.mux(self._stream.encode(frame))

    def feed(self, samples: np.ndarray) -> bytes:
        if len(samples):
            self._encode(self._resampler.frames(samples))
        return self._sink.take()

    def finish(self) -> bytes:
        self._encode(self._resampler.flush_frames())
        self._out.mux(self._stream.encode(None))
        self._out.close()
        return self._sink.take()
