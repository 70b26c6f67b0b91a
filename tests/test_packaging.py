"""The installed layout: one `voxpipe` namespace, every package listed, no generic
top-level modules (tools, ipc, ...) in anyone's site-packages."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"voxpipe": "voxpipe", "daemon": "voxpipe.daemon", "stages": "voxpipe.stages", "ipc": "voxpipe.ipc"}


def tree_packages() -> set[str]:
    found = set()
    for folder, prefix in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(prefix + "".join(f".{part}" for part in rel.parts))
    return found


def test_pyproject_lists_every_package_of_the_tree():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == tree_packages()
    assert setuptools["package-dir"] == {prefix: folder for folder, prefix in FOLDERS.items()}


def test_user_facing_imports():
    from voxpipe import AsyncClient, Client, VoxpipeError
    from voxpipe.ipc.client import AsyncClient as DirectAsync, Client as Direct

    assert (Client, AsyncClient) == (Direct, DirectAsync)
    assert issubclass(VoxpipeError, Exception)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("folder", ["voxpipe", "daemon", "stages", "ipc"])
def test_no_imports_outside_the_namespace(folder):
    """Shipped code imports voxpipe.* only, never a bare `stages`, `ipc`, `daemon` or `tools`."""
    bad = [(str(path.relative_to(ROOT)), name) for path in (ROOT / folder).rglob("*.py")
           for name in _imports(path) if name.split(".")[0] in {"stages", "ipc", "daemon", "tools", "tests"}]
    assert bad == []


def test_layers_have_no_cycle():
    """The shared layer (voxpipe/) and ipc/ import neither daemon/ nor stages/; stages/ never
    imports daemon/ (the supervisor starts the stages, not the other way round)."""
    def offenders(folder: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(str(path.relative_to(ROOT)), name) for path in (ROOT / folder).rglob("*.py")
                for name in _imports(path) if name.startswith(forbidden)]

    assert offenders("voxpipe", ("voxpipe.daemon", "voxpipe.stages")) == []
    assert offenders("ipc", ("voxpipe.daemon", "voxpipe.stages")) == []
    assert offenders("stages", ("voxpipe.daemon",)) == []


def test_wheel_holds_one_namespace(tmp_path):
    """Build the wheel: everything under voxpipe/, the HTTP page included, no tools/ or tests/."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here; the build needs 77 or newer")
    leftover = ROOT / "build"
    existed = leftover.exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    finally:
        if not existed:  # setuptools builds in the source tree
            shutil.rmtree(leftover, ignore_errors=True)
    (wheel,) = tmp_path.glob("voxpipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"voxpipe"}
    assert "voxpipe/stages/http/static/index.html" in names
    assert "voxpipe/daemon/commands/say.py" in names
    assert "voxpipe/stages/worker/stage.py" in names
