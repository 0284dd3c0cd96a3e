"""Serving generators over HTTP on Ray Serve.

``slot`` holds the loaded model and the pure batched generate; ``http`` is the thin FastAPI layer;
``deployment`` glues them onto Ray Serve (batching, hot reload, health); ``app`` builds applications
for ``serve deploy`` and the ``genai-ray serve`` command.
"""
