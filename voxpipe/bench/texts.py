"""The benchmark texts: classes from texts_en.tsv plus one long-form text.

The default texts ship inside the package (voxpipe/bench/data/: texts_en.tsv,
longform_en.txt, and texts_zh.tsv for Chinese text tests); `--texts-dir` points the
benchmark at another folder with the same files."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TEXTS_DIR = Path(__file__).resolve().parent / "data"
LONGFORM = "longform"
# The long form repeated this many times, each measured alike (first audio, then cancel):
# first audio must not grow with the text. x1 is the yardstick for the others.
SCALES = (1, 10, 50)


def scaled_class(times: int) -> str:
    """The class of the long form repeated `times` times (its first audio only is measured)."""
    return f"{LONGFORM}x{times}"


def is_scaled(cls: str) -> bool:
    return any(cls == scaled_class(times) for times in SCALES)


class TextsError(Exception):
    """The texts directory is missing a file or holds a malformed line."""


@dataclass(frozen=True)
class BenchText:
    cls: str
    text: str

    @property
    def chars(self) -> int:
        return len(self.text)


def load_classes(texts_dir: Path) -> list[BenchText]:
    """Every `class<TAB>text` line of texts_en.tsv, in file order."""
    path = texts_dir / "texts_en.tsv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TextsError(f"cannot read {path}: {exc.strerror}") from None
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        cls, sep, text = line.partition("\t")
        if not sep or not text.strip():
            raise TextsError(f"{path}:{number}: expected 'class<TAB>text'")
        texts.append(BenchText(cls.strip(), text.strip()))
    if not texts:
        raise TextsError(f"{path}: no texts")
    return texts


def load_longform(texts_dir: Path, paragraphs: int | None = None) -> BenchText:
    """The long-form text; `paragraphs` keeps only the first few (quick runs)."""
    path = texts_dir / "longform_en.txt"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TextsError(f"cannot read {path}: {exc.strerror}") from None
    if paragraphs is not None:
        text = "\n\n".join(p.strip() for p in text.split("\n\n")[:paragraphs])
    return BenchText(LONGFORM, text)


def per_class(texts: list[BenchText], limit: int | None) -> list[BenchText]:
    """At most `limit` texts of each class, keeping file order."""
    if limit is None:
        return list(texts)
    kept: dict[str, int] = {}
    out = []
    for t in texts:
        if kept.get(t.cls, 0) < limit:
            kept[t.cls] = kept.get(t.cls, 0) + 1
            out.append(t)
    return out


def mixed_load(texts: list[BenchText], rounds: int, seed: int = 7) -> list[BenchText]:
    """The mixed load for throughput runs: every text `rounds` times, shuffled the same
    way on every run so both systems get the same sequence."""
    load = [t for _ in range(max(1, rounds)) for t in texts]
    random.Random(seed).shuffle(load)
    return load
