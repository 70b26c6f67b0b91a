"""The benchmarks users run, installed with voxpipe (their plots need the `bench` extra:
pip install 'voxpipe[bench]'). Nothing in the daemon's serving path imports this package.

    voxpipe bench                  the daemon beside piper's own PiperVoice (`run`)
    voxpipe bench gsv              GPT-SoVITS serving against the reference package (`gsv_serve`)
    voxpipe bench soak             a mixed load with worker kills against a running daemon (`soak`)
    voxpipe bench overload         `busy` answers at a multiple of the daemon's capacity (`overload`)
    voxpipe bench firstbyte        first audio over HTTP against the ZeroMQ client (`firstbyte`)
    voxpipe cluster bench          a fleet of daemons on a local Ray cluster (`cluster`)

Modules of `voxpipe bench`: `texts` (the benchmark texts, shipped in data/), `stats`
(percentiles, correlation), `daemon` (a daemon subprocess and its CPU time),
`voxpipe_side` and `baseline` (the two systems under the same measurements), `ipc_micro`
(transport micro-benchmarks), `results` (what a run measured), `report` (ratios,
Markdown), `plots` (PNGs; needs matplotlib) and `run` (the command). `gsv_reference_runner`
drives the reference GPT-SoVITS package in a process of its own for `bench gsv`.
"""
