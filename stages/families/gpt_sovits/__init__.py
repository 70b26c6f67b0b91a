"""The GPT-SoVITS family (v1-v2ProPlus): users' unconverted checkpoints, its own G2P into
language runs, semantic-token sampling options, and continuous batching of the decoder
with audio rendered in windows while tokens are still coming."""
from voxpipe.stages.families.gpt_sovits.family import GptSovitsFamily

__all__ = ["GptSovitsFamily"]
