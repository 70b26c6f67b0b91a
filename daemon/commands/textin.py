"""Reading the text a command is to speak: a file or standard input, decoded as UTF-8,
every failure one line a user can act on (no traceback)."""
from __future__ import annotations

import sys
from pathlib import Path


class InputError(Exception):
    """Text that cannot be read; the message names the file and the reason."""


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (a leading byte-order mark is dropped); otherwise an InputError that says where."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{name}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                         "convert it first, e.g. iconv -f LATIN1 -t UTF-8") from None


def read_text_file(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return decode_text(data, path)


def read_stdin() -> str:
    return decode_text(sys.stdin.buffer.read(), "standard input")
