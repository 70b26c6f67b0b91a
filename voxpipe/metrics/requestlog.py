"""One line per request in logfmt (`key=value`, quoted where needed), for the journal.

Request ids and voice names come from clients: quoting (JSON string escapes) keeps a
crafted id from forging extra fields or lines.
"""
from __future__ import annotations

import json
import re

_PLAIN = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")


def _value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def request_log_line(request_id: str, voice: str, chars: int, chunks: int, first_audio_s: float | None,
                     total_s: float | None, outcome: str) -> str:
    fields = {"id": request_id, "voice": voice, "chars": chars, "chunks": chunks,
              "first_audio_s": first_audio_s, "total_s": total_s, "outcome": outcome}
    return "voxpipe: request " + " ".join(f"{key}={_value(value)}" for key, value in fields.items())
