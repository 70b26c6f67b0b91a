"""voxpipe: a multiprocess shared-memory text-to-speech serving daemon.

For users: `from voxpipe import Client, AsyncClient` (and `Reference`, a request's own
reference clip for GPT-SoVITS voices). The client library is imported on
first use, so `import voxpipe` (and the `voxpipe` command's start-up) stays cheap.

The installed package is one namespace built from the source tree's folders:
`voxpipe.daemon` (daemon/: supervisor, command line), `voxpipe.stages` (stages/: the
processes and engines), `voxpipe.ipc` (ipc/: wire formats, sockets, shared memory,
client library); this folder holds what sits below all three (configuration, metrics,
process utilities).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "voxpipe.ipc.client",
    "AsyncClient": "voxpipe.ipc.client",
    "Audio": "voxpipe.ipc.client",
    "AudioFragment": "voxpipe.ipc.client",
    "Reference": "voxpipe.ipc.client",
    "run_async": "voxpipe.ipc.client",
    "VoxpipeError": "voxpipe.ipc.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voxpipe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
