"""Monitoring: Prometheus metrics recorded in every stage and exported by the supervisor,
the frontend's last-minute summary for `voxpipe status`, and the per-request log line.

Importing this package is cheap: prometheus_client is imported only where metrics are on.
"""
from voxpipe.metrics.definitions import MULTIPROC_ENV, Recorder, recorder
from voxpipe.metrics.recent import RecentWindow, voice_cache_summary
from voxpipe.metrics.requestlog import request_log_line

__all__ = ["MULTIPROC_ENV", "Recorder", "RecentWindow", "recorder", "request_log_line", "voice_cache_summary"]
