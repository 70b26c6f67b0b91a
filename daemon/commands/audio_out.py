"""Where `voxpipe say` writes audio: a file, a device such as /dev/null, or standard
output, in one of wav, flac, ogg or pcm (raw s16le).

Regular files are written by libsndfile, which patches the header's sizes when the file
is closed. Standard output, devices and pipes cannot seek back, so they get the same
streaming encoders the HTTP gateway uses (a WAV header that says "length unknown").
Every failure is an OutputError with one line that names the file.
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any, BinaryIO

FORMATS = ("wav", "flac", "ogg", "pcm")
EXTENSIONS = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".pcm": "pcm", ".raw": "pcm"}
_SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


class OutputError(Exception):
    """The output cannot be written; the message names it and says why."""


def _is_regular_or_absent(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def pick_format(output: str, requested: str | None) -> str:
    """--format if given; else by extension; else wav (pcm for standard output). An
    extension we cannot write (.mp3) is refused rather than silently written as WAV."""
    if requested:
        return requested
    if output == "-":
        return "pcm"
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if not suffix or not _is_regular_or_absent(path):
        return "wav"
    raise OutputError(f"{output}: cannot write {suffix} files; use .wav, .flac, .ogg or .pcm, "
                      f"or pick one with --format")


def check_output(output: str) -> None:
    """Fail before any synthesis when the output plainly cannot be written."""
    if output == "-":
        return
    path = Path(output)
    if path.is_dir():
        raise OutputError(f"{output}: is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{output}: no such directory: {parent}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputError(f"{output}: permission denied")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{output}: cannot create a file in {parent}: permission denied")


class AudioSink:
    """Opened on the first fragment (the sample rate comes with it)."""

    def __init__(self, output: str, fmt: str) -> None:
        self.output, self.fmt = output, fmt
        self._sound: Any = None  # a soundfile.SoundFile
        self._stream: BinaryIO | None = None
        self._encoder: Any = None  # a streaming encoder from voxpipe.stages.http.encoders

    @property
    def opened(self) -> bool:
        return self._sound is not None or self._stream is not None

    def _open(self, sample_rate: int) -> None:
        try:
            if self.output != "-" and self.fmt in _SOUNDFILE and _is_regular_or_absent(Path(self.output)):
                import soundfile

                container, subtype = _SOUNDFILE[self.fmt]
                self._sound = soundfile.SoundFile(self.output, "w", samplerate=sample_rate, channels=1,
                                                  format=container, subtype=subtype)
                return
            from voxpipe.stages.http.encoders import make_encoder

            self._encoder = make_encoder(self.fmt, sample_rate)
            self._stream = sys.stdout.buffer if self.output == "-" else open(self.output, "wb")
        except BrokenPipeError:
            raise
        except (OSError, RuntimeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
            raise OutputError(f"{self.output}: cannot write: {_reason(exc)}") from None

    def write(self, samples: Any, sample_rate: int, flush: bool = False) -> None:
        if not self.opened:
            self._open(sample_rate)
        try:
            if self._sound is not None:
                self._sound.write(samples)
            else:
                assert self._stream is not None
                self._stream.write(self._encoder.feed(samples))
                if flush:
                    self._stream.flush()
        except BrokenPipeError:
            raise
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"{self.output}: cannot write: {_reason(exc)}") from None

    def close(self) -> None:
        """Finish the file (or the stream's last bytes)."""
        try:
            if self._sound is not None:
                self._sound.close()
            elif self._stream is not None:
                self._stream.write(self._encoder.finish())
                if self._stream is sys.stdout.buffer:
                    self._stream.flush()
                else:
                    self._stream.close()
        except BrokenPipeError:
            raise
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"{self.output}: cannot write: {_reason(exc)}") from None
        finally:
            self._sound = self._stream = None


def _reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
