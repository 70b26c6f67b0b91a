"""`voxpipe keys generate DIR`: CURVE key pairs for a tcp:// endpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voxpipe.ipc.security import generate_keys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    generate = sub.add_parser("generate", help="write a server and a client key pair into DIR")
    generate.add_argument("directory")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if (directory / "server.key_secret").exists():
        print(f"voxpipe keys: {directory} already holds keys; not overwriting", file=sys.stderr)
        return 1
    generate_keys(directory)
    print(f"wrote {directory}/server.key(_secret), client.key(_secret) and clients/client.key\n"
          f"daemon: curve_keys_dir = \"{directory}\"; clients: VOXPIPE_CURVE_DIR={directory}")
    return 0
