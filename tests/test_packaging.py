"""The installed layout: one `voxpipe` namespace, every package listed, no generic
top-level modules (tools, ipc, ...) in anyone's site-packages, and the benchmarks
(voxpipe.bench) above the serving code, never imported by it."""
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


BENCH = ROOT / "voxpipe" / "bench"  # the benchmarks: a layer above everything else
# The command line names the benchmarks' commands; it imports their modules only when one runs.
COMMAND_LINE = [ROOT / "daemon" / "cli.py", ROOT / "daemon" / "cluster" / "cli.py"]


def test_layers_have_no_cycle():
    """The shared layer (voxpipe/) and ipc/ import neither daemon/ nor stages/; stages/ never
    imports daemon/ (the supervisor starts the stages, not the other way round). The
    benchmarks (voxpipe/bench/) sit above them all."""
    def offenders(folder: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(str(path.relative_to(ROOT)), name) for path in (ROOT / folder).rglob("*.py")
                if not path.is_relative_to(BENCH) for name in _imports(path) if name.startswith(forbidden)]

    assert offenders("voxpipe", ("voxpipe.daemon", "voxpipe.stages")) == []
    assert offenders("ipc", ("voxpipe.daemon", "voxpipe.stages")) == []
    assert offenders("stages", ("voxpipe.daemon",)) == []


def _top_level_imports(path: Path) -> list[str]:
    """Modules imported when `path` is imported: not those inside functions."""
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_serving_code_never_imports_the_benchmarks():
    """Nothing the daemon is made of imports voxpipe.bench, lazily or not, nor names it; the
    command line imports a benchmark's module only when that command is chosen."""
    serving = [path for folder in ("voxpipe", "daemon", "stages", "ipc") for path in (ROOT / folder).rglob("*.py")
               if not path.is_relative_to(BENCH) and path not in COMMAND_LINE]
    assert len(serving) > 50
    bad = [str(path.relative_to(ROOT)) for path in serving
           if "voxpipe.bench" in path.read_text(encoding="utf-8")
           or any(name.startswith("voxpipe.bench") for name in _imports(path))]
    assert bad == []
    eager = [(str(path.relative_to(ROOT)), name) for path in COMMAND_LINE
             for name in _top_level_imports(path) if name.startswith("voxpipe.bench")]
    assert eager == []


def test_starting_the_daemon_loads_no_benchmark():
    """The same at run time: the command line, the supervisor and every stage's modules."""
    code = ("import sys\n"
            "from voxpipe.daemon.cli import build_parser\n"
            "build_parser('serve')\n"
            "import voxpipe.daemon.supervisor, voxpipe.daemon.stage_entry\n"
            "import voxpipe.stages.frontend.stage, voxpipe.stages.worker.stage, voxpipe.stages.merger.stage\n"
            "print(sorted(m for m in sys.modules if m.startswith('voxpipe.bench')))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_tools_is_not_a_package():
    """tools/ holds developer scripts run by path (`python tools/X.py`); as a package its
    name would clash with the `tools` module GPT-SoVITS installs."""
    assert not (ROOT / "tools" / "__init__.py").exists()
    assert sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tools").rglob("__init__.py")) == []


# What a wheel is built from: the package's folders and the files pyproject.toml names.
SOURCES = ("pyproject.toml", "README.md", *FOLDERS)


def build_wheel(out_dir: Path) -> Path:
    """A wheel of the project, built from a copy of its sources (setuptools writes build/
    and *.egg-info where it builds: not in the checkout, which others may be building in
    at the same time), without build isolation (that needs the network). -> the wheel."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here; the build needs 77 or newer")
    source = out_dir / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(out_dir), str(source.resolve())], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    (wheel,) = out_dir.glob("voxpipe-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_holds_one_namespace(tmp_path):
    """Build the wheel: everything under voxpipe/ (no other top-level package or module),
    the HTTP page and the benchmark texts included, no tools/ or tests/."""
    wheel = zipfile.ZipFile(build_wheel(tmp_path))
    names = wheel.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"voxpipe"}
    assert all(wheel.read(name).split() == [b"voxpipe"] for name in names if name.endswith("/top_level.txt"))
    assert "voxpipe/stages/http/static/index.html" in names
    assert "voxpipe/daemon/commands/say.py" in names
    assert "voxpipe/stages/worker/stage.py" in names
    for shipped in ("run.py", "gsv_serve.py", "gsv_reference_runner.py", "cluster.py", "soak.py", "stop.py",
                    "firstbyte.py", "plots.py", "data/texts_en.tsv", "data/texts_zh.tsv", "data/longform_en.txt"):
        assert f"voxpipe/bench/{shipped}" in names
    assert not any(name.startswith(("tools/", "tests/")) for name in names)
