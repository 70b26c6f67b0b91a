"""What every stage process has: its arguments, a control socket to the supervisor and
a heartbeat thread.

Heartbeats come from a thread with its own socket so a long engine call does not look
like a hang; the main loop publishes `busy_since` before blocking work, and the
supervisor judges a stage hung when heartbeats stop (a stopped process) or when it has
been busy on one call for longer than the configured bound.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from voxpipe.config import Config
from voxpipe.procutil import die_with_parent, ignore_interrupts, set_title
from voxpipe.ipc import sockets
from voxpipe.ipc.messages import Heartbeat
from voxpipe.ipc.topology import RunLayout


@dataclass
class StageArgs:
    role: str  # "frontend" | "worker" | "merger"
    name: str  # unique: "frontend", "w0", "merger", ...
    layout: RunLayout
    config: Config
    parent_pid: int
    env: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    preload: list[str] = field(default_factory=list)  # voices a worker loads before it is ready
    merger_generation: int = 0  # merger restarts so far (MergerLost.generation), for a stage started late


class StageRuntime:
    def __init__(self, args: StageArgs) -> None:
        die_with_parent(args.parent_pid)
        set_title(f"voxpipe: {args.role} {args.name}" if args.name != args.role else f"voxpipe: {args.role}")
        ignore_interrupts()
        from voxpipe.stages import families

        families.configure(args.config.families)  # the config's extra model families, in every stage
        self.args = args
        self.ctx = zmq.Context(io_threads=1)
        self.control = sockets.make_socket(self.ctx, zmq.DEALER, identity=args.name.encode())
        self.control.connect(args.layout.control_endpoint)
        self.ready = False
        self._stats: dict[str, Any] = {}
        self._stats_at = time.monotonic()
        self.busy_since: float | None = None
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beat.start()

    @property
    def stats(self) -> dict[str, Any]:
        return self._stats

    @stats.setter
    def stats(self, value: dict[str, Any]) -> None:
        self._stats = value
        self._stats_at = time.monotonic()  # after the dict: a beat that reads this time has the dict too

    def _heartbeat_loop(self) -> None:
        sock = sockets.make_socket(self.ctx, zmq.PUSH, hwm=4)
        sock.connect(self.args.layout.heartbeat_endpoint)
        period = self.args.config.heartbeat_s
        try:
            while not self._stop.wait(period):
                busy = self.busy_since
                made_at = self._stats_at  # read before the dict (see the setter)
                stats = dict(self._stats)
                stats["busy_for"] = 0.0 if busy is None else time.monotonic() - busy
                # When the stage made these figures (CLOCK_MONOTONIC, the same in every
                # process of the machine): a reader can wait for figures newer than an event.
                stats["stats_at"] = made_at
                beat = Heartbeat(self.args.role, self.args.name, os.getpid(), self.ready, stats)
                try:
                    sockets.send(sock, beat, flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # the supervisor is behind; the next beat carries the same news
        finally:
            sock.close(0)

    def close(self) -> None:
        self._stop.set()
        self._beat.join(timeout=2)
        self.ctx.destroy(linger=0)  # closes every socket the stage opened, monitors included
