"""A probe's choice, cached on disk per key (machine, libraries, model files), so that later
loads and the other workers skip the probe. One probe per key at a time: workers loading a
voice at once wait for the first one's choice instead of timing their own, which could
differ under load (and then one seed would render differently on each worker)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Iterator

_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def probe_lock(directory: Path, key: str) -> Iterator[None]:
    """An exclusive lock on the probe of `key` (a lock file beside its cached choice); no
    lock where the folder cannot be written (each process then probes alone)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / f".{key}.lock", "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def read(directory: Path, key: str) -> dict | None:
    """The cached choice of `key`, None where there is none or it cannot be read."""
    try:
        data = json.loads((directory / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(directory: Path, key: str, data: dict) -> None:
    """Store a choice whole or not at all (whoever writes last wins); a folder that cannot be
    written costs only a warning: the next load probes again."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{key}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
        temporary.replace(directory / f"{key}.json")
    except OSError as exc:
        _LOG.warning("cannot cache the precision choice in %s: %s", directory, exc)
