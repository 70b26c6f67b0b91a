"""The daemon's configuration: one TOML file, every key typed and checked.

Unknown keys and wrong types are errors that name the key, so a typo never silently
falls back to a default.
"""
from __future__ import annotations

import dataclasses
import grp
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # engines refuse the ones they lack
VOCODER_PRECISIONS = ("auto", "fp32", "bf16")  # Piper voices' vocoder on the onnx engine
ALLOCATORS = ("auto", "system", "tcmalloc", "jemalloc")  # daemon/allocator.py
GSV_PRECISIONS = {"decoder": ("auto", "fp32", "bf16", "fp16", "int8"), "renderer": ("auto", "fp32", "bf16", "fp16"),
                  "prefill": ("auto", "fp32", "int8")}
INT8_METHODS = ("static", "dynamic")  # stages/families/piper/engines/quantize.py's recipes


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the key."""


@dataclass
class LimitsConfig:
    max_text_chars: int = 1_000_000  # longer text is answered `too_long` (text is planned as it is read)
    max_active_requests: int = 256  # requests being served at once; more get `busy`
    max_queued_chunks: int = 4096  # chunks waiting for a worker; more get `busy`
    request_timeout_s: float = 300.0  # default deadline when a client sets none
    drain_timeout_s: float = 30.0  # SIGTERM: how long accepted requests may finish
    max_chunk_attempts: int = 3  # a chunk that fails on this many workers fails its request


@dataclass
class FrontendConfig:
    chunk_budget: int = 400  # phonemes per chunk
    policy: str = "punctuation"  # one sentence a chunk (a long one cut at clauses); "packed" packs sentences
    first_chunk: bool = True  # the first chunk ends at the first clause mark (fast first audio)
    first_chunk_words: int = 4  # ... after at least this many words
    plan_ahead_chunks: int = 16  # a request's chunks planned and not yet synthesized; the rest of its text waits


@dataclass
class WorkerConfig:
    count: int = 0  # synthesis workers on CPU; 0 = cores / threads
    threads: int = 1  # engine threads per CPU worker
    engine: str = "onnx"
    precision: str = "fp32"  # "int8": onnx engine, quantized vocoder (audible error: docs/int8.md)
    int8_method: str = "static"  # precision int8: "static" (calibrated QDQ) or "dynamic"
    credits: int = 2  # chunks a worker holds at once (one running, one ready)
    max_batch: int = 0  # chunks per batch; 0 = the engine's choice (torch: 16 on a GPU, 1 on a CPU; GPT-SoVITS: 16)
    batch_phonemes: int = 8192  # ceiling on a batch's padded phonemes (memory may lower it)
    batch_wait_ms: float = 5.0  # wait this long for a batch to fill before running it
    voice_cache_mib: float = 2048.0  # LRU voice cache bound per worker
    engine_stream_frames: int = 32  # >0: streamed chunks decode in windows, the first this many frames (onnx, torch)
    max_threads: int = 0  # onnx and gpt-sovits engines: threads a call may use while other workers idle; 0 = all cores
    loudness: bool = True  # Piper voices: one gain per voice (every engine), measured once, for Piper's level
    level_cache_dir: str = ""  # Piper voices' gains, by model contents; empty: $XDG_CACHE_HOME/voxpipe/piper-level
    # Piper voices on the onnx engine: the vocoder's precision; "auto" probes each voice once
    # per machine (bf16 is a candidate on CPUs with bf16 units only).
    vocoder_precision: str = "auto"  # auto | fp32 | bf16
    vocoder_precision_cache_dir: str = ""  # the probes' choices; empty: $XDG_CACHE_HOME/voxpipe/vocoder-precision
    # GPT-SoVITS voices (a voice.toml's [precision] table overrides): the decoder's steps,
    # its prefills and the vocoder; "auto" probes each voice once per machine for the
    # fastest within bounds.
    gsv_decoder_precision: str = "auto"  # auto | fp32 | bf16 | fp16 | int8
    gsv_renderer_precision: str = "auto"  # auto | fp32 | bf16 | fp16
    gsv_prefill_precision: str = "auto"  # auto | fp32 | int8 (CPU)
    gsv_precision_cache_dir: str = ""  # the probes' choices; empty: $XDG_CACHE_HOME/voxpipe/gsv-precision
    gsv_conditioning_mib: float = 256.0  # per worker: requests' reference clips' prompts kept (LRU)
    allocator: str = "system"  # workers' malloc: system | auto (tcmalloc where installed) | tcmalloc | jemalloc


@dataclass
class GpuConfig:
    enabled: bool = True  # use GPUs when present
    memory_fraction: float = 0.9
    alloc_conf: str = "expandable_segments:True"
    tensorrt_workspace_mib: int = 2048
    cuda_graphs: bool = True  # torch engine: replay the vocoder from CUDA graphs per bucketed shape
    tensorrt_plan_dir: str = ""  # built TensorRT plans; empty: $XDG_CACHE_HOME/voxpipe/tensorrt
    tensorrt_max_frames: int = 2048  # longest latent the plans cover; longer batches run in torch


@dataclass
class MergerConfig:
    crossfade_ms: float = 30.0


@dataclass
class ShmConfig:
    worker_pool_mib: int = 64
    merger_pool_mib: int = 64
    slot_kib: int = 64


@dataclass
class SupervisorConfig:
    start_timeout_s: float = 180.0  # every stage ready (voices preloaded) within this
    hang_timeout_s: float = 2.5  # no heartbeat for this long: the stage is hung
    max_busy_s: float = 120.0  # one engine call running longer than this: hung
    restart_budget: int = 5  # restarts allowed within restart_window_s before giving up
    restart_window_s: float = 60.0


# OpenAI's voice names, which apps built on its SDK hard-code: by default each speaks with
# the bundled voice, so such apps work unchanged.
OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")
# A voice name as stages/voices.py accepts it (this layer cannot import stages/).
_VOICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass
class HttpConfig:
    bind: str = ""  # "HOST:PORT" (or "PORT": host 127.0.0.1) serves the HTTP gateway; "" = off
    max_body_kib: int = 8192  # larger request bodies: 413 (a 1 MB text as JSON fits)
    max_text_chars: int = 0  # longer input: 400; 0 = limits.max_text_chars
    max_streams: int = 64  # audio responses at once; more: 429
    send_timeout_s: float = 30.0  # a client that accepts no bytes for this long is dropped
    # GPT-SoVITS reference clips a request brings (docs/gpt-sovits.md): the largest clip file
    # (uploaded or named by path; any interface), the directories besides voices_dir whose
    # files api_v2's ref_audio_path may name, and the voice that speaks a clip from one of
    # them before /set_gpt_weights or /set_sovits_weights selected one ("" = none: 400).
    max_reference_kib: int = 2048
    reference_dirs: list[str] = field(default_factory=list)
    gsv_default_voice: str = ""
    # OpenAI route: `voice` name -> the voxpipe voice that speaks for it, unless a voice of
    # that name exists. Setting the table replaces these defaults; {} turns aliases off.
    voice_aliases: dict[str, str] = field(default_factory=lambda: {name: "joe" for name in OPENAI_VOICES})


@dataclass
class Config:
    endpoint: str = ""  # empty: ipc socket in the runtime directory
    voices_dir: str = ""  # adds Piper voices NAME/*.onnx(+.json); `joe` always exists
    state_dir: str = ""  # usage state; empty: ~/.local/state/voxpipe
    preload: list[str] = field(default_factory=lambda: ["joe"])
    preload_popular: int = 3  # also preload this many of the most used voices (usage state)
    socket_group: str = ""  # group allowed to use the ipc socket (mode 0660)
    curve_keys_dir: str = ""  # CURVE keys; required for a tcp:// endpoint (voxpipe keys generate DIR)
    heartbeat_s: float = 0.5
    metrics_port: int = 0  # >0: serve Prometheus metrics on this port (0 = off)
    metrics_address: str = "127.0.0.1"  # the metrics endpoint's bind address (an IP)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    merger: MergerConfig = field(default_factory=MergerConfig)
    shm: ShmConfig = field(default_factory=ShmConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    # more model families, beside the built-in piper and gpt-sovits: name = "module:Class"
    families: dict[str, str] = field(default_factory=dict)

    def voices_path(self) -> Path | None:
        return Path(self.voices_dir).expanduser() if self.voices_dir else None

    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        if os.environ.get("STATE_DIRECTORY"):  # systemd's StateDirectory= names ours exactly
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        base = os.environ.get("XDG_STATE_HOME")
        return Path(base) / "voxpipe" if base else Path.home() / ".local" / "state" / "voxpipe"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: Path | None) -> Config:
    if path is None:
        return validate(Config())
    # Every error names the file once, as its first word.
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return validate(from_dict(Config, raw, ""))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def from_dict(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!r}; known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return from_dict(hint, value, f"{key}.")
    if typing.get_origin(hint) is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return {_coerce(key_type, k, f"{key}.{k}"): _coerce(value_type, v, f"{key}.{k}") for k, v in value.items()}
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and type(value) in (int, float):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_bind(text: str) -> tuple[str, int] | None:
    """"HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (host 127.0.0.1); None if malformed."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]") if sep else ""
    if not port.isdigit() or not 0 < int(port) <= 65535 or any(c.isspace() or c in "/[]" for c in host):
        return None
    return host or "127.0.0.1", int(port)


def _group_exists(name: str) -> bool:
    if not name:
        return True
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _bad_alias(aliases: dict[str, str]) -> str:
    """The first alias entry that is not a plain voice name on both sides, or ""."""
    for name, target in aliases.items():
        if not _VOICE_NAME_RE.fullmatch(name) or not _VOICE_NAME_RE.fullmatch(target):
            return f"{name} = {target!r}"
    return ""


def validate(config: Config) -> Config:
    """Range checks that types alone cannot express."""
    checks: list[tuple[bool, str]] = [
        (config.limits.max_text_chars > 0, "limits.max_text_chars must be > 0"),
        (config.limits.max_active_requests > 0, "limits.max_active_requests must be > 0"),
        (config.limits.max_queued_chunks > 0, "limits.max_queued_chunks must be > 0"),
        (config.limits.request_timeout_s > 0, "limits.request_timeout_s must be > 0"),
        (config.limits.drain_timeout_s >= 0, "limits.drain_timeout_s must be >= 0"),
        (config.limits.max_chunk_attempts >= 1, "limits.max_chunk_attempts must be >= 1"),
        (config.frontend.chunk_budget >= 16, "frontend.chunk_budget must be >= 16 phonemes"),
        (config.frontend.first_chunk_words >= 1, "frontend.first_chunk_words must be >= 1"),
        (config.frontend.plan_ahead_chunks >= 1, "frontend.plan_ahead_chunks must be >= 1"),
        (config.worker.count >= 0, "worker.count must be >= 0"),
        (config.worker.threads >= 1, "worker.threads must be >= 1"),
        (config.worker.max_threads >= 0, "worker.max_threads must be >= 0 (0 = all cores)"),
        (config.worker.engine_stream_frames >= 0, "worker.engine_stream_frames must be >= 0 (0 = off)"),
        (config.worker.credits >= 1, "worker.credits must be >= 1"),
        (config.worker.max_batch >= 0, "worker.max_batch must be >= 0"),
        (config.worker.batch_phonemes >= 64, "worker.batch_phonemes must be >= 64"),
        (0.0 <= config.worker.batch_wait_ms <= 1000.0, "worker.batch_wait_ms must be in [0, 1000]"),
        (config.worker.voice_cache_mib > 0, "worker.voice_cache_mib must be > 0"),
        (0.0 < config.gpu.memory_fraction <= 1.0, "gpu.memory_fraction must be in (0, 1]"),
        (0.0 <= config.merger.crossfade_ms <= 500.0, "merger.crossfade_ms must be in [0, 500]"),
        (config.shm.worker_pool_mib >= 1, "shm.worker_pool_mib must be >= 1"),
        (config.shm.merger_pool_mib >= 1, "shm.merger_pool_mib must be >= 1"),
        (4 <= config.shm.slot_kib <= 16384, "shm.slot_kib must be in [4, 16384]"),
        (config.heartbeat_s > 0, "heartbeat_s must be > 0"),
        (0 <= config.metrics_port <= 65535, "metrics_port must be in [0, 65535] (0 = off)"),
        (not config.endpoint.startswith("tcp://") or bool(config.curve_keys_dir),
         f"endpoint {config.endpoint!r}: a tcp:// endpoint is refused without CURVE keys; set curve_keys_dir "
         "(create keys with: voxpipe keys generate DIR)"),
        (_is_ip(config.metrics_address), f"metrics_address: not an IP address: {config.metrics_address!r}"),
        (_group_exists(config.socket_group),
         f"socket_group: no group named {config.socket_group!r} on this machine "
         f"(create it first: groupadd --system {config.socket_group})"),
        (config.preload_popular >= 0, "preload_popular must be >= 0"),
        (not config.http.bind or parse_bind(config.http.bind) is not None,
         f"http.bind: expected HOST:PORT or PORT, got {config.http.bind!r}"),
        (config.http.max_body_kib >= 1, "http.max_body_kib must be >= 1"),
        (1 <= config.http.max_reference_kib <= 3584,
         "http.max_reference_kib must be between 1 and 3584 (a clip travels in one message of at most 4 MiB)"),
        (not config.http.gsv_default_voice or _VOICE_NAME_RE.match(config.http.gsv_default_voice) is not None,
         f"http.gsv_default_voice: not a voice name: {config.http.gsv_default_voice!r}"),
        (all(Path(d).is_absolute() for d in config.http.reference_dirs),
         "http.reference_dirs: each directory must be an absolute path"),
        (config.worker.gsv_conditioning_mib >= 0, "worker.gsv_conditioning_mib must be >= 0"),
        (config.http.max_text_chars >= 0, "http.max_text_chars must be >= 0 (0 = limits.max_text_chars)"),
        (config.http.max_streams >= 1, "http.max_streams must be >= 1"),
        (config.http.send_timeout_s > 0, "http.send_timeout_s must be > 0"),
        (not _bad_alias(config.http.voice_aliases),
         f"http.voice_aliases: {_bad_alias(config.http.voice_aliases)}: names and voices are letters, digits, "
         "'-' and '_'"),
        (config.supervisor.hang_timeout_s > 2 * config.heartbeat_s, "supervisor.hang_timeout_s must exceed two heartbeats"),
        (config.supervisor.start_timeout_s > 0, "supervisor.start_timeout_s must be > 0"),
        (config.supervisor.restart_budget >= 0, "supervisor.restart_budget must be >= 0"),
        (config.worker.engine in ("onnx", "torch", "tensorrt", "null"), f"worker.engine: unknown engine {config.worker.engine!r}"),
        (config.worker.int8_method in INT8_METHODS,
         f"worker.int8_method: expected one of {', '.join(INT8_METHODS)}, got {config.worker.int8_method!r}"),
        (config.gpu.tensorrt_max_frames >= 16, "gpu.tensorrt_max_frames must be >= 16"),
        (config.worker.vocoder_precision in VOCODER_PRECISIONS,
         f"worker.vocoder_precision: expected one of {', '.join(VOCODER_PRECISIONS)}, "
         f"got {config.worker.vocoder_precision!r}"),
        (config.worker.precision in PRECISIONS,
         f"worker.precision: expected one of {', '.join(PRECISIONS)}, got {config.worker.precision!r}"),
        (config.worker.allocator in ALLOCATORS,
         f"worker.allocator: expected one of {', '.join(ALLOCATORS)}, got {config.worker.allocator!r}"),
        (config.worker.gsv_decoder_precision in GSV_PRECISIONS["decoder"],
         f"worker.gsv_decoder_precision: expected one of {', '.join(GSV_PRECISIONS['decoder'])}, "
         f"got {config.worker.gsv_decoder_precision!r}"),
        (config.worker.gsv_renderer_precision in GSV_PRECISIONS["renderer"],
         f"worker.gsv_renderer_precision: expected one of {', '.join(GSV_PRECISIONS['renderer'])}, "
         f"got {config.worker.gsv_renderer_precision!r}"),
        (config.worker.gsv_prefill_precision in GSV_PRECISIONS["prefill"],
         f"worker.gsv_prefill_precision: expected one of {', '.join(GSV_PRECISIONS['prefill'])}, "
         f"got {config.worker.gsv_prefill_precision!r}"),
    ]
    checks += [(bool(re.fullmatch(r"[\w.]+:\w+", target)), f"families.{name}: expected \"module:Class\", got {target!r}")
               for name, target in config.families.items()]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config
