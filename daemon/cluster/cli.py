"""`voxpipe cluster`: a fleet of daemons on Ray Serve (docs/cluster.md).

    voxpipe cluster local --nodes 3 --replicas 3 --voices-dir DIR --port 8000   # a local fleet, until Ctrl-C
    voxpipe cluster bench --replicas 3 --voices 30 --requests 600 ...          # the fleet benchmark (voxpipe.bench.cluster)

On a real cluster, deploy the application with Serve itself (`serve run` or `serve
deploy` with deploy/serve-config.yaml, or KubeRay's RayService in deploy/)."""
from __future__ import annotations

import argparse
import sys
import time


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", required=True)
    local = sub.add_parser("local", help="start a Ray cluster on this machine and serve a fleet on it")
    local.add_argument("--nodes", type=int, default=3, help="Ray nodes (a head and nodes-1 more)")
    local.add_argument("--replicas", type=int, default=3)
    local.add_argument("--engine", choices=["onnx", "torch", "null"], default="onnx")
    local.add_argument("--voices-dir", default="", help="extra voices, the same for every replica")
    local.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1")
    bench = sub.add_parser("bench", help="benchmark a local fleet: routing, a kill, throughput")
    from voxpipe.bench import cluster as cluster_bench  # the standard library and numpy: cheap to import

    cluster_bench.configure_parser(bench)


def _local(args: argparse.Namespace) -> int:
    from voxpipe.daemon.cluster.app import FleetArgs, FleetArgsError, build_from
    from voxpipe.daemon.cluster.local import LocalCluster, LocalClusterError, run_app, start_serve

    try:
        fleet_args = FleetArgs.parse({"daemon": {"engine": args.engine, "voices_dir": args.voices_dir},
                                      "replicas": args.replicas})
    except (FleetArgsError, ValueError) as exc:
        print(f"voxpipe cluster local: {exc}", file=sys.stderr)
        return 2
    try:
        with LocalCluster(nodes=args.nodes) as cluster:
            start_serve(args.port)
            run_app(build_from(fleet_args), "voxpipe", "/", args.port)
            print(f"voxpipe fleet: {args.replicas} replicas on {args.nodes} Ray nodes (GCS {cluster.address}); "
                  f"HTTP on http://127.0.0.1:{args.port}; Ctrl-C stops it", file=sys.stderr)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    except LocalClusterError as exc:
        print(f"voxpipe cluster local: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.cluster_command == "local":
        return _local(args)
    from voxpipe.bench import cluster as cluster_bench

    return int(cluster_bench.run(args))
