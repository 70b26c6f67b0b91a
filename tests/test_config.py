import subprocess
import sys

import pytest

from voxpipe.config import ConfigError, load_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "voxpipe.toml"
    path.write_text(text)
    return path


def test_defaults_load():
    config = load_config(None)
    assert config.worker.engine == "onnx" and config.preload == ["joe"]


def test_values_are_read(tmp_path):
    config = load_config(write(tmp_path, 'preload = ["joe"]\n[worker]\ncount = 3\n[merger]\ncrossfade_ms = 12\n'))
    assert config.worker.count == 3 and config.merger.crossfade_ms == 12.0


@pytest.mark.parametrize("text, key", [
    ("[worker]\ncuont = 2\n", "cuont"),
    ("[worker]\ncount = 'two'\n", "worker.count"),
    ("[limits]\nmax_text_chars = -1\n", "limits.max_text_chars"),
    ("bogus = 1\n", "bogus"),
    ("[merger]\ncrossfade_ms = 900\n", "merger.crossfade_ms"),
    ("worker = 3\n", "worker"),
    ("[worker]\nint8_method = 'fast'\n", "worker.int8_method"),
    ("[gpu]\ntensorrt_max_frames = 4\n", "gpu.tensorrt_max_frames"),
    ("[gpu]\ncuda_graphs = 'yes'\n", "gpu.cuda_graphs"),
])
def test_bad_files_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_readme_sample_is_a_valid_config_with_the_defaults(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sample = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = load_config(write(tmp_path, sample))
    assert config.gpu.cuda_graphs and config.worker.int8_method == "static" and config.worker.precision == "fp32"


def test_config_check_command(tmp_path):
    good = write(tmp_path, "[worker]\ncount = 1\n")
    ok = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "config", "check", str(good)], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[worker]\nthreds = 1\n")
    result = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "config", "check", str(bad)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "threds" in result.stderr


TABLE_VALUED = {"http.voice_aliases"}  # keys whose value is a table of the user's own names


def _keys(table: dict, prefix: str = "") -> set[str]:
    """Every key of a (nested) TOML table, dotted."""
    keys = set()
    for name, value in table.items():
        nested = isinstance(value, dict) and prefix + name not in TABLE_VALUED
        keys |= _keys(value, f"{prefix}{name}.") if nested else {prefix + name}
    return keys


def test_sample_passes_check_and_holds_every_key_at_its_default(tmp_path):
    import dataclasses
    import tomllib

    from voxpipe.config import Config
    from voxpipe.config_sample import SAMPLE

    result = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "config", "sample"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == SAMPLE
    path = write(tmp_path, result.stdout)
    check = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "config", "check", str(path)], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert load_config(path) == Config()
    assert _keys(tomllib.loads(SAMPLE)) == _keys(dataclasses.asdict(Config()))


def test_readme_lists_every_key():
    import tomllib

    from voxpipe.config_sample import SAMPLE

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = tomllib.loads(readme.split("```toml\n", 1)[1].split("```", 1)[0])
    assert _keys(listed) == _keys(tomllib.loads(SAMPLE))


def test_operations_sample_fails_only_for_a_missing_group(tmp_path):
    """docs/operations.md's config is valid once its group exists (made a step before it)."""
    import grp

    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    sample = text.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    assert 'socket_group = "voxpipe-clients"' in sample
    try:
        grp.getgrnam("voxpipe-clients")
    except KeyError:
        with pytest.raises(ConfigError, match="groupadd --system voxpipe-clients"):
            load_config(write(tmp_path, sample))
    else:
        load_config(write(tmp_path, sample))
    load_config(write(tmp_path, sample.replace("voxpipe-clients", "")))
