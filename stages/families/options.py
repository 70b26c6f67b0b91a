"""Request options as a model family declares them: one dataclass of `option(...)` fields
per family, with defaults, ranges, choices and a line of help. Everything that takes
per-request options (the `voxpipe say` flags, the client library, the HTTP routes) reads
these declarations (`declared`), so an option a family adds reaches every interface.

Kept free of heavy imports: the command line builds its flags from it at start-up.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

KINDS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


class OptionError(ValueError):
    """A request option is unknown or out of range; the message names it (`bad_option`)."""


def option(default: Any, low: float | None = None, high: float | None = None, *, open_low: bool = False,
           doc: str = "", choices: tuple[str, ...] | None = None) -> Any:
    """A declared request option: its default (None: the voice's), its range or choices."""
    return field(default=default, metadata={"low": low, "high": high, "open_low": open_low, "doc": doc,
                                            "choices": tuple(choices) if choices is not None else None})


@dataclass(frozen=True)
class OptionSpec:
    """One declared option as interfaces present it."""

    name: str
    kind: type  # int, float, bool or str
    doc: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None


def kind_of(spec: dataclasses.Field) -> type:
    if isinstance(spec.type, type):
        return spec.type
    return KINDS.get(str(spec.type).split("|")[0].strip(), object)


def declared(options: type) -> list[OptionSpec]:
    """The options a family's Options dataclass declares."""
    return [OptionSpec(f.name, kind_of(f), f.metadata.get("doc", ""), f.metadata.get("low"), f.metadata.get("high"),
                       f.metadata.get("choices")) for f in dataclasses.fields(options)]


class Options:
    """Base of a family's options dataclass. `resolve` fills what a request left out from
    the voice's defaults, then the declared defaults, and checks types and ranges."""

    @classmethod
    def resolve(cls, params: dict[str, Any], voice_defaults: dict[str, Any]) -> dict[str, Any]:
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise OptionError(f"unknown option(s) {', '.join(unknown)} for this voice; "
                              f"it takes {', '.join(sorted(fields))}")
        out: dict[str, Any] = {}
        for name, spec in fields.items():
            value = params.get(name)
            value = voice_defaults.get(name, spec.default) if value is None else value
            out[name] = _checked(name, value, spec)
        return out


def _checked(name: str, value: Any, spec: dataclasses.Field) -> Any:
    kind = kind_of(spec)
    if value is None:
        return None
    if kind is int:
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int:
            raise OptionError(f"{name} must be an integer, not {value!r}")
    elif kind is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise OptionError(f"{name} must be a number, not {value!r}")
        value = float(value)
    elif kind is bool and type(value) is not bool:
        raise OptionError(f"{name} must be true or false, not {value!r}")
    elif kind is str and not isinstance(value, str):
        raise OptionError(f"{name} must be text, not {value!r}")
    choices = spec.metadata.get("choices")
    if choices is not None and kind is str:
        value = value.strip().lower()  # language names and the like: "JA" reads as "ja"
    if choices is not None and value not in choices:
        raise OptionError(f"{name}={value!r} is not one of {', '.join(choices)}")
    low, high, open_low = spec.metadata.get("low"), spec.metadata.get("high"), spec.metadata.get("open_low")
    if low is not None and (value < low or (open_low and value == low)) or high is not None and value > high:
        raise OptionError(f"{name}={value} is outside {'(' if open_low else '['}{low}, {high}]")
    return value
