"""The HTTP server: an OpenAI-compatible API, llama.cpp's native endpoints
and a web chat page, all over the one shared engine.

    settings.py   where to listen, who may call, defaults for requests
    types.py      the OpenAI- and llama.cpp-shaped request/response models
    adapters.py   those models <-> the engine's own request and chunk types
    errors.py     every failure -> {"error": {...}} and an HTTP status
    guards.py     body size, UTF-8, API key and request counting
    hosts.py      which Host and Origin headers are served (DNS rebinding)
    headers.py    security headers on every response
    connections.py  connection limit and request deadline (slow clients)
    generations.py  the server's generations in flight, bridged to asyncio
    state.py      what the endpoints share, kept on app.state
    metrics.py    /metrics in Prometheus' text format
    app.py        create_app(engine, template, settings)
    routes/       the endpoints
    listen.py     the listening socket, bound before the model loads
    loading.py    what the port answers while the model loads (503)
    run.py        serve() for --server; start_in_background() beside the chat
    static/       the web page

This module imports nothing heavy: the command line reads ServerSettings
without loading the web stack.
"""
