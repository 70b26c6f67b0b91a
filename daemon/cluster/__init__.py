"""A fleet of voxpipe daemons behind one endpoint, on Ray Serve (docs/cluster.md).

Each `VoiceReplica` owns one daemon on its node and reaches it through the client
library; the `FleetIngress` serves the HTTP gateway's routes and sends each request to
a replica that holds its voice unless that one is loaded well past the others (a custom
Serve request router over Serve's model multiplexing, the voice as the
model id), resuming a request on another replica if its replica dies mid-stream.

Importing this package needs nothing beyond voxpipe; the modules that build the Serve
application import ray (the `cluster` extra)."""
