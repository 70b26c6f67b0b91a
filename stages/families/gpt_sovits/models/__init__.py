"""GPT-SoVITS models from users' checkpoints: the SoVITS synthesizer (v1-v2ProPlus), the CFM
mel decoder with BigVGAN or the v4 vocoder (v3/v4), the shared feature models, and
rendering audio in windows while tokens still come."""
