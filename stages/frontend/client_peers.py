"""Which client connection each identity came in on, so the frontend learns at once
when a client goes away (a closed socket, a killed process) and can cancel its work.

libzmq tags every received frame with the file descriptor of its connection (SRCFD),
and its socket monitor reports ACCEPTED and DISCONNECTED with that descriptor. A
descriptor is reused by later connections, so each one gets a generation number at
ACCEPTED. libzmq posts ACCEPTED before the new connection can deliver a message, so
draining the monitor before reading client messages attributes every message to the
right generation.
"""
from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message


class ClientPeers:
    def __init__(self, router: zmq.Socket) -> None:
        self.monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._generation: dict[int, int] = {}  # fd -> connections accepted on it so far
        self._connection_of: dict[bytes, tuple[int, int]] = {}  # identity -> (fd, generation)
        self._gone: list[bytes] = []

    def refresh(self) -> None:
        """Read pending connection events; call before reading client messages."""
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._generation[fd] = self._generation.get(fd, 0) + 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                closed = (fd, self._generation.get(fd, 0))
                for identity in [i for i, conn in self._connection_of.items() if conn == closed]:
                    del self._connection_of[identity]
                    self._gone.append(identity)

    def seen(self, identity: bytes, frame: zmq.Frame) -> None:
        try:
            fd = int(frame.get(zmq.SRCFD))
        except (zmq.ZMQError, TypeError, ValueError):
            return
        self._connection_of[identity] = (fd, self._generation.get(fd, 0))

    def disconnected(self) -> list[bytes]:
        """Identities whose connection closed since the last call."""
        self.refresh()
        gone, self._gone = self._gone, []
        return gone
