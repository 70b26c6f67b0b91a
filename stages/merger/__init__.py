"""The merger process: reorders chunk audio, crossfades joins, streams fragments."""
