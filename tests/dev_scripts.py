"""The developer scripts in tools/ are scripts, not a package (`python tools/X.py`); tests
that use one load it from its file."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_script(name: str) -> ModuleType:
    """tools/NAME.py as a module (loaded once; its `__main__` block does not run)."""
    key = f"voxpipe_dev_script_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TOOLS / f"{name}.py")
        assert spec is not None and spec.loader is not None, f"no script tools/{name}.py"
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # before it runs: its dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


def from_script(name: str, *names: str) -> tuple[Any, ...]:
    """Names A, B, ... of the script tools/NAME.py: (A, B, ...), as importing them would give."""
    module = load_script(name)
    return tuple(getattr(module, n) for n in names)
