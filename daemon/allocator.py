"""Which malloc the synthesis workers run with.

Model inference allocates and frees many large, short-lived buffers per call; glibc's
malloc hands big ones back to the kernel and takes them again (page faults on every
call), where tcmalloc and jemalloc keep them. The supervisor preloads the chosen one into
workers only (`LD_PRELOAD` in their environment at spawn): the other stages keep the
system's. Nothing is downloaded: the library comes from the system's packages (Debian:
`apt-get install libtcmalloc-minimal4` or `libjemalloc2`); where it is missing, workers
run with the system malloc and the supervisor says so once.
"""
from __future__ import annotations

import os
from pathlib import Path

CHOICES = ("auto", "system", "tcmalloc", "jemalloc")
LIBRARIES = {"tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"), "jemalloc": ("libjemalloc.so.2",)}
AUTO = "tcmalloc"  # what `auto` takes when present (docs/gpt-sovits-serving.md has the measurements)
SEARCH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
          "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")


def find(name: str) -> Path | None:
    """The shared library of allocator `name`, or None."""
    for directory in SEARCH:
        for filename in LIBRARIES[name]:
            path = Path(directory) / filename
            if path.is_file():
                return path
    return None


def worker_env(choice: str, environ: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """The environment a worker needs for `choice`, and what it runs with in words
    ("tcmalloc (/usr/lib/.../libtcmalloc_minimal.so.4)", "system", "system: jemalloc not found")."""
    if choice not in CHOICES:
        raise ValueError(f"worker.allocator {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "system":
        return {}, "system"
    name = AUTO if choice == "auto" else choice
    path = find(name)
    if path is None:
        return {}, f"system ({name} not found: apt-get install {'libtcmalloc-minimal4' if name == 'tcmalloc' else 'libjemalloc2'})"
    current = (environ if environ is not None else os.environ).get("LD_PRELOAD", "")
    preload = " ".join(p for p in (str(path), current) if p)
    return {"LD_PRELOAD": preload}, f"{name} ({path})"
