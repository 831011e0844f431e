"""``latentsearch serve``: collections over HTTP (FastAPI + uvicorn), and a Python client.

- :mod:`.app` — ``create_app(paths, options)``, the middleware and the error answers;
- :mod:`.routes` — the endpoints (plain ``def``: they run in the thread pool);
- :mod:`.state` — the served collections, opened and warmed at startup;
- :mod:`.auth`, :mod:`.files`, :mod:`.metrics`, :mod:`.schemas` — tokens, files in and out,
  Prometheus text, request bodies;
- :mod:`.client` — ``latentsearch.connect(url)``, which needs httpx only;
- :mod:`.errors` — the error classes both sides share.

Importing this package imports no web library; the server's modules need the ``server`` extra.
"""
