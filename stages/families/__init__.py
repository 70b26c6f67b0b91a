"""Model families as plug-ins: the registry.

Adding a family is its own folder (a `Family` subclass, stages/families/base.py) plus one
line here, or, for a family kept outside this package, one line in the config's
`[families]` table (`name = "module:Class"`), read by every process at start.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from voxpipe.stages.families.options import OptionSpec, declared

if TYPE_CHECKING:  # the base (numpy, engines) loads with the first family, not with the registry
    from voxpipe.stages.families.base import Family

BUILTIN: dict[str, str] = {
    "gpt-sovits": "voxpipe.stages.families.gpt_sovits:GptSovitsFamily",
    "piper": "voxpipe.stages.families.piper:PiperFamily",
}
# Where the built-in families declare their request options: a light module each, so the
# command line can build its flags without loading a family.
BUILTIN_OPTIONS: dict[str, str] = {
    "gpt-sovits": "voxpipe.stages.families.gpt_sovits.options:GsvOptions",
    "piper": "voxpipe.stages.families.piper.options:PiperOptions",
}
_registered: dict[str, str] = dict(BUILTIN)
_loaded: dict[str, Family] = {}


class FamilyError(Exception):
    """A family named by a voice or the config cannot be found or imported."""


def register(name: str, target: str) -> None:
    """Add a family by `module:Class` (the config's `[families]` entries)."""
    if _registered.get(name) != target:
        _registered[name] = target
        _loaded.pop(name, None)


def configure(extra: dict[str, str]) -> None:
    for name, target in extra.items():
        register(name, target)


def names() -> list[str]:
    return list(_registered)


def get(name: str) -> Family:
    family = _loaded.get(name)
    if family is None:
        target = _registered.get(name)
        if target is None:
            raise FamilyError(f"unknown model family {name!r}; known: {', '.join(_registered)}")
        module_name, _, class_name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise FamilyError(f"model family {name!r} ({target}) cannot be loaded: {exc}") from exc
        family = _loaded[name] = cls()
    return family


def options_of(name: str) -> list[OptionSpec]:
    """The request options family `name` declares."""
    target = BUILTIN_OPTIONS.get(name) if _registered.get(name) == BUILTIN.get(name) else None
    if target is None:
        return declared(get(name).options)
    module_name, _, class_name = target.partition(":")
    return declared(getattr(importlib.import_module(module_name), class_name))


def declared_options() -> dict[str, tuple[OptionSpec, list[str]]]:
    """Every request option some family declares: name -> (its declaration, as the first
    family that declares it has it; the families that take it). Families that cannot be
    loaded are left out (their voices are unavailable anyway)."""
    out: dict[str, tuple[OptionSpec, list[str]]] = {}
    for family in names():
        try:
            specs = options_of(family)
        except FamilyError:
            continue
        for spec in specs:
            out.setdefault(spec.name, (spec, []))[1].append(family)
    return out


def detect(directory: Path) -> Family | None:
    """The family whose voice a folder holds: configured families first (they may be
    more specific), then the built-in ones in registry order."""
    order = [n for n in _registered if n not in BUILTIN] + list(BUILTIN)
    for name in order:
        family = get(name)
        if family.claims(directory):
            return family
    return None
