"""GPT-SoVITS's own HTTP API (api_v2: `/tts`, `/set_gpt_weights`, ...), mounted by the HTTP
stage through `Family.http_routes()`."""
