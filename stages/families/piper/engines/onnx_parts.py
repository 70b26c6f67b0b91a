"""A Piper voice's graph split in three for onnxruntime: the prior (text encoder and
duration predictor, up to the flow's input), the flow and the vocoder, exported once per
voice and cached on disk.

Split, the flow and the vocoder can run on a long latent in windows, each with the
context either side that reaches it (stages/families/piper/vits/stream.py explains why
the windows join exactly), so a long sentence's first audio is ready after one window,
and the windows of one sentence can run side by side on free cores. Exporting needs torch and onnx (the `torch` extra); the cached files then
load with onnxruntime alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voxpipe.procutil import exclusive_lock

# Bump when the exported graphs or the sidecar change meaning: old caches are then ignored.
# Format 2 adds the acoustic part's third output, each phoneme's duration (word timings).
# Format 3 takes the noise as inputs (dp_noise, z_noise), drawn from the chunk's seed, so
# a chunk renders the same audio every time and on every engine. Older caches drew their
# noise inside the graph: they are not read (a voice is exported again on first use).
# Format 5 splits the acoustic part into the prior and the flow (windowed flow), and the
# vocoder takes one item without masks.
# Format 6 adds the vocoder with 2-D convolutions (vocoder_rows.onnx), the layout of
# onnxruntime's blocked convolutions: 1.2x faster on one thread, so one-thread calls and
# windows side by side (one per thread) use it.
# Format 7 keeps one vocoder, 2-D, its last stage on each row's two halves: faster than
# the 1-D graph on any number of threads, so that graph is gone. The prior's and the
# flow's convolutions are 2-D too (conv_rows.py).
PARTS_FORMAT = 7
READABLE_FORMATS = (7,)  # newest first


class PartsError(Exception):
    """The split graphs cannot be built here (no torch/onnx, or the export failed)."""


@dataclass(frozen=True)
class VoiceParts:
    prior: Path  # (input, input_lengths, scales, dp_noise, z_noise[, sid]) -> (z_p, frames, durations)
    flow: Path  # (z_p[, sid]) -> z, one item
    vocoder: Path  # (z [rows, C, frames][, sid]) -> audio [rows, samples]: 2-D convolutions
    radius: int  # latent frames either side that reach a frame's audio
    flow_radius: int  # frames of z_p either side that reach a frame of z
    hop: int  # audio samples per latent frame

    @property
    def files(self) -> tuple[Path, ...]:
        return self.prior, self.flow, self.vocoder


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/voxpipe/vits-parts (or ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "voxpipe" / "vits-parts"


def cache_key(model_path: Path, fmt: int = PARTS_FORMAT) -> str:
    """Content hash of the voice's model: a retrained voice under the same name is re-split."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{digest.hexdigest()[:32]}-f{fmt}"


def _read_any(root: Path, key: str) -> VoiceParts | None:
    """The newest readable cache of the voice whose current-format key is `key`."""
    stem = key.rsplit("-f", 1)[0]
    for fmt in READABLE_FORMATS:
        found = _read(root / f"{stem}-f{fmt}")
        if found is not None:
            return found
    return None


def _read(folder: Path) -> VoiceParts | None:
    try:
        meta = json.loads((folder / "parts.json").read_text())
        parts = VoiceParts(folder / "prior.onnx", folder / "flow.onnx", folder / "vocoder.onnx",
                           int(meta["radius"]), int(meta["flow_radius"]), int(meta["hop"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return parts if all(f.is_file() for f in parts.files) else None




def _export(model_path: Path, name: str, num_speakers: int, folder: Path) -> None:
    try:
        import torch  # noqa: F401  (both are optional: the torch extra)
        import onnx
    except ImportError as exc:
        raise PartsError(f"splitting a voice's graph needs torch and onnx ({exc}); "
                         "install voxpipe's torch extra") from exc
    from voxpipe.stages.families.piper.engines.conv_rows import convs_as_rows
    from voxpipe.stages.families.piper.vits.export import export_flow, export_prior, export_single_vocoder
    from voxpipe.stages.families.piper.vits.load import load_piper_onnx
    from voxpipe.stages.engines.receptive_field import flow_radius, receptive_radius

    model = load_piper_onnx(model_path, name, num_speakers)
    for path in (export_prior(model, folder / "prior.onnx"), export_flow(model, folder / "flow.onnx")):
        graph = onnx.load(str(path))
        convs_as_rows(graph)
        onnx.save(graph, str(path))
    export_single_vocoder(model, folder / "vocoder.onnx")
    meta = {"radius": receptive_radius(model.dec), "flow_radius": flow_radius(model.flow),
            "hop": model.hop_length, "source": model_path.name}
    (folder / "parts.json").write_text(json.dumps(meta))


def voice_parts(model_path: Path, name: str, num_speakers: int = 1, cache_dir: Path | None = None) -> VoiceParts:
    """The split graphs of a Piper voice, exported on first use (atomically, one process at
    a time). Raises PartsError when they cannot be made."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        target = root / cache_key(model_path)
        found = _read_any(root, target.name)
        if found is not None:
            return found
        root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(root / f"{target.name}.lock"):
            found = _read_any(root, target.name)  # another process exported it while this one waited
            if found is not None:
                return found
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
            try:
                _export(model_path, name, num_speakers, tmp)
                tmp.chmod(0o755)  # mkdtemp's 0700 would hide it from a service sharing the cache
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except OSError as exc:
        raise PartsError(f"voice {name!r}: cannot cache its split graphs in {root}: {exc}") from exc
    except PartsError:
        raise
    except Exception as exc:  # torch's exporter and the weight loader raise many kinds
        raise PartsError(f"voice {name!r}: cannot split its graph: {exc}") from exc
    found = _read(target)
    if found is None:
        raise PartsError(f"voice {name!r}: the split graphs in {target} are incomplete")
    return found
