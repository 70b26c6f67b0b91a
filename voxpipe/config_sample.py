"""The commented sample config that `voxpipe config sample` prints: every key, each at its
default, so it passes `voxpipe config check` on any machine and a user edits only what
they need. tests/test_config.py keeps it complete and equal to the defaults."""

SAMPLE = """\
# voxpipe configuration: `voxpipe serve --config FILE`; check it with `voxpipe config check FILE`.
# Every key is optional and shown at its default; unknown keys and wrong types are errors.

endpoint = ""                 # "" = ipc socket in the runtime directory; or ipc://PATH, tcp://HOST:PORT
voices_dir = ""               # extra Piper voices: NAME/*.onnx + NAME/*.onnx.json (joe is always there)
state_dir = ""                # usage state; "" = $STATE_DIRECTORY or ~/.local/state/voxpipe
preload = ["joe"]             # voices every worker loads before the daemon reports ready
preload_popular = 3           # ... plus this many of the most used voices
curve_keys_dir = ""           # CURVE keys; required for a tcp:// endpoint (voxpipe keys generate DIR)
socket_group = ""             # group allowed to use the ipc socket (mode 0660); the group must exist
heartbeat_s = 0.5
metrics_port = 0              # > 0: Prometheus metrics on http://metrics_address:PORT/metrics
metrics_address = "127.0.0.1"

[limits]
max_text_chars = 1000000      # longer text: `too_long`
max_active_requests = 256     # more at once: `busy`
max_queued_chunks = 4096      # more chunks waiting: `busy`
request_timeout_s = 300.0     # default and maximum deadline of a request
drain_timeout_s = 30.0        # SIGTERM: accepted requests may finish for this long
max_chunk_attempts = 3        # a chunk failing on this many workers fails its request

[frontend]
chunk_budget = 400            # phonemes per chunk
policy = "punctuation"        # one sentence a chunk (a long one cut at clauses); or packed, sentences, length, none, clauses; GPT-SoVITS's cut0..cut5
first_chunk = true            # end the first chunk at its first clause, for fast first audio
first_chunk_words = 4         # ... once it has at least this many words
plan_ahead_chunks = 16        # chunks a request has planned and not yet synthesized; the rest of its text waits

[worker]
count = 0                     # CPU workers; 0 = cores / threads (GPUs: one worker each)
threads = 1                   # engine threads per CPU worker
max_threads = 0               # onnx, gpt-sovits: a call runs on the cores idle workers leave free, up to this; 0 = all cores
engine = "onnx"               # onnx | torch | tensorrt | null
precision = "fp32"            # fp16/bf16: torch engine on a GPU; int8: onnx engine, audible error
int8_method = "static"        # precision int8: static (calibrated) or dynamic quantization
credits = 2                   # chunks a worker holds at once
max_batch = 0                 # chunks per batch; 0 = the engine's choice
batch_phonemes = 8192         # ceiling on a batch's padded phonemes
batch_wait_ms = 5.0           # how long a partial batch may wait to fill
engine_stream_frames = 32     # streamed requests: audio within a sentence, first after this many frames (0 = off)
loudness = true               # Piper voices: one gain per voice on every engine (measured once) for Piper's level
level_cache_dir = ""          # the measured gains, by model contents; empty: $XDG_CACHE_HOME/voxpipe/piper-level
vocoder_precision = "auto"    # Piper voices (onnx engine): auto (probed per machine; bf16 only with bf16 units) | fp32 | bf16
vocoder_precision_cache_dir = ""  # where auto's choices are kept; empty: $XDG_CACHE_HOME/voxpipe/vocoder-precision
gsv_decoder_precision = "auto"   # GPT-SoVITS decoder steps: auto (probed per machine) | fp32 | bf16 | fp16 | int8
gsv_renderer_precision = "auto"  # GPT-SoVITS vocoder: auto | fp32 | bf16 | fp16
gsv_prefill_precision = "auto"   # GPT-SoVITS decoder prefills: auto | fp32 | int8 (a voice.toml [precision] overrides all three)
gsv_precision_cache_dir = ""     # where auto's choices are kept; empty: $XDG_CACHE_HOME/voxpipe/gsv-precision
gsv_conditioning_mib = 256.0     # per worker: prompts of requests' own reference clips kept (LRU, by bytes)
allocator = "system"          # workers' malloc: system | auto (tcmalloc where installed) | tcmalloc | jemalloc
voice_cache_mib = 2048.0      # per-worker LRU voice cache

[gpu]
enabled = true
memory_fraction = 0.9
alloc_conf = "expandable_segments:True"
tensorrt_workspace_mib = 2048
cuda_graphs = true            # torch engine: replay the vocoder from CUDA graphs
tensorrt_plan_dir = ""        # "" = $XDG_CACHE_HOME/voxpipe/tensorrt
tensorrt_max_frames = 2048

[merger]
crossfade_ms = 30.0

[shm]
worker_pool_mib = 64          # per worker
merger_pool_mib = 64
slot_kib = 64

[supervisor]
start_timeout_s = 180.0
hang_timeout_s = 2.5          # no heartbeat for this long: the stage is replaced
max_busy_s = 120.0            # one engine call longer than this: replaced
restart_budget = 5            # restarts within restart_window_s before the daemon gives up
restart_window_s = 60.0

[http]
bind = ""                     # "HOST:PORT" or "PORT" serves the HTTP gateway; "" = off
max_body_kib = 8192           # larger request bodies: 413
max_text_chars = 0            # longer input: 400; 0 = limits.max_text_chars
max_streams = 64              # audio responses at once; more: 429
send_timeout_s = 30.0         # a client that accepts no bytes for this long is dropped
max_reference_kib = 2048      # a request's own GPT-SoVITS reference clip file, at most (any interface)
reference_dirs = []           # absolute dirs whose clips api_v2's ref_audio_path may name (besides voices_dir)
gsv_default_voice = ""        # voice for clips from reference_dirs until /set_*_weights selects one

[http.voice_aliases]          # OpenAI route: apps hard-code OpenAI's voice names; each speaks with a voice
alloy = "joe"                 # (a voice of the same name wins); setting this table replaces these defaults
ash = "joe"
ballad = "joe"
cedar = "joe"
coral = "joe"
echo = "joe"
fable = "joe"
marin = "joe"
nova = "joe"
onyx = "joe"
sage = "joe"
shimmer = "joe"
verse = "joe"
"""
