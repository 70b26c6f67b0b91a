"""The files of the daemon's GPT-SoVITS voices (their checkpoints and reference clip, as
their voice.toml names them), so that api_v2 clients may name a voice by those paths.

A path is matched against these known files only, by its absolute spelling (relative
paths are relative to the voices directory) and, inside the voices directory, by its
real path: any other path is refused without the file system being asked about it.
"""
from __future__ import annotations

import os
from pathlib import Path

from voxpipe.stages.families.gpt_sovits.voice_config import VoiceConfigError, read_voice_toml

KINDS = ("gpt", "sovits", "reference")


def voice_files(voices_dir: Path | None, voices: list[str]) -> dict[str, dict[str, Path]]:
    """voice name -> {"gpt", "sovits", "reference"} real paths, for the known voices that
    are GPT-SoVITS voices of the voices directory."""
    if voices_dir is None:
        return {}
    found: dict[str, dict[str, Path]] = {}
    for name in voices:
        directory = voices_dir / name
        if not (directory / "voice.toml").is_file():
            continue
        try:
            config = read_voice_toml(directory)
        except VoiceConfigError:
            continue  # the daemon lists it as unavailable; no file of it is named here
        found[name] = {"gpt": config.gpt, "sovits": config.sovits, "reference": config.reference.audio}
    return found


def _spellings(path: str, voices_dir: Path | None) -> set[Path]:
    """The absolute paths `path` may stand for."""
    if not path or "\0" in path:
        return set()
    given = Path(path)
    if not given.is_absolute():
        if voices_dir is None:
            return set()
        given = voices_dir / given
    lexical = Path(os.path.abspath(given))
    spellings = {lexical}
    base = voices_dir.resolve() if voices_dir is not None else None
    if base is not None and lexical.is_relative_to(base):  # links inside our own directory only
        try:
            spellings.add(lexical.resolve(strict=True))
        except (OSError, RuntimeError):
            pass
    return spellings


def voice_of_file(path: str, kind: str, files: dict[str, dict[str, Path]], voices_dir: Path | None) -> str | None:
    """The voice whose `kind` file `path` is, or None."""
    spellings = _spellings(path, voices_dir)
    for name, own in files.items():
        if own[kind] in spellings:
            return name
    return None


def allowed_clip(path: str, voices_dir: Path | None, reference_dirs: list[Path]) -> tuple[Path, Path] | None:
    """(the real path of the clip `path` names, the allowed directory it is in), or None
    when it names nothing inside the voices directory or `reference_dirs`. The spelling is
    checked first, so a path elsewhere is refused before the file system is asked about
    it; then its real path, so a symbolic link cannot lead out either. A relative path is
    relative to the voices directory."""
    if not path or "\0" in path:
        return None
    given = Path(path)
    if not given.is_absolute():
        if voices_dir is None:
            return None
        given = voices_dir / given
    lexical = Path(os.path.abspath(given))
    for base in ([voices_dir] if voices_dir is not None else []) + list(reference_dirs):
        root = Path(os.path.abspath(base))
        if lexical == root or not lexical.is_relative_to(root):
            continue
        try:
            real, real_root = lexical.resolve(strict=True), root.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real != real_root and real.is_relative_to(real_root) and real.is_file():
            return real, real_root
        return None
    return None
