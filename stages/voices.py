"""The voice catalog: which voices exist, by plain name, and where their files are.

Each model family's built-in voices always exist (`Family.builtin_voices()`: the bundled
Piper voice `joe`). A voices directory adds one voice per folder, `NAME/`, read by the
model family that claims the folder (Piper: `*.onnx` + `*.onnx.json`; GPT-SoVITS:
`voice.toml`; see stages/families/). Names are plain names, never paths: anything else is
rejected before it comes near the file system.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VOICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class VoiceError(Exception):
    """A voice is unknown, badly named or unusable; `code` is the wire error code."""

    def __init__(self, code: str, voice: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.voice = voice


@dataclass(frozen=True)
class VoiceSpec:
    """A voice as the pipeline knows it, whatever its family; what only its family reads
    is in `settings` (Piper: its JSON config; GPT-SoVITS: its voice.toml)."""

    name: str
    family: str  # the model family that reads and runs it (stages/families/)
    sample_rate: int
    files: tuple[Path, ...]  # what it is read from, its model file first
    stamp: tuple[int, int] = (0, 0)  # model file (mtime_ns, size): a changed file is a new spec
    settings: Any = field(default=None, hash=False)  # the family's own typed settings

    @property
    def model_path(self) -> Path:
        return self.files[0]


def file_stamp(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a voice's model file; OSError if it is gone."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def check_voice_name(name: object) -> str:
    """Return `name` if it is a plain voice name; raise VoiceError('bad_voice') otherwise."""
    if not isinstance(name, str) or not VOICE_NAME_RE.fullmatch(name):
        raise VoiceError("bad_voice", str(name)[:80], f"invalid voice name {str(name)[:80]!r}: "
                         "use letters, digits, '-' and '_' only")
    return name


RESCAN_CHECK_S = 1.0  # how often a lookup may look for changes in the voices directory


class VoiceCatalog:
    """Maps voice names to specs. Notices voices added, removed or changed on disk by
    itself (at most one directory listing per second), and on reload (SIGHUP)."""

    def __init__(self, voices_dir: Path | None) -> None:
        self.voices_dir = voices_dir.resolve() if voices_dir else None
        self._specs: dict[str, VoiceSpec] = {}
        self._broken: dict[str, str] = {}
        self._unavailable: dict[str, tuple[tuple[int, int], str]] = {}  # name -> (stamp it failed at, why)
        self._signature: tuple = ()
        self._checked = 0.0
        self._builtin_specs: dict[str, VoiceSpec] | None = None
        self.rescan()

    def _disk_signature(self) -> tuple:
        """Names, sizes and times of every file in the voices directory."""
        if not self.voices_dir or not self.voices_dir.is_dir():
            return ()
        entries = []
        for path in sorted(self.voices_dir.glob("*/*")):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def refresh(self) -> None:
        """Rescan if the directory changed since the last look (rate-limited)."""
        now = time.monotonic()
        if now - self._checked < RESCAN_CHECK_S:
            return
        self._checked = now
        if self._disk_signature() != self._signature:
            self.rescan()

    def mark_unavailable(self, name: str, why: str) -> None:
        """A voice that failed to load stays unavailable until its files change."""
        spec = self._specs.get(name)
        if spec is not None:
            self._unavailable[name] = (spec.stamp, why)

    def rescan(self) -> None:
        self._signature = self._disk_signature()
        specs = dict(self._builtin())
        broken: dict[str, str] = {}
        if self.voices_dir and self.voices_dir.is_dir():
            for entry in sorted(self.voices_dir.iterdir()):
                if not entry.is_dir() or not VOICE_NAME_RE.fullmatch(entry.name) or entry.name in specs:
                    continue
                try:
                    specs[entry.name] = self._scan_dir(entry)
                except VoiceError as exc:
                    broken[entry.name] = str(exc)
        self._specs, self._broken = specs, broken

    def _builtin(self) -> dict[str, VoiceSpec]:
        """Every family's built-in voices, read once (their files are installed, not edited)."""
        if self._builtin_specs is None:
            from voxpipe.stages import families

            found: dict[str, VoiceSpec] = {}
            for name in families.names():
                try:
                    voices = families.get(name).builtin_voices()
                except families.FamilyError:
                    continue  # its voices folders say so when they are looked up
                found.update((spec.name, spec) for spec in voices if spec.name not in found)
            self._builtin_specs = found
        return self._builtin_specs

    @property
    def default_voice(self) -> str:
        """The first built-in voice (the bundled `joe`): what a stage warms up without a preload list."""
        return next(iter(self._builtin()))

    def _scan_dir(self, directory: Path) -> VoiceSpec:
        from voxpipe.stages import families

        try:
            family = families.detect(directory)
        except families.FamilyError as exc:
            raise VoiceError("voice_unavailable", directory.name, f"voice {directory.name!r}: {exc}") from exc
        if family is None:
            raise VoiceError("voice_unavailable", directory.name,
                             f"voice {directory.name!r}: no model family ({', '.join(families.names())}) "
                             f"recognises its files")
        return family.load_spec(directory.name, directory)

    def get(self, name: object) -> VoiceSpec:
        checked = check_voice_name(name)
        self.refresh()
        spec = self._specs.get(checked)
        if spec is not None:
            failed = self._unavailable.get(checked)
            if failed is None:
                return spec
            if failed[0] == spec.stamp:
                raise VoiceError("voice_unavailable", checked, failed[1])
            del self._unavailable[checked]  # new files: try again
            return spec
        if checked in self._broken:
            raise VoiceError("voice_unavailable", checked, self._broken[checked])
        raise VoiceError("unknown_voice", checked, f"unknown voice {checked!r}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return sorted(self._specs)

    def broken(self) -> dict[str, str]:
        return {**self._broken, **{name: why for name, (_, why) in self._unavailable.items()}}
