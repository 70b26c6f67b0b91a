"""The HTTP gateway: an ASGI app (Starlette on uvicorn) that serves the OpenAI speech API,
a GPT-SoVITS api_v2-compatible `/tts`, health probes and a listening page, reaching the
pipeline through the same client library as every other user (`voxpipe.ipc.client.AsyncClient`).
"""
