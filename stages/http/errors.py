"""HTTP errors: voxpipe's typed error codes mapped to status codes, and the two JSON
shapes clients expect (OpenAI's `{"error": {...}}`, GPT-SoVITS's `{"message": ...}`)."""
from __future__ import annotations

from typing import Any

from voxpipe.ipc.errors import ERROR_CODES, VoxpipeError

# voxpipe error code -> (HTTP status, OpenAI error type)
STATUS_BY_CODE: dict[str, tuple[int, str]] = {
    "bad_request": (400, "invalid_request_error"),
    "bad_option": (400, "invalid_request_error"),
    "bad_reference": (400, "invalid_request_error"),
    "empty_text": (400, "invalid_request_error"),
    "too_long": (400, "invalid_request_error"),
    "unspeakable": (400, "invalid_request_error"),
    "unknown_voice": (400, "invalid_request_error"),
    "bad_voice": (400, "invalid_request_error"),
    "unsupported_format": (400, "invalid_request_error"),
    "model_not_found": (400, "invalid_request_error"),
    "not_supported": (400, "invalid_request_error"),
    "not_found": (404, "invalid_request_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "body_too_large": (413, "invalid_request_error"),
    "too_many_streams": (429, "rate_limit_error"),
    "busy": (503, "server_error"),
    "voice_unavailable": (503, "server_error"),
    "shutting_down": (503, "server_error"),
    "no_memory": (503, "server_error"),
    "unavailable": (503, "server_error"),
    "timeout": (504, "server_error"),
}
# Which request field an error is about, for OpenAI's `param`.
PARAM_BY_CODE = {"empty_text": "input", "too_long": "input", "unspeakable": "input", "unknown_voice": "voice",
                 "bad_voice": "voice", "voice_unavailable": "voice", "unsupported_format": "response_format",
                 "model_not_found": "model"}


class HttpError(Exception):
    """An answer other than audio: an HTTP status, voxpipe's code, and a message."""

    def __init__(self, code: str, message: str, *, status: int | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE.get(code, (500, "server_error"))[0]
        self.param = param if param is not None else PARAM_BY_CODE.get(code)

    @classmethod
    def from_voxpipe(cls, exc: VoxpipeError) -> "HttpError":
        return cls(exc.code, exc.message)

    @property
    def retriable(self) -> bool:
        return self.status in (429, 503, 504) or ERROR_CODES.get(self.code, False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"} if self.status in (429, 503) else {}

    def openai_body(self) -> dict[str, Any]:
        kind = STATUS_BY_CODE.get(self.code, (self.status, "server_error" if self.status >= 500 else
                                              "invalid_request_error"))[1]
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def gsv_body(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code, "retriable": self.retriable}
