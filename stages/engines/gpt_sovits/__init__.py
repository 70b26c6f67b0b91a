"""GPT-SoVITS voices from users' own checkpoints: loaders, the text-to-semantic decoder, the SoVITS
synthesizer, feature models and the `gpt-sovits` engine (see docs/gpt-sovits.md)."""
