"""`voxpipe bench stop` on a tiny run: both ways of stopping a daemon under load, every
client told with the error that way owes it (`shutting_down` when the restart budget is
spent, `unavailable` when the whole daemon is SIGKILLed, a lost connection over HTTP
then), timed from the stop, and the JSON holds a figure per client."""
from __future__ import annotations

import argparse
import json

import pytest

from voxpipe.bench import stop

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # two daemons of its own


def test_every_client_is_told_after_either_stop(tmp_path, capsys):
    out = tmp_path / "stop.json"
    parser = argparse.ArgumentParser()
    stop.add_arguments(parser)
    args = parser.parse_args(["--clients", "4", "--http-clients", "1", "--workers", "1", "--restart-budget", "1",
                              "--ways", "budget,sigkill", "--json", str(out)])
    assert stop.run(args) == 0
    assert "| budget | 5 | 5 |" in capsys.readouterr().out
    runs = {r["way"]: r for r in json.loads(out.read_text())["runs"]}
    ended = {way: {c["client"].rsplit("-", 1)[0]: c["code"] for c in run["per_client"]} for way, run in runs.items()}
    assert runs["budget"]["kills"] == 2
    # An HTTP answer cut after its first audio can only end with the connection.
    assert ended["budget"].pop("http") in ("shutting_down", "connection_lost")
    assert set(ended["budget"].values()) == {"shutting_down"}
    assert ended["sigkill"].pop("http") == "connection_lost"
    assert set(ended["sigkill"].values()) == {"unavailable"}
    for run in runs.values():
        assert run["ok"] and run["early"] == 0 and len(run["per_client"]) == 5
        # Told by the endpoint lock, before the old 10 s of silence would have said it.
        assert all(0 <= c["told_s"] < 10.0 for c in run["per_client"]), run
        assert {c["client"].rsplit("-", 1)[0] for c in run["per_client"]} == {
            "async-stream", "async-whole", "sync-stream", "sync-whole", "http"}


def test_an_unknown_way_is_refused(capsys):
    parser = argparse.ArgumentParser()
    stop.add_arguments(parser)
    assert stop.run(parser.parse_args(["--ways", "gently"])) == 2
    assert "unknown way" in capsys.readouterr().err
