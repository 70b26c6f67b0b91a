"""A model family that declares one option no built-in family has, for the test that a
family's new option reaches every interface (tests/test_gsv_reference.py): GPT-SoVITS in
all else, so its voices really speak. Registered through the config's [families] table."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from voxpipe.stages.families.gpt_sovits.family import GptSovitsFamily
from voxpipe.stages.families.gpt_sovits.options import GsvOptions
from voxpipe.stages.families.options import option
from voxpipe.stages.voices import VoiceSpec

MARKER = "moods"  # a GPT-SoVITS voice folder holding this file is this family's


@dataclass
class MoodOptions(GsvOptions):
    mood: str = option("calm", choices=("calm", "angry"), doc="a test option only this family declares")


class MoodFamily(GptSovitsFamily):
    name = "gsv-moods"
    options = MoodOptions

    def claims(self, directory: Path) -> bool:
        return super().claims(directory) and (directory / MARKER).is_file()

    def load_spec(self, name: str, directory: Path) -> VoiceSpec:
        return dataclasses.replace(super().load_spec(name, directory), family=self.name)
