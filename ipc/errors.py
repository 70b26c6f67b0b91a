"""Typed error codes carried on the wire and raised by the client library."""
from __future__ import annotations

# code -> whether a client may retry the same request later
ERROR_CODES: dict[str, bool] = {
    "bad_request": False,  # malformed frame or message of the wrong shape
    "protocol_mismatch": False,
    "unknown_voice": False,
    "bad_voice": False,  # a voice name that is not a plain name (a path, say)
    "voice_unavailable": True,  # the voice exists but cannot be loaded now
    "empty_text": False,
    "too_long": False,
    "unspeakable": False,  # text with nothing to say (only punctuation, say)
    "bad_option": False,
    "bad_reference": False,  # a reference clip that is unreadable, too long, too short or too large
    "busy": True,  # a queue is full; try again later
    "timeout": True,  # the request's deadline passed
    "cancelled": False,
    "duplicate": False,  # a request id that is already being served
    "engine_error": True,
    "retries_exhausted": True,  # a chunk failed on too many workers
    "shutting_down": True,
    "no_memory": True,  # shared memory or device memory exhausted
    "internal": True,
    "unavailable": True,  # client side: no daemon answered at the endpoint
}


class VoxpipeError(Exception):
    """An error answer from the daemon (or the client's own transport failure)."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id

    @property
    def retriable(self) -> bool:
        return ERROR_CODES.get(self.code, False)


class ProtocolError(ValueError):
    """A frame that does not decode to a known message of the right shape."""
