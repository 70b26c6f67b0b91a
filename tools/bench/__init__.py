"""`voxpipe bench`: the daemon beside piper's own PiperVoice, in one run, with ratios.

Modules: `texts` (the benchmark texts), `stats` (percentiles, correlation), `daemon`
(a daemon subprocess and its CPU time), `voxpipe_side` and `baseline` (the two systems
under the same measurements), `ipc_micro` (transport micro-benchmarks), `results`
(what a run measured), `report` (ratios, Markdown), `plots` (PNGs) and `run` (the command).
"""
